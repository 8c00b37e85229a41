"""Training side of the degradation router (tir.engines.router holds the runtime side).

The runtime module has the classes, the input preparation, the cosine classification the
``Restorer`` runs and the degraded batches (:func:`~tir.engines.router.degraded_batches`, numpy:
the adaptation's source statistics draw them exactly as training does); this one has what makes
and changes a router: the network and its supervised contrastive loss (torch), training and ONNX
export (:func:`train_router`), the unknown thresholds (:func:`calibrate_thresholds`,
:func:`recalibrate_router`) and adding a class to a trained router (:func:`add_router_class`,
``tir learn``). torch is imported inside the functions that need it.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..router import (CLEAN, DEFAULT_CALIBRATION_DRAWS, DEFAULT_TEMPERATURE, DEFAULT_THRESHOLD_PERCENTILE,
                      FEATURE_POOL, FEATURES, ROUTER_INPUT_SIZE, ROUTER_JSON, UNKNOWN, added_rows, classify,
                      cosine_scores, degraded_batches, load_router_entry, log, prepare_frames,
                      router_classes)


def calibrate_thresholds(embed: Callable[[np.ndarray], np.ndarray], codebook: np.ndarray,
                         classes: Sequence[str], val_images: np.ndarray,
                         draws: int = DEFAULT_CALIBRATION_DRAWS, seed: int = 1000,
                         percentile: float = DEFAULT_THRESHOLD_PERCENTILE, unseen: Sequence[str] = ("jpeg",),
                         input_size: Sequence[int] = ROUTER_INPUT_SIZE, chunk: int = 8,
                         progress: bool = True, augment: Optional[Callable] = None,
                         variants: Optional[dict] = None, quantize: float = 0.0) -> dict:
    """Per-class "unknown" thresholds from held-out (val) frames, and what they give on val.

    Every val frame is degraded ``draws`` times per class (seeded; a clean frame once) and
    embedded with ``embed`` (N×1×h×w float32 → N×D: the torch net or the exported ONNX). The
    threshold of class k is the ``percentile``-th percentile of the similarity to entry k of the
    val frames nearest to k (a tight cluster gets a tight threshold). Session 1 used 4 draws and
    the 2nd percentile: 9 % of test frames fell below that, against 2.8 % on its 100 val
    samples per class, so the default is now 16 draws (400 samples per class on the 25 val
    frames) and the 0.5th percentile. ``unseen`` degradations are only measured, never used.
    Returns {"thresholds", "threshold" (their minimum), "metrics"}.
    """
    frames = prepare_frames(val_images, input_size)[:, 0]
    book = np.asarray(codebook, dtype=np.float64)

    def similarities(names, n_draws, base):
        sims, labels = [], []
        for k, batch in degraded_batches(frames, names, n_draws, base, chunk, "router thresholds", progress,
                                         augment, variants, quantize):
            sims.append(cosine_scores(embed(batch), book))
            labels += [k] * len(batch)
        return np.concatenate(sims), np.asarray(labels)

    sims, labels = similarities(list(classes), int(draws), seed)
    pred = sims.argmax(1)
    thresholds = []
    for k in range(len(classes)):
        own = sims[(labels == k) & (pred == k), k]
        own = own if own.size else sims[labels == k, k]
        thresholds.append(float(np.percentile(own, percentile)))
    thr = np.asarray(thresholds)

    def unknown_rate(s):
        k = s.argmax(1)
        return float(np.mean(s[np.arange(len(s)), k] < thr[k]))

    tasks = [i for i, c in enumerate(classes) if c != CLEAN]
    is_task = np.isin(labels, tasks)
    strict = (pred == labels) & (sims[np.arange(len(sims)), pred] >= thr[pred])
    metrics = {"calibration_frames": int(len(frames)), "calibration_draws": int(draws),
               "threshold_percentile": float(percentile),
               "val_accuracy": float(np.mean(pred == labels)),
               "val_accuracy_tasks": float(np.mean((pred == labels)[is_task])),
               "val_accuracy_tasks_strict": float(np.mean(strict[is_task])),
               "val_false_unknown": unknown_rate(sims)}
    for j, name in enumerate(unseen):
        u, _ = similarities([name], max(1, int(draws) // 2), seed + 1000 + j)
        metrics[f"val_unknown_rate_{name}"] = unknown_rate(u)
    return {"thresholds": thresholds, "threshold": float(thr.min()), "metrics": metrics}


def _routed(embeddings: np.ndarray, codebook: np.ndarray, classes: Sequence[str], thresholds,
            temperature: float, min_confidence: float, added: Sequence[int] = ()) -> List[str]:
    """The runtime's verdict per embedding: the class, ``unknown`` (below its threshold) or
    ``uncertain`` (softmax probability of the nearest class below ``min_confidence``)."""
    out = []
    for d in classify(embeddings, codebook, classes, thresholds, temperature, added):
        out.append(d["task"] if d["task"] == UNKNOWN or d["confidence"] >= min_confidence else "uncertain")
    return out


def add_router_class(embed: Callable[[np.ndarray], np.ndarray], entry: dict, name: str, spec,
                     val_images: np.ndarray, draws: int = 4, seed: int = 3000,
                     percentile: Optional[float] = None, min_confidence: float = 0.5, chunk: int = 8,
                     progress: bool = True, augment: Optional[Callable] = None,
                     variants: Optional[dict] = None,
                     transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                     max_stolen: Optional[float] = 0.01) -> Tuple[dict, dict]:
    """Give a trained router a new class without retraining it: one new codebook row.

    The row is the prototype of the new degradation: the L2-normalised mean embedding of the
    val frames degraded ``draws`` times each with ``spec`` (a DegradationSpec or spec name),
    seeded by ``[seed, 0, d]``. Its unknown threshold follows :func:`calibrate_thresholds`'
    rule: the ``percentile``-th percentile (default: the entry's ``threshold_percentile``
    metric, else :data:`DEFAULT_THRESHOLD_PERCENTILE`) of the new-class frames' cosine to the
    new row, over the frames nearest to it. Earlier rows, their thresholds and the router
    network are unchanged, so the frames of earlier classes can only be taken by the new row
    (never moved between earlier classes); how many are is measured here on the same val frames
    (every earlier class degraded ``draws`` times, seeded ``[seed + 1, k, d]``, with ``augment``
    and ``variants`` as the router was calibrated).

    Guard (``max_stolen``, default 0.01; None: off): the threshold is raised, where needed, until
    no earlier class loses more than that share of its val frames to the new row (an embedding
    that was never trained on the new degradation can put it next to an earlier class, e.g.
    clean); such frames stay below the new row's threshold and keep the verdict they had
    (:func:`classify` with ``added``) instead of going through the new route. ``threshold_rule``
    in the report says which rule set it.

    ``embed``: N×1×h×w float32 frames → N×D embeddings (the router ONNX); ``transform``: what the
    runtime applies to embeddings before classifying (the adaptation map), identity by default.
    ``val_images``: (N, H, W) float32 in [0, 1], brought to the router's input size at native
    pixel scale (:func:`prepare_frames`).

    Returns ``(new entry, report)``: the entry with ``codebook``/``tasks``/``thresholds`` one row
    longer, ``threshold`` their minimum and the report appended to ``added``. The report holds
    the threshold, frame counts, the new class's verdicts with the old and the new codebook
    (``unknown_before``, ``routed_after`` …) and, per earlier class, the share of its val frames
    routed to it before and after and ``stolen`` (share now routed to the new class).
    Verdicts are the runtime's (:class:`~tir.engines.restorer.Restorer`): a class, ``unknown``
    or ``uncertain`` (confidence below ``min_confidence``). Raises ValueError when ``name`` is
    already a class or the entry has no codebook.
    """
    from .. import degrade as deg

    classes = list(entry.get("tasks") or [])
    if name in classes:
        raise ValueError(f"the router already has a class {name!r}; its classes: {', '.join(classes)}")
    if not entry.get("codebook"):
        raise ValueError("the router entry has no codebook to add a row to")
    spec = deg.load_spec(spec)
    size = entry.get("input_size", list(ROUTER_INPUT_SIZE))
    frames = prepare_frames(val_images, size)[:, 0]
    book = np.asarray(entry["codebook"], dtype=np.float64)
    thresholds = list(np.broadcast_to(np.asarray(entry.get("thresholds", entry.get("threshold", -1.0)),
                                                 dtype=np.float64), (len(classes),)))
    temperature = float(entry.get("temperature", DEFAULT_TEMPERATURE))
    if percentile is None:
        percentile = float((entry.get("metrics") or {}).get("threshold_percentile", DEFAULT_THRESHOLD_PERCENTILE))
    transform = transform or (lambda e: np.asarray(e, dtype=np.float64))

    def embeddings(names, base, options):
        out, labels = [], []
        for k, batch in degraded_batches(frames, names, int(draws), base, chunk, f"router row {name}",
                                         progress, augment, options):
            out.append(transform(embed(batch)))
            labels += [k] * len(batch)
        return np.concatenate(out), np.asarray(labels)

    new_emb, _ = embeddings([name], seed, {name: [spec]})
    unit = new_emb / np.maximum(np.linalg.norm(new_emb, axis=1, keepdims=True), 1e-12)
    proto = unit.mean(axis=0)
    proto /= max(float(np.linalg.norm(proto)), 1e-12)
    proto = proto.round(6)   # as stored in the manifest; earlier rows are kept exactly as given
    grown = np.vstack([book, proto[None]])
    k_new = len(classes)
    sims = cosine_scores(new_emb, grown)
    own = sims[sims.argmax(1) == k_new, k_new]
    own = own if own.size else sims[:, k_new]
    by_percentile = float(np.percentile(own, percentile))
    old_emb, labels = embeddings(classes, seed + 1, variants)
    guard = -1.0
    if max_stolen is not None:
        old_sims = cosine_scores(old_emb, grown)
        nearest_new = old_sims.argmax(1) == k_new
        for k in range(len(classes)):
            s_k = np.sort(old_sims[(labels == k) & nearest_new, k_new])[::-1]
            allowed = int(math.floor(float(max_stolen) * np.sum(labels == k)))
            if s_k.size > allowed:  # the (allowed+1)-th most similar frame must fall below
                guard = max(guard, float(np.nextafter(s_k[allowed], 2.0)))
    threshold = max(by_percentile, guard)
    rule = "percentile" if threshold == by_percentile else f"guard (max_stolen {max_stolen})"
    if threshold > 1.0:
        raise ValueError(f"no threshold keeps {name!r} from taking more than {max_stolen:.0%} of an earlier "
                         "class's val frames (their embeddings coincide); this router cannot tell it apart")
    new_classes, new_thresholds = classes + [name], thresholds + [threshold]

    rows_before = added_rows(entry)
    rows_after = rows_before + [k_new]
    before = _routed(old_emb, book, classes, thresholds, temperature, min_confidence, rows_before)
    after = _routed(old_emb, grown, new_classes, new_thresholds, temperature, min_confidence, rows_after)
    per_class = {}
    for k, cls in enumerate(classes):
        idx = np.flatnonzero(labels == k)
        per_class[cls] = {"frames": int(idx.size),
                          "routed_before": float(np.mean([before[i] == cls for i in idx])),
                          "routed_after": float(np.mean([after[i] == cls for i in idx])),
                          "stolen": float(np.mean([after[i] == name for i in idx])),
                          "unknown_before": float(np.mean([before[i] == UNKNOWN for i in idx])),
                          "unknown_after": float(np.mean([after[i] == UNKNOWN for i in idx]))}
    mine_before = _routed(new_emb, book, classes, thresholds, temperature, min_confidence, rows_before)
    mine_after = _routed(new_emb, grown, new_classes, new_thresholds, temperature, min_confidence, rows_after)
    report = {
        "task": name, "row": k_new, "threshold": threshold, "threshold_rule": rule,
        "threshold_by_percentile": by_percentile, "threshold_percentile": float(percentile),
        "max_stolen": max_stolen,
        "prototype": "normalised mean embedding of val frames degraded with the task's spec",
        "val_frames": int(len(frames)), "draws": int(draws), "seed": int(seed),
        "min_confidence": float(min_confidence),
        "new_class": {"frames": int(len(new_emb)),
                      "unknown_before": float(np.mean([v == UNKNOWN for v in mine_before])),
                      "routed_after": float(np.mean([v == name for v in mine_after])),
                      "unknown_after": float(np.mean([v == UNKNOWN for v in mine_after])),
                      "uncertain_after": float(np.mean([v == "uncertain" for v in mine_after]))},
        "earlier_classes": per_class,
        "stolen_total": float(np.mean([v == name for v in after])),
        "stolen_max": max((c["stolen"] for c in per_class.values()), default=0.0),
    }
    grown_entry = dict(entry)
    grown_entry.update(codebook=[list(r) for r in entry["codebook"]] + [proto.tolist()], tasks=new_classes, thresholds=new_thresholds,
                       threshold=float(min(new_thresholds)),
                       added=list(entry.get("added") or []) + [report])
    return grown_entry, report


def recalibrate_router(src, out_dir, val_images: np.ndarray, threads: int = 1, **kwargs) -> dict:
    """Copy a trained router (folder or JSON from :func:`train_router`) to ``out_dir`` with its
    thresholds re-chosen by :func:`calibrate_thresholds` through the exported ONNX; returns and
    writes the updated entry (``router.json``).

    Args:
        src: the trained router: its folder or its JSON entry.
        out_dir: the folder to write to.
        val_images: (N, H, W) float32 clean frames in [0, 1] to choose the thresholds on.
        threads: ONNX Runtime intra-op threads.
        kwargs: passed to :func:`calibrate_thresholds`.
    """
    import shutil

    import onnxruntime as ort

    onnx_path, entry = load_router_entry(src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if onnx_path.resolve() != (out_dir / onnx_path.name).resolve():
        shutil.copyfile(onnx_path, out_dir / onnx_path.name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    size = entry.get("input_size", list(ROUTER_INPUT_SIZE))
    cal = calibrate_thresholds(lambda x: sess.run(None, {name: x})[0], np.asarray(entry["codebook"]),
                               entry["tasks"], val_images, input_size=size, **kwargs)
    entry = dict(entry)
    entry.update(thresholds=cal["thresholds"], threshold=cal["threshold"], file=onnx_path.name)
    entry["metrics"] = {**entry.get("metrics", {}), **cal["metrics"]}
    entry["calibrated_from"] = str(src)
    (out_dir / ROUTER_JSON).write_text(json.dumps(entry, indent=1) + "\n")
    return entry


# ---------------------------------------------------------------------------------------------
# torch side (training / export)
# ---------------------------------------------------------------------------------------------

def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = int(math.ceil(3.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def build_router_net(dim: int = 48, width: int = 32):
    """The router network (torch): fixed band-energy features + learned trunk -> unit embedding."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class GaussianBlur(nn.Module):
        """Separable Gaussian with reflect padding; weights fixed (a buffer, not a parameter)."""

        def __init__(self, sigma: float):
            super().__init__()
            taps = torch.from_numpy(_gaussian_taps(sigma))
            self.pad = len(taps) // 2
            self.register_buffer("wx", taps.view(1, 1, 1, -1).clone())
            self.register_buffer("wy", taps.view(1, 1, -1, 1).clone())

        def forward(self, x):
            x = F.pad(x, (self.pad, self.pad, self.pad, self.pad), mode="reflect")
            return F.conv2d(F.conv2d(x, self.wx), self.wy)

    class BandFeatures(nn.Module):
        """Frame N×1×H×W -> N×4×H/4×W/4: pooled frame and log energy of three bands."""

        def __init__(self):
            super().__init__()
            self.g1 = GaussianBlur(1.0)
            self.g25 = GaussianBlur(2.5)
            self.g2_low = GaussianBlur(2.0)

        @staticmethod
        def _log_energy(x):
            return (torch.log(x + 1e-6) + 8.0) * 0.25

        def forward(self, x):
            s1 = self.g1(x)
            hp1 = x - s1
            bp2 = s1 - self.g25(x)
            pooled = F.avg_pool2d(x, FEATURE_POOL)
            e1 = F.avg_pool2d(hp1 * hp1, FEATURE_POOL)
            e2 = F.avg_pool2d(bp2 * bp2, FEATURE_POOL)
            bp3 = pooled - self.g2_low(pooled)
            e3 = F.avg_pool2d(bp3 * bp3, 3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([pooled, self._log_energy(e1), self._log_energy(e2),
                              self._log_energy(e3)], dim=1)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class RouterNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = BandFeatures()
            self.trunk = nn.Sequential(block(4, width), block(width, int(width * 1.5)),
                                       block(int(width * 1.5), width * 2),
                                       block(width * 2, width * 3))
            self.head = nn.Sequential(nn.Linear(width * 6, 128), nn.ReLU(inplace=True),
                                      nn.Linear(128, dim))

        def embed_maps(self, maps):
            """Feature maps (from :attr:`features`) -> unit embeddings N×dim."""
            y = self.trunk(maps)
            mean = y.mean(dim=(2, 3))
            std = torch.sqrt((y * y).mean(dim=(2, 3)) - mean * mean + 1e-6)
            return F.normalize(self.head(torch.cat([mean, std], dim=1)), dim=1)

        def forward(self, frame):
            return self.embed_maps(self.features(frame))

    return RouterNet()


def supervised_contrastive_loss(z, labels, tau: float = DEFAULT_TEMPERATURE):
    """SupCon (Khosla et al. 2020): for each anchor, -mean log p(positive) over the batch.

    Positives are other samples with the same degradation (different content, by batch
    construction); every other sample is in the denominator.
    """
    import torch

    sim = z @ z.t() / tau
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    count = pos.sum(1).clamp(min=1)
    return -(log_prob * pos).sum(1).div(count).mean()


def _feature_cache(net, images: np.ndarray, classes: Sequence[str], draws: int, seed: int,
                   desc: str, input_size: Sequence[int] = ROUTER_INPUT_SIZE, chunk: int = 8,
                   augment: Optional[Callable] = None, variants: Optional[dict] = None,
                   quantize: float = 0.0):
    """Degrade every frame ``draws`` times per class and keep the band-feature maps (float16)."""
    import torch

    frames = prepare_frames(images, input_size)[:, 0]
    maps, labels = [], []
    with torch.no_grad():
        for k, batch in degraded_batches(frames, classes, draws, seed, chunk, desc, augment=augment,
                                         variants=variants, quantize=quantize):
            maps.append(net.features(torch.from_numpy(batch)).numpy().astype(np.float16))
            labels.extend([k] * len(batch))
    return np.concatenate(maps), np.asarray(labels, dtype=np.int64)


def _embed_maps(net, maps: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(maps), batch):
            out.append(net.embed_maps(torch.from_numpy(maps[s:s + batch].astype(np.float32))).numpy())
    return np.concatenate(out)


def export_router_onnx(net, path: Path, input_size: Sequence[int] = ROUTER_INPUT_SIZE, fast: bool = True) -> Path:
    """router.onnx: input ``frame`` N×1×h×w float32 in [0, 1], output ``embedding`` N×D float32
    (opset 17; ``tir.multiple`` metadata = :data:`~tir.engines.router.FEATURE_POOL`).

    ``fast`` (default): the file is the exact fast form of the exported graph
    (:func:`tir.engines.training.fast_router.rewrite_router`: the full-resolution band features
    on row strips, checked against the plain export on ONNX Runtime); where the input size does
    not allow the strips (:func:`~tir.engines.training.fast_router.strip_count`), the plain export
    is kept and the reason logged. Returns ``path``.

    Raises:
        ExportError: the fast form differs from the plain export (then nothing is kept at ``path``
            but the plain export).
    """
    import torch

    net = net.eval()
    w, h = int(input_size[0]), int(input_size[1])
    dummy = torch.rand(1, 1, h, w)
    torch.onnx.export(net, (dummy,), str(path), input_names=["frame"], output_names=["embedding"],
                      dynamic_axes={"frame": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    import onnx

    model = onnx.load(str(path))
    # the 4× pooling needs H and W divisible by 4 (read by the ONNX Runtime backend)
    entry = model.metadata_props.add()
    entry.key, entry.value = "tir.multiple", str(FEATURE_POOL)
    onnx.save(model, str(path))
    if fast:
        from .fast_router import rewrite_router

        try:
            rewrite_router(path, path)
        except ValueError as exc:   # a geometry the strips do not cover: the plain graph, said so
            log.info("router export: kept the plain graph (%s)", exc)
    return Path(path)


def train_router(clean_images: np.ndarray, tasks: Sequence[str] = None, out_dir=".",
                 steps: int = 1500, seed: int = 0, crop: Sequence[int] = (112, 144),
                 batch: int = 64, threads: Optional[int] = 1, val_images: Optional[np.ndarray] = None,
                 draws: int = 3, dim: int = 48, temperature: float = DEFAULT_TEMPERATURE,
                 contrastive_weight: float = 0.5, lr: float = 2e-3,
                 threshold_percentile: float = DEFAULT_THRESHOLD_PERCENTILE,
                 calibration_draws: int = DEFAULT_CALIBRATION_DRAWS,
                 outliers: Sequence[str] = ("dead_pixels", "vignetting"), outlier_weight: float = 0.5,
                 unseen: Sequence[str] = ("jpeg",),
                 input_size: Sequence[int] = ROUTER_INPUT_SIZE, augment: Optional[Callable] = None,
                 cache_size: Optional[Sequence[int]] = None, variants: Optional[dict] = None,
                 quantize: float = 0.0) -> dict:
    """Train the router on clean frames degraded per class, calibrate "unknown", export ONNX.

    ``augment(batch, rng)`` re-renders each clean batch before it is degraded, for training and
    for the threshold calibration alike (:func:`tir.engines.training.domain.randomize`: clean as many
    cameras deliver it). ``cache_size`` (w, h): train on centre crops of that size at native
    pixel scale instead of ``input_size`` (4× cheaper at 320×256; the trunk ends in mean/std
    pooling, so it runs on the full ``input_size`` frame at run time; thresholds are always
    chosen on full ``input_size`` frames). ``quantize``: see :func:`~tir.engines.router.degraded_batches` (training
    and threshold frames alike).

    ``clean_images`` (N,H,W) in [0,1] are the training frames; ``val_images`` pick the unknown
    thresholds (:func:`calibrate_thresholds`, ``calibration_draws`` draws per frame and class,
    ``threshold_percentile``); without them 15% of ``clean_images`` are held out. Each frame
    is degraded ``draws`` times per class up front (feature maps cached as float16: degrading
    640×512 frames in Python costs more than the router step, cpu_budget.md); every step draws
    a class-balanced batch, random ``crop`` (h, w) of the 128×160 maps and random flips.
    ``outliers`` (degradations that are neither a task nor the ``unseen`` test ones) are used
    for outlier exposure (Hendrycks et al. 2019): their softmax over the codebook is pushed to
    uniform, so frames unlike every class get a low best similarity. ``unseen`` degradations are
    only measured on val (reported, never used for choosing or training).
    The unknown threshold is per class (``thresholds``: the percentile of class-k val frames'
    similarity to entry k; a tight cluster gets a tight threshold); ``threshold`` is their minimum.
    Returns the manifest entry: file, codebook, threshold, thresholds, input_size [w, h], tasks
    (classes incl. "clean"), temperature, features, metrics.

    Raises:
        ValueError: fewer than 2 training frames.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .. import degrade as deg

    tasks = list(deg.TASKS if tasks is None else tasks)
    classes = router_classes(tasks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    clean_images = np.asarray(clean_images, dtype=np.float32)
    if val_images is None:
        order = rng.permutation(len(clean_images))
        n_val = max(1, int(round(0.15 * len(clean_images))))
        val_images = clean_images[order[:n_val]]
        clean_images = clean_images[order[n_val:]]
    if len(clean_images) < 2:
        raise ValueError("train_router needs at least 2 training frames")

    t0 = time.monotonic()
    net = build_router_net(dim=dim)
    cache_size = tuple(cache_size or input_size)
    train_maps, train_labels = _feature_cache(net, clean_images, classes, draws, seed, "router cache", cache_size,
                                              augment=augment, variants=variants, quantize=quantize)
    outliers = [o for o in outliers if o not in classes and o not in unseen]
    if outliers:
        out_maps, _ = _feature_cache(net, clean_images, outliers, 1, seed + 3000, "router outliers", cache_size,
                                     augment=augment)
    log.info("router: cached %d train feature maps in %.0f s", len(train_maps), time.monotonic() - t0)

    codebook = torch.nn.Parameter(F.normalize(torch.randn(len(classes), dim), dim=1))
    params = list(net.trunk.parameters()) + list(net.head.parameters()) + [codebook]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    by_class = [np.flatnonzero(train_labels == k) for k in range(len(classes))]
    per_class = max(2, batch // len(classes))
    ch, cw = int(crop[0]), int(crop[1])
    mh, mw = train_maps.shape[2:]
    ch, cw = min(ch, mh), min(cw, mw)

    net.train()
    losses = []
    for step in tqdm(range(steps), desc="router", unit="step"):
        idx = np.concatenate([rng.choice(ix, per_class, replace=len(ix) < per_class) for ix in by_class])
        y0 = rng.integers(0, mh - ch + 1, len(idx))
        x0 = rng.integers(0, mw - cw + 1, len(idx))
        crops = np.stack([train_maps[i, :, a:a + ch, b:b + cw] for i, a, b in zip(idx, y0, x0)])
        crops = crops.astype(np.float32)
        flip_h = rng.random(len(idx)) < 0.5
        crops[flip_h] = crops[flip_h][..., ::-1]
        flip_v = rng.random(len(idx)) < 0.5
        crops[flip_v] = crops[flip_v][..., ::-1, :]
        labels = torch.from_numpy(train_labels[idx])
        n_in = len(idx)
        if outliers:
            oi = rng.integers(0, len(out_maps), per_class)
            a, b = rng.integers(0, mh - ch + 1), rng.integers(0, mw - cw + 1)
            crops = np.concatenate([crops, out_maps[oi, :, a:a + ch, b:b + cw].astype(np.float32)])
        z = net.embed_maps(torch.from_numpy(np.ascontiguousarray(crops)))
        logits = z @ F.normalize(codebook, dim=1).t() / temperature
        loss = F.cross_entropy(logits[:n_in], labels) + contrastive_weight * supervised_contrastive_loss(
            z[:n_in], labels, temperature)
        if outliers:
            loss = loss - outlier_weight * F.log_softmax(logits[n_in:], dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()

    book = F.normalize(codebook.detach(), dim=1).numpy()

    def embed(frames):
        with torch.no_grad():
            return net(torch.from_numpy(frames)).numpy()
    cal = calibrate_thresholds(embed, book, classes, val_images, draws=calibration_draws, seed=seed + 1000,
                               percentile=threshold_percentile, unseen=unseen, input_size=input_size,
                               augment=augment, variants=variants, quantize=quantize)
    thresholds, threshold = cal["thresholds"], cal["threshold"]
    metrics = {
        "train_frames": int(len(clean_images)), "val_frames": int(len(val_images)),
        "steps": int(steps), "batch": int(per_class * len(classes)), "draws": int(draws),
        "final_loss": float(np.mean(losses[-50:])), **cal["metrics"],
        "train_seconds": round(time.monotonic() - t0, 1),
    }
    path = export_router_onnx(net, out_dir / "router.onnx", input_size)
    # tensors and plain containers only, so torch.load(weights_only=True) reads it back
    torch.save({"state_dict": net.state_dict(), "codebook": torch.from_numpy(book.copy()), "classes": list(classes),
                "dim": dim}, out_dir / "router.pt")
    log.info("router: val accuracy %.3f, threshold %.3f, %s", metrics["val_accuracy"], threshold,
             {k: v for k, v in metrics.items() if k.startswith("val_unknown")})
    entry = {"file": path.name, "codebook": book.astype(float).round(6).tolist(),
             "threshold": threshold, "thresholds": thresholds, "temperature": float(temperature),
             "input_size": [int(input_size[0]), int(input_size[1])],
             "tasks": classes, "features": FEATURES, "metrics": metrics}
    (out_dir / ROUTER_JSON).write_text(json.dumps(entry, indent=1) + "\n")
    return entry
