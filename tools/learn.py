"""``tir learn``: add one new degradation task to an existing bundle (open-world expansion).

The bundle's ``model.pt`` (architecture + weights of the open-world model, written by
``tir train``; sha256-checked against the manifest's ``checkpoint`` entry and loaded with
``torch.load(weights_only=True)``, so it can hold tensors and plain containers only) is expanded
with one new branch, initialised from the existing single-degradation branch (or the clean
branch) that restores the new degradation best on val; every earlier parameter stays frozen, so
the earlier routes give bit-identical outputs. Stages, each written to ``--work-dir`` when it
ends (a rerun with the same ``--work-dir`` continues after the last finished stage):

1. expand + train the new branch (``--steps``), 2. structural-entropy prune + fine-tune
(``--finetune-steps``), 3. the whole-frame field head (presets with one, ``--field-steps``),
4. ONNX export of every route and the bundle, 5. the router learns the new class: one new
codebook row (the prototype of val frames degraded with the spec, its unknown threshold by the
same percentile rule as the trained classes; engines/training/router_train.py
``add_router_class``), earlier rows unchanged; the share of each earlier class's val frames the new
row takes is measured and written into the manifest (``router.added``) and the log, 6. INT8 calibration of the new route
with the accuracy gate (calibration/gate.py, ONNX Runtime U8S8 QDQ vs fp32 on held-out val frames
degraded with the spec): the route entry says ``precision`` int8, or fp32 with the gate's reason.
The manifest's ``version`` is bumped, so ``tir run --watch-bundle`` picks the new bundle up.

``--spec`` takes a spec name, a JSON spec, or a proposal written by ``tir discover``
(``proposed-*.json``); a proposal that did not fit (no ``steps``) is refused with its reason.

Example::

    tir learn --bundle engines/bundles/edge --spec /tmp/disc/proposed-group-0.json --name shading \\
        --out /tmp/edge+shading --work-dir /tmp/learn-shading --steps 300
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from tir.edge import jsontext

from .cli import GROUP, PRUNE_P, PRUNE_SAMPLES, number, thread_count

log = logging.getLogger("tir.learn")


def add_arguments(parser) -> None:
    """Add ``tir learn``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--spec`` (required), ``--name``, ``--out``, ``--work-dir``, ``--data``, ``--init``,
    ``--steps``, ``--finetune-steps``, ``--field-steps``, ``--crop`` (px), ``--batch``, ``--lr``,
    ``--seed``, ``--threads``, ``--group``, ``--prune-p``, ``--prune-samples``,
    ``--router-draws``, ``--gate-frames``.
    """
    parser.add_argument("--bundle", default=None,
                        help="bundle folder written by tir train (default: the proposal's bundle, else the "
                             "installed one)")
    parser.add_argument("--spec", required=True,
                        help="degradation spec: a JSON file, a tir discover proposal, or a built-in name "
                             "(see engines/specs)")
    parser.add_argument("--name", default=None,
                        help="name of the new task/route (default: the spec's name)")
    parser.add_argument("--out", default=None, help="bundle folder to write (default: --bundle, in place)")
    parser.add_argument("--work-dir", default=None,
                        help="working folder; a rerun with the same one continues (default: a temporary one)")
    parser.add_argument("--data", default=None, help="RoadScene folder (train/val splits beside it)")
    parser.add_argument("--init", default="auto",
                        help="branch to start from: auto (best on val), clean, or a task name")
    steps = number(int, 0, what="a number of steps")
    parser.add_argument("--steps", type=steps, default=1000)
    parser.add_argument("--finetune-steps", type=steps, default=250)
    parser.add_argument("--field-steps", type=steps, default=300)
    parser.add_argument("--crop", type=number(int, 1, what="a crop side in px"), default=128)
    parser.add_argument("--batch", type=number(int, 1, what="a batch size"), default=10)
    parser.add_argument("--lr", type=number(float, 0, low_open=True, what="a learning rate"), default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=thread_count, default=2)
    parser.add_argument("--group", type=GROUP, default=8, help="channels per pruning group (as tir train)")
    parser.add_argument("--prune-p", type=PRUNE_P, default=None,
                        help="SE survival threshold p in (0, 1] (as tir train; default: the smallest p reaching the target reduction)")
    parser.add_argument("--prune-samples", type=PRUNE_SAMPLES, default=32, help="frames N for the SE picks")
    parser.add_argument("--router-draws", type=number(int, 1, what="a number of draws"), default=4,
                        help="degradation draws per val frame for the new codebook row and the stolen-frame "
                             "measurement (default 4)")
    parser.add_argument("--gate-frames", type=number(int, 0, what="a number of frames"), default=8,
                        help="val frames for the INT8 gate; as many train frames calibrate (default 8; 0 = "
                             "no INT8 calibration: the route is marked fp32)")


# ---------------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------------

def read_spec(text: str):
    """(DegradationSpec, the proposal's bundle or None) from ``--spec``. A ``tir discover``
    proposal without ``steps`` did not fit: DegradationError with its reason.

    Raises:
        DegradationError: the JSON file does not parse, is a proposal that did not fit, or
            ``--spec`` names no spec.
    """
    from tir.engines.degrade import DegradationError, load_spec

    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            doc = jsontext.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DegradationError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(doc, dict) and "steps" not in doc and "closest_steps" in doc:
            reason = (doc.get("fit") or {}).get("reason", "no reason given")
            raise DegradationError(f"{path} is a tir discover proposal that did not fit ({reason}); tir learn "
                                   "does not learn a guess: collect more frames or write a spec by hand")
    return load_spec(text), None


def task_name(name: Optional[str], spec) -> str:
    """``--name``, else the spec's name made a valid route name (letters, digits, '-', '_').

    Raises:
        ValueError: ``--name`` holds other characters, or nothing valid is left of the spec's name.
    """
    raw = name if name is not None else spec.name
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", str(raw)).strip("_-")
    if name is not None and clean != name or not clean:
        raise ValueError(f"route name {raw!r} must be letters, digits, '-' or '_' (give --name NAME)")
    return clean


# ---------------------------------------------------------------------------------------------
# the work dir
# ---------------------------------------------------------------------------------------------

def prepare_work_dir(bundle, work: Path, spec, name: str) -> dict:
    """Seed ``work`` so the resumable trainer sees every earlier stage as done.

    A work dir already seeded for the same bundle checkpoint and task (``state.json`` names
    both) is kept as it is, so a rerun continues where the last one stopped; one seeded for
    another task or bundle is refused (ValueError).

    Raises:
        ValueError: the bundle lists no checkpoint or it is not a weights-only one, the bundle
            already has route ``name``, or ``work`` holds another run.
    """
    import io

    import torch

    from tir.engines.bundle import read_verified
    from tir.engines.training.continual import OpenWorldModel

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
    old = model.tasks
    state_path = work / "state.json"
    if state_path.is_file():
        from tir.engines.training.train import load_state_file

        state = load_state_file(state_path)
        seeded = state.get("learn") or {}
        if seeded.get("task") == name and seeded.get("checkpoint") == info["sha256"]:
            log.info("resuming in %s (done: %s)", work, ", ".join(state.get("done", [])))
            return {"tasks": old, "model": model, "resumed": True}
        raise ValueError(f"{work} holds another run ({seeded.get('task') or 'not tir learn'} on checkpoint "
                         f"{str(seeded.get('checkpoint'))[:12]}); give a new --work-dir")
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.pt").write_bytes(data)
    done = ["pretrain"] + [f"{t}-{k}" for t in old for k in ("train", "prune", "finetune", "field")]
    specs = dict(ckpt.get("specs") or {})
    specs[name] = json.loads(spec.to_json())
    metrics = {t["name"]: t.get("metrics", {}) for t in bundle.manifest["tasks"]}
    state = {"settings": {}, "done": done, "metrics": metrics, "specs": specs,
             "started": bundle.manifest.get("training", {}).get("started"),
             "wall_s": dict(bundle.manifest.get("training", {}).get("wall_s", {})),
             "learn": {"task": name, "checkpoint": info["sha256"], "bundle": str(bundle.path),
                       "bundle_version": bundle.version}}
    if bundle.router_path is not None:
        (work / "router").mkdir(exist_ok=True)
        shutil.copyfile(bundle.router_path, work / "router" / bundle.router_path.name)
        state["router"] = dict(bundle.router, file=bundle.router_path.name)
    from tir.engines.training.train import save_state

    save_state(work, state)   # whole or not at all: a kill while seeding left a cut state.json
    return {"tasks": old, "model": model, "resumed": False}


def choose_init(trainer, name: str) -> str:
    """The single-degradation (or clean) branch whose route restores ``name`` best on val."""
    import numpy as np

    from tir.engines.training.continual import CLEAN
    from tir.engines.metrics import psnr
    from tir.engines.training.train import evaluate_route

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


def final_val_psnr(metrics: dict) -> float:
    """Val PSNR of the route as exported: after the field stage when it ran (its head kept or
    reset to the identity), else after pruning + fine-tuning."""
    if "val_psnr_field" in metrics:
        return float(metrics["val_psnr_field"] if metrics.get("field_kept") else metrics["val_psnr_before_field"])
    return float(metrics["val_psnr_finetuned"])


# ---------------------------------------------------------------------------------------------
# the trainer with one progress bar over all of learn's stages
# ---------------------------------------------------------------------------------------------

def _learn_trainer_class():
    from tqdm import tqdm

    from tir.engines.training.train import ContinualTrainer

    class LearnTrainer(ContinualTrainer):
        """ContinualTrainer + one overall bar (unit: training steps, so its ETA is the run's)."""

        def stage_cost(self, stage: str) -> int:
            kind = stage.rpartition("-")[2]
            s = self.s
            return {"train": s.steps, "prune": max(1, s.prune_samples), "finetune": s.finetune_steps,
                    "field": s.field_steps if self.model.cfg.field else 0}.get(kind, 1)

        def run(self) -> dict:
            left = [st for st in self.stages() if st not in self.state["done"] or st == "bundle"]
            self._bar = tqdm(total=sum(self.stage_cost(st) for st in left), desc=f"learn {self.s.tasks[-1]}",
                             unit="step", mininterval=5.0, dynamic_ncols=True, position=0)
            try:
                return super().run()
            finally:
                self._bar.close()

        def _run_stage(self, stage: str) -> None:
            super()._run_stage(stage)
            self._bar.update(self.stage_cost(stage))
            self._bar.set_postfix_str(f"{stage} done", refresh=True)

    return LearnTrainer


# ---------------------------------------------------------------------------------------------
# after the bundle: the router row and the INT8 gate
# ---------------------------------------------------------------------------------------------

def add_router_row(bundle, name: str, spec, val_clean, draws: int, seed: int, threads: int,
                   progress: bool = True) -> Optional[dict]:
    """The new class as one more codebook row of ``bundle``'s router
    (engines/training/router_train.py ``add_router_class``), with the same domain randomisation and
    sensor variants the router was calibrated with. Returns (new router entry, report), or None without a router."""
    import onnxruntime as ort

    from tir.engines.adapt import ADAPTATION_KEY, apply_adaptation
    from tir.engines.router import SENSOR_VARIANTS
    from tir.engines.training.router_train import add_router_class

    entry = bundle.router
    if entry is None:
        return None
    if name in entry.get("tasks", []):
        return entry, next((a for a in entry.get("added", []) if a.get("task") == name), None)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(str(bundle.router_path), opts, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    training = entry.get("training") or {}
    augment = variants = None
    from tir.engines.training.domain import router_augment

    augment = router_augment(training)
    if training.get("sensor_variants"):
        variants = SENSOR_VARIANTS
    adaptation = entry.get(ADAPTATION_KEY)
    grown, report = add_router_class(lambda x: sess.run(None, {input_name: x})[0], entry, name, spec, val_clean,
                                     draws=draws, seed=seed + 3000, progress=progress, augment=augment,
                                     variants=variants, transform=lambda e: apply_adaptation(e, adaptation))
    return grown, report


def int8_gate(route_path: Path, spec, train_clean, val_clean, frames: int, seed: int, threads: int,
              work: Path) -> dict:
    """Calibrate the new route to INT8 (ONNX Runtime U8S8 QDQ, percentile 99.99 ranges as
    ``tir calibrate``'s default) on ``frames`` train frames degraded with ``spec`` and judge it
    with the gate (calibration/gate.py: mean PSNR lost vs clean on ``frames`` val frames, limit
    :data:`~tir.calibration.gate.MAX_LOSS_DB`). Returns {"precision": "int8"|"fp32", "reason",
    "gate": verdict dict, ...}."""
    import numpy as np
    import onnxruntime as ort

    from tir.calibration import gate
    from tir.calibration.data import CalibrationSet
    from tir.calibration.qdq import collect_ranges, quantize_cpu
    from tir.engines import degrade as deg

    if frames <= 0:
        return {"precision": "fp32", "reason": "INT8 not calibrated (--gate-frames 0)"}
    h, w = val_clean.shape[-2:]
    train = deg.degrade(train_clean[:frames], spec, np.random.default_rng([seed, 71]))
    held_in = deg.degrade(val_clean[:frames], spec, np.random.default_rng([seed, 72]))
    calib = CalibrationSet("learn-train", len(train), (w, h), lambda i: train[i])
    held = CalibrationSet("learn-val", len(held_in), (w, h), lambda i: held_in[i],
                          pair=lambda i: (held_in[i], val_clean[i]))
    ranges = collect_ranges(str(route_path), calib, threads=threads, progress=False).ranges(
        "percentile", percentile=99.99)
    work.mkdir(parents=True, exist_ok=True)
    int8_path = work / f"{route_path.stem}.int8-cpu.onnx"
    quantize_cpu(str(route_path), ranges, str(int8_path), activation="uint8")

    def runner(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]

    verdict = gate.gate_route(route_path.stem, "cpu-u8s8", runner(route_path), runner(int8_path), held)
    out = {"precision": "int8" if verdict.passed else "fp32",
           "reason": verdict.reason if verdict.passed else f"INT8 refused by the gate: {verdict.reason}",
           "gate": {k: v for k, v in verdict.to_dict().items() if k not in ("fp16_layers",)},
           "calibration_frames": len(calib), "method": "percentile 99.99"}
    for k, v in list(out["gate"].items()):
        if isinstance(v, float) and not math.isfinite(v):
            out["gate"][k] = None
    return out


def finish_bundle(out: Path, name: str, router_entry: Optional[dict], int8: dict, base_version: int):
    """Rewrite ``out``'s manifest with the grown router entry, the gate's verdict on the new
    route and ``version`` = ``base_version`` + 1; every file is re-verified (save_manifest)."""
    from tir.engines.bundle import MANIFEST, save_manifest

    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if router_entry is not None:
        entry = dict(router_entry)
        entry["file"], entry["sha256"] = manifest["router"]["file"], manifest["router"]["sha256"]
        manifest["router"] = entry
    for task in manifest["tasks"]:
        if task["name"] == name:
            task["precision"] = int8["precision"]
            task["int8"] = int8
    manifest["version"] = int(base_version) + 1
    return save_manifest(out, manifest)


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------

def learn(bundle_path, spec, name: str, out, work, settings_kw: dict, init: str = "auto",
          router_draws: int = 4, gate_frames: int = 8, train_clean=None, val_clean=None,
          command: str = "", progress: bool = True) -> dict:
    """Run (or continue) ``tir learn``; returns a summary dict (see :func:`main`'s closing line).

    ``settings_kw``: :class:`~tir.engines.training.train.TrainSettings` fields (steps, finetune_steps,
    field_steps, crop, batch, lr, seed, threads, data, group, prune_p, prune_samples, val_limit).
    ``train_clean``/``val_clean`` (N, H, W) float32 in [0, 1]: the frames (default: ``data``'s
    splits). Raises BundleError, DegradationError or ValueError with the reason."""
    from tir.engines.bundle import load_bundle
    from tir.engines.degrade import DegradationSpec
    from tir.engines.training.train import TrainSettings

    bundle = load_bundle(bundle_path)
    spec = DegradationSpec(name=name, steps=spec.steps, description=spec.description)
    work = Path(work)
    seeded = prepare_work_dir(bundle, work, spec, name)
    out = Path(out)
    settings = TrainSettings(preset=seeded["model"].cfg.name, tasks=tuple(seeded["tasks"]) + (name,),
                             router=False, bundle_dir=str(out), command=command, **settings_kw)
    trainer = _learn_trainer_class()(settings, work, train_clean, val_clean)
    state = trainer.state
    learned = state.setdefault("learn", {})
    if "init" not in learned:
        learned["init"] = choose_init(trainer, name) if init == "auto" else init
    trainer.s.init_from = {name: learned["init"]}
    base_version = learned.get("bundle_version", bundle.version)
    trainer.run()
    m = trainer.state["metrics"][name]
    grown = load_bundle(out)
    row = add_router_row(grown, name, trainer.spec(name), trainer.val_clean, router_draws, settings.seed,
                         settings.threads, progress)
    router_entry, report = row if row is not None else (None, None)
    int8 = int8_gate(grown.route_path(name), trainer.spec(name), trainer.train_clean, trainer.val_clean,
                     gate_frames, settings.seed, settings.threads, work / "int8")
    final = finish_bundle(out, name, router_entry, int8, base_version)
    summary = {"task": name, "init": learned["init"], "bundle": str(final.path), "version": final.version,
               "routes": final.tasks, "val_psnr_degraded": float(m["val_psnr_degraded"]),
               "val_psnr_final": final_val_psnr(m), "val_psnr_trained": float(m["val_psnr_trained"]),
               "precision": int8["precision"], "int8_reason": int8["reason"], "router": report}
    if report is not None:
        nc = report["new_class"]
        log.info("router: new row %d for %s, threshold %.3f; its val frames routed to it %.1f %% (unknown "
                 "before %.1f %%); earlier classes' val frames taken by it: %s (total %.2f %%)",
                 report["row"], name, report["threshold"], 100 * nc["routed_after"], 100 * nc["unknown_before"],
                 ", ".join(f"{c} {100 * v['stolen']:.1f} %" for c, v in report["earlier_classes"].items()),
                 100 * report["stolen_total"])
    log.info("INT8: %s (%s)", int8["precision"], int8["reason"])
    (work / "learn.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def check_out(out, bundle_path) -> None:
    """Refuse an ``--out`` that would overwrite something: it may be missing, the bundle itself
    (in place), an empty folder, or an earlier output of ``tir learn`` on this bundle (a rerun:
    every route of the bundle there, byte for byte by the manifests' sha256).

    Raises:
        ValueError: ``out`` is a file, or a folder holding anything else (nothing is written).
        BundleError: ``bundle_path`` is not a bundle.
    """
    from tir.engines.bundle import load_bundle, route_digests

    out = Path(out)
    if not out.exists():
        return
    src = load_bundle(bundle_path)
    if out.resolve() == src.path.resolve():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; choose a new folder (nothing was written)")
    if not any(out.iterdir()):
        return
    have = route_digests(out)
    if not have or any(have.get(name) != digest for name, digest in route_digests(src.path).items()):
        raise ValueError(f"--out {out} exists and does not hold {src.path}'s routes (it is not an earlier output of "
                         "tir learn on that bundle); choose a new folder (nothing was written)")


def main(args) -> int:
    """Run ``tir learn`` with the parsed ``args``: learn the spec as a new route of the bundle
    (train, prune, fine-tune, router row, INT8 gate) and print the summary (val PSNR in dB).

    Returns:
        0 done; 2 refused: a BundleError, DegradationError or ValueError is logged as one line.

    Raises:
        Nothing: the ValueError it raises itself (no ``--bundle`` and no installed bundle) is
        caught with the others and gives exit status 2.
    """
    from tir.engines.bundle import BundleError, default_bundle_path
    from tir.engines.degrade import DegradationError

    try:
        spec, _ = read_spec(args.spec)
        name = task_name(args.name, spec)
        bundle = args.bundle or default_bundle_path()
        if bundle is None:
            raise ValueError("no --bundle given and no installed bundle; pass --bundle DIR")
        if args.out:
            check_out(args.out, bundle)  # before any training: it used to overwrite at the end
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="tir-learn-"))
        settings_kw = dict(steps=args.steps, finetune_steps=args.finetune_steps, field_steps=args.field_steps,
                           crop=args.crop, batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                           data=args.data, group=args.group, prune_p=args.prune_p,
                           prune_samples=args.prune_samples)
        command = f"tir learn --bundle {bundle} --spec {args.spec} --name {name} --steps {args.steps}"
        summary = learn(bundle, spec, name, args.out or bundle, work, settings_kw, init=args.init,
                        router_draws=args.router_draws, gate_frames=args.gate_frames, command=command)
    except (BundleError, DegradationError, ValueError) as exc:
        print(f"tir learn: error: {exc}", file=sys.stderr)   # one line, as the other modes say it
        return 2
    s = summary
    router = s["router"]
    routed = (f"; router row added (its val frames routed to it {100 * router['new_class']['routed_after']:.0f} %, "
              f"earlier classes' frames taken {100 * router['stolen_total']:.1f} %)" if router else "; no router")
    print(f"learned {s['task']!r} from {s['init']!r}: val PSNR degraded {s['val_psnr_degraded']:.2f} -> "
          f"{s['val_psnr_final']:.2f} dB (before pruning {s['val_psnr_trained']:.2f}); {s['precision']} "
          f"({s['int8_reason']}){routed}; bundle {s['bundle']} version {s['version']}, work dir {work}")
    return 0
