"""How often the router runs and the route switches on a source, through the pipeline's own stages
(Preprocess -> Infer -> Postprocess, the bundle's Restorer as ``tir run`` loads it, the virtual camera's
reference pinned as ``tir run`` pins it): a check that a routing change adds no router calls on a steady
stream (docs/BENCHMARKS.md, session 21).

Usage: python3 tools/scripts/route_decisions.py [SOURCE_URI] [--frames N]
Prints: verdicts, switches, the route at the end and the seconds per frame.
"""
import argparse
import sys
import time


def main(argv=None) -> int:
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess
    from tir.edge.sources.base import open_source
    from tir.engines.loading import load_model, normalizer_for, pin_source_reference

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", default="synthetic://?degrade=noise&size=640x512&realtime=0")
    p.add_argument("--frames", type=int, default=300)
    a = p.parse_args(argv)
    src = open_source(a.source)
    model, _ = load_model(None, "auto", None, None)
    pin_source_reference(model, src)
    src.start()
    norm = normalizer_for(model)
    stages = (Preprocess(norm), Infer(model), Postprocess(norm))
    t0, k = time.perf_counter(), 0
    try:
        while k < a.frames:
            frame = src.read(5.0)
            if frame is None:
                continue
            for stage in stages:
                stage(frame)
            k += 1
    finally:
        src.close()
    s = model.status()
    print(f"verdicts {s['decisions']}, switches {s['switches']}, route {s['task']}, "
          f"{(time.perf_counter() - t0) / max(k, 1):.3f} s per frame over {k} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
