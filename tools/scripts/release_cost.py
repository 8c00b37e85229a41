"""What the per-frame release check costs a stream (docs/BENCHMARKS.md, "Session 24"): runs
``tir bench --mode pipeline`` once with ``Restorer._released`` (engines/restorer.py) timed in the
restore thread, or patched out (``--off``: the route runs every frame, as before session 23).

    python tools/scripts/release_cost.py --source "synthetic://?degrade=blur&size=640x512" \\
        --frames 200 --json /tmp/on.json
    python tools/scripts/release_cost.py --off --source "synthetic://?degrade=blur&size=640x512" \\
        --frames 200 --json /tmp/off.json

Alternate the two on one machine (the load moves between runs). Prints the bench's table, then the
number of checks and their mean wall and thread CPU time (ms per call) on stderr.
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    """The command line (module docstring); the bench's exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="synthetic://?degrade=blur&size=640x512", help="the bench's source URI")
    p.add_argument("--frames", type=int, default=200, help="frames to run (default 200)")
    p.add_argument("--json", default=None, help="the bench's JSON report")
    p.add_argument("--off", action="store_true", help="patch the check out: the route runs on every frame")
    a = p.parse_args(argv)

    import tir.engines.restorer as restorer
    from tir.tools import cli

    original = restorer.Restorer._released
    calls = {"n": 0, "wall": 0.0, "cpu": 0.0}

    def timed(self, x):
        w, c = time.perf_counter(), time.thread_time()
        try:
            return original(self, x)
        finally:
            calls["wall"] += time.perf_counter() - w
            calls["cpu"] += time.thread_time() - c
            calls["n"] += 1

    restorer.Restorer._released = (lambda self, x: self.current) if a.off else timed
    args = ["bench", "--mode", "pipeline", "--source", a.source, "--frames", str(a.frames), "--no-progress"]
    if a.json:
        args += ["--json", a.json]
    try:
        rc = cli.main(args)
    finally:
        n = max(calls["n"], 1)
        print(f"release check {'patched out' if a.off else 'on'}: {calls['n']} calls, "
              f"{calls['wall'] / n * 1e3:.2f} ms wall, {calls['cpu'] / n * 1e3:.2f} ms thread CPU per call",
              file=sys.stderr)
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
