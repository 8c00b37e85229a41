"""``tir train``: the whole continual sequence (pretrain, per task train → prune → fine-tune,
router, ONNX export, bundle), resumable from ``--work-dir``.

Example (the shipped bundle, see docs/model.md)::

    tir train --preset edge --work-dir /work/runs/edge --out engines/bundles/edge
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from tir.edge.errors import UsageError

from .cli import GROUP, PRUNE_P, PRUNE_SAMPLES, number, refusing, thread_count

log = logging.getLogger("tir.train")


def add_arguments(parser) -> None:
    """Add ``tir train``'s options to ``parser`` (an argparse.ArgumentParser): ``--preset``,
    ``--data``, ``--tasks``, ``--work-dir``, ``--out``, the step counts (``--steps``,
    ``--compound-steps``, ``--pretrain-steps``, ``--finetune-steps``, ``--field-steps``),
    ``--crop`` (px), ``--batch``, ``--lr``, ``--seed``, ``--threads``, the pruning options
    (``--group``, ``--prune-p``, ``--target-reduction``, ``--prune-samples``), the router options
    (``--no-router``, ``--router-*``, ``--randomize`` / ``--no-randomize``), ``--baseline``,
    ``--router-only``, ``--bundle``, ``--max-frames``.
    """
    from tir.engines.degrade import TASKS
    from tir.engines.models import MODELS

    presets = [e.name.split(":", 1)[1] for e in MODELS if e.family == "ecmrnet"]
    parser.add_argument("--preset", default="edge", choices=presets,
                        help="network preset (default edge): " + "; ".join(
                            f"{e.name.split(':', 1)[1]}: {e.help}" for e in MODELS if e.family == "ecmrnet"))
    parser.add_argument("--data", default=None,
                        help="SET[,SET...] registered data sets (roadscene, hit_uav, m3svd_magnity, anti_uav, "
                             "chips_lepton35, flir_raw16_mixed; see engines/training/datasets.py) or a RoadScene folder "
                             "(default: roadscene); train split trains, val split chooses")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated tasks in learning order (default {','.join(TASKS)})")
    parser.add_argument("--work-dir", required=True,
                        help="checkpoints, state.json and train.log; rerun with the same dir to resume")
    parser.add_argument("--out", default=None, help="bundle folder to write (default WORK_DIR/bundle)")
    steps = number(int, 0, what="a number of steps")
    parser.add_argument("--steps", type=steps, default=1500, help="training steps per single task")
    parser.add_argument("--compound-steps", type=steps, default=None,
                        help="training steps per compound task (default --steps)")
    parser.add_argument("--pretrain-steps", type=steps, default=600, help="clean→clean pretraining steps")
    parser.add_argument("--finetune-steps", type=steps, default=500, help="fine-tuning steps after pruning")
    parser.add_argument("--field-steps", type=steps, default=600,
                        help="whole-frame steps of each route's field head (presets with a field head)")
    parser.add_argument("--crop", type=number(int, 1, what="a crop side in px"), default=128, help="training crop size in pixels")
    parser.add_argument("--batch", type=number(int, 1, what="a batch size"), default=12, help="batch size")
    parser.add_argument("--lr", type=number(float, 0, low_open=True, what="a learning rate"), default=2e-3, help="peak learning rate (AdamW, cosine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=thread_count, default=2, help="torch CPU threads")
    parser.add_argument("--group", type=GROUP, default=8,
                        help="channels per pruning group (8 keeps widths multiples of 8)")
    parser.add_argument("--prune-p", type=PRUNE_P, default=None,
                        help="SE survival threshold p (default: smallest p reaching --target-reduction)")
    parser.add_argument("--target-reduction", type=number(float, 0, 1, low_open=True, what="a fraction of MACs"), default=0.40,
                        help="branch MAC reduction the automatic p aims for")
    parser.add_argument("--prune-samples", type=PRUNE_SAMPLES, default=32, help="frames N for the SE picks")
    parser.add_argument("--no-router", action="store_true", help="skip the router stage")
    parser.add_argument("--router-steps", type=number(int, 1, what="a number of steps"), default=1500)
    parser.add_argument("--router-from", default=None,
                        help="reuse a router trained by train_router: folder with router.json + ONNX; "
                             "its unknown thresholds are re-chosen on this run's val frames")
    parser.add_argument("--baseline", choices=("sequential", "joint"), default=None,
                        help="train a comparison network instead (tir eval --sequential/--joint): one "
                             "edge network fine-tuned task after task, or trained on all tasks at once; "
                             "--steps is then the steps per task, files go to --work-dir")
    parser.add_argument("--router-only", action="store_true",
                        help="train only a new router for --bundle on --data and write a copy of the bundle to --out")
    parser.add_argument("--bundle", default=None, help="with --router-only: the bundle (default: the shipped one)")
    parser.add_argument("--router-draws", type=number(int, 1, what="a number of draws"), default=3, help="degradation draws per frame and class (router)")
    parser.add_argument("--max-frames", type=number(int, 1, what="a number of frames"), default=None,
                        help="with --router-only: at most N frames per set and split (quick runs)")
    parser.add_argument("--router-quantize", type=number(float, 0, 1, what="a share"), default=0.0, metavar="P",
                        help="with --router-only: share of degraded frames re-quantised to 8 bits, as an 8-bit "
                             "camera or file delivers them (0-1, default 0)")
    parser.add_argument("--router-balance", type=number(int, 1, what="a repeat count"), default=1, metavar="K",
                        help="with --router-only: repeat a smaller set's train frames up to K times towards the "
                             "largest set's count (each repeat randomised anew; default 1: no repeats)")
    parser.add_argument("--router-extras", default=None, metavar="EXTRA[,EXTRA]",
                        help="with --router-only: what else the clean frames' domain randomisation varies "
                             "(engines/training/domain.py EXTRAS: optics = lens softness or camera sharpening, "
                             "shading = a smooth radiometric field, floor = row/column and correlated sensor floor; "
                             "default none)")
    parser.add_argument("--randomize", action="store_true",
                        help="full training: domain-randomise the clean pool of every route (engines/training/domain.py)")
    parser.add_argument("--no-randomize", action="store_true",
                        help="no domain randomisation of the clean frames (engines/training/domain.py)")
    parser.add_argument("--router-keep-thresholds", action="store_true",
                        help="with --router-from: keep the router's own thresholds")


def main(args) -> int:
    """Run ``tir train`` with the parsed ``args``: the whole continual sequence into a bundle
    (resumable from ``--work-dir``), or a network baseline (``--baseline``), or a new router for
    a bundle (``--router-only``); prints val PSNR (dB) and GMAC per task.

    Returns:
        0 done.

    Raises:
        UsageError: an option this kind of run would ignore (:func:`check_options`), or a
            ValueError of the library (a bad value); DegradationError, DatasetError, BundleError
            as raised. Each exit 2, one line ``tir train: error: ...`` on stderr through ``tir``
            (tools/cli.py); they were logged as ``HH:MM:SS ERROR tir.tools.train: ...``.
    """
    from tir.engines.training.train import ContinualTrainer, TrainSettings

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    from pathlib import Path

    check_options(args)

    if args.baseline:
        return _train_baseline(args, tasks)
    if args.router_only:
        return _train_router_only(args)

    out = args.out or str(Path(args.work_dir) / "bundle")
    settings = TrainSettings(
        preset=args.preset, tasks=tasks, steps=args.steps, compound_steps=args.compound_steps,
        pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
        field_steps=args.field_steps, crop=args.crop,
        batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads, data=args.data,
        group=args.group, prune_p=args.prune_p, target_reduction=args.target_reduction,
        prune_samples=args.prune_samples, router=not args.no_router, router_steps=args.router_steps,
        router_from=args.router_from, router_recalibrate=not args.router_keep_thresholds,
        randomize=args.randomize,
        bundle_dir=out, command=args.command_line)
    t0 = time.monotonic()
    with refusing(ValueError):   # a DegradationError is a UsageError already
        trainer = ContinualTrainer(settings, args.work_dir)
        state = trainer.run()
    print(f"finished in {time.monotonic() - t0:.0f} s; bundle: {out}")
    print(f"{'task':>9} {'degraded':>9} {'trained':>8} {'pruned':>7} {'tuned':>7} {'MAC cut':>8} {'GMAC':>6}")
    for task in tasks:
        m = state["metrics"].get(task, {})
        print(f"{task:>9} {m.get('val_psnr_degraded', float('nan')):9.2f} "
              f"{m.get('val_psnr_trained', float('nan')):8.2f} {m.get('val_psnr_pruned', float('nan')):7.2f} "
              f"{m.get('val_psnr_finetuned', float('nan')):7.2f} "
              f"{100 * m.get('branch_mac_reduction', float('nan')):7.0f}% {m.get('gmac', float('nan')):6.2f}")
    return 0


#: options only ``--router-only`` reads (attribute, argparse default, flag): a full run or a
#: baseline ignored them, silently (``tir train --max-frames 4`` still trained on every frame)
ROUTER_ONLY_OPTIONS = (("bundle", None, "--bundle"), ("max_frames", None, "--max-frames"),
                       ("router_quantize", 0.0, "--router-quantize"), ("router_balance", 1, "--router-balance"),
                       ("router_draws", 3, "--router-draws"), ("router_extras", None, "--router-extras"))


def check_options(args) -> None:
    """Refuse options the chosen kind of run would ignore.

    Raises:
        UsageError: a :data:`ROUTER_ONLY_OPTIONS` option without ``--router-only``,
            ``--router-keep-thresholds`` without ``--router-from``, an unknown ``--router-extras``
            name, or ``--router-extras`` with ``--no-randomize``.
    """
    from tir.edge.errors import UsageError
    from tir.engines.training.domain import check_extras

    try:
        extras = check_extras(router_extras(args))
    except ValueError as exc:
        raise UsageError(f"--router-extras: {exc}") from None
    if extras and getattr(args, "no_randomize", False):
        raise UsageError("--router-extras adds to the domain randomisation, which --no-randomize turns off; drop one")

    if not args.router_only:
        given = [flag for attr, default, flag in ROUTER_ONLY_OPTIONS if getattr(args, attr, default) != default]
        if given:
            raise UsageError(f"{', '.join(given)} only act with --router-only (a new router for an existing bundle); "
                             "this run would ignore them: drop them, or add --router-only")
    if getattr(args, "router_keep_thresholds", False) and not args.router_from:
        raise UsageError("--router-keep-thresholds keeps the thresholds of the router --router-from names; give "
                         "--router-from DIR too, or drop it")


def router_extras(args) -> tuple:
    """``--router-extras`` as a tuple of names (unchecked)."""
    return tuple(e.strip() for e in (getattr(args, "router_extras", "") or "").split(",") if e.strip())


def _train_router_only(args) -> int:
    from tir.engines.bundle import default_bundle_path
    from tir.engines.training.train import train_router_for_bundle

    bundle = args.bundle or default_bundle_path()
    if not args.out:
        raise UsageError("--router-only writes a copy of the bundle: pass --out DIR")
    t0 = time.monotonic()
    with refusing(ValueError):   # DatasetError and BundleError are TirErrors already
        out = train_router_for_bundle(bundle, args.out, args.data or "roadscene", args.work_dir,
                                      steps=args.router_steps, seed=args.seed, threads=args.threads,
                                      draws=args.router_draws, randomize=not args.no_randomize,
                                      max_frames=args.max_frames, quantize=args.router_quantize,
                                      balance=args.router_balance, extras=router_extras(args),
                                      command=args.command_line)
    import json

    info = json.loads((out / "manifest.json").read_text())["router"]["metrics"]
    print(f"finished in {time.monotonic() - t0:.0f} s; bundle with the new router: {out}")
    print(f"val: accuracy {100 * info['val_accuracy']:.1f} %, tasks strict "
          f"{100 * info['val_accuracy_tasks_strict']:.1f} %, false unknown {100 * info['val_false_unknown']:.1f} %")
    return 0


def _train_baseline(args, tasks) -> int:
    from tir.engines import degrade as deg
    from tir.engines.training.baselines import train_network_baseline

    t0 = time.monotonic()
    with refusing(ValueError, FileNotFoundError):
        train = deg.load_roadscene("train", args.data)
        val = deg.load_roadscene("val", args.data)[:8]
        res = train_network_baseline(args.baseline, train, args.work_dir, tasks=list(tasks),
                                     steps_per_task=args.steps, crop=args.crop, batch=args.batch,
                                     lr=args.lr, seed=args.seed, threads=args.threads,
                                     preset=args.preset, eval_clean=val, command=args.command_line)
    path = Path(args.work_dir) / f"{args.baseline}.json"      # written by train_network_baseline
    print(f"finished in {time.monotonic() - t0:.0f} s; {args.baseline} network: "
          f"{Path(args.work_dir) / res['file']}; summary: {path}")
    final = res.get("psnr") or (res.get("forgetting_psnr") or {}).get(tasks[-1], {})
    for task, value in final.items():
        print(f"{task:>9} {value:7.2f} dB (first 8 val frames)")
    return 0
