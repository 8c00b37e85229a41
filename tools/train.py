"""``tir train``: the whole continual sequence (pretrain, per task train → prune → fine-tune,
router, ONNX export, bundle), resumable from ``--work-dir``.

Example (the shipped bundle, see docs/model.md)::

    tir train --preset edge --work-dir /work/runs/edge --out engines/bundles/edge
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("tir.train")


def add_arguments(parser) -> None:
    from tir.engines.degrade import TASKS

    parser.add_argument("--preset", default="edge", help="network preset: edge (default) or tiny")
    parser.add_argument("--data", default=None,
                        help="RoadScene folder (default ../shared/data/roadscene-ir or $TIR_DATA); "
                             "splits are read from roadscene-ir-{train,val}.txt beside it")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated tasks in learning order (default {','.join(TASKS)})")
    parser.add_argument("--work-dir", required=True,
                        help="checkpoints, state.json and train.log; rerun with the same dir to resume")
    parser.add_argument("--out", default=None, help="bundle folder to write (default WORK_DIR/bundle)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per single task")
    parser.add_argument("--compound-steps", type=int, default=None,
                        help="training steps per compound task (default --steps)")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="clean→clean pretraining steps")
    parser.add_argument("--finetune-steps", type=int, default=500, help="fine-tuning steps after pruning")
    parser.add_argument("--field-steps", type=int, default=600,
                        help="whole-frame steps of each route's field head (presets with a field head)")
    parser.add_argument("--crop", type=int, default=128, help="training crop size in pixels")
    parser.add_argument("--batch", type=int, default=12, help="batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--group", type=int, default=8,
                        help="channels per pruning group (8 keeps widths multiples of 8)")
    parser.add_argument("--prune-p", type=float, default=None,
                        help="SE survival threshold p (default: smallest p reaching --target-reduction)")
    parser.add_argument("--target-reduction", type=float, default=0.40,
                        help="branch MAC reduction the automatic p aims for")
    parser.add_argument("--prune-samples", type=int, default=32, help="frames N for the SE picks")
    parser.add_argument("--no-router", action="store_true", help="skip the router stage")
    parser.add_argument("--router-steps", type=int, default=1500)
    parser.add_argument("--router-from", default=None,
                        help="reuse a router trained by train_router: folder with router.json + ONNX; "
                             "its unknown thresholds are re-chosen on this run's val frames")
    parser.add_argument("--baseline", choices=("sequential", "joint"), default=None,
                        help="train a comparison network instead (tir eval --sequential/--joint): one "
                             "edge network fine-tuned task after task, or trained on all tasks at once; "
                             "--steps is then the steps per task, files go to --work-dir")
    parser.add_argument("--router-keep-thresholds", action="store_true",
                        help="with --router-from: keep the router's own thresholds")


def main(args) -> int:
    from tir.engines.degrade import DegradationError
    from tir.engines.train import ContinualTrainer, TrainSettings

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    from pathlib import Path

    if args.baseline:
        return _train_baseline(args, tasks)

    out = args.out or str(Path(args.work_dir) / "bundle")
    settings = TrainSettings(
        preset=args.preset, tasks=tasks, steps=args.steps, compound_steps=args.compound_steps,
        pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
        field_steps=args.field_steps, crop=args.crop,
        batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads, data=args.data,
        group=args.group, prune_p=args.prune_p, target_reduction=args.target_reduction,
        prune_samples=args.prune_samples, router=not args.no_router, router_steps=args.router_steps,
        router_from=args.router_from, router_recalibrate=not args.router_keep_thresholds,
        bundle_dir=out, command=args.command_line)
    t0 = time.monotonic()
    try:
        trainer = ContinualTrainer(settings, args.work_dir)
        state = trainer.run()
    except (DegradationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    print(f"finished in {time.monotonic() - t0:.0f} s; bundle: {out}")
    print(f"{'task':>9} {'degraded':>9} {'trained':>8} {'pruned':>7} {'tuned':>7} {'MAC cut':>8} {'GMAC':>6}")
    for task in tasks:
        m = state["metrics"].get(task, {})
        print(f"{task:>9} {m.get('val_psnr_degraded', float('nan')):9.2f} "
              f"{m.get('val_psnr_trained', float('nan')):8.2f} {m.get('val_psnr_pruned', float('nan')):7.2f} "
              f"{m.get('val_psnr_finetuned', float('nan')):7.2f} "
              f"{100 * m.get('branch_mac_reduction', float('nan')):7.0f}% {m.get('gmac', float('nan')):6.2f}")
    return 0


def _train_baseline(args, tasks) -> int:
    from tir.engines import degrade as deg
    from tir.engines.baselines import train_network_baseline
    from tir.engines.degrade import DegradationError

    t0 = time.monotonic()
    try:
        train = deg.load_roadscene("train", args.data)
        val = deg.load_roadscene("val", args.data)[:8]
        res = train_network_baseline(args.baseline, train, args.work_dir, tasks=list(tasks),
                                     steps_per_task=args.steps, crop=args.crop, batch=args.batch,
                                     lr=args.lr, seed=args.seed, threads=args.threads,
                                     preset=args.preset, eval_clean=val, command=args.command_line)
    except (DegradationError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    path = Path(args.work_dir) / f"{args.baseline}.json"      # written by train_network_baseline
    print(f"finished in {time.monotonic() - t0:.0f} s; {args.baseline} network: "
          f"{Path(args.work_dir) / res['file']}; summary: {path}")
    final = res.get("psnr") or (res.get("forgetting_psnr") or {}).get(tasks[-1], {})
    for task, value in final.items():
        print(f"{task:>9} {value:7.2f} dB (first 8 val frames)")
    return 0
