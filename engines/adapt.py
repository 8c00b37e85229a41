"""Test-time adaptation of the degradation router to the user's camera (UDAIR-style, CORAL).

The router (engines/router.py) maps a frame to a unit embedding (N×D float, D = 48 for the
shipped bundle) and classifies it by cosine similarity to a codebook with one entry per class.
It was trained on one camera; on another the embeddings shift and it misroutes. UDAIR
(ecmrnet.md §3: "CORAL-style test-time adaptation pulls target degradation embeddings toward
the source cluster centres") is followed at the embedding level, with no labels:

1. **Source statistics** (:func:`source_stats`): mean and covariance of the router's embeddings
   on the training camera, overall and per class, stored in the bundle's router entry under
   ``adapt_source``. :func:`compute_source_stats` makes them from the training frames degraded
   per class exactly as the router was trained (``router.degraded_batches``).
2. **CORAL** (Sun, Feng & Saenko, AAAI 2016, "Return of Frustratingly Easy Domain Adaptation"):
   whiten the N unlabeled target embeddings with the target covariance and re-colour them with
   the source covariance, ``A1 = Cs^½ Ct^-½``, plus the mean shift ``b1 = μs − A1 μt``. The
   target covariance is shrunk towards ``(tr Ct / D)·I`` with the Ledoit–Wolf coefficient
   (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional covariance
   matrices"), since N ≈ 200 samples estimate a D×D = 48×48 covariance poorly.
3. **Pull to the source cluster centres** (UDAIR): k-means-like rounds; each adapted
   embedding is assigned to its nearest codebook entry (the runtime's own rule), each
   cluster's members are shifted so that their mean lands on that class's source mean, and
   one affine correction (ridge-regularised towards the identity) is fitted to those targets
   and composed with the CORAL map.

The result is ONE affine map ``e' = A e + b`` in embedding space (:func:`apply_adaptation`,
renormalised to unit length after), stored in the adapted bundle's router entry under
``adaptation`` (A, b, frames used, source URI, date); the runtime (``Restorer``) and the
evaluation (``RouterRunner``) both call :func:`apply_adaptation` before cosine
classification. A fit that is degenerate (too few frames, frames that barely differ, an
ill-conditioned map) raises :class:`AdaptationRefused` with the reason.

numpy only at import time (the runtime path must not import torch).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..edge.errors import InputError
from .contrast_gate import CONTRAST_SPAN_KEY, contrast_prior, lowpass_span, span_summary

log = logging.getLogger(__name__)

SOURCE_KEY = "adapt_source"      # router entry key of the source statistics
ADAPTATION_KEY = "adaptation"    # router entry key of the fitted map
DEFAULT_FRAMES = 200
MIN_FRAMES = 32                  # fewer target frames than this: refuse
MIN_SPREAD_RATIO = 1e-3          # target total variance / source total variance below this: refuse
MAX_CONDITION = 1e3              # cond(A) above this: the map is ill-conditioned, refuse
DEFAULT_PULL_ROUNDS = 3
DEFAULT_PULL_STRENGTH = 1.0      # fraction of the gap between a cluster mean and its source mean
DEFAULT_RIDGE = 1.0              # ridge of the pull's affine fit towards identity (scale-free)
SIMILARITY_TOLERANCE = 0.01     # a map that lowers the mean best codebook cosine by more: refuse
MIN_CLUSTER = 3                  # clusters with fewer members are not shifted
SOURCE_DRAWS = 2                 # degradation draws per training frame and class (as the router's training)
SOURCE_SEED = 0


class AdaptationRefused(ValueError, InputError):
    """The adaptation cannot be fitted reliably from these frames; the message says why."""


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------

def _as_embeddings(emb) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be N×D, got shape {x.shape}")
    return x


def ledoit_wolf(x: np.ndarray):
    """Shrunk covariance of samples ``x`` (N×D): ``(1−α)·S + α·(tr S / D)·I``.

    ``S`` is the (biased, 1/N) sample covariance and ``α`` ∈ [0, 1] the Ledoit–Wolf (2004,
    Lemma 3.2 / Theorem 3.2) estimate of the optimal shrinkage towards a scaled identity.
    Returns (covariance D×D float64, α).
    """
    x = _as_embeddings(x)
    n, d = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = float(np.trace(s)) / d
    delta2 = float(np.sum((s - mu * np.eye(d)) ** 2)) / d
    # Σ_k ||x_k x_kᵀ − S||²_F = Σ_k ||x_k||⁴ − N ||S||²_F (since Σ_k x_k x_kᵀ = N S)
    beta2 = (float(np.sum(np.sum(xc * xc, axis=1) ** 2)) - n * float(np.sum(s * s))) / (n * n * d)
    alpha = 1.0 if delta2 <= 0 else min(max(beta2, 0.0), delta2) / delta2
    return (1.0 - alpha) * s + alpha * mu * np.eye(d), float(alpha)


def source_stats(embeddings, labels, classes: Sequence[str], digits: int = 6, class_digits: int = 4) -> dict:
    """Statistics of source (training-camera) embeddings for :data:`SOURCE_KEY`.

    Args:
        embeddings: (N, D) float router unit embeddings (cast to float64).
        labels: (N,) int class indices into ``classes``.
        classes: the K class names.
        digits: significant digits of the overall mean and covariance.
        class_digits: significant digits of the per-class covariances (used only for the
            per-class alignment report of :func:`fit_adaptation`), to keep the manifest small.

    Returns:
        A JSON-ready dict: ``count``, ``mean`` (D,), ``covariance`` (D, D), the 1/N sample
        covariance, and ``classes`` {name: {count, mean, covariance}}, as nested lists of floats.

    Raises:
        ValueError: ``embeddings`` is not 2-D, ``labels`` is not N long, or a class has fewer
            than 2 embeddings.
    """
    x = _as_embeddings(embeddings)
    labels = np.asarray(labels)
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} labels")

    def r(a, n=digits):
        return np.vectorize(lambda v: float(f"{v:.{n}g}"))(np.asarray(a, np.float64)).tolist()

    def moments(z, cov_digits=digits):
        zc = z - z.mean(axis=0)
        return {"count": int(len(z)), "mean": r(z.mean(axis=0)), "covariance": r(zc.T @ zc / len(z), cov_digits)}

    per_class = {}
    for k, name in enumerate(classes):
        members = x[labels == k]
        if len(members) < 2:
            raise ValueError(f"class {name!r} has {len(members)} source embeddings; need at least 2")
        per_class[name] = moments(members, class_digits)
    return {**moments(x), "classes": per_class}


def compute_source_stats(embed: Callable[[np.ndarray], np.ndarray], frames: np.ndarray,
                         classes: Sequence[str], draws: int = SOURCE_DRAWS, seed: int = SOURCE_SEED,
                         input_size: Sequence[int] = (640, 512), progress: bool = True,
                         augment: Optional[Callable] = None, variants: Optional[dict] = None,
                         quantize: float = 0.0) -> dict:
    """:func:`source_stats` of ``frames`` (N,H,W float [0,1], the router's training frames)
    degraded ``draws`` times per class (clean once) with ``router.degraded_batches``, as the
    router's training does; ``embed`` maps N×1×h×w float32 to N×D embeddings (the router
    ONNX). ``augment`` is the clean-frame randomisation the router was trained with
    (engines/training/domain.py), if any. Adds ``frames``, ``draws``, ``seed`` to the result."""
    from .router import degraded_batches, prepare_frames

    x = prepare_frames(frames, input_size)[:, 0]
    emb, labels = [], []
    for k, batch in degraded_batches(x, list(classes), int(draws), int(seed), desc="source stats",
                                     progress=progress, augment=augment, variants=variants,
                                     quantize=quantize):
        emb.append(np.asarray(embed(batch), np.float64).reshape(len(batch), -1))
        labels += [k] * len(batch)
    stats = source_stats(np.concatenate(emb), np.asarray(labels), classes)
    stats.update(frames=int(len(x)), draws=int(draws), seed=int(seed))
    return stats


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------

def _sym_power(c: np.ndarray, power: float, floor: float) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.maximum(w, floor) ** power) @ v.T


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ridge_affine(y: np.ndarray, t: np.ndarray, ridge: float):
    """(M, c) minimising ||y Mᵀ + c − t||² + λ·N·||M − I||², λ = ridge × mean variance of y."""
    n, d = y.shape
    ym, tm = y.mean(axis=0), t.mean(axis=0)
    yc, tc = y - ym, t - tm
    gram = yc.T @ yc
    lam = float(ridge) * float(np.trace(gram)) / d
    r = np.linalg.solve(gram + lam * np.eye(d), yc.T @ (tc - yc))
    m = np.eye(d) + r.T
    return m, tm - m @ ym


def balanced_assignment(sims: np.ndarray, prior: np.ndarray, temperature: float = 0.1,
                        iterations: int = 50) -> np.ndarray:
    """Cluster index per row of cosine ``sims`` under the constraint that cluster sizes follow
    ``prior``: Sinkhorn–Knopp scaling (Cuturi 2013, "Sinkhorn Distances") of
    ``exp(sims / temperature)`` to row sums 1 and column sums N·prior, then the arg-max of each
    row. Stops one class from swallowing frames of another when the target mix of degradations
    is the source's (CORAL's own assumption).

    Args:
        sims: (N, K) float cosine similarities of N embeddings to K codebook entries.
        prior: (K,) float cluster proportions summing to 1.
        temperature: softmax temperature of the similarities.
        iterations: Sinkhorn–Knopp row/column scaling rounds.

    Returns:
        (N,) int64 cluster indices in [0, K).
    """
    logits = sims / float(temperature)
    p = np.exp(logits - logits.max())
    cols = len(sims) * np.asarray(prior, np.float64)
    for _ in range(int(iterations)):
        p *= (cols / np.maximum(p.sum(axis=0), 1e-300))[None, :]
        p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    return np.argmax(p, axis=1)


def fit_adaptation(target, source: dict, codebook, classes: Sequence[str],
                   pull_rounds: int = DEFAULT_PULL_ROUNDS, pull_strength: float = DEFAULT_PULL_STRENGTH,
                   ridge: float = DEFAULT_RIDGE, balance: bool = False, min_frames: int = MIN_FRAMES,
                   max_condition: float = MAX_CONDITION) -> dict:
    """Fit the affine map (A, b) that aligns target embeddings to the source (module docstring).

    ``target`` N×D unlabeled embeddings from the user's camera; ``source`` the
    :data:`SOURCE_KEY` statistics; ``codebook`` K×D and ``classes`` (K names) the router's.
    ``pull_rounds`` = 0 gives plain CORAL; ``balance`` assigns clusters with
    :func:`balanced_assignment` (source class proportions) instead of the nearest entry.
    Returns {"A": D×D list, "b": D list, "frames": N, "shrinkage": Ledoit–Wolf α of the
    target covariance, "condition": cond(A), "clusters": {class: members in the last round},
    "similarity_before"/"similarity_after": mean best codebook cosine of the target frames,
    "alignment": :func:`cluster_alignment`}.
    Raises :class:`AdaptationRefused` when N < ``min_frames``, embeddings are not finite, the
    target spread is below :data:`MIN_SPREAD_RATIO` of the source's, cond(A) >
    ``max_condition``, or the map lowers the frames' mean best codebook similarity by more
    than :data:`SIMILARITY_TOLERANCE` (it does not align them: a label-free check).
    """
    z = _as_embeddings(target)
    n, d = z.shape
    if n < int(min_frames):
        raise AdaptationRefused(f"{n} frames are too few to fit the adaptation: need at least {min_frames} "
                                f"({DEFAULT_FRAMES} recommended)")
    if not np.all(np.isfinite(z)):
        raise AdaptationRefused("the router gave non-finite embeddings for some frames; check the source")
    mu_s = np.asarray(source["mean"], np.float64)
    cov_s = np.asarray(source["covariance"], np.float64)
    if mu_s.shape != (d,) or cov_s.shape != (d, d):
        raise ValueError(f"source statistics are for {mu_s.shape[0]}-D embeddings, the router gives {d}-D; "
                         "recompute them for this router (tir adapt --source-stats)")
    centres = {c: np.asarray(source["classes"][c]["mean"], np.float64) for c in classes
               if c in source.get("classes", {})}
    book = _unit(np.asarray(codebook, np.float64))
    prior = np.asarray([source.get("classes", {}).get(c, {}).get("count", 0) for c in classes], np.float64)
    prior = prior / prior.sum() if prior.sum() > 0 else np.full(len(classes), 1.0 / len(classes))
    spread_s = float(np.trace(cov_s))
    cov_t, alpha = ledoit_wolf(z)
    spread_t = float(np.trace(cov_t))
    if spread_t < MIN_SPREAD_RATIO * spread_s:
        raise AdaptationRefused(
            f"the {n} frames barely differ (embedding spread {spread_t:.2e} against {spread_s:.2e} on the "
            "training camera): collect frames of varied scenes (tir adapt --stride, or move the camera)")

    floor = 1e-6 * spread_s / d
    a = _sym_power(cov_s, 0.5, floor) @ _sym_power(cov_t, -0.5, 1e-6 * spread_t / d)
    b = mu_s - a @ z.mean(axis=0)
    counts: Dict[str, int] = {}
    for _ in range(int(pull_rounds)):
        y = z @ a.T + b
        sims = _unit(y) @ book.T
        nearest = balanced_assignment(sims, prior) if balance else np.argmax(sims, axis=1)
        goal = y.copy()
        counts = {}
        for k, name in enumerate(classes):
            members = nearest == k
            counts[name] = int(members.sum())
            if counts[name] >= MIN_CLUSTER and name in centres:
                goal[members] += float(pull_strength) * (centres[name] - y[members].mean(axis=0))
        m, c = _ridge_affine(y, goal, ridge)
        a, b = m @ a, m @ b + c
    if not counts:
        nearest = np.argmax(_unit(z @ a.T + b) @ book.T, axis=1)
        counts = {name: int(np.sum(nearest == k)) for k, name in enumerate(classes)}
    cond = float(np.linalg.cond(a))
    if not np.isfinite(cond) or cond > max_condition:
        raise AdaptationRefused(f"the fitted map is ill-conditioned (condition number {cond:.3g} > "
                                f"{max_condition:g}); collect more, more varied frames")
    # label-free check that the map aligns: the frames must end up nearer the codebook, not further
    before = float(np.mean(np.max(_unit(z) @ book.T, axis=1)))
    after = float(np.mean(np.max(_unit(z @ a.T + b) @ book.T, axis=1)))
    if after < before - SIMILARITY_TOLERANCE:
        raise AdaptationRefused(
            f"the fitted map moves these frames away from the router's classes (mean best similarity "
            f"{before:.3f} -> {after:.3f}): an affine map of the router's embeddings cannot align this camera "
            "(e.g. far lower resolution), or the frames do not cover the degradations in about the training "
            "mix; the router stays unadapted")
    return {"A": a.tolist(), "b": b.tolist(), "frames": int(n), "shrinkage": alpha,
            "condition": cond, "clusters": counts, "similarity_before": before, "similarity_after": after,
            "alignment": cluster_alignment(z, {"A": a, "b": b}, source, book, classes)}


def cluster_alignment(target, adaptation: Optional[dict], source: dict, codebook, classes: Sequence[str]) -> dict:
    """Per class: how far the target frames the router assigns to it sit from the source
    class, ``||mean(target members) − source class mean|| / sqrt(tr C_k)`` (C_k: the source
    class covariance; 1 ≈ one source standard deviation away), without and with
    ``adaptation``; {class: [before, after]} (None when fewer than :data:`MIN_CLUSTER`
    frames are assigned to it). A label-free per-class view of what the map did."""
    z = _as_embeddings(target)
    book = _unit(np.asarray(codebook, np.float64))
    out = {}
    views = [_unit(z), apply_adaptation(z, adaptation)]
    nearest = [np.argmax(v @ book.T, axis=1) for v in views]
    for k, name in enumerate(classes):
        info = source.get("classes", {}).get(name)
        gaps = []
        for v, near in zip(views, nearest):
            members = v[near == k]
            if info is None or len(members) < MIN_CLUSTER:
                gaps.append(None)
                continue
            scale = np.sqrt(max(float(np.trace(np.asarray(info["covariance"], np.float64))), 1e-12))
            gaps.append(round(float(np.linalg.norm(members.mean(axis=0) - np.asarray(info["mean"]))) / scale, 3))
        out[name] = gaps
    return out


def apply_adaptation(embeddings, adaptation: Optional[dict]) -> np.ndarray:
    """The runtime's one entry point: ``unit(A e + b)`` per row of the embeddings.

    Args:
        embeddings: (N, D) float router embeddings (any trailing shape is flattened to D).
        adaptation: the router entry's :data:`ADAPTATION_KEY` dict (or anything with "A" (D, D)
            and "b" (D,)), or None.

    Returns:
        (N, D) float64: the adapted unit embeddings, or the embeddings unchanged (as float64)
        when ``adaptation`` is None.

    Raises:
        ValueError: the map's shapes do not fit D (re-run ``tir adapt`` for this bundle).
    """
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    if adaptation is None:
        return e
    a = np.asarray(adaptation["A"], np.float64)
    b = np.asarray(adaptation["b"], np.float64)
    if a.shape != (e.shape[1], e.shape[1]) or b.shape != (e.shape[1],):
        raise ValueError(f"adaptation map is {a.shape}/{b.shape} for {e.shape[1]}-D embeddings; "
                         "re-run tir adapt for this bundle")
    return _unit(e @ a.T + b)


def adaptation_entry(fit: dict, source_uri: str, **extra) -> dict:
    """The :data:`ADAPTATION_KEY` entry: the fit plus ``source`` URI and ``date`` (UTC ISO)."""
    entry = {k: fit[k] for k in ("A", "b", "frames", "shrinkage", "condition", "clusters",
                                 "similarity_before", "similarity_after", "alignment")}
    entry.update(source=str(source_uri),
                 date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra)
    return entry


def decision_histogram(embeddings, router: dict, adaptation: Optional[dict] = None) -> Dict[str, int]:
    """How many of the embeddings the router sends to each class (and unknown), with the
    ``adaptation`` map applied when given; uses the runtime's :func:`router.classify`.

    Args:
        embeddings: (N, D) float router embeddings.
        router: the bundle's router entry (``tasks``, ``codebook`` (K, D), thresholds,
            ``temperature``).
        adaptation: an :data:`ADAPTATION_KEY` map, or None for the raw router.

    Returns:
        {class name: frame count} for every class and ``unknown``, counts summing to N.

    Raises:
        ValueError: the map's or the codebook's shapes do not fit (see :func:`apply_adaptation`,
            :func:`router.classify`).
    """
    from .router import DEFAULT_TEMPERATURE, UNKNOWN, classify

    classes = list(router["tasks"])
    decisions = classify(apply_adaptation(embeddings, adaptation), np.asarray(router["codebook"]), classes,
                         router.get("thresholds", router.get("threshold", -1.0)),
                         float(router.get("temperature", DEFAULT_TEMPERATURE)))
    hist = {c: 0 for c in classes + [UNKNOWN]}
    for d in decisions:
        hist[d["task"]] += 1
    return hist


def source_of(router: Optional[dict], bundle_name: str = "") -> dict:
    """The router entry's source statistics (:data:`SOURCE_KEY`).

    Raises:
        AdaptationRefused: no router, or no source statistics (the message says how to add them).
    """
    if router is None:
        raise AdaptationRefused(f"bundle {bundle_name!r} has no router to adapt")
    stats = router.get(SOURCE_KEY)
    if not stats:
        raise AdaptationRefused(f"bundle {bundle_name!r} has no router source statistics ({SOURCE_KEY}); add them "
                                "with `tir adapt --source-stats --bundle DIR` (needs the router's training frames)")
    return stats


class OnlineAdapter:
    """Collects embeddings during the first ``frames`` frames, then fits (used by ``Restorer``).

    ``state``: ``collecting k/N``, ``adapted`` or ``refused: reason``. :meth:`add` takes
    (N, D) embeddings and returns the fitted :data:`ADAPTATION_KEY` entry once, when the
    ``frames``-th embedding arrives and the fit succeeds (None otherwise). ``fit_options`` go to
    :func:`fit_adaptation`.

    Raises:
        ValueError: ``frames`` < 1.
        AdaptationRefused: the router entry has no router or no source statistics.
    """

    def __init__(self, router: dict, frames: int = DEFAULT_FRAMES, source_uri: str = "", bundle_name: str = "",
                 **fit_options):
        if int(frames) < 1:
            raise ValueError(f"--adapt needs a number of frames ≥ 1, got {frames}")
        self.router = router
        self.stats = source_of(router, bundle_name)
        self.frames = int(frames)
        self.source_uri = source_uri
        self.fit_options = fit_options
        self._collected: List[np.ndarray] = []
        self.done = False
        self.result: Optional[dict] = None
        self.reason: Optional[str] = None
        #: collections started again because the camera changed (:meth:`restart`), and the last reasons
        self.restarts = 0
        self.restart_reasons: Optional[List[str]] = None
        #: fits dropped because the camera changed after them (:meth:`restart` once done): the map
        #: is fitted again on the new camera's first ``frames`` frames
        self.refits = 0

    def restart(self, reasons: Sequence[str] = ()) -> None:
        """The camera changed (the source reconnected, the frame size or bit depth changed:
        ``Restorer.new_camera``): collect ``frames`` embeddings afresh. While collecting, what was
        collected is dropped: a map fitted on two cameras' embeddings aligns neither (the fit's
        moments would mix them). Once fitted (or refused), the fit is dropped too and made again
        on the new camera (:attr:`refits`): the old camera's map moved the new camera's
        embeddings by the old camera's offset (CORAL aligns one camera's moments, Sun et al.
        2016), and the new camera may be the one the bundle was trained on; the caller stops
        applying the dropped map (:attr:`result` is None again)."""
        if self.done:
            self.refits += 1
            self.done = False
            self.result = None
            self.reason = None
            log.warning("camera change (%s) after the router adaptation: the map fitted on the previous camera is "
                        "dropped; fitting again on the next %d frames", ", ".join(map(str, reasons)) or "?",
                        self.frames)
        self._collected = []
        self.restarts += 1
        self.restart_reasons = [str(r) for r in reasons]

    @property
    def count(self) -> int:
        """Embeddings collected so far (0 again once the fit ran)."""
        return sum(len(e) for e in self._collected)

    @property
    def state(self) -> str:
        """``collecting k/N`` (with `` (restarted: camera change REASONS)`` after :meth:`restart`,
        `` (refitting: camera change REASONS; the previous camera's map was dropped)`` after a
        restart once fitted), ``adapted`` (`` (refitted after camera change REASONS)``) or
        ``refused: reason``."""
        why = f"camera change {', '.join(self.restart_reasons or [])}"
        if self.result is not None:
            return f"adapted (refitted after {why})" if self.refits else "adapted"
        if self.reason is not None:
            return f"refused: {self.reason}"
        again = (f" (refitting: {why}; the previous camera's map was dropped)" if self.refits else
                 f" (restarted: {why})" if self.restarts else "")
        return f"collecting {self.count}/{self.frames}{again}"

    def add(self, embeddings) -> Optional[dict]:
        """Collect (N, D) float embeddings; at the ``frames``-th one, fit the map once.

        Returns:
            The :data:`ADAPTATION_KEY` entry (mode ``online``) when the fit succeeded on this call;
            None while collecting, after the fit, or when it was refused (the reason is in :attr:`state`).

        Raises:
            ValueError: ``embeddings`` is not 2-D, or the source statistics do not fit the router's D.
        """
        if self.done:
            return None
        self._collected.append(_as_embeddings(embeddings))
        if self.count < self.frames:
            return None
        self.done = True
        z = np.concatenate(self._collected)[: self.frames]
        self._collected = []
        try:
            fit = fit_adaptation(z, self.stats, self.router["codebook"], self.router["tasks"], **self.fit_options)
        except AdaptationRefused as exc:
            self.reason = str(exc)
            log.warning("router adaptation refused: %s", exc)
            return None
        self.result = adaptation_entry(fit, self.source_uri, mode="online")
        log.info("router adapted on %d frames (condition %.1f, clusters %s)", fit["frames"], fit["condition"],
                 fit["clusters"])
        return self.result


# ---------------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------------

def write_adapted_bundle(bundle_path, out_dir, adaptation: dict, camera_spans: Optional[Sequence[float]] = None):
    """Copy the bundle at ``bundle_path`` to ``out_dir`` (a new folder) with ``adaptation``
    stored in its router entry; the original is not touched, every model file is copied byte
    for byte (so every sha256 in the manifest stays right). Returns the copy as a verified
    :class:`~tir.engines.bundle.Bundle`.

    ``camera_spans``: the user's camera's low-pass spans (engines/contrast_gate.py
    ``lowpass_span``), stored summarised as the router's ``contrast_span`` (with the
    adaptation's ``source`` as ``data``), so the contrast gate of the adapted bundle starts from
    this camera's own contrast instead of the training cameras' (the training prior is kept under
    ``training_span``).

    Raises:
        BundleError: the bundle fails its checks, ``out_dir`` already exists, or the copy cannot be
            written (a full disk: the copy is removed again).
        AdaptationRefused: the bundle has no router or no source statistics.
    """
    import copy

    from .bundle import load_bundle, new_copy, save_manifest

    original = load_bundle(bundle_path)
    source_of(original.router, original.name)
    manifest = copy.deepcopy(original.manifest)
    manifest["router"][ADAPTATION_KEY] = adaptation
    if camera_spans:
        prior = manifest["router"].get(CONTRAST_SPAN_KEY) or {}
        training = prior.get("training_span") if prior.get("camera") else prior   # re-adapting keeps the first
        manifest["router"][CONTRAST_SPAN_KEY] = {**span_summary(camera_spans), "data": adaptation.get("source"),
                                                 "camera": True, "training_span": training or None}
    manifest["adapted_from"] = str(original.path)
    with new_copy(original.path, out_dir) as out:   # a manifest that cannot be written: no copy left
        return save_manifest(out, manifest)


#: what ``add_source_stats`` computes: both, the adaptation statistics alone, the contrast prior alone
SOURCE_STATS_PARTS = ("all", "adaptation", "contrast")


def add_source_stats(bundle_path, frames: np.ndarray, data: str, draws: int = SOURCE_DRAWS,
                     seed: int = SOURCE_SEED, threads: Optional[int] = None, progress: bool = True,
                     augment: Optional[Callable] = None, variants: Optional[dict] = None,
                     quantize: float = 0.0, what: str = "all"):
    """Compute :func:`compute_source_stats` with the bundle's router ONNX on ``frames`` and
    store them in the bundle's router entry under :data:`SOURCE_KEY`, with the contrast gate's
    training prior (:func:`tir.engines.contrast_gate.contrast_prior`) under ``contrast_span``,
    in place (only manifest.json changes; the bundle is re-verified after).

    Args:
        bundle_path: the bundle folder.
        frames: (N, H, W) float32 frames in [0, 1], the router's training frames.
        data: where the frames came from (recorded as ``data``).
        draws, seed, augment, variants, quantize: as :func:`compute_source_stats`.
        threads: ONNX Runtime threads (None: its default).
        progress: show a tqdm bar.
        what: ``all``, ``adaptation`` (the source statistics only) or ``contrast`` (the contrast
            prior only; the router is not run).

    Returns:
        The updated Bundle.

    Raises:
        ValueError: ``what`` is not one of :data:`SOURCE_STATS_PARTS`.
        AdaptationRefused: the bundle has no router.
        BundleError: the bundle does not load or verify (before or after the change).
    """
    import copy

    from .backends import load_engine
    from .bundle import load_bundle, save_manifest

    if what not in SOURCE_STATS_PARTS:
        raise ValueError(f"what must be one of {', '.join(SOURCE_STATS_PARTS)}, got {what!r}")
    bundle = load_bundle(bundle_path)
    if bundle.router is None:
        raise AdaptationRefused(f"bundle {bundle.name!r} has no router to compute source statistics for")
    manifest = copy.deepcopy(bundle.manifest)
    if what in ("all", "adaptation"):
        engine = load_engine(bundle.router_path, backend="onnxruntime",
                             **({} if threads is None else {"threads": threads}))
        stats = compute_source_stats(lambda x: engine.infer(x), frames, bundle.router["tasks"], draws, seed,
                                     bundle.router.get("input_size", (640, 512)), progress, augment, variants,
                                     quantize)
        stats["data"] = str(data)
        manifest["router"][SOURCE_KEY] = stats
    if what in ("all", "contrast"):
        # the same training frames give the contrast gate its prior (engines/contrast_gate.py)
        manifest["router"][CONTRAST_SPAN_KEY] = {**contrast_prior(frames), "data": str(data)}
    return save_manifest(bundle.path, manifest)


# ---------------------------------------------------------------------------------------------
# tir adapt: collect frames from a source, fit, write the adapted copy
# ---------------------------------------------------------------------------------------------

def check_collection_fits(frames: int, frame_bytes: int, shape=None, available: Optional[int] = None) -> None:
    """Refuse a collection of ``frames`` model-input frames of ``frame_bytes`` bytes each that
    cannot be held in memory: :func:`collect_frames` keeps every frame (float32, the router
    embeds them after) and stacks them into one array at the end, so it needs twice
    ``frames × frame_bytes``; ``--frames 99999999999`` collected for hours and would end in a
    MemoryError. ``available``: bytes free (default :func:`tir.edge.machine.available_memory`;
    nothing is refused when it cannot be read).

    Raises:
        AdaptationRefused: the frames need more than the available memory; the message gives
            the most that fit and :data:`DEFAULT_FRAMES`.
    """
    from ..edge.machine import available_memory

    available = available_memory() if available is None else available
    need = 2 * frames * frame_bytes
    if available is None or need <= available:
        return
    size = f" ({shape[-1]}x{shape[-2]} px float32)" if shape is not None and len(shape) >= 2 else ""
    raise AdaptationRefused(f"--frames {frames} would need {need / 2 ** 30:.1f} GiB of memory for the frames{size}, "
                            f"{available / 2 ** 30:.1f} GiB are available: ask for at most "
                            f"{available // (2 * frame_bytes)} ({DEFAULT_FRAMES} recommended)")


def duration_text(seconds: float) -> str:
    """``seconds`` in words for a person: ``"40 s"``, ``"6 min 40 s"``, ``"2 h 05 min"``,
    ``"3.5 days"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 86400:.1f} days"


def collection_estimate(frames: int, stride: int, fps: Optional[float], paced: bool = True) -> str:
    """How long collecting ``frames`` frames at every ``stride``-th frame takes, in words, for the
    progress bar before the first frame: ``frames × stride / fps`` seconds of a source that
    delivers ``fps`` frames per second in real time (a camera, a paced replay; FFC frames, which
    are skipped, add their freezes on top). ``tir adapt --stride 100000`` on a live camera sat
    at 0/200 with no hint that it needed 7.7 days.

    Args:
        frames: frames to keep (>= 1). stride: every ``stride``-th frame is kept (>= 1).
        fps: the source's frames per second (``Source.fps``), None when it does not say.
        paced: False for a source read as fast as it decodes (``rate=max``, ``realtime=0``):
            the time is the decoder's, not ``fps``'s.

    Returns:
        e.g. ``"200 × stride 300 = 60,000 source frames ≈ 33 min 20 s at 30 fps"``.
    """
    total = int(frames) * int(stride)
    head = f"{int(frames)} × stride {int(stride)} = {total:,} source frames" if int(stride) > 1 else \
        f"{total:,} source frames"
    if not paced:
        return f"{head}, read as fast as they decode"
    if fps is None or not (0 < float(fps) < math.inf):
        return f"{head} (the source does not say its frame rate: no time estimate)"
    return f"{head} ≈ {duration_text(total / float(fps))} at {float(fps):g} fps"


def collect_frames(source_uri: str, frames: int, normalizer=None, stride: int = 1, timeout_s: float = 5.0,
                   progress: bool = True, input_flip: Optional[str] = None) -> np.ndarray:
    """``frames`` model-input frames (frames,H,W float32 [0,1]) from any source URI, through
    the pipeline's own preprocessing (``edge.pipeline.stages.Preprocess`` with ``normalizer``),
    taking every ``stride``-th frame and skipping FFC frames (meta ``ffc``), turned by ``input_flip``
    (edge/sources/orient.py: a camera mounted in portrait or upside down, as ``tir run --input-flip``). Raises
    ``SourceError`` when the source gives no frame for ``timeout_s`` seconds, and
    :class:`AdaptationRefused` when a finite source ends before ``frames`` frames. The progress
    bar (and the log) says before the first frame how long the collection takes
    (:func:`collection_estimate`: frames × stride / the source's fps)."""
    from tqdm import tqdm

    from ..edge.pipeline.stages import Preprocess
    from ..edge.sources.base import open_source
    from ..edge.sources.orient import oriented

    if int(frames) < 1 or int(stride) < 1:
        raise ValueError(f"frames and stride must be ≥ 1, got frames={frames}, stride={stride}")
    prep = Preprocess(normalizer)
    out: List[np.ndarray] = []
    with oriented(open_source(source_uri), input_flip) as source:
        paced = bool(getattr(source, "live", getattr(source, "paced", True)))
        estimate = collection_estimate(frames, stride, getattr(source, "fps", None), paced)
        log.info("collecting %s from %s", estimate, source_uri)
        with tqdm(total=int(frames), desc=f"collecting ({estimate})", unit="frame", disable=not progress) as bar:
            _collect_into(out, source, frames, stride, prep, bar, timeout_s)
    if len(out) < int(frames):
        raise AdaptationRefused(f"{source_uri} ended after {len(out)} of {frames} usable frames; ask for "
                                "fewer --frames, a smaller --stride, or a looping source")
    return np.stack(out)


def _collect_into(out: List[np.ndarray], source, frames: int, stride: int, prep, bar, timeout_s: float) -> None:
    """:func:`collect_frames`' loop: every ``stride``-th usable frame of the started ``source``
    preprocessed by ``prep`` into ``out`` until it holds ``frames``; between two kept frames the
    bar's postfix says how many source frames are left until the next, once a second."""
    import time

    from ..edge.pipeline.stages import MODEL_INPUT_KEY
    from ..edge.sources.base import usable_frames

    shown = time.monotonic()
    for seen, frame in enumerate(usable_frames(source, timeout_s)):
        if seen % int(stride):
            if time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                bar.set_postfix_str(f"next in {int(stride) - seen % int(stride):,} frames", refresh=True)
            continue
        prep(frame)
        out.append(np.asarray(frame.meta.pop(MODEL_INPUT_KEY), np.float32))
        if len(out) == 1:
            check_collection_fits(int(frames), out[0].nbytes, out[0].shape)
        bar.update(1)
        if len(out) == int(frames):
            break


def adapt_bundle(bundle_path, source_uri: str, frames: int, out_dir, normalizer=None, stride: int = 1,
                 backend: str = "auto", threads: Optional[int] = None, progress: bool = True,
                 input_flip: Optional[str] = None, **fit_options) -> dict:
    """``tir adapt``: collect ``frames`` frames from ``source_uri`` (:func:`collect_frames`),
    embed them with the bundle's router, fit (:func:`fit_adaptation`) and write the adapted
    copy to ``out_dir`` (:func:`write_adapted_bundle`; the original is untouched). Returns
    {"bundle": the copy, "fit": the adaptation entry, "before"/"after": the router's decision
    histogram on the collected frames without / with the map}. The copy's contrast gate starts
    from the collected frames' low-pass spans (:func:`write_adapted_bundle` ``camera_spans``).
    Raises AdaptationRefused."""
    from .bundle import load_bundle
    from .restorer import Restorer

    original = load_bundle(bundle_path)
    stats = source_of(original.router, original.name)
    from pathlib import Path

    if Path(out_dir).exists():  # fail before spending minutes on collection
        raise AdaptationRefused(f"{out_dir} already exists; choose a new folder for the adapted copy")
    x = collect_frames(source_uri, frames, normalizer, stride, progress=progress, input_flip=input_flip)
    restorer = Restorer(original, backend=backend, threads=threads)
    try:
        emb = np.concatenate([restorer.embed(x[i:i + 1]) for i in range(len(x))])
    finally:
        restorer.close()
    # the stored map is fitted on the raw router: an already adapted bundle is re-fitted from scratch
    fit = fit_adaptation(emb, stats, original.router["codebook"], original.router["tasks"], **fit_options)
    entry = adaptation_entry(fit, source_uri, mode="offline", stride=int(stride))
    adapted = write_adapted_bundle(original.path, out_dir, entry, camera_spans=[lowpass_span(f) for f in x])
    return {"bundle": adapted, "fit": entry, "before": decision_histogram(emb, original.router),
            "after": decision_histogram(emb, original.router, entry)}
