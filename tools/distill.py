"""``tir distill``: distil a bundle's routes into one prompt-conditioned student (issue 11).

Teachers are the bundle's routes (its verified ``model.pt``); the student, the losses and the
stages are described in tir.engines.training.distill. Writes a copy of the bundle with the student added
(``student.onnx``, the manifest's ``student`` entry and ``deploy``) to ``--out``; resumable
from ``--work-dir``. Example (docs/student.md)::

    tir distill --bundle /work/runs/edge5/bundle --work-dir /work/runs/student --out /work/runs/student/bundle
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from tir.edge.errors import OutputFailed, TirError, UsageError

from tir.engines.bundle import DEFAULT_AUTO_MARGIN_DB

from .cli import number, thread_count

log = logging.getLogger("tir.distill")


def add_arguments(parser) -> None:
    """Add ``tir distill``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--out``, ``--work-dir``, ``--init-from``, ``--init-weights``, ``--task-weights``, ``--preset``, ``--data``, ``--steps``,
    ``--max-minutes``, ``--field-steps``, ``--field-orientations``, ``--crop`` (px), ``--batch``, ``--lr``, ``--max-frames``,
    ``--val-limit``, ``--val-every``, the loss weights ``--w-cpr`` / ``--w-inst`` / ``--w-feat``,
    ``--calibrate-steps``, ``--real-data``, ``--deploy``, ``--margin-db`` (dB), ``--eval-split``,
    ``--seed``, ``--threads``.
    """
    parser.add_argument("--bundle", required=True, help="teacher bundle (needs its model.pt, written by tir train)")
    parser.add_argument("--out", required=True, help="bundle folder to write: the teacher bundle plus the student")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints, state.json and distill.log (default OUT.work); rerun to resume")
    parser.add_argument("--init-from", default="auto",
                        help="single-degradation teacher route the student starts as (default auto: noise, "
                             "else the first single task; its pruned widths must stay within 1.2 GMAC), "
                             "none: the --preset network from scratch, student: the teacher bundle's own "
                             "student (fine-tuning; needs --init-weights), or onnx: the teacher bundle's own "
                             "student.onnx fine-tuned as it is (no checkpoint needed) against the bundle's route "
                             "ONNX on ONNX Runtime, on whole frames, with a loss in dB per --crop-px tile "
                             "(engines/training/student_tune.py; uses --steps, --max-minutes, --crop (the tile), "
                             "--batch (whole frames per step, default 2), --lr (default 1e-4), --task-weights, "
                             "--max-frames, --val-limit (default 24), --val-every, --data, --seed, --threads, --deploy, "
                             "--margin-db, --anchor, --train-heads, --train-prompts, --prompts-only)")
    parser.add_argument("--init-weights", default=None, metavar="CKPT",
                        help="with --init-from student: the torch checkpoint (student.pt of the tir distill work "
                             "dir) of the teacher bundle's student; the bundle holds the student only as ONNX, so "
                             "the checkpoint is used only if it reproduces the bundle's student.onnx (within 1e-4)")
    parser.add_argument("--task-weights", default=None, type=_task_weights, metavar="T=W[,T=W...]",
                        help="relative sampling weights of the tasks, e.g. CB=3,blur=2,contrast=2 (tasks not "
                             "named: 1; default: every task equally); the clean prompt keeps its 10 %% share. "
                             "Names must be routes of the teachers; recorded in state.json and the manifest")
    parser.add_argument("--preset", default="edge",
                        help="student preset for --init-from none: edge (default, 1.05 GMAC) or tiny; its "
                             "prompt length is used either way")
    parser.add_argument("--data", default=None,
                        help="SET[,SET...] registered data sets (default: the teacher bundle's training data)")
    parser.add_argument("--steps", type=number(int, 0, what="a number of steps"), default=2000,
                        help="distillation steps (0: none, with --init-from student: only the later stages, "
                             "e.g. --field-steps, run on the bundle's student)")
    parser.add_argument("--max-minutes", type=number(float, 0, low_open=True, what="a number of minutes"), default=None,
                        help="wall-time budget of the distill stage: it ends at --steps or after this many "
                             "minutes, whichever comes first, with the whole learning-rate schedule")
    parser.add_argument("--field-steps", type=number(int, 0, what="a number of steps"), default=300, help="whole-frame steps of the student's field head")
    parser.add_argument("--field-orientations", choices=("stored", "all"), default="stored",
                        help="the field head's whole frames: as stored (default), or all: every orientation a "
                             "camera can deliver, upright half the steps, judged on val as stored and in portrait "
                             "(for cameras mounted in portrait or upside down; costs 0.1-1 dB upright)")
    parser.add_argument("--crop", type=number(int, 32, what="a crop side in px"), default=128, help="training crop size in pixels (a multiple of 32)")
    parser.add_argument("--batch", type=number(int, 1, what="a batch size"), default=None,
                        help="crops per step (default 8); with --init-from onnx whole frames per step (default 2)")
    parser.add_argument("--lr", type=number(float, 0, low_open=True, what="a learning rate"), default=None,
                        help="peak learning rate (AdamW, cosine; default 2e-3, with --init-from onnx Adam at 1e-4)")
    parser.add_argument("--max-frames", type=number(int, 1, what="a number of frames"), default=64, help="whole frames per task pool")
    parser.add_argument("--val-limit", type=number(int, 1, what="a number of frames"), default=None,
                        help="val frames per task for the checkpoint choice (default 16; with --init-from onnx 24: "
                             "12 frames missed a 0.24 dB CBN loss that 24 saw, docs/student.md Session 17)")
    parser.add_argument("--train-heads", action="store_true",
                        help="with --init-from onnx: train the student's tone and field heads too (default frozen). "
                             "The fine-tuning runs on whole frames, so the heads see the whole-frame statistics they "
                             "are built on; on flat (sky) frames the student's blur error is mostly low-frequency "
                             "(docs/student.md)")
    parser.add_argument("--train-prompts", default="none", type=_anchor, metavar="auto|none|T[,T...]",
                        help="with --init-from onnx: train these slots' rows of the student's prompt table "
                             "(auto: the tasks not anchored). The prompt is p = w·P, so a changed row moves the "
                             "output only where that slot has weight; every other one-hot prompt gives the "
                             "shipped output exactly, while the tone head, the field head and every FiLM are "
                             "steered per task by the row (docs/student.md, Session 19)")
    parser.add_argument("--prompts-only", action="store_true",
                        help="with --train-prompts: train no conv, only the prompt rows")
    parser.add_argument("--anchor", default="none", type=_anchor, metavar="auto|none|T[,T...]",
                        help="with --init-from onnx: tasks whose teacher is the shipped student's own output "
                             "(self-distillation) instead of the route, so that teaching other tasks cannot pull "
                             "them away from it; auto: the tasks whose recorded student val PSNR is at least the "
                             "route's (manifest student.metrics), none (default): every task learns its route")
    parser.add_argument("--val-every", type=number(int, 1, what="a number of steps"), default=500, help="steps between val evaluations")
    parser.add_argument("--w-cpr", type=number(float, 0, what="a loss weight"), default=0.05, help="contrastive prompt regularisation weight (0: off)")
    parser.add_argument("--w-inst", type=number(float, 0, what="a loss weight"), default=0.05, help="instance-grained contrastive weight")
    parser.add_argument("--w-feat", type=number(float, 0, what="a loss weight"), default=0.2, help="feature distillation weight")
    parser.add_argument("--calibrate-steps", type=number(int, 0, what="a number of steps"), default=0,
                        help="stage 2: real-domain calibration steps on unpaired real frames (0: off)")
    parser.add_argument("--real-data", default="lynred_nonuc",
                        help="stage 2: registered sets of real degraded frames (default lynred_nonuc)")
    parser.add_argument("--deploy", choices=("routes", "student", "auto"), default="routes",
                        help="what the written bundle runs by default (default routes: the student is "
                             "there, `--deploy student` on tir run/bench picks it; auto: per task, the student "
                             "where its val PSNR is within --margin-db of the route's, else the route)")
    parser.add_argument("--margin-db", type=float, default=DEFAULT_AUTO_MARGIN_DB, metavar="DB",
                        help="the auto_deploy table (recorded whatever --deploy is): a task runs the student "
                             "when its val PSNR is at least the route's minus this many dB, 0 to 3 (default "
                             f"{DEFAULT_AUTO_MARGIN_DB}, the INT8 gate's margin)")
    parser.add_argument("--eval-split", choices=("val", "test"), default=None,
                        help="evaluate the finished student and its teachers on every frame of this split "
                             "and print the table; trains nothing, writes no bundle (test: once, at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=thread_count, default=2, help="torch CPU threads")


def _anchor(text: str):
    """argparse type of ``--anchor``: "auto", [] for "none", else the list of task names."""
    text = text.strip()
    if text in ("auto", "none"):
        return text if text == "auto" else []
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        import argparse

        raise argparse.ArgumentTypeError(f"--anchor {text!r}: auto, none or task names separated by commas")
    return names


def _task_weights(text: str):
    """argparse type of ``--task-weights``: the parsed {task: weight} (distill.parse_task_weights)."""
    import argparse

    from tir.engines.training.distill import parse_task_weights

    try:
        return parse_task_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextmanager
def _refused():
    """Inside it, a ValueError that is not a TirError (a library check) becomes UsageError
    (exit 2) and an OSError (a full disk, a folder turned unwritable) OutputFailed (exit 3), each
    one line on stderr through ``tir`` (tools/cli.py); a TirError passes unchanged."""
    try:
        yield
    except TirError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise OutputFailed(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; free space or "
                           "choose another --work-dir / --out") from exc


def check_out(out, bundle_path) -> None:
    """Refuse, before any training, an ``--out`` that :func:`tir.engines.bundle.add_student` would
    refuse only when the student is written (hours later): it may be missing, the teacher bundle
    itself (updated in place) or an earlier output of the same teachers (every route equal by
    the manifests' sha256: a rerun).

    Raises:
        BundleError: ``bundle_path`` is not a bundle, or ``out`` exists and is none of those.
    """
    from tir.engines.bundle import BundleError, check_student_out, load_bundle

    try:
        teachers = load_bundle(bundle_path)
    except BundleError as exc:  # it was reported as an --out problem ("--out incomplete bundle B: ...")
        raise BundleError(f"--bundle {exc} (nothing was trained or written)") from None
    try:
        check_student_out(teachers, out)
    except BundleError as exc:
        raise BundleError(f"--out {exc} (nothing was trained or written)") from None


def check_names(args) -> None:
    """Refuse, before any data is loaded, a ``--preset`` that names no student preset, an
    ``--init-from`` that is neither auto, none, student, onnx nor a route of ``--bundle``, and a
    ``--data`` or ``--real-data`` set that is not registered.

    Raises:
        ValueError: an unknown preset or ``--init-from`` (the message lists what exists).
        DatasetError: an unknown set (the message lists the registered ones).
        BundleError: ``--bundle`` is not a bundle.
    """
    from tir.engines.bundle import load_bundle
    from tir.engines.training import datasets as ds
    from tir.engines.training.models.student import get_student_config

    get_student_config(args.preset)
    routes = load_bundle(args.bundle).tasks
    if args.init_from not in ("auto", "none", "student", "onnx", *routes):
        raise ValueError(f"--init-from {args.init_from!r} is none of auto, none, student, onnx or a route of the "
                         f"teachers ({', '.join(routes)})")
    for option, value in (("--data", args.data), ("--real-data", args.real_data)):
        for name in (value or "").split(","):
            if name.strip():
                ds.dataset(name.strip())


def main(args) -> int:
    """Run ``tir distill`` with the parsed ``args``: train the student (resumable from the work
    dir) and write the bundle with it, or with ``--eval-split`` print a finished student's PSNR
    (dB) per task against the teachers'.

    Returns:
        0 done.

    Raises:
        UsageError: (exit 2) ``--crop`` not a multiple of 32, a ``--margin-db`` outside 0-3 dB,
            no finished student for ``--eval-split``, or another bad value (a ValueError), before
            any training where it can be known then.
        BundleError, DatasetError: (exit 2) an ``--out`` holding something else
            (:func:`check_out`), a teacher bundle or a set that cannot be used.
        OutputFailed: (exit 3) the work dir or the bundle cannot be written (a full disk).
        ``tir`` (tools/cli.py) prints each as one line ``tir distill: error: ...`` on stderr (they
        were printed on stdout).
    """
    from tir.engines.bundle import choose_auto_deploy
    from tir.engines.training.distill import DistillSettings, Distiller

    if args.crop % 32:
        raise UsageError(f"--crop {args.crop} must be a multiple of 32 (the student's spatial multiple)")
    with _refused():   # a bad --margin-db, --out, name or set is refused now, not after loading data or training
        choose_auto_deploy({}, {}, [], args.margin_db)
        if not args.eval_split:
            check_out(args.out, args.bundle)
        check_names(args)
    work = Path(args.work_dir) if args.work_dir else Path(str(args.out).rstrip("/") + ".work")
    if (args.anchor or args.train_heads or args.train_prompts or args.prompts_only) and args.init_from != "onnx":
        raise UsageError("--anchor, --train-heads, --train-prompts and --prompts-only apply only to --init-from onnx "
                         "(the fine-tuning of the shipped student.onnx)")
    if args.prompts_only and not args.train_prompts:
        raise UsageError("--prompts-only needs --train-prompts (otherwise nothing is trained)")
    if args.init_from == "onnx":
        return _tune_onnx(args, work)
    settings = DistillSettings(bundle=str(args.bundle), preset=args.preset, init_from=args.init_from,
                               init_weights=args.init_weights, task_weights=args.task_weights, steps=args.steps,
                               field_steps=args.field_steps, field_orientations=args.field_orientations,
                               crop=args.crop, batch=DistillSettings.batch if args.batch is None else args.batch,
                               lr=DistillSettings.lr if args.lr is None else args.lr,
                               seed=args.seed, threads=args.threads, max_minutes=args.max_minutes, data=args.data, max_frames=args.max_frames,
                               val_limit=DistillSettings.val_limit if args.val_limit is None else args.val_limit,
                               val_every=args.val_every, w_cpr=args.w_cpr,
                               w_inst=args.w_inst, w_feat=args.w_feat, calibrate_steps=args.calibrate_steps,
                               real_data=args.real_data,
                               command=getattr(args, "command_line", ""))
    with _refused():
        distiller = Distiller(settings, work)
        if args.eval_split:
            if "distill" not in distiller.state["done"]:
                raise UsageError(f"{work} holds no finished student; run tir distill without --eval-split first")
            result = distiller.evaluate_split(args.eval_split)
            print(f"{args.eval_split} split, {result['frames']} frames, student step {result['step']}")
            print(f"{'task':<10} {'student':>8} {'teacher':>8}  (PSNR dB)")
            for task, value in result["student"].items():
                print(f"{task:<10} {value:8.2f} {result['teacher'][task]:8.2f}")
            return 0
        state = distiller.run()
        bundle = distiller.write_bundle(args.out, deploy=args.deploy, margin_db=args.margin_db)
    m = state["metrics"]
    print(f"student: {m['gmac_640x512']:.3f} GMAC at 640x512, {m['params']} parameters")
    print(f"{'task':<10} {'student':>8} {'teacher':>8}  (val PSNR dB)")
    for task, value in m["val_psnr"].items():
        print(f"{task:<10} {value:8.2f} {m['teacher_val_psnr'][task]:8.2f}")
    auto = bundle.auto_deploy
    if auto is not None:
        chosen = ", ".join(f"{t}: {v}" for t, v in auto["tasks"].items())
        print(f"auto_deploy at {auto['margin_db']:g} dB: {chosen}")
    print(f"bundle with the student: {bundle.path} (deploy: {bundle.deploy})")
    return 0


def _tune_onnx(args, work: Path) -> int:
    """``--init-from onnx``: fine-tune the teacher bundle's own ``student.onnx`` against its route
    ONNX on whole frames with the loss in dB per ``--crop``-px tile (tir.engines.training.student_tune),
    write ``--out`` and print
    the val table (every val frame, ONNX Runtime, dB).

    Raises:
        UsageError: (exit 2) ``--init-weights``, ``--eval-split`` or ``--calibrate-steps`` given
            (they belong to the torch-checkpoint path), or a bad value of the tuner.
    """
    from tir.engines.training.student_tune import TuneSettings, StudentTuner

    for option, given in (("--init-weights", args.init_weights), ("--eval-split", args.eval_split),
                          ("--calibrate-steps", args.calibrate_steps)):
        if given:
            raise UsageError(f"{option} does not apply to --init-from onnx (the student is fine-tuned from its "
                             "ONNX graph; no torch checkpoint, no later stages)")
    settings = TuneSettings(bundle=str(args.bundle), data=args.data, steps=args.steps, max_minutes=args.max_minutes,
                            tile=args.crop, batch=TuneSettings.batch if args.batch is None else args.batch,
                            lr=TuneSettings.lr if args.lr is None else args.lr,
                            task_weights=args.task_weights, max_frames=args.max_frames,
                            val_limit=TuneSettings.val_limit if args.val_limit is None else args.val_limit,
                            val_every=args.val_every, seed=args.seed, threads=args.threads, anchor=args.anchor,
                            frozen=() if args.train_heads else TuneSettings.frozen,
                            prompt_slots=args.train_prompts, convs=not args.prompts_only,
                            command=getattr(args, "command_line", ""))
    with _refused():
        tuner = StudentTuner(settings, work)
        state = tuner.train(progress=True)
        bundle = tuner.write(args.out, deploy=args.deploy, margin_db=args.margin_db)
    m = state["metrics"]
    best = state["best"]
    print(f"student fine-tuned from its ONNX: {state['steps']} steps, chose step {best['step']} "
          f"(val mean {best['mean']:.2f} dB on {len(tuner.val_clean)} frames per task)")
    print(f"{'task':<10} {'student':>8} {'teacher':>8}  (val PSNR dB, {m['val_frames']} frames)")
    for task, value in m["val_psnr"].items():
        print(f"{task:<10} {value:8.2f} {m['teacher_val_psnr'][task]:8.2f}")
    print(f"bundle with the student: {bundle.path} (deploy: {bundle.deploy})")
    return 0
