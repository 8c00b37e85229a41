"""``tir eval``: a bundle, its router and the baselines on clean frames with seeded degradations.

Prints the per-task PSNR/SSIM table, the continual table (model after each task), route costs
and timings, router accuracy with its confusion matrix and the unknown rate on unseen
degradations; writes JSON (``--json``) and a bar chart (``--plot``). See docs/eval.md.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from tir.edge.errors import Interrupted, ModelError, TirError, UsageError

from .cli import (EVERY_RUN, add_backend_argument, add_bundle_argument, add_json_argument, add_threads_argument, number,
                  plot_file, refuse_ignored_options, refusing, write_json)

log = logging.getLogger("tir.eval")

BASELINES = ("classical", "sequential", "joint")


def add_arguments(parser) -> None:
    """Add ``tir eval``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--router``, ``--data``, ``--split``, ``--leave-out`` / ``--leave-out-only``, ``--work-dir``,
    ``--router-steps``, ``--no-true-routes``, ``--no-contrast-gate``, ``--seed``, ``--baselines``, ``--sequential``,
    ``--joint``, ``--tasks``, ``--unseen``, ``--max-frames``, ``--backend``, ``--threads``,
    ``--json``, ``--plot``.
    """
    add_bundle_argument(parser, "model bundle folder (default: the shipped bundle; 'none' to skip our model)")
    parser.add_argument("--router", default=None,
                        help="router folder/JSON from train_router, evaluated instead of the bundle's router")
    parser.add_argument("--data", default=None,
                        help="SET[,SET...] registered camera sets (engines/training/datasets.py; 'all' = every set) "
                             "and/or folders of one camera's frames (8-bit or 16-bit, any size): the per-camera "
                             "table through the live preprocessing and automatic routing, what tir run delivers "
                             "(default: the RoadScene split, methods compared with baselines)")
    parser.add_argument("--compare", action="store_true",
                        help="with --data DIR: the methods comparison (bundle vs baselines, frames at the model's "
                             "size, docs/eval.md) on the folder instead of the per-camera table")
    parser.add_argument("--no-reference", action="store_true",
                        help="with --data DIR: the folder holds real degraded frames without a clean target (e.g. a "
                             "sensor without NUC): report where they are routed and the column FPN before/after")
    parser.add_argument("--split", default=None, choices=("train", "val", "test"),
                        help="split of the registered sets (default: test); a folder has none (all its frames)")
    parser.add_argument("--leave-out", default=None, metavar="SET[,SET]",
                        help="leave-one-camera-out: per set, train a router on the other sets, measure this "
                             "one before/after tir adapt (engines/training/leave_out.py); needs --work-dir")
    parser.add_argument("--leave-out-only", default=None, metavar="SET[,SET]",
                        help="with --leave-out: leave out only these sets (each trained on all the others)")
    parser.add_argument("--work-dir", default=None, help="with --leave-out: where the routers are trained")
    parser.add_argument("--router-steps", type=number(int, 1, what="a number of steps"), default=1500,
                        help="with --leave-out: router steps")
    parser.add_argument("--router-draws", type=number(int, 1, what="a number of draws"), default=2,
                        help="with --leave-out: degradation draws per frame and class (tir train --router-draws)")
    parser.add_argument("--router-quantize", type=number(float, 0, 1, what="a share"), default=0.0, metavar="P",
                        help="with --leave-out: share of degraded router frames re-quantised to 8 bits "
                             "(tir train --router-quantize)")
    parser.add_argument("--router-balance", type=number(int, 1, what="a repeat count"), default=1, metavar="K",
                        help="with --leave-out: repeat a small camera's frames up to K times (tir train --router-balance)")
    parser.add_argument("--router-only", action="store_true",
                        help="with --data: route every frame the live way but restore nothing (the router's "
                             "accuracy per camera in a fraction of the time; no PSNR, no plot)")
    for gate, name in (("contrast", "contrast"), ("fpn", "FPN"), ("blur", "blur")):
        parser.add_argument(f"--no-{gate}-gate", action="store_true",
                            help=f"with --data: score the router's verdicts without the {name} gate "
                                 f"(engines/{gate}_gate.py; on in tir run), to measure what it does")
    parser.add_argument("--no-tone-align", action="store_true",
                        help="with --data: keep a contrast- or noise-carrying route's output as it is, without "
                             "mapping its extremes onto the camera's (engines/contrast_gate.py, engines/restorer.py "
                             "plan; on in tir run), to measure what it does")
    parser.add_argument("--sequence", action="store_true",
                        help="with --data: stream each camera's frames through tir run's schedule (router every 8 "
                             "frames, hysteresis 3): clean, then each task followed by clean; per segment the share "
                             "of frames the right route restored, how many frames it took, and the dB "
                             "(engines/training/sequence_eval.py)")
    parser.add_argument("--segment-frames", type=number(int, 1, what="a number of frames"), default=None,
                        metavar="N", help="with --sequence: frames per segment (default 48)")
    parser.add_argument("--no-true-routes", action="store_true",
                        help="per-camera table: skip the forced true-route column (faster)")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed (default 0)")
    parser.add_argument("--baselines", default="classical",
                        help=f"comma list from {','.join(BASELINES)} or 'none' (default: classical)")
    parser.add_argument("--sequential", default=None, help="folder with sequential-after-<task>.onnx")
    parser.add_argument("--joint", default=None, help="joint.onnx (or its folder)")
    parser.add_argument("--tasks", default=None, help="comma list of tasks (default: the bundle's)")
    parser.add_argument("--unseen", default="jpeg", help="unseen degradations for the router's unknown rate")
    parser.add_argument("--max-frames", type=number(int, 1, what="a number of frames"), default=None,
                        help="evaluate the first N frames only")
    add_backend_argument(parser, "engine backend (auto, onnxruntime, torch, tensorrt)")
    add_threads_argument(parser, help="intra-op threads per engine")
    add_json_argument(parser, "write the results as JSON")
    parser.add_argument("--plot", default=None, metavar="PATH", type=plot_file,
                        help="write a picture: the bar chart (with --sequence: the timeline); .png, .svg, .pdf ...")


#: where the options of :data:`EVAL_READS` act, by tag (the words of a refusal)
EVAL_ACTS_IN = {
    "compare": "the methods comparison (no --data, or --data DIR --compare)",
    "roadscene": "the methods comparison on the RoadScene split (no --data)",
    "cameras": "the per-camera table (--data SET[,SET] or --data DIR)",
    "restores": "the per-camera table (--data SET[,SET] or --data DIR) without --router-only (which restores nothing)",
    "split-sets": "registered sets with train/val/test split lists (--data NAME)",
    "sequence": "--sequence",
    "leave-out": "--leave-out",
}
_RUNS = ("compare", "cameras", "sequence")
#: ``tir eval`` option -> the kinds of run that read it (tags of :data:`EVAL_ACTS_IN`); every option
#: of :func:`add_arguments` is here (tests/test_eval.py checks), and one given to a run that does not
#: read it is refused (:func:`tir.tools.cli.refuse_ignored_options`): ``--sequence --baselines none``,
#: ``--data DIR --split val`` ran without a word, the option doing nothing
EVAL_READS = {
    "bundle": EVERY_RUN, "router": {"compare"}, "data": set(_RUNS), "compare": {"compare"},
    "no_reference": {"cameras"}, "split": {"roadscene", "split-sets"}, "leave_out": {"leave-out"},
    "leave_out_only": {"leave-out"}, "work_dir": {"leave-out"}, "router_steps": {"leave-out"},
    "router_draws": {"leave-out"}, "router_quantize": {"leave-out"}, "router_balance": {"leave-out"},
    "router_only": {"cameras"}, "no_contrast_gate": {"cameras", "sequence"}, "no_fpn_gate": {"cameras", "sequence"},
    "no_blur_gate": {"cameras", "sequence"}, "no_tone_align": {"restores", "sequence"}, "sequence": {"sequence"},
    "segment_frames": {"sequence"}, "no_true_routes": {"restores"}, "seed": EVERY_RUN, "baselines": {"compare"},
    "sequential": {"compare"}, "joint": {"compare"}, "tasks": {"compare"}, "unseen": {"compare"},
    "max_frames": EVERY_RUN, "backend": set(_RUNS), "threads": EVERY_RUN, "json": EVERY_RUN, "plot": set(_RUNS),
}
_HINTS = {"split": "a folder of frames has no train/val/test split lists, all its frames are scored; give a "
                   "registered set by name, --data NAME, to score one split"}


def refuse_ignored(args, run: str) -> None:
    """Refuse the options this run of ``tir eval`` does not read (:data:`EVAL_READS`).

    Args:
        args: the parsed options; ``args.data`` already the registered set names where ``run`` is
            ``cameras`` or ``sequence``.
        run: ``compare`` (the methods comparison), ``cameras`` (the per-camera table),
            ``sequence`` or ``leave-out``.

    Raises:
        UsageError: one line per such option, naming it and where it acts.
    """
    tags = {run}
    if run == "cameras" and not args.router_only:
        tags.add("restores")   # --router-only restores nothing: no tone alignment, no true-route column
    if run == "compare" and not args.data:
        tags.add("roadscene")
    if run in ("cameras", "sequence"):
        from tir.engines.training.datasets import DatasetError, dataset, parse_sets

        try:
            if any(dataset(n).splits for n in parse_sets(args.data)):
                tags.add("split-sets")
        except DatasetError:
            tags.add("split-sets")   # the run itself says what is wrong with --data
    # the folder hint only where the run is on folders: --leave-out's sets are registered ones
    hints = {"split": "--leave-out trains on the other sets' train splits and measures each left-out set's test "
                      "split"} if run == "leave-out" else dict(_HINTS)
    if "split-sets" not in tags and "roadscene" not in tags and args.split and args.data:
        same = _registered_twin(args.data)
        if same:
            hints["split"] += f"; {same[0]} is the folder of the registered set {same[1]}: --data {same[1]} --split " \
                              f"{args.split}"
    said = {"compare": "tir eval: the methods comparison", "cameras": "tir eval: the per-camera table",
            "sequence": "tir eval --sequence", "leave-out": "tir eval --leave-out"}[run]
    if "split-sets" not in tags and run in ("cameras", "sequence"):
        said += " of folders without split lists"
    if run == "cameras" and args.router_only:
        said += " with --router-only"
    elif run == "compare" and args.data:
        said += " on a folder"
    refuse_ignored_options(args, add_arguments, EVAL_READS, tags, said, EVAL_ACTS_IN, hints)


def _registered_twin(data: str):
    """(folder, set name) where a folder of ``--data`` (a path, or the ``dir:`` name it was registered
    under) is the folder of a registered set with split lists (``--data /data/hit_uav`` for
    ``hit_uav``), else None."""
    from tir.engines.training.datasets import DATASETS, DatasetError, data_root

    try:
        root = data_root()
    except DatasetError:
        return None
    folders = [DATASETS[t].folder if t in DATASETS else t for t in (x.strip() for x in data.split(",")) if t]
    for folder in folders:
        here = Path(folder).expanduser().resolve()
        for ds in DATASETS.values():
            if ds.splits and here == (root / ds.folder).resolve():
                return str(folder), ds.name
    return None


def _split(text):
    return [] if not text or text == "none" else [t.strip() for t in text.split(",") if t.strip()]


def main(args) -> int:
    """Run ``tir eval`` with the parsed ``args``: the per-task PSNR (dB) / SSIM report on clean
    frames with seeded degradations, the per-camera table (``--data SET[,SET]``) or the
    leave-one-out study (``--leave-out``); ``--json`` and ``--plot`` write files.

    Returns:
        0.

    Raises:
        UsageError: an unknown baseline, or a library ValueError / FileNotFoundError.
        ModelError: no ``--bundle`` and no installed bundle.
        DatasetError: ``--data`` names neither a folder nor registered sets.
        Interrupted: Ctrl-C (exit 130); with ``--json`` what was measured before it is written
            there first, marked ``"partial": true`` (:func:`_keeping`).
    """
    from tir.engines.bundle import default_bundle_path
    from tir.engines.training.evaluate import evaluate, format_report, plot_report

    baselines = _split(args.baselines)
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise UsageError(f"unknown baselines {bad}; choose from {', '.join(BASELINES)}")
    if args.segment_frames is not None and not args.sequence:
        raise UsageError("--segment-frames sets the length of --sequence's segments: add --sequence")
    if args.sequence and not args.data:
        raise UsageError("--sequence streams a camera's frames: give them with --data SET[,SET] or --data DIR")
    if args.sequence and (args.compare or args.leave_out or args.no_reference):
        raise UsageError("--sequence streams the frames of --data SET[,SET] (sets or folders of clean frames); "
                         "it does not combine with --compare, --leave-out or --no-reference")
    bundle = args.bundle
    if bundle is None:
        bundle = default_bundle_path()
        if bundle is None:
            raise ModelError("no shipped bundle found; pass --bundle DIR (from `tir train`) or "
                             "--bundle none to evaluate baselines/router only")
    elif bundle == "none":
        bundle = None
    if args.leave_out:
        return _leave_out(args, bundle)
    if args.data:
        _check_data_items(args.data)   # a missing folder is named before any option is judged by the run it implies
    if args.data and not args.compare:
        names = _camera_sets(args.data, args.no_reference)
        if names is not None:
            args.data = ",".join(names)
            return _cameras(args, bundle)
    if args.no_reference:
        raise UsageError("--no-reference applies to the per-camera table (--data DIR without --compare)")
    if args.data and _is_sets(args.data):
        return _cameras(args, bundle)
    partial: dict = {}
    refuse_ignored(args, "compare")
    with refusing(), _keeping(args, partial, "methods"):  # BundleError, DegradationError, EngineError: TirErrors
        result = evaluate(bundle=bundle, data=args.data, split=args.split or "test", seed=args.seed,
                          baselines=baselines, sequential=args.sequential, joint=args.joint,
                          router=args.router, max_frames=args.max_frames, backend=args.backend,
                          threads=args.threads, tasks=_split(args.tasks) or None,
                          unseen=_split(args.unseen), out=partial)
    result["command"] = _command()
    print(format_report(result))
    _write_json(args, result)
    if args.plot:
        print(f"wrote {plot_report(result, _plot_path(args))}")
    return 0


def _check_data_items(text: str) -> None:
    """Refuse a ``--data`` item that is neither a registered set nor a folder, naming what it is.

    Why: such an item was taken for the methods comparison's folder, so the options of the
    per-camera table were judged against that run first: ``--data /path/typo --router-only`` said
    "--router-only does nothing here (... the methods comparison on a folder) ... drop it", and
    ``--sequence`` "does nothing here: it acts in --sequence".

    Raises:
        DatasetError: an unknown set name (the known ones listed), a path that does not exist
            (close names suggested, edge/sources/file.py ``describe_missing``), or a file, FIFO,
            device or socket where a folder is needed.
    """
    import stat

    from tir.edge.regular import file_kind
    from tir.edge.sources.file import describe_missing
    from tir.engines.training.datasets import ALL, DATASETS, DatasetError, parse_sets

    if os.path.isdir(text):
        return   # one folder, whatever its name holds (a comma too)
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        if item in DATASETS or item == ALL or os.path.isdir(item):
            continue
        if os.path.lexists(item):
            try:
                mode = os.stat(item).st_mode
            except OSError as exc:   # a link to nothing, or a loop
                raise DatasetError(f"{item} is a link that leads to no folder ({exc.strerror}): give the folder "
                                   "that holds the camera's frames") from None
            kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
            raise DatasetError(f"{item} is {kind}{'' if kind == 'a file' else ', not a folder'}: give the folder "
                               "that holds the camera's frames")
        if os.sep not in item and not item.startswith("~"):
            try:   # a name, not a path: say which sets exist
                parse_sets(item)
            except DatasetError as exc:
                raise DatasetError(f"{exc} (or give a folder of clean frames)") from exc
        raise DatasetError(f"--data: {describe_missing(item)}")


def _camera_sets(text: str, no_reference: bool = False):
    """``--data`` as camera sets: each item a registered name or a folder (registered on the fly,
    engines/training/datasets.py ``register_folder``); None when an item is neither (the caller
    then says what exists).

    Raises:
        DatasetError: an item is a file.
        UsageError: ``no_reference`` with a registered set of clean frames (or ``all``): the option
            acts on folders only (``--data hit_uav --no-reference`` printed the ordinary table).
    """
    from tir.engines.training.datasets import DATASETS, register_folder

    items = [t.strip() for t in text.split(",") if t.strip()]
    files = [t for t in items if os.path.isfile(t)]
    if files:
        from tir.engines.training.datasets import DatasetError

        raise DatasetError(f"{files[0]} is a file: give the folder that holds the camera's frames")
    if not items or not all(t in DATASETS or t == "all" or os.path.isdir(t) for t in items):
        return None
    clean_sets = [t for t in items if no_reference and (t == "all" or (t in DATASETS and DATASETS[t].clean))]
    if clean_sets:   # scored against their own clean frames whatever --no-reference says
        raise UsageError(f"--no-reference does nothing for {', '.join(clean_sets)}: a registered set of clean frames is "
                         "scored against them (lynred_nonuc, real degraded frames, is scored without a reference "
                         "already); --no-reference is for a folder of real degraded frames (--data DIR): drop "
                         "--no-reference, or give only such folders")
    return [register_folder(t, clean=not no_reference) if os.path.isdir(t) and t not in DATASETS else t
            for t in items]


def _is_sets(text: str) -> bool:
    from tir.engines.training.datasets import ALL, DATASETS

    names = [n.strip() for n in text.split(",") if n.strip()]
    return bool(names) and all(n in DATASETS or n == ALL for n in names)


def _cameras(args, bundle) -> int:
    """``--data SET[,SET]``: the per-camera table (engines/training/camera_eval.py)."""
    from tir.engines.training.camera_eval import evaluate_cameras, format_cameras

    if bundle is None:
        raise UsageError("the per-camera table needs a bundle (--bundle DIR)")
    if args.router:   # the table and --sequence route with the bundle's own router: the option did nothing
        raise UsageError("--router replaces the router of the RoadScene methods comparison only; the per-camera "
                         "table routes with the bundle's own: give a bundle with that router (--bundle DIR)")
    if args.router_only and args.plot:
        raise UsageError("--router-only restores nothing, so there is nothing to plot: drop --plot")
    if args.sequence:
        return _sequence(args, bundle)
    refuse_ignored(args, "cameras")
    partial: dict = {}
    with refusing(ValueError), _keeping(args, partial, "sets", _set_names(args.data)):
        result = evaluate_cameras(bundle, args.data, split=args.split or "test", seed=args.seed,
                                  max_frames=args.max_frames, backend=args.backend, threads=args.threads,
                                  true_routes=not args.no_true_routes, router_only=args.router_only,
                                  contrast_gate=not args.no_contrast_gate, fpn_gate=not args.no_fpn_gate,
                                  blur_gate=not args.no_blur_gate, tone_align=not args.no_tone_align, out=partial)
    result["command"] = _command()
    print(format_cameras(result))
    _write_json(args, result)
    if args.plot:
        from tir.engines.training.camera_eval import plot_cameras

        print(f"wrote {plot_cameras(result, _plot_path(args))}")
        from pathlib import Path

        from tir.engines.training.camera_eval import before_after

        for name, r in result["sets"].items():
            if "router" not in r:  # no clean target: the picture is the evidence
                pic = Path(args.plot).with_name(f"{Path(args.plot).stem}-{name}.png")
                skipped: list = []   # frames of another bit depth: skipped as the scoring skips them
                with refusing(ValueError):
                    print(f"wrote {before_after(bundle, name, pic, threads=args.threads, dropped=skipped)}")
                if skipped:
                    print(f"{name}: the plot skipped {len(skipped)} frame(s) of another bit depth, as tir run "
                          f"skips them: {', '.join(Path(f).name for f, _ in skipped)}")
    return 0


def _sequence(args, bundle) -> int:
    """``--data SET[,SET] --sequence``: each camera as one stream on tir run's schedule
    (engines/training/sequence_eval.py)."""
    from tir.engines.training.sequence_eval import (DEFAULT_SEGMENT, evaluate_sequences, format_sequence,
                                                    plot_sequence)

    if args.router_only or args.no_true_routes:
        raise UsageError("--sequence restores every frame of the stream and has no true-route column: drop "
                         f"{'--router-only' if args.router_only else '--no-true-routes'}")
    refuse_ignored(args, "sequence")
    from tir.engines.bundle import load_bundle

    with refusing():
        loaded = load_bundle(bundle)   # loaded (and checked) once: every set's Restorer takes it
    if loaded.router is None:
        raise UsageError(f"--sequence measures automatic routing, and the bundle {bundle} has no router")
    partial: dict = {}
    with refusing(ValueError), _keeping(args, partial, "sets", _set_names(args.data)):
        result = evaluate_sequences(loaded, args.data, split=args.split or "test", seed=args.seed, max_frames=args.max_frames,
                                    segment=args.segment_frames or DEFAULT_SEGMENT, backend=args.backend,
                                    threads=args.threads, contrast_gate=not args.no_contrast_gate,
                                    fpn_gate=not args.no_fpn_gate, blur_gate=not args.no_blur_gate,
                                    tone_align=not args.no_tone_align, out=partial)
    result["command"] = _command()
    if result["skipped"]:
        print(f"skipped (no clean frames to score against): {', '.join(result['skipped'])}")
    if not result["sets"]:
        raise UsageError("--sequence: none of the sets holds clean frames")
    print(format_sequence(result["sets"]))
    _write_json(args, result)
    if args.plot:
        print(f"wrote {plot_sequence(result, _plot_path(args))}")
    return 0


def _leave_out(args, bundle) -> int:
    from tir.engines.training.leave_out import format_leave_out, leave_one_out

    if bundle is None or not args.work_dir:
        raise UsageError("--leave-out needs a bundle and --work-dir DIR")
    refuse_ignored(args, "leave-out")
    command = _command()
    partial: dict = {}
    only = [n.strip() for n in args.leave_out_only.split(",")] if args.leave_out_only else None
    with refusing(ValueError), _keeping(args, partial, "sets", only or _set_names(args.leave_out)):
        result = leave_one_out(bundle, args.leave_out, args.work_dir, steps=args.router_steps, seed=args.seed,
                               threads=args.threads or 2, max_frames=args.max_frames, command=command,
                               draws=args.router_draws, quantize=args.router_quantize, balance=args.router_balance,
                               only=only, out=partial)
    print(format_leave_out(result))
    _write_json(args, result)
    return 0


def _set_names(text: str) -> list:
    """The set names ``--data`` / ``--leave-out`` stand for (``all`` expanded), for the list of
    what an interrupted run did not measure; empty where they do not parse (the run says why)."""
    from tir.engines.training.datasets import DatasetError, parse_sets

    try:
        return list(parse_sets(text))
    except (DatasetError, ValueError):
        return []


@contextmanager
def _keeping(args, partial: dict, key: str, todo=()):
    """Turn Ctrl-C (KeyboardInterrupt) inside the block into :class:`~tir.edge.errors.Interrupted`
    (exit 130) after writing what was measured so far to ``--json``: ``partial`` (the result dict the
    library fills as it goes) marked ``"partial": true, "interrupted": true``, with ``"done"`` (the
    entries of ``partial[key]``: sets or methods finished) and ``"not_done"`` (the names of ``todo``
    not finished). Ctrl-C lost every set measured before it.

    Raises:
        Interrupted: the message says what was measured and where it was written (or that
            nothing was, without --json).
    """
    try:
        yield
    except KeyboardInterrupt:
        done = list(partial.get(key) or {})
        if key == "methods":   # the methods comparison says what it planned (engines/training/evaluate.py)
            todo = partial.pop("planned", None) or todo
            if partial.get("router") is not None:
                done.append("router")
        skipped = set(partial.get("skipped") or ())
        not_done = [n for n in todo if n not in done and n not in skipped]
        what = f"the {key} measured before it ({', '.join(done) or 'none'})"
        if not args.json:
            raise Interrupted(f"interrupted (Ctrl-C), {what}: nothing written (give --json PATH to keep "
                              "what is measured)") from None
        partial.update({"partial": True, "interrupted": True, "done": done, "not_done": not_done,
                        "command": _command()})
        try:
            write_json(args.json, partial, indent=1)
        except TirError as exc:
            raise Interrupted(f"interrupted (Ctrl-C), {what}: writing them to {args.json} failed: {exc}") from None
        raise Interrupted(f"interrupted (Ctrl-C): wrote {what} to {args.json}, marked \"partial\": true"
                          + (f"; not measured: {', '.join(not_done)}" if not_done else "")) from None


def _command() -> str:
    """The command line as typed (recorded in the JSON next to the numbers)."""
    return "tir eval " + " ".join(sys.argv[sys.argv.index("eval") + 1:]) if "eval" in sys.argv else ""


def _write_json(args, result: dict) -> None:
    if args.json:  # checked at parse time (cli.output_file); its folders are made here
        write_json(args.json, result, indent=1)
        print(f"\nwrote {args.json}")


def _plot_path(args) -> str:
    """``--plot PATH`` (checked at parse time, cli.output_file) with its folders made: the plot
    writers (matplotlib's savefig) do not make them."""
    from pathlib import Path

    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    return args.plot
