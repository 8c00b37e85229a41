"""``tir learn``: add one new degradation task to an existing bundle (open-world expansion).

The bundle's ``model.pt`` (architecture + weights of the open-world model, written by
``tir train``; sha256-checked against the manifest's ``checkpoint`` entry and loaded with
``torch.load(weights_only=True)``, so it can hold tensors and plain containers only) is expanded with one new branch, initialised from the existing single-
degradation branch (or the clean branch) that restores the new degradation best on val;
every earlier parameter stays frozen, so the earlier routes give bit-identical outputs.
The new branch is trained, pruned and fine-tuned like the others, then every route is
exported again and the bundle rewritten (``--out``, default: in place). The router is kept
as it was; it does not know the new task until it is retrained.

Example::

    tir learn --bundle engines/bundles/edge --spec vignetting --name vignetting --out /tmp/edge+v
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("tir.learn")


def add_arguments(parser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle folder written by tir train")
    parser.add_argument("--spec", required=True,
                        help="degradation spec: a JSON file or a built-in name (see engines/specs)")
    parser.add_argument("--name", required=True, help="name of the new task/route")
    parser.add_argument("--out", default=None, help="bundle folder to write (default: --bundle, in place)")
    parser.add_argument("--work-dir", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--data", default=None, help="RoadScene folder (train/val splits beside it)")
    parser.add_argument("--init", default="auto",
                        help="branch to start from: auto (best on val), clean, or a task name")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--finetune-steps", type=int, default=250)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prune-p", type=float, default=None)
    parser.add_argument("--prune-samples", type=int, default=32)


def prepare_work_dir(bundle, work: Path, spec, name: str) -> dict:
    """Seed ``work`` so the resumable trainer sees every earlier stage as done."""
    import io

    import torch

    from tir.engines.bundle import read_verified
    from tir.engines.continual import OpenWorldModel

    info = bundle.manifest.get("checkpoint")
    if not info:
        raise ValueError(
            f"bundle {bundle.path} lists no training checkpoint in its manifest.json; tir learn needs the "
            "open-world model's weights, hash-checked. Bundles written by `tir train` carry it; re-run "
            "tir train (or tir learn on a bundle it wrote)")
    # The bytes hashed are the bytes loaded, and only tensors and plain containers are
    # unpickled (weights_only=True): a tampered model.pt is refused before it can run code.
    data = read_verified(bundle, info["file"])
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's UnpicklingError names the refused global
        raise ValueError(f"{bundle.path / info['file']}: not a weights-only checkpoint ({exc}); "
                         "re-save it with tensors and plain containers only") from None
    model = OpenWorldModel.from_checkpoint(ckpt)
    if name in model.tasks or name == "clean":
        raise ValueError(f"bundle already has a route {name!r}; routes: {', '.join(model.tasks)}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.pt").write_bytes(data)
    old = model.tasks
    done = ["pretrain"] + [f"{t}-{k}" for t in old for k in ("train", "prune", "finetune", "field")]
    specs = dict(ckpt.get("specs") or {})
    specs[name] = json.loads(spec.to_json())
    metrics = {t["name"]: t.get("metrics", {}) for t in bundle.manifest["tasks"]}
    state = {"settings": {}, "done": done, "metrics": metrics, "specs": specs,
             "started": bundle.manifest.get("training", {}).get("started"),
             "wall_s": dict(bundle.manifest.get("training", {}).get("wall_s", {}))}
    if bundle.router_path is not None:
        (work / "router").mkdir(exist_ok=True)
        shutil.copyfile(bundle.router_path, work / "router" / bundle.router_path.name)
        state["router"] = dict(bundle.router, file=bundle.router_path.name)
    (work / "state.json").write_text(json.dumps(state, indent=2))
    return {"tasks": old, "model": model}


def choose_init(trainer, name: str) -> str:
    """The single-degradation (or clean) branch whose route restores ``name`` best on val."""
    import numpy as np

    from tir.engines.continual import CLEAN
    from tir.engines.metrics import psnr
    from tir.engines.train import evaluate_route

    model = trainer.model
    candidates = [t for t in model.tasks if t not in model.parts]
    val = trainer.val_set(name)[:8]
    clean = trainer.val_clean[:8]
    scores = {t: evaluate_route(model, t, val, clean) for t in candidates}
    scores[CLEAN] = float(np.mean([psnr(a, b) for a, b in zip(val, clean)]))
    best = max(scores, key=scores.get)
    log.info("init for %s: %s (val PSNR per route: %s)", name, best,
             ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return best


def main(args) -> int:
    from tir.engines.bundle import BundleError, load_bundle
    from tir.engines.degrade import DegradationError, DegradationSpec, load_spec
    from tir.engines.train import ContinualTrainer, TrainSettings

    try:
        bundle = load_bundle(args.bundle)
        base = load_spec(args.spec)
        spec = DegradationSpec(name=args.name, steps=base.steps, description=base.description)
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="tir-learn-"))
        seeded = prepare_work_dir(bundle, work, spec, args.name)
        out = Path(args.out or args.bundle)
        settings = TrainSettings(
            preset=seeded["model"].cfg.name, tasks=tuple(seeded["tasks"]) + (args.name,),
            steps=args.steps, finetune_steps=args.finetune_steps, crop=args.crop, batch=args.batch,
            lr=args.lr, seed=args.seed, threads=args.threads, data=args.data, group=args.group,
            prune_p=args.prune_p, prune_samples=args.prune_samples, router=False, bundle_dir=str(out),
            command=f"tir learn --bundle {args.bundle} --spec {args.spec} --name {args.name}")
        trainer = ContinualTrainer(settings, work)
        if args.init == "auto":
            init = choose_init(trainer, args.name)
        else:
            init = args.init
        trainer.s.init_from = {args.name: init}
        if bundle.router_path is not None:
            trainer.s.router = False
        trainer.run()
    except (BundleError, DegradationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    m = trainer.state["metrics"][args.name]
    print(f"learned {args.name!r} from {init!r}: val PSNR degraded {m['val_psnr_degraded']:.2f} -> "
          f"{m['val_psnr_finetuned']:.2f} dB (unpruned {m['val_psnr_trained']:.2f}); bundle: {out}")
    return 0
