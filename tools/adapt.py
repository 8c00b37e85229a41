"""``tir adapt``: adapt a bundle's degradation router to the user's camera (UDAIR / CORAL).

    tir adapt --source v4l2:///dev/video0 --frames 200 --out ~/bundle-boson   # the shipped bundle
    tir adapt --bundle DIR --source file:///rec/clip.mp4 --frames 200 --stride 5 --out DIR2
    tir adapt --source-stats --bundle DIR            # add the router's source statistics (one-off)
    tir adapt --measure hit_uav,m3svd_magnity,chips_lepton35   # accuracy before/after on held-out cameras

Collects unlabeled frames from any source URI through the pipeline's preprocessing, fits one
affine map of the router's embeddings (engines/adapt.py) and writes a copy of the bundle with
the adapted router (the original is untouched); prints the router's decisions on the
collected frames before and after. See docs/adapt.md.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tir.edge.errors import InputError, ModelError, TirError, UsageError

from .cli import (add_backend_argument, add_bundle_argument, add_json_argument, add_source_argument,
                  add_threads_argument, write_json)


def add_arguments(parser) -> None:
    """Add ``tir adapt``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``, one of
    ``--source URI`` / ``--source-stats`` / ``--measure SETS``, ``--frames``, ``--stride``,
    ``--out``, ``--input-flip``, ``--balanced``, ``--data``, ``--data-root``, ``--seed``, ``--backend``,
    ``--threads``, ``--json``.
    """
    add_bundle_argument(parser, "model bundle folder (default: the shipped bundle)")
    add_source_argument(parser, "source URI of the user's camera (synthetic://, file://, v4l2://)")
    from tir.edge.sources.orient import FLIP_METHODS

    parser.add_argument("--input-flip", default="none", choices=tuple(FLIP_METHODS), metavar="METHOD",
                        help="turn the camera's frames upright as tir run --input-flip does (a camera mounted in "
                             "portrait or upside down): " + ", ".join(FLIP_METHODS) + " (default none)")
    parser.add_argument("--frames", type=int, default=200, help="unlabeled frames to fit on (default 200)")
    parser.add_argument("--stride", type=int, default=1,
                        help="take every STRIDE-th frame (a live camera's consecutive frames are near copies)")
    parser.add_argument("--out", help="folder for the adapted copy of the bundle (must not exist)")
    parser.add_argument("--balanced", action="store_true",
                        help="assign clusters in the source class proportions (when the frames cover every "
                             "degradation about equally)")
    parser.add_argument("--source-stats", action="store_true",
                        help="compute the router's source statistics on its training frames and store them "
                             "in --bundle's manifest (in place)")
    parser.add_argument("--stats", default="all", choices=("all", "adaptation", "contrast"),
                        help="with --source-stats: compute both (default), the adaptation statistics only, or "
                             "only the contrast gate's prior (engines/contrast_gate.py; fast, the router is not run)")
    parser.add_argument("--data", default=None,
                        help="with --source-stats: the router's training frames: registered sets SET[,SET] or a "
                             "folder (default: the sets the router's manifest entry names, else RoadScene train)")
    parser.add_argument("--measure", default=None, metavar="SET[,SET]",
                        help="router accuracy before/after adaptation on held-out camera sets "
                             "(registered names, engines/training/datasets.py)")
    parser.add_argument("--data-root", default=None,
                        help="with --measure: folder holding the sets (default: $TIR_DATA_ROOT, else "
                             "../shared/data beside the repository)")
    parser.add_argument("--seed", type=int, default=0, help="with --measure: degradation seed (default 0)")
    add_backend_argument(parser, "router backend (auto, onnxruntime, tensorrt)")
    add_threads_argument(parser, help="intra-op threads of the router")
    add_json_argument(parser, "write the result as JSON")


def _histogram_table(before: dict, after: dict, alignment: dict) -> str:
    """Decisions per class before/after, and each cluster's distance from its source class
    (in source standard deviations; '-' for fewer than 3 frames)."""
    def gap(v):
        return "-" if v is None else f"{v:.2f}"
    lines = [f"{'decision':<10}{'before':>8}{'after':>8}{'gap before':>12}{'gap after':>11}"]
    for n in before:
        g = alignment.get(n, [None, None])
        lines.append(f"{n:<10}{before[n]:>8}{after[n]:>8}{gap(g[0]):>12}{gap(g[1]):>11}")
    return "\n".join(lines)


def main(args) -> int:
    """Run ``tir adapt`` with the parsed ``args``: adapt (``--source``), add the router's source
    statistics (``--source-stats``) or measure on held-out cameras (``--measure``); see the
    module docstring.

    Returns:
        0; errors are raised (tir.tools.cli prints them and exits with their exit code).

    Raises:
        ModelError: no ``--bundle`` and no installed bundle.
        UsageError: not exactly one of ``--source``, ``--source-stats``, ``--measure``;
            ``--source-stats`` without ``--bundle`` (it rewrites a manifest in place, so the
            bundle must be named: the shipped one is never changed by default); ``--data`` that
            is neither registered set names nor a folder.
        AdaptationRefused: the fit was refused (message prefixed "refused:").
        InputError: a ValueError or FileNotFoundError of the library (e.g. no ``--out``).
    """
    from tir.engines.adapt import AdaptationRefused
    from tir.engines.bundle import default_bundle_path

    bundle = args.bundle or default_bundle_path()
    if bundle is None:
        raise ModelError("no shipped bundle found; pass --bundle DIR (from `tir train`)")
    modes = [m for m in (args.source, args.source_stats, args.measure) if m]
    if len(modes) != 1:
        raise UsageError("give exactly one of --source URI (adapt), --source-stats, --measure SETS")
    if args.source_stats and not args.bundle:
        raise UsageError("--source-stats rewrites the bundle's manifest in place: name the bundle with --bundle DIR "
                         "(copy the shipped one first if that is the one you mean)")
    if args.source_stats:  # rewritten in place: a read-only bundle was a traceback after the statistics' minutes
        from .cli import folder_problem

        problem = folder_problem(args.bundle)
        if Path(args.bundle).is_dir() and problem:
            raise UsageError(f"--source-stats rewrites {Path(args.bundle) / 'manifest.json'} in place, but {problem}; "
                             "copy the bundle to a writable folder first")
    try:
        if args.source_stats:
            result = _source_stats(bundle, args)
        elif args.measure:
            result = _measure(bundle, args)
        else:
            result = _adapt(bundle, args)
    except AdaptationRefused as exc:  # BundleError, DatasetError, SourceError, ... are TirErrors: tir.tools.cli
        raise AdaptationRefused(f"refused: {exc}") from exc
    except TirError:
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    if args.json:
        write_json(args.json, result, indent=1)  # checked at parse time (cli.output_file)
        print(f"wrote {args.json}")
    return 0


def _adapt(bundle, args) -> dict:
    from tir.engines.adapt import DEFAULT_FRAMES, MIN_FRAMES, AdaptationRefused, adapt_bundle
    from tir.engines.bundle import load_bundle
    from tir.engines.loading import normalizer_for

    if not args.out:
        raise ValueError("--out DIR is needed: the adapted bundle is written as a copy, the original is kept")
    from .cli import folder_problem

    problem = None if Path(args.out).exists() else folder_problem(args.out)  # an existing one: adapt_bundle says
    if problem:  # was found after collecting the frames (minutes of a live camera at --stride)
        raise AdaptationRefused(f"cannot write the copy {args.out}: {problem}; choose a writable new folder "
                                "(nothing was collected)")
    if args.frames < MIN_FRAMES:   # refused now, not after collecting them
        raise AdaptationRefused(f"--frames {args.frames} are too few to fit the adaptation: need at least "
                                f"{MIN_FRAMES} ({DEFAULT_FRAMES} recommended); nothing was collected")
    original = load_bundle(bundle)
    result = adapt_bundle(original.path, args.source, args.frames, args.out,
                          normalizer=normalizer_for(SimpleNamespace(bundle=original)), stride=args.stride,
                          backend=args.backend, threads=args.threads, balance=args.balanced,
                          input_flip=args.input_flip)
    fit = result["fit"]
    print(f"router decisions on the {fit['frames']} collected frames (mean best similarity "
          f"{fit['similarity_before']:.3f} -> {fit['similarity_after']:.3f}, map condition {fit['condition']:.1f}):")
    print(_histogram_table(result["before"], result["after"], fit.get("alignment", {})))
    print(f"adapted bundle written to {result['bundle'].path} (original kept in {original.path}); "
          f"run it with `tir run --model {result['bundle'].path}`")
    return {"bundle": str(result["bundle"].path), "before": result["before"], "after": result["after"],
            "fit": {k: v for k, v in fit.items() if k not in ("A", "b")}}


def _source_stats(bundle, args) -> dict:
    from tir.engines.adapt import add_source_stats
    from tir.engines.training.evaluate import load_clean

    from tir.engines.bundle import load_bundle
    from tir.engines.training.datasets import DATASETS

    names = [n.strip() for n in (args.data or "").split(",") if n.strip()]
    router_training = (load_bundle(bundle).router or {}).get("training") or {}
    if not names and router_training.get("sets"):
        names = [d["name"] for d in router_training["sets"]]  # the sets the router was trained on
    augment = variants = None
    if names and all(n in DATASETS for n in names):
        # the router's training frames as train_router_for_bundle drew them
        from tir.engines.training.train import router_train_frames

        frames, _ = router_train_frames(names, int(router_training.get("balance", 1)))
        where = ",".join(names) + " (train)"
        from tir.engines.training.domain import router_augment

        augment = router_augment(router_training)
        if router_training.get("sensor_variants"):
            from tir.engines.router import SENSOR_VARIANTS as variants
    else:
        if args.data and not Path(args.data).expanduser().is_dir():  # was "no such folder flir_raw16_mixed,x"
            unknown = [n for n in names if n not in DATASETS]
            raise UsageError(f"--data {args.data}: {', '.join(unknown)} is neither a registered set (known: "
                             f"{', '.join(DATASETS)}) nor a folder")
        frames, where = load_clean(args.data, "train")
    updated = add_source_stats(bundle, frames, where, threads=args.threads, augment=augment, variants=variants,
                               quantize=float(router_training.get("quantize", 0.0)), what=args.stats)
    result = {"bundle": str(updated.path), "data": where, "stats": args.stats}
    if args.stats in ("all", "adaptation"):
        stats = updated.router["adapt_source"]
        result["count"] = stats["count"]
        print(f"source statistics of {stats['count']} embeddings ({stats['frames']} frames of {where}, "
              f"{stats['draws']} draws per class) written to {Path(updated.path) / 'manifest.json'}")
    if args.stats in ("all", "contrast"):
        prior = updated.router["contrast_span"]
        result["contrast_span"] = prior
        print(f"contrast gate prior: median low-pass span {prior['median']:.3f} (p10 {prior['p10']:.3f}, "
              f"p90 {prior['p90']:.3f}) of {prior['frames']} frames of {where}, written to "
              f"{Path(updated.path) / 'manifest.json'}")
    return result


def _measure(bundle, args) -> dict:
    from tir.engines.training.adapt_measure import format_measurement, measure_adaptation

    result = measure_adaptation(bundle, args.measure, args.data_root, frames=args.frames, seed=args.seed, backend=args.backend,
                                threads=args.threads, balance=args.balanced)
    result["command"] = getattr(args, "command_line", "")
    print(format_measurement(result))
    return result
