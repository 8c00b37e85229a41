"""Label-free discovery of new degradations in collected frames (issue 13 item 2).

In the spirit of AMIRNet (a degradation representation built by progressively clustering
unknown degraded images into a tree, without degradation labels): the router embeddings of
the frames ``tir run --collect`` kept (edge/outputs/collect.py) are split recursively in two,

- each split by spherical 2-means (cosine; k-means++ seeding, several seeded restarts, the
  lowest within-cluster sum of squares kept);
- a split is kept when both halves have at least ``min_size`` frames and the Bayesian
  information criterion of two isotropic Gaussians beats that of one (X-means, Pelleg &
  Moore 2000: log-likelihood with the pooled per-dimension variance
  σ² = SSE / (d·(n − k)), k·(d + 1) parameters, penalty p/2·ln n), up to ``max_depth``;
- every node keeps its centre (the normalised mean embedding), its spread (mean 1 − cosine
  of its members to the centre) and radius (90th percentile of the same);

then every node is tested against the bundle's router codebook: a node whose centre's cosine
to the nearest class entry reaches that class's calibrated unknown threshold minus
``known_margin`` lies near a known task (``known``), else it is ``new``. Frame labels the
source stated (the virtual camera's degradation name) are never used for clustering; they
only give each node's purity in the report.

For each new leaf, :mod:`tir.engines.propose` fits the ops to its frames (those nearest the
centre, at most ``fit_frames``) and proposes a spec; the proposal is checked in the router's
own space: clean frames of the virtual camera degraded with the proposed spec are embedded
and the residual is 1 − cosine between their centre and the leaf's centre. It fits when the
residual is within the leaf's radius (floor ``MIN_FIT_RADIUS``); otherwise the report says
that no composition of known ops was found, with the residual, and no spec is written.

The tree splits wherever the embeddings differ significantly, which includes one degradation
seen over different scenes or stripe patterns (the router's outlier exposure packs all unknown
degradations close together, so no fixed distance separates "another degradation" from "the
same one elsewhere"). So new leaves whose proposals agree (same ops in the same order, every
parameter range within ``PARAM_TOLERANCE`` = 25 %) form one group: one new degradation, with
one proposal refitted on the group's frames and checked against the group's centre and
radius (``proposed-group-<k>.json``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

MIN_FIT_RADIUS = 0.05
REPORT = "report.json"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 8,
                     iters: int = 50):
    """Cosine k-means on unit rows: the best of ``restarts`` k-means++ seeded runs by within-cluster
    sum of squares.

    Args:
        x: (N, D) float array of unit-norm rows (router embeddings).
        k: number of clusters.
        rng: the generator for the k-means++ seeding.
        restarts: seeded runs; the one with the lowest SSE is kept.
        iters: assignment/update iterations per run at most (stops when labels settle).

    Returns:
        ``(labels, centres)``: (N,) int labels in [0, k) and (k, D) float64 unit centres.
    """
    best = None
    n = len(x)
    for _ in range(restarts):
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d = np.min([1.0 - x @ c for c in centres], axis=0).clip(min=0)
            p = d / d.sum() if d.sum() > 0 else None
            centres.append(x[rng.choice(n, p=p)])
        centres = np.asarray(centres)
        labels = None
        for _ in range(iters):
            new = np.argmax(x @ centres.T, axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    centres[j] = _unit(x[labels == j].mean(0))
        sse = float(sum(((x[labels == j] - x[labels == j].mean(0)) ** 2).sum() for j in range(k) if np.any(labels == j)))
        if best is None or sse < best[0]:
            best = (sse, labels.copy(), centres.copy())
    return best[1], best[2]


def bic(x: np.ndarray, labels: np.ndarray) -> float:
    """X-means BIC (Pelleg & Moore 2000) of isotropic Gaussians, one per label.

    Log-likelihood with the pooled per-dimension variance σ² = SSE / (d·(n − k)), k·(d + 1)
    parameters, penalty p/2·ln n (see the module docstring).

    Args:
        x: (N, D) float embeddings.
        labels: (N,) int cluster labels.

    Returns:
        the BIC (higher is better); ``-inf`` when N ≤ the number of clusters.
    """
    n, d = x.shape
    groups = [x[labels == j] for j in np.unique(labels)]
    k = len(groups)
    if n <= k:
        return -math.inf
    sse = sum(float(((g - g.mean(0)) ** 2).sum()) for g in groups)
    var = max(sse / (d * (n - k)), 1e-12)
    ll = sum(len(g) * math.log(len(g) / n) for g in groups)
    ll += -0.5 * n * d * math.log(2 * math.pi * var) - 0.5 * sse / var
    params = k * (d + 1)
    return ll - 0.5 * params * math.log(n)


def build_tree(embeddings: np.ndarray, min_size: int = 5, max_depth: int = 5, seed: int = 0,
               progress: bool = True) -> List[Dict]:
    """The clustering tree over the embeddings by recursive spherical 2-means with an X-means BIC test.

    Args:
        embeddings: (N, D) float embeddings (normalised to unit rows here).
        min_size: a split is kept only when both halves have at least this many frames.
        max_depth: deepest level split.
        seed: seed of the k-means++ seeding.
        progress: show a tqdm bar.

    Returns:
        the nodes, root first, each a dict {"id", "parent", "depth", "members" (row indices),
        "children", "centre" ((D,) float64 unit vector), "spread", "radius" (1 − cosine: mean
        and 90th percentile of the members to the centre), "bic_split" (BIC gain of the kept
        split or the refused one)}.

    Raises:
        ValueError: fewer than 2 embeddings.
    """
    from tqdm import tqdm

    x = _unit(embeddings)
    if len(x) < 2:
        raise ValueError(f"{len(x)} embedding(s): discovery needs at least 2 collected frames")
    rng = np.random.default_rng(seed)
    nodes: List[Dict] = []
    bar = tqdm(desc="discover: splits", unit="node", disable=not progress)

    def add(members: np.ndarray, parent: Optional[int], depth: int) -> int:
        sub = x[members]
        centre = _unit(sub.mean(0))
        dist = 1.0 - sub @ centre
        node = {"id": len(nodes), "parent": parent, "depth": depth, "members": members.tolist(),
                "children": [], "centre": centre, "spread": float(dist.mean()),
                "radius": float(np.percentile(dist, 90)), "bic_split": None}
        nodes.append(node)
        bar.update(1)
        if len(members) >= 2 * min_size and depth < max_depth:
            labels, _ = spherical_kmeans(sub, 2, rng)
            sizes = np.bincount(labels, minlength=2)
            if sizes.min() >= min_size:
                gain = bic(sub, labels) - bic(sub, np.zeros(len(sub), int))
                node["bic_split"] = round(gain, 2)
                if gain > 0:
                    for j in (0, 1):
                        node["children"].append(add(members[labels == j], node["id"], depth + 1))
        return node["id"]

    add(np.arange(len(x)), None, 0)
    bar.close()
    return nodes


def known_test(nodes: List[Dict], codebook, classes: Sequence[str], thresholds, margin: float = 0.1) -> None:
    """Mark each node ``known`` (centre within ``margin`` of the nearest class's unknown
    threshold) or ``new``; adds "nearest", "similarity", "threshold", "status"."""
    from .router import cosine_scores

    book = np.asarray(codebook, np.float64)
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (len(classes),))
    for node in nodes:
        sims = cosine_scores(node["centre"][None], book)[0]
        k = int(np.argmax(sims))
        node.update(nearest=classes[k], similarity=round(float(sims[k]), 4), threshold=round(float(thr[k]), 4),
                    status="known" if sims[k] >= thr[k] - margin else "new")


def purity(nodes: List[Dict], labels: Sequence[Optional[str]]) -> Optional[float]:
    """Adds "labels" (counts) and "purity" (majority share) per node; returns the leaves'
    frame-weighted purity, or None when no frame has a label."""
    if not any(labels):
        return None
    total = majority = 0
    for node in nodes:
        counts: Dict[str, int] = {}
        for i in node["members"]:
            name = labels[i] or "?"
            counts[name] = counts.get(name, 0) + 1
        node["labels"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
        node["purity"] = round(max(counts.values()) / len(node["members"]), 4)
        if not node["children"]:
            total += len(node["members"])
            majority += max(counts.values())
    return round(majority / total, 4)


PARAM_TOLERANCE = 0.25  # relative: proposals this close are the same degradation


def _agree(a, b, tol: float = PARAM_TOLERANCE) -> bool:
    """Two parameter values (numbers or [lo, hi] ranges) agree: the ranges, each widened by
    ``tol`` of its magnitude (at least 0.05 absolute for shares such as column_p), overlap."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    lo_a, hi_a = (a, a) if not isinstance(a, list) else a
    lo_b, hi_b = (b, b) if not isinstance(b, list) else b
    pad_a = max(tol * max(abs(lo_a), abs(hi_a)), 0.05 if abs(hi_a) <= 1 else 0.0)
    pad_b = max(tol * max(abs(lo_b), abs(hi_b)), 0.05 if abs(hi_b) <= 1 else 0.0)
    return lo_a - pad_a <= hi_b + pad_b and lo_b - pad_b <= hi_a + pad_a


def same_degradation(a: List[Dict], b: List[Dict]) -> bool:
    """Two proposals' steps name the same ops in the same order with agreeing parameters."""
    if not a or [s["op"] for s in a] != [s["op"] for s in b]:
        return False
    return all(_agree(sa[k], sb.get(k)) for sa, sb in zip(a, b) for k in sa if k != "op" and k in sb)


def group_proposals(proposals: List[Dict]) -> List[List[int]]:
    """Indices of ``proposals`` grouped by :func:`same_degradation` (transitively); a proposal
    with no steps stays alone."""
    parent = list(range(len(proposals)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(proposals)):
        for j in range(i + 1, len(proposals)):
            if same_degradation(proposals[i]["steps"], proposals[j]["steps"]):
                parent[root(j)] = root(i)
    out: Dict[int, List[int]] = {}
    for i in range(len(proposals)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def leaves(nodes: List[Dict]) -> List[Dict]:
    """The nodes of a :func:`build_tree` list that have no children (same dicts, tree order)."""
    return [n for n in nodes if not n["children"]]


# ---------------------------------------------------------------------------------------------
# proposals checked in the router's space
# ---------------------------------------------------------------------------------------------

def clean_reference(shape, n: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` clean virtual-camera frames (uint16 counts) of frame size ``shape`` (h, w): rendered
    at the nearest offered size, then centre-cropped / mirror-extended at native scale."""
    from tir.edge.sources.synthetic import SIZES, render_frames

    from .router import fit_native

    h, w = int(shape[0]), int(shape[1])
    size = min(SIZES, key=lambda s: abs(s[0] - w) + abs(s[1] - h))
    frames = render_frames(n, size=size, seed=seed, start=0)
    frames = np.concatenate([frames[:1], render_frames(n - 1, size=size, seed=seed, start=200)]) if n > 1 else frames
    return np.stack([fit_native(f, (w, h)) for f in frames]).astype(np.uint16)


def embed_counts(restorer, frames: np.ndarray, normalizer) -> np.ndarray:
    """Router embeddings of raw counts frames, normalised as the pipeline's Preprocess does.

    Args:
        restorer: a Restorer whose ``classify`` fills ``last_embeddings``.
        frames: (N, H, W) uint16 Y16 counts (or any iterable of (H, W) counts frames).
        normalizer: the bundle's counts normaliser (``forward(raw) -> (x, info)``).

    Returns:
        (N, D) float64 unit-norm embeddings.
    """
    out = []
    for raw in frames:
        x, _ = normalizer.forward(raw)
        restorer.classify(x[None, None])
        out.append(restorer.last_embeddings[-1])
    return _unit(np.asarray(out))


def synthesize(spec, clean_counts: np.ndarray, draws: int = 2, seed: int = 0, max_count: int = 16383) -> np.ndarray:
    """Clean counts degraded with ``spec`` as the virtual camera does it (counts_range map of
    each frame, the op in [0, 1], back to counts): (N·draws)×H×W uint16."""
    from .degrade import counts_range, degrade

    out = []
    for i, raw in enumerate(clean_counts):
        lo, hi = counts_range(raw)
        x = (raw.astype(np.float32) - lo) / (hi - lo)
        for d in range(draws):
            y = degrade(x, spec, np.random.default_rng([seed, i, d]))
            out.append(np.clip(y * (hi - lo) + lo + 0.5, 0, max_count).astype(np.uint16))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# the whole step
# ---------------------------------------------------------------------------------------------

def write_report_file(path: Path, doc, indent: int = 1) -> None:
    """``doc`` as JSON (``indent``, a final newline) into ``path`` through a temporary file beside it
    that replaces it only when complete, so a full disk leaves no cut report or proposal.

    Raises:
        OutputFailed: the write failed (exit 3); the message names the file and the reason.
    """
    from tir.edge.errors import OutputFailed
    from tir.edge.outputs.collect import write_json_atomic

    try:
        write_json_atomic(path, doc, indent=indent)
    except OSError as exc:
        raise OutputFailed(f"{path}: not written ({exc.strerror or exc}); free space there or give another "
                           "--out") from exc


def check_collection_folder(folder) -> None:
    """Refuse a ``--from`` that is not a folder: a path that does not exist (said so, with the
    close names in its parent folder: it read "DIR has no index.json", as if the folder were
    there) or a file. A folder without ``index.json`` is :func:`discover`'s to refuse.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` is a file.
    """
    from tir.edge.sources.file import describe_missing

    folder = Path(folder)
    if not folder.exists():
        said = describe_missing(str(folder))
        detail = said[len(f"no such file or folder: {folder}"):]   # "; did you mean …?" or " (… entries …)"
        raise FileNotFoundError(f"the collection folder {folder} does not exist{detail}; collect frames into a "
                                "folder first with tir run --collect DIR, then give that DIR")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a collection folder (tir run --collect DIR writes a folder "
                         "with index.json and frames/); give that folder")


def discover(folder, bundle_path, out_dir, min_size: int = 5, max_depth: int = 5, known_margin: float = 0.1,
             seed: int = 0, propose_specs: bool = True, fit_frames: int = 16, progress: bool = True,
             plots: bool = True) -> Dict:
    """Cluster a collection, test the nodes against the bundle's codebook, propose specs for
    new leaves, write ``report.json`` (+ ``tree.png``, ``exemplars.png``, ``proposed-<id>.json``)
    into ``out_dir``; returns the report. Raises FileNotFoundError (``folder`` does not exist,
    with the close names of its parent folder), ValueError (a file instead of a folder, no
    index, no/too few embeddings, a bundle without a router) with a message naming the folder
    or bundle, OutputFailed when a file cannot be written (:func:`write_report_file`)."""
    from tir.edge.outputs.collect import load_frame, read_index
    from tir.edge.normalize import Normalizer

    from . import propose as prop
    from .degrade import DegradationSpec
    from .restorer import Restorer

    folder, out_dir = Path(folder), Path(out_dir)
    check_collection_folder(folder)
    if not (folder / "index.json").is_file():
        raise ValueError(f"{folder} has no index.json: collect frames first with tir run --collect {folder}")
    index = read_index(folder)
    entries = [e for e in index["entries"] if e.get("embedding")]
    if len(entries) < 2:
        raise ValueError(f"{folder}: {len(entries)} collected frame(s) with a router embedding; discovery needs "
                         "at least 2 (run tir run --collect longer, or on a source the router does not know)")
    dims = {len(e["embedding"]) for e in entries}
    if len(dims) > 1:
        raise ValueError(f"{folder}: embeddings of sizes {sorted(dims)} (collected with different routers); "
                         "collect into one folder per router")
    restorer = Restorer(bundle_path, threads=1)
    if restorer.router_info is None:
        raise ValueError(f"bundle {bundle_path} has no router: nothing to test the clusters against")
    info = restorer.router_info
    if len(info["codebook"][0]) != dims.pop():
        raise ValueError(f"{folder}: embeddings are not of bundle {bundle_path}'s router (size differs); "
                         "pass the bundle the frames were collected with (--model)")
    out_dir.mkdir(parents=True, exist_ok=True)
    emb = np.asarray([e["embedding"] for e in entries], np.float64)
    labels = [e.get("label") for e in entries]
    nodes = build_tree(emb, min_size=min_size, max_depth=max_depth, seed=seed, progress=progress)
    thresholds = info.get("thresholds", info.get("threshold"))
    known_test(nodes, info["codebook"], info["tasks"], thresholds, known_margin)
    overall_purity = purity(nodes, labels)
    x = _unit(emb)
    for node in nodes:
        members = np.asarray(node["members"])
        order = np.argsort(-(x[members] @ node["centre"]))
        node["exemplars"] = [int(entries[i]["id"]) for i in members[order[:6]]]
        node["size"] = len(members)

    spec_norm = getattr(restorer.bundle, "normalisation", None) or {}
    normalizer = Normalizer(alpha=1.0, **{k: float(spec_norm[k]) for k in ("low_pct", "high_pct")
                               if isinstance(spec_norm.get(k), (int, float))})
    proposals: List[Dict] = []
    groups: List[Dict] = []
    if propose_specs:
        from tqdm import tqdm

        def fit_members(members: np.ndarray, centre: np.ndarray) -> tuple:
            order = np.argsort(-(x[members] @ centre))[:max(1, fit_frames)]
            chosen = [entries[i] for i in members[order]]
            raws = [load_frame(folder, e) for e in chosen]
            ops = [prop.to_op_space(r, e.get("op_range")) for r, e in zip(raws, chosen)]
            return chosen, raws, prop.fit_frames(ops)

        def check(name: str, fits: List[Dict], chosen, raws, centre, radius, out_name: str) -> Dict:
            spec = prop.propose(fits, name)
            result = {"name": name, "frames_fitted": len(chosen),
                      "op_range": "collected" if all(e.get("op_range") for e in chosen) else "estimated per frame",
                      "fit": spec["fit"], "steps": spec["steps"]}
            if not spec["steps"]:
                result.update(fits=False, residual=None,
                              reason="no op of tir.engines.degrade was detected in these frames")
            else:
                bits = chosen[0].get("bits") or 14
                normalizer.max_count = (1 << int(bits)) - 1 if isinstance(bits, int) and 8 <= bits <= 16 else 65535
                clean = clean_reference(raws[0].shape, seed=seed)
                synth = synthesize(DegradationSpec.from_json(spec), clean, seed=seed, max_count=normalizer.max_count)
                synth_centre = _unit(embed_counts(restorer, synth, normalizer).mean(0))
                residual = float(1.0 - synth_centre @ centre)
                tolerance = max(radius, MIN_FIT_RADIUS)
                result.update(residual=round(residual, 4), tolerance=round(tolerance, 4), fits=residual <= tolerance)
                if not result["fits"]:
                    result["reason"] = (f"frames degraded with the best composition of known ops embed "
                                        f"{residual:.3f} (1 - cosine) from this cluster's centre, beyond its "
                                        f"radius {tolerance:.3f}: no composition of known ops fits")
            if result["fits"]:
                doc = {"name": name, "description": spec["description"] + f"; embedding residual {result['residual']}",
                       "steps": spec["steps"], "fit": {**spec["fit"], "residual": result["residual"],
                                                       "tolerance": result["tolerance"], "fits": True}}
            else:  # no "steps": tir learn --spec refuses it rather than learn a guess
                doc = {"name": name, "fit": {**spec["fit"], "fits": False, "residual": result["residual"],
                                             "reason": result["reason"]}, "closest_steps": spec["steps"]}
            write_report_file(out_dir / out_name, doc, indent=2)
            result["file"] = out_name
            return result

        leaf_fits: Dict[int, List[Dict]] = {}
        new_leaves = [n for n in leaves(nodes) if n["status"] == "new"]
        for node in tqdm(new_leaves, desc="discover: propose", unit="cluster", disable=not progress):
            chosen, raws, fits = fit_members(np.asarray(node["members"]), node["centre"])
            leaf_fits[node["id"]] = fits
            result = check(f"new-{node['id']}", fits, chosen, raws, node["centre"], node["radius"],
                           f"proposed-{node['id']}.json")
            result["node"] = node["id"]
            node["proposal"] = result["file"]
            proposals.append(result)

        # new leaves whose proposals agree (same ops, parameters within PARAM_TOLERANCE) are one
        # new degradation: the tree splits wherever the embeddings differ significantly (e.g.
        # the same degradation over different scenes), the ops say whether the degradation does
        for k, members in enumerate(group_proposals(proposals)):
            ids = [proposals[i]["node"] for i in members]
            rows = np.concatenate([np.asarray(nodes[i]["members"]) for i in ids])
            centre = _unit(x[rows].mean(0))
            dist = 1.0 - x[rows] @ centre
            group = {"id": k, "leaves": ids, "size": int(len(rows)), "spread": round(float(dist.mean()), 5),
                     "radius": round(float(np.percentile(dist, 90)), 5)}
            counts: Dict[str, int] = {}
            for i in rows:
                counts[labels[i] or "?"] = counts.get(labels[i] or "?", 0) + 1
            if any(labels):
                group["labels"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
                group["purity"] = round(max(counts.values()) / len(rows), 4)
            if len(ids) == 1:
                group["proposal"] = proposals[members[0]]
            else:
                chosen, raws, _ = fit_members(rows, centre)
                fits = [f for i in ids for f in leaf_fits[i]]
                group["proposal"] = check(f"new-group-{k}", fits, chosen, raws, centre, group["radius"],
                                          f"proposed-group-{k}.json")
            groups.append(group)
    restorer.close()

    report = {
        "collection": str(folder), "bundle": str(bundle_path), "frames": len(entries),
        "counts": index.get("counts", {}),
        "settings": {"min_size": min_size, "max_depth": max_depth, "known_margin": known_margin, "seed": seed,
                     "fit_frames": fit_frames},
        "purity": overall_purity,
        "leaves": [n["id"] for n in leaves(nodes)],
        "new": [n["id"] for n in leaves(nodes) if n["status"] == "new"],
        "nodes": [{**{k: v for k, v in n.items() if k not in ("members", "centre")},
                   "centre": [round(float(v), 5) for v in n["centre"]],
                   "frames": [int(entries[i]["id"]) for i in n["members"]]} for n in nodes],
        "proposals": proposals,
        "groups": groups,
    }
    write_report_file(out_dir / REPORT, report)
    if plots:
        try:
            plot_tree(nodes, out_dir / "tree.png")
            plot_exemplars(folder, nodes, {int(e["id"]): e for e in entries}, out_dir / "exemplars.png")
            report["plots"] = ["tree.png", "exemplars.png"]
        except ImportError as exc:
            report["plots"] = f"not drawn: {exc}; pip install matplotlib (or tir-edge[discover])"
        write_report_file(out_dir / REPORT, report)
    return report


def plot_tree(nodes: List[Dict], path: Path) -> None:
    """The clustering tree: leaves left to right, depth downwards; red = new, blue = known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos: Dict[int, tuple] = {}
    order = [0]

    def place(i: int) -> float:
        node = nodes[i]
        if not node["children"]:
            x = float(order[0])
            order[0] += 1
        else:
            x = float(np.mean([place(c) for c in node["children"]]))
        pos[i] = (x, -node["depth"])
        return x

    place(0)
    width = max(4.0, 1.6 * order[0])
    fig, ax = plt.subplots(figsize=(width, 1.6 + 1.3 * (1 + max(n["depth"] for n in nodes))))
    for node in nodes:
        for c in node["children"]:
            ax.plot([pos[node["id"]][0], pos[c][0]], [pos[node["id"]][1], pos[c][1]], "-", color="0.6", lw=1)
    for node in nodes:
        x, y = pos[node["id"]]
        colour = "tab:red" if node["status"] == "new" else "tab:blue"
        text = f"#{node['id']} n={node['size']}\n{node['nearest']} {node['similarity']:.2f}/{node['threshold']:.2f}"
        text += f"\nspread {node['spread']:.3f}"
        if node.get("labels"):
            top = next(iter(node["labels"]))
            text += f"\n{Path(top).stem[:18]} {100 * node['purity']:.0f} %"  # a spec path: its name
        ax.text(x, y, text, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": "white", "ec": colour, "lw": 1.5})
    ax.set_xlim(-0.8, order[0] - 0.2)
    ax.set_ylim(-(max(n["depth"] for n in nodes)) - 0.7, 0.7)
    ax.axis("off")
    ax.set_title("tir discover: clustering tree (red: new, blue: near a known task; "
                 "nearest class sim/threshold; majority label and purity)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_exemplars(folder: Path, nodes: List[Dict], by_id: Dict[int, Dict], path: Path, per_row: int = 6) -> None:
    """Up to ``per_row`` frames nearest each leaf's centre (1/99 % stretch), one row per leaf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tir.edge.outputs.collect import load_frame

    rows = leaves(nodes)[:16]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(2.0 * per_row, 1.8 * len(rows)), squeeze=False)
    for r, node in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(node["exemplars"]):
                raw = load_frame(folder, by_id[node["exemplars"][c]]).astype(np.float32)
                lo, hi = np.percentile(raw, (1, 99))
                ax.imshow(np.clip((raw - lo) / max(hi - lo, 1.0), 0, 1), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_title(f"#{node['id']} {node['status']} n={node['size']}", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
