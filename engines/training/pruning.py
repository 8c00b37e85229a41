"""Structural-entropy channel pruning (ecmrnet.md §1.2 Stage 2), with physical removal.

For every residual block of a task's branch the inner channels are split into groups of a
fixed size (nodes). For each of N sample frames: each group's channels are collapsed into one
vector, weighted by a softmax over each channel's one-dimensional structural entropy inside
the group's Pearson-correlation graph; the groups' vectors give a graph whose edges are the
Pearson correlations clipped at 0 (diagonal 0); a greedy two-dimensional structural-entropy
minimisation (merges, then node moves, at most 10 sweeps) partitions it into communities, and
each community keeps its representative (the node whose removal to a community of its own
raises H2 the most). A group survives if it was picked in ≥ p·N samples. Dropped channels are
cut out of the convs (new, smaller ``nn.Conv2d`` with copied weights) and their mean
activation is folded into the next conv's bias.

Structural entropy (Li & Pan 2016), graph of weights w_ij, degrees d_i, vol = Σ d_i:
  H1 = −Σ_i (d_i/vol)·log2(d_i/vol)
  H2(P) = Σ_C [ −Σ_{i∈C} (d_i/vol)·log2(d_i/vol_C) − (g_C/vol)·log2(vol_C/vol) ]
with vol_C the community's volume and g_C its cut weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .models.ecmrnet import DenseResBlock

EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# structural entropy
# ---------------------------------------------------------------------------------------------

def _check_graph(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"adjacency must be square, got {w.shape}")
    if np.any(w < 0) or not np.allclose(w, w.T):
        raise ValueError("adjacency must be symmetric and non-negative")
    return w


def _plogp(p: np.ndarray) -> np.ndarray:
    out = np.zeros_like(p, dtype=np.float64)
    mask = p > 0
    out[mask] = p[mask] * np.log2(p[mask])
    return out


def structural_entropy_1d(w: np.ndarray) -> float:
    """One-dimensional structural entropy (Li & Pan 2016): H1 = −Σ (d_i/vol) log2(d_i/vol).

    Args:
        w: (K, K) adjacency (cast to float64), symmetric and non-negative.

    Returns:
        H1 in bits; 0.0 for a graph without edges.

    Raises:
        ValueError: ``w`` is not square, symmetric and non-negative.
    """
    d = _check_graph(w).sum(axis=1)
    vol = d.sum()
    if vol <= 0:
        return 0.0
    return float(-_plogp(d / vol).sum())


def structural_entropy_2d(w: np.ndarray, labels: Sequence[int]) -> float:
    """Two-dimensional structural entropy H2 of a partition (Li & Pan 2016; formula in the module
    docstring).

    Args:
        w: (K, K) float adjacency, symmetric and non-negative.
        labels: (K,) community id per node.

    Returns:
        H2 in bits.

    Raises:
        ValueError: ``w`` is not square, symmetric and non-negative.
    """
    w = _check_graph(w)
    return _h2(w, w.sum(axis=1), np.asarray(labels))


def _h2(w: np.ndarray, d: np.ndarray, labels: np.ndarray) -> float:
    vol = d.sum()
    if vol <= 0:
        return 0.0
    _, comm = np.unique(labels, return_inverse=True)
    k = comm.max() + 1
    onehot = np.zeros((len(comm), k))
    onehot[np.arange(len(comm)), comm] = 1.0
    vol_c = onehot.T @ d
    internal = np.einsum("ik,ij,jk->k", onehot, w, onehot)
    cut = vol_c - internal
    h = 0.0
    for c in range(k):
        if vol_c[c] <= 0:
            continue
        members = d[comm == c]
        members = members[members > 0]
        h -= float(np.sum((members / vol) * np.log2(members / vol_c[c])))
        h -= float(cut[c] / vol * np.log2(vol_c[c] / vol))
    return h


def minimise_2d_entropy(w: np.ndarray, max_sweeps: int = 10) -> Tuple[np.ndarray, List[float]]:
    """Greedy 2-D SE minimisation: best merges until none helps, then node moves.

    Starts from singletons (where H2 = H1) and only accepts strict decreases, so the returned
    history never increases. Returns (labels, H2 after each accepted step).
    """
    w = _check_graph(w)
    d = w.sum(axis=1)
    n = len(d)
    labels = np.arange(n)
    history = [_h2(w, d, labels)]
    # merge phase
    while True:
        comms = np.unique(labels)
        best, best_pair = history[-1] - 1e-12, None
        for ai, a in enumerate(comms):
            for b in comms[ai + 1:]:
                if w[np.ix_(labels == a, labels == b)].sum() <= 0:
                    continue
                trial = np.where(labels == b, a, labels)
                h = _h2(w, d, trial)
                if h < best:
                    best, best_pair = h, (a, b)
        if best_pair is None:
            break
        labels = np.where(labels == best_pair[1], best_pair[0], labels)
        history.append(best)
    # move phase
    for _ in range(max_sweeps):
        moved = False
        for i in range(n):
            neighbours = np.unique(labels[w[i] > 0])
            for target in neighbours:
                if target == labels[i]:
                    continue
                trial = labels.copy()
                trial[i] = target
                h = _h2(w, d, trial)
                if h < history[-1] - 1e-12:
                    labels, moved = trial, True
                    history.append(h)
        if not moved:
            break
    _, labels = np.unique(labels, return_inverse=True)
    return labels, history


def representatives(w: np.ndarray, labels: np.ndarray) -> List[int]:
    """Per community, the node whose move to a singleton raises H2 the most.

    Args:
        w: (K, K) float adjacency, symmetric and non-negative.
        labels: (K,) int community id per node.

    Returns:
        the representatives' node indices, sorted, one per community.

    Raises:
        ValueError: ``w`` is not square, symmetric and non-negative.
    """
    w = _check_graph(w)
    d = w.sum(axis=1)
    base = _h2(w, d, labels)
    reps = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) == 1:
            reps.append(int(members[0]))
            continue
        scores = []
        for i in members:
            trial = labels.copy()
            trial[i] = labels.max() + 1
            scores.append(_h2(w, d, trial) - base)
        reps.append(int(members[int(np.argmax(scores))]))
    return sorted(reps)


# ---------------------------------------------------------------------------------------------
# graphs of channel groups
# ---------------------------------------------------------------------------------------------

def pearson(x: np.ndarray) -> np.ndarray:
    """Correlation between the rows of x; rows without variance correlate 0.

    Args:
        x: (K, P) float array, one variable per row.

    Returns:
        (K, K) float64 correlation matrix in [−1, 1].
    """
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1))
    ok = norm > EPS
    corr = np.zeros((x.shape[0], x.shape[0]))
    xs = x[ok] / norm[ok, None]
    corr[np.ix_(ok, ok)] = xs @ xs.T
    return corr


def group_vectors(act: np.ndarray, group: int) -> Tuple[np.ndarray, np.ndarray]:
    """Collapse an activation (C×P) into one vector per channel group (G×P).

    Channel weights: softmax over each channel's 1-D SE term −(d/vol)·log(d/vol) in the
    group's correlation graph (diagonal 0, negatives 1e-8) (ecmrnet.md §1.2). Also returns each
    group's activity (mean absolute activation) so silent groups can be recognised.
    """
    c = act.shape[0]
    vectors, activity = [], []
    for g in range(c // group):
        chans = act[g * group:(g + 1) * group]
        corr = pearson(chans)
        np.fill_diagonal(corr, 0.0)
        corr[corr < 0] = 1e-8
        deg = corr.sum(axis=1)
        vol = deg.sum()
        terms = -(deg / vol) * np.log(np.maximum(deg / vol, EPS)) if vol > 0 else np.zeros(group)
        weights = np.exp(terms - terms.max())
        weights /= weights.sum()
        vectors.append(weights @ chans)
        activity.append(float(np.abs(chans).mean()))
    return np.stack(vectors), np.asarray(activity)


def picked_groups(act: np.ndarray, group: int, silent: float = 1e-6) -> List[int]:
    """The groups one sample picks: community representatives of the group graph.

    Args:
        act: (C, P) float inner activation of one block for one sample (C channels, P pixels).
        group: channels per group (C a multiple of it).
        silent: groups whose mean |activation| is at most this are never picked.

    Returns:
        the picked group indices in [0, C // group), sorted.
    """
    vectors, activity = group_vectors(act, group)
    w = pearson(vectors)
    np.fill_diagonal(w, 0.0)
    w = np.clip(w, 0.0, None)
    w = (w + w.T) / 2
    labels, _ = minimise_2d_entropy(w)
    return [g for g in representatives(w, labels) if activity[g] > silent]


# ---------------------------------------------------------------------------------------------
# physical removal
# ---------------------------------------------------------------------------------------------

def _sliced_conv(conv: nn.Conv2d, out_idx=None, in_idx=None) -> nn.Conv2d:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None:
        weight = weight[:, in_idx]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def prune_block(block: DenseResBlock, keep: Sequence[int], mean_act: torch.Tensor = None) -> None:
    """Keep only inner channels ``keep`` of ``block``; fold dropped channels' means into conv2.

    Args:
        block: the residual block, changed in place (new, smaller conv1 and conv2).
        keep: inner channel indices to keep.
        mean_act: (C,) float32 mean inner activation per channel, or None (nothing folded).

    Raises:
        ValueError: ``keep`` is empty.
    """
    keep = torch.as_tensor(sorted(keep), dtype=torch.long)
    if len(keep) == 0:
        raise ValueError("a block must keep at least one channel")
    dropped = torch.tensor([i for i in range(block.mid) if i not in set(keep.tolist())], dtype=torch.long)
    conv2 = _sliced_conv(block.conv2, in_idx=keep)
    if mean_act is not None and len(dropped):
        with torch.no_grad():
            w = block.conv2.weight.detach()[:, dropped].sum(dim=(2, 3))          # C_out × dropped
            conv2.bias += w @ mean_act[dropped].to(w.dtype)
    block.conv1 = _sliced_conv(block.conv1, out_idx=keep)
    block.conv2 = conv2


@dataclass
class BlockPlan:
    """The pruning plan of one residual block.

    Attributes:
        name: the block's name.
        groups: number of channel groups (inner channels // group size).
        counts: per group, in how many samples it was picked.
        keep_groups: the groups kept (picked in ≥ p·N samples; at least the most picked one).
    """
    name: str
    groups: int
    counts: List[int]                 # how often each group was picked
    keep_groups: List[int] = field(default_factory=list)


def collect_picks(blocks: Dict[str, DenseResBlock], run, samples: Iterable[torch.Tensor], group: int,
                  pixel_stride: int = 2) -> Tuple[Dict[str, BlockPlan], Dict[str, torch.Tensor], int]:
    """Run ``run(sample)`` on every sample, recording each block's inner activation.

    Returns per-block pick counts, per-block mean inner activation and the sample count.

    Args:
        blocks: name -> residual block, hooked on its conv1 (ReLU of the output).
        run: called with each sample to run the network.
        samples: input tensors, e.g. (N, 1, H, W) float32 frames in [0, 1].
        group: channels per group.
        pixel_stride: pixel subsampling of the activations, in px.

    Returns:
        ``(plans, means, n)``: name -> BlockPlan with pick counts, name -> (C,) float32 mean
        inner activation, and the number of samples.

    Raises:
        ValueError: a block's inner channels are not a multiple of ``group``.
    """
    for name, block in blocks.items():
        if block.mid % group:
            raise ValueError(f"block {name} has {block.mid} inner channels, not a multiple of {group}")
    plans = {name: BlockPlan(name, b.mid // group, [0] * (b.mid // group)) for name, b in blocks.items()}
    sums = {name: torch.zeros(b.mid) for name, b in blocks.items()}
    acts: Dict[str, torch.Tensor] = {}
    hooks = [b.conv1.register_forward_hook(
        lambda mod, inp, out, name=name: acts.__setitem__(name, torch.relu(out).detach()))
        for name, b in blocks.items()]
    n = 0
    try:
        with torch.no_grad():
            for sample in samples:
                acts.clear()
                run(sample)
                for name, a in acts.items():
                    for frame in a:
                        sums[name] += frame.mean(dim=(1, 2))
                        flat = frame[:, ::pixel_stride, ::pixel_stride].reshape(frame.shape[0], -1).numpy()
                        for g in picked_groups(flat.astype(np.float64), group):
                            plans[name].counts[g] += 1
                n += sample.shape[0]
    finally:
        for h in hooks:
            h.remove()
    means = {name: s / max(n, 1) for name, s in sums.items()}
    return plans, means, n


def select_groups(plans: Dict[str, BlockPlan], n_samples: int, p: float) -> Dict[str, BlockPlan]:
    """A group survives if picked in ≥ p·N samples (at least one group per block is kept)."""
    for plan in plans.values():
        keep = [g for g, c in enumerate(plan.counts) if c >= p * n_samples]
        plan.keep_groups = keep or [int(np.argmax(plan.counts))]
    return plans


def apply_plans(blocks: Dict[str, DenseResBlock], plans: Dict[str, BlockPlan], group: int,
                means: Dict[str, torch.Tensor]) -> None:
    """Physically slice every block to its kept groups.

    Args:
        blocks: name -> residual block, changed in place.
        plans: name -> its BlockPlan (``keep_groups`` set).
        group: channels per group.
        means: name -> (C,) float32 mean inner activation folded into conv2's bias.
    """
    for name, block in blocks.items():
        keep = [g * group + k for g in plans[name].keep_groups for k in range(group)]
        if len(keep) < block.mid:
            prune_block(block, keep, means.get(name))
