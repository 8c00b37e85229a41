"""Automatic degradation routing: which restoration route a frame needs.

ECMRNet's released code takes the degradation label as an argument and has no identifier
(ecmrnet.md §1.1, §6); this module adds one in the spirit of UDAIR (ecmrnet.md §3): a small CNN
maps a frame to an L2-normalised embedding, a codebook holds one learnable entry per class,
logits are cosine similarity / temperature, and a supervised contrastive loss over the batch
pulls frames with the same degradation but different content together.

Classes are the restoration tasks plus ``"clean"``: a clean frame has its own codebook entry and
is routed to pass-through (identity), the least harmful thing to do to a frame that needs no
restoration. A frame whose best cosine similarity is below a threshold (calibrated on held-out
in-distribution frames) is ``"unknown"``; the runtime keeps its current route then.

The exported ``router.onnx`` takes the full frame, N×1×512×640 in [0, 1] (frames of other sizes
are centre-cropped or mirror-extended to ``input_size`` at their native pixel scale first,
:func:`prepare_frames`), and outputs the normalised
embedding N×D. Inside, fixed (non-learned) layers make a degradation-sensitive, content-light
input at 128×160: the 4×-pooled frame (global contrast, brightness, shading) and the log local
energy of three frequency bands measured at full resolution (blur removes the fine bands, noise
fills them; a 4× downscale alone would hide σ = 1–2 px blur and per-pixel noise). The learned
part is four strided 3×3 convs, mean+std pooling and a 2-layer head (about 0.05 GMAC).

numpy only (the runtime path must not import torch). Training, export, threshold calibration
and adding a class: :mod:`tir.engines.training.router_train`.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..edge import jsontext
from . import degrade as _degrade

log = logging.getLogger(__name__)

CLEAN = "clean"
UNKNOWN = "unknown"
ROUTER_INPUT_SIZE = (640, 512)  # (w, h) every frame is cropped / mirror-extended to before routing
FEATURE_POOL = 4                # learned trunk runs at (h/4, w/4) = 128×160
FEATURES = "pooled-frame + log energy of bands (x-G1, G1-G2.5 full res, m-G2 at 1/4) v1"
DEFAULT_TEMPERATURE = 0.1
DEFAULT_THRESHOLD_PERCENTILE = 0.5
DEFAULT_CALIBRATION_DRAWS = 16  # degradation draws per val frame and class for the thresholds
ROUTER_JSON = "router.json"


#: the noise-carrying classes also drawn as real uncalibrated microbolometers show them
#: (engines/specs/*_sensor.json: column/row/pixel FPN, weak white noise): the routes of the same
#: name remove it, so the router must name it (docs/cameras.md). Derived from the spec files:
#: every training task with a ``<task>_sensor`` spec (noise, CN, BN, CBN), and its
#: ``<task>_sensor_agc`` spec where there is one (the camera's AGC after the sensor noise:
#: contrast-free classes only, noise and BN)
SENSOR_VARIANTS = {t: [t] + [v for v in (f"{t}_sensor", f"{t}_sensor_agc") if v in _degrade.list_specs()]
                   for t in _degrade.TASKS if f"{t}_sensor" in _degrade.list_specs()}


def router_classes(tasks: Sequence[str]) -> List[str]:
    """The router's classes: the tasks in order, then ``clean`` (routed to pass-through)."""
    tasks = list(tasks)
    return tasks if CLEAN in tasks else tasks + [CLEAN]


# ---------------------------------------------------------------------------------------------
# numpy side (runtime)
# ---------------------------------------------------------------------------------------------

def fit_native(frame: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """One H×W frame -> h×w (``size`` = (w, h)) at its native pixel scale, never resampled.

    A larger side is centre-cropped; a smaller one is mirror-extended (reflect, repeated as
    often as needed, the frame centred). Degradations live at the pixel scale (noise per pixel,
    blur of σ pixels): resizing a 160×120 Lepton frame ×4 to the router's 640×512 smoothed its
    noise away so it read as clean; mirroring keeps every pixel's statistics and adds no edge.
    """
    w, h = int(size[0]), int(size[1])
    f = np.asarray(frame)
    fh, fw = f.shape
    if fh > h:
        y0 = (fh - h) // 2
        f = f[y0:y0 + h]
    if fw > w:
        x0 = (fw - w) // 2
        f = f[:, x0:x0 + w]
    ph, pw = h - f.shape[0], w - f.shape[1]
    if ph > 0 or pw > 0:
        mode = "reflect" if min(f.shape) > 1 else "edge"
        f = np.pad(f, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode=mode)
    return f


def prepare_frames(frames: np.ndarray, input_size: Sequence[int] = ROUTER_INPUT_SIZE) -> np.ndarray:
    """(N,H,W) / (N,1,H,W) / (H,W) float frames -> N×1×h×w float32 at ``input_size`` (w, h),
    each frame at its native pixel scale (:func:`fit_native`: centre crop or mirror extension).

    Raises ValueError for anything but single-channel frames.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"router expects single-channel frames, got {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"router expects (N,H,W) or (N,1,H,W) frames, got {x.shape}")
    w, h = int(input_size[0]), int(input_size[1])
    if x.shape[1:] != (h, w):
        x = np.stack([fit_native(f, (w, h)) for f in x])
    return np.ascontiguousarray(x[:, None], dtype=np.float32)


def cosine_scores(embeddings: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Cosine similarities between (re-normalised) embeddings and codebook entries.

    Args:
        embeddings: (N, D) float embeddings (any trailing shape is flattened to D).
        codebook: (K, D) float entries, one per class.

    Returns:
        (N, K) float64 cosines in [-1, 1].
    """
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    c = np.asarray(codebook, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return e @ c.T


def _softmax(sims: np.ndarray, temperature: float) -> np.ndarray:
    logits = sims / float(temperature)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def classify(embeddings: np.ndarray, codebook: np.ndarray, classes: Sequence[str],
             threshold, temperature: float = DEFAULT_TEMPERATURE, added: Sequence[int] = ()) -> List[dict]:
    """Nearest codebook entry per embedding.

    Args:
        embeddings: (N, D) float router embeddings (after any adaptation map).
        codebook: (K, D) float entries, one per name in ``classes``.
        classes: the K class names.
        threshold: the cosine below which a frame is unknown: one float, or (K,) one per class.
        temperature: softmax temperature of the confidences.
        added: indices of rows added after training (see below).

    Returns one dict per frame: ``task`` (class name, or "unknown"), ``nearest`` (the nearest
    class even when unknown), ``confidence`` (softmax probability of the nearest entry over
    cosine/temperature), ``probabilities`` ({class: softmax probability}, the distribution
    ``confidence`` is read from, summing to 1, without the added rows when the verdict is the
    codebook's without them; what :func:`parts_confidence` sums),
    ``similarity`` (its cosine) and ``unknown`` (similarity below the threshold: one float, or
    one per class).

    ``added``: indices of rows added after training (:func:`add_router_class`, the router
    entry's ``added`` reports). Such a row only claims the frames nearest to it that reach its
    threshold; every other frame gets the verdict (class, confidence, unknown) of the codebook
    without the added rows, i.e. exactly what the router said before they were added (a new row
    never turns an earlier class's frame into "unknown" or "uncertain").

    Raises:
        ValueError: the codebook has not K rows, a threshold list is not K long, or an ``added``
            index is outside the codebook.
    """
    sims = cosine_scores(embeddings, codebook)
    if sims.shape[1] != len(classes):
        raise ValueError(f"codebook has {sims.shape[1]} entries for {len(classes)} classes")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(classes),))
    probs = _softmax(sims, temperature)
    added = sorted({int(k) for k in added})
    if any(not 0 <= k < len(classes) for k in added):
        raise ValueError(f"added rows {added} outside the codebook's {len(classes)} rows")
    base = [k for k in range(len(classes)) if k not in added]
    base_probs = _softmax(sims[:, base], temperature) if added and base else None
    out = []
    for i in range(len(sims)):
        k = int(np.argmax(sims[i]))
        if base_probs is not None and not (k in added and sims[i, k] >= thr[k]):
            j = int(np.argmax(sims[i, base]))   # not claimed by an added row: the old verdict
            k, conf = base[j], float(base_probs[i, j])
            dist = {classes[b]: float(base_probs[i, n]) for n, b in enumerate(base)}
        else:
            conf = float(probs[i, k])
            dist = {c: float(probs[i, n]) for n, c in enumerate(classes)}
        unknown = bool(sims[i, k] < thr[k])
        out.append({"task": UNKNOWN if unknown else classes[k], "nearest": classes[k],
                    "confidence": conf, "probabilities": dist, "similarity": float(sims[i, k]),
                    "unknown": unknown})
    return out


def task_parts(task: str) -> frozenset:
    """The degradation parts a class carries: a compound task's parts (engines/degrade.py
    ``COMPOUND_PARTS``: CBN -> contrast, blur, noise), a single task itself, ``clean`` and
    ``unknown`` none."""
    if task in (CLEAN, UNKNOWN):
        return frozenset()
    return frozenset(_degrade.COMPOUND_PARTS.get(task) or (task,))


def parts_confidence(probabilities: Mapping[str, float], parts) -> float:
    """The router's probability that a frame carries at least ``parts``: the sum of the
    ``probabilities`` ({class: softmax probability}, :func:`classify`) of the classes whose
    :func:`task_parts` include every one of them (no parts: 1.0).

    Why (session 22): the nearest class's probability alone read a router split between classes
    that agree on a part as unsure of it. On hit_uav's BN segment (``tir eval --sequence
    --segment-frames 192``) verdicts CN p=0.50 and CN p=0.44, both gated to noise, were votes for
    pass-through although most of the router's probability lay on noise-carrying classes, and the
    route fell from BN to pass-through for 40 of 192 frames of a noisy stream after its onset. The
    restorer's uncertainty rule (engines/restorer.py ``Restorer._route_confidence``) sums this."""
    want = frozenset(parts)
    return float(sum(p for c, p in probabilities.items() if want <= task_parts(c)))


def added_rows(entry: Optional[dict]) -> List[int]:
    """Codebook rows a router entry gained after training (its ``added`` reports' ``row``)."""
    return [int(a["row"]) for a in (entry or {}).get("added") or [] if isinstance(a.get("row"), int)]


def confusion(true: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> dict:
    """Confusion counts {true: {pred: n}} over classes (+ unknown column), and accuracies."""
    cols = list(classes) + [UNKNOWN]
    table = {t: {c: 0 for c in cols} for t in sorted(set(true), key=lambda t: (t not in classes, t))}
    for t, p in zip(true, pred):
        table[t][p if p in cols else UNKNOWN] += 1
    return table


def degraded_batches(frames: np.ndarray, classes: Sequence[str], draws: int, seed: int, chunk: int = 8,
                     desc: str = "", progress: bool = True, augment: Optional[Callable] = None,
                     variants: Optional[dict] = None, quantize: float = 0.0):
    """Yield (class index, N×1×h×w float32 batch) for (N,h,w) ``frames``: every frame degraded
    ``draws`` times per class, draw d of class k seeded by ``[seed, k, d]``; a clean frame once
    (``draws`` times when ``augment`` is given). ``augment(batch, rng)`` (e.g.
    :func:`tir.engines.training.domain.randomize`) re-renders the clean batch before the degradation.
    ``variants`` {class: [spec, ...]}: draw d of that class uses spec ``d % len`` (e.g.
    :data:`SENSOR_VARIANTS`: the noise classes also as real non-NUC'd sensors show them).
    ``quantize``: probability per frame that the (degraded or clean) frame is stored in 8 bits
    afterwards, as an 8-bit camera or file delivers it (``tir eval`` and ``file://`` re-quantise
    after the degradation: a contrast-compressed frame keeps 50-150 grey levels whose steps
    put fine-scale energy back into a blurred frame). 0 draws nothing (seeded draws unchanged)."""
    from tqdm import tqdm

    from . import degrade as deg

    total = sum(1 if n == CLEAN and augment is None else draws for n in classes) * math.ceil(len(frames) / chunk)
    with tqdm(total=total, desc=desc, unit="chunk", leave=False, disable=not progress) as bar:
        for k, name in enumerate(classes):
            for d in range(1 if name == CLEAN and augment is None else draws):
                rng = np.random.default_rng([seed, k, d])
                for i in range(0, len(frames), chunk):
                    batch = frames[i:i + chunk]
                    if augment is not None:
                        batch = augment(batch, rng)
                    if name != CLEAN:
                        options = (variants or {}).get(name) or [name]
                        batch = deg.degrade(batch, options[d % len(options)], rng)
                    if quantize > 0:
                        batch = quantize_8bit(batch, rng.random(len(batch)) < quantize)
                    yield k, np.ascontiguousarray(batch[:, None], dtype=np.float32)
                    bar.update(1)


def quantize_8bit(batch: np.ndarray, which: np.ndarray) -> np.ndarray:
    """(N, h, w) float32 [0, 1] -> the same with the frames where ``which`` (N bools) is true
    rounded to 8-bit grey levels (k/255), as an 8-bit camera, JPEG/PNG file or ``tir eval`` of an
    8-bit set stores a frame."""
    out = np.array(batch, dtype=np.float32, copy=True)
    out[which] = np.rint(np.clip(out[which], 0.0, 1.0) * 255.0) / 255.0
    return out


def load_router_entry(path) -> Tuple[Path, dict]:
    """(router.onnx path, manifest entry) from a folder or JSON written by
    :func:`~tir.engines.training.router_train.train_router`.

    Raises:
        FileNotFoundError: there is no router.json (``path`` itself, or in the folder), or the
            ONNX file it names is not next to it.
        KeyError: the JSON has no ``file`` entry.
    """
    path = Path(path)
    meta = path / ROUTER_JSON if path.is_dir() else path
    if not meta.is_file():
        raise FileNotFoundError(f"no router description {meta}; train_router writes {ROUTER_JSON} "
                                "next to router.onnx")
    entry = jsontext.loads(meta.read_text())
    onnx_path = meta.parent / entry["file"]
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{meta} names {entry['file']}, which is not in {meta.parent}")
    return onnx_path, entry
