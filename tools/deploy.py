"""``tir deploy``: show or set what a bundle runs (its manifest's ``deploy``; docs/student.md).

Without ``--set`` it prints, per task, the student's and the route's val PSNR (the manifest's
``student.metrics``, measured by ``tir distill`` on the val split), their difference and what
``deploy=auto`` runs at ``--margin-db``; nothing is written. With ``--set routes|student|auto``
it writes the manifest's ``deploy`` (and for ``auto`` the ``auto_deploy`` table) in place, or
into a copy with ``--out DIR`` (engines/bundle.py ``set_deploy``). A running ``tir run`` takes
an in-place change with ``POST /bundle/reload``. Example::

    tir deploy --bundle engines/bundles/edge                       # the table, nothing written
    tir deploy --bundle runs/s6/bundle --set auto --margin-db 0.3  # per task, by val PSNR
    tir deploy --bundle runs/s6/bundle --set auto --measure all    # per task, on the user's path (val)

``--measure SETS`` measures the table on the user's path instead (the per-camera evaluation of ``tir eval
--data``: live preprocessing, automatic routing, the gates and the tone alignment, once with the routes,
once with the student and once with the contrast-carrying tasks on ``tone``: the partner's network and
the camera's tone map; val split) and records it as ``student.metrics.user_val``; auto then chooses
on it, the cheapest within the margin of the best: tone, the student, the route
(engines/training/camera_eval.py ``user_path_table``, engines/bundle.py ``choose_auto_deploy``).
"""
from __future__ import annotations

from pathlib import Path

from tir.engines.bundle import DEFAULT_AUTO_MARGIN_DB, DEPLOY_CHOICES

from .cli import add_bundle_argument, folder_problem, refusing, thread_count


def add_arguments(parser) -> None:
    """Add ``tir deploy``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--set``, ``--margin-db`` (dB), ``--out``."""
    add_bundle_argument(parser, "model bundle folder (default: the shipped bundle)")
    parser.add_argument("--set", choices=DEPLOY_CHOICES, default=None, dest="deploy",
                        help="write the manifest's deploy: routes (every task its route), student (the distilled "
                             "student for every task) or auto (per task, the student where its val PSNR is at "
                             "least the route's minus --margin-db, else the route; with --measure also tone for "
                             "contrast-carrying tasks; recorded as auto_deploy) "
                             "(default: show the table only)")
    parser.add_argument("--margin-db", type=float, default=None, metavar="DB",
                        help="auto's margin in dB, 0 to 3 (wider: use --set student) (default: the bundle's recorded one, else "
                             f"{DEFAULT_AUTO_MARGIN_DB}, the INT8 accuracy gate's)")
    parser.add_argument("--measure", default=None, metavar="SETS",
                        help="with --set: measure student vs routes (and tone) on the user's path (tir eval --data "
                             "SETS on the val split, automatic routing, each deploy) and record it; auto chooses on it")
    parser.add_argument("--measure-frames", type=int, default=12, metavar="N",
                        help="with --measure: val frames per set (default 12)")
    parser.add_argument("--threads", type=thread_count, default=None, help="with --measure: ONNX Runtime threads")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="with --set: write a copy of the bundle there (a new folder) instead of "
                             "rewriting its manifest in place")


def main(args) -> int:
    """Run ``tir deploy`` with the parsed ``args``: print the per-task table, and with ``--set``
    write the bundle's deploy.

    Returns:
        0.

    Raises:
        ModelError: no ``--bundle`` and no shipped bundle.
        UsageError: ``--out`` without ``--set``.
        BundleError: the bundle fails its checks, has no student for student/auto, lacks the val
            numbers auto needs, a bad margin, or ``--out`` exists or cannot be written (checked before
            ``--measure`` runs; one line each, exit 2).
        UsageError: ``--measure`` sets with no clean target frames (e.g. lynred_nonuc).
    """
    from tir.edge.errors import ModelError, UsageError
    from tir.engines.bundle import (TONE, USER_VAL_KEY, BundleError, auto_deploy_entry, auto_deploy_numbers,
                                    default_bundle_path, load_bundle, set_deploy)

    path = args.bundle or default_bundle_path()
    if path is None:
        raise ModelError("no shipped bundle found; pass --bundle DIR")
    if args.out is not None and args.deploy is None:
        raise UsageError("--out DIR writes a copy with a new deploy; give --set routes|student|auto too")
    if args.measure is not None and args.deploy is None:
        raise UsageError("--measure SETS records a table the bundle's deploy is chosen on; give --set too (e.g. auto)")
    if args.measure_frames < 1:
        raise UsageError(f"--measure-frames must be ≥ 1, got {args.measure_frames}")
    bundle = load_bundle(path)
    if args.out is not None:  # found out after --measure's minutes before (the copy is written last)
        if Path(args.out).exists():  # copy_bundle's own words
            raise BundleError(f"{args.out} already exists; choose a new folder for the copy (the original stays "
                              f"in {bundle.path})")
        problem = folder_problem(args.out)
        if problem:
            raise BundleError(f"cannot write the copy {args.out}: {problem}; choose a writable new folder (nothing "
                              "was written)")
    elif args.deploy is not None:  # rewritten in place: a read-only bundle was found after --measure's minutes
        problem = folder_problem(bundle.path)
        if problem:
            raise BundleError(f"--set rewrites {bundle.path}/manifest.json in place, but {problem}; write a copy with "
                              "--out DIR, or make the folder writable")
    if args.deploy is not None:
        user_val = None
        if args.measure is not None:
            from tir.engines.training.camera_eval import user_path_table

            if bundle.student is None:
                raise UsageError(f"bundle {bundle.path} has no student to measure; distill one with `tir distill`")
            with refusing(ValueError):  # was a traceback
                user_val = user_path_table(bundle.path, args.measure, "val", args.measure_frames,
                                           threads=args.threads, margin_db=args.margin_db)
        bundle = set_deploy(bundle.path, args.deploy, margin_db=args.margin_db, out_dir=args.out, user_val=user_val)
        print(f"wrote {bundle.path}: deploy {bundle.deploy}")
    recorded = bundle.auto_deploy
    margin = args.margin_db if args.margin_db is not None else \
        (recorded or {}).get("margin_db", DEFAULT_AUTO_MARGIN_DB)
    print(f"bundle {bundle.path} ({bundle.name}): deploy {bundle.deploy}")
    if bundle.student is None:
        print("no student: every task runs its route (distill one with `tir distill`)")
        return 0
    student, route, _ = auto_deploy_numbers(bundle.student)
    user = (bundle.student.get("metrics") or {}).get(USER_VAL_KEY)
    table = auto_deploy_entry(bundle.manifest, margin)["tasks"] if recorded is None or args.margin_db is not None \
        else recorded["tasks"]
    source = "computed now" if recorded is None or args.margin_db is not None else "recorded in the manifest"
    where = (f"user's path, val, sets {', '.join(user.get('sets') or [])}" if isinstance(user, dict)
             else "tir distill's val numbers")
    tone = (user or {}).get(TONE) if isinstance(user, dict) else None
    tone = tone if isinstance(tone, dict) else {}
    rule = "tone where tone − best ≥ −{m:g} dB, else " if tone else ""
    print(f"auto at {margin:g} dB ({source}): {rule.format(m=margin)}the student where student − route ≥ "
          f"−{margin:g} dB ({where})")
    print(f"{'task':<10} {'student':>8} {'route':>8} {'Δ dB':>7}" + (f" {'tone':>8}" if tone else "") + "  auto")

    def cell(v):
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    for task in bundle.tasks:
        s, r = student.get(task), route.get(task)
        delta = f"{s - r:+7.2f}" if all(isinstance(v, (int, float)) for v in (s, r)) else f"{'-':>7}"
        print(f"{task:<10} {cell(s)} {cell(r)} {delta}" + (f" {cell(tone.get(task))}" if tone else "")
              + f"  {table.get(task, '-')}")
    return 0
