"""Structural entropy (hand-computed values), greedy minimisation, physical channel removal."""
import math

import numpy as np
import pytest
import torch

from tir.engines.training.continual import OpenWorldModel, RouteModule
from tir.engines.training.macs import count_macs
from tir.engines.training.models.ecmrnet import DenseResBlock
from tir.engines.training.pruning import (apply_plans, collect_picks, minimise_2d_entropy, picked_groups,
                                 prune_block, representatives, select_groups, structural_entropy_1d,
                                 structural_entropy_2d)

torch.set_num_threads(1)

PATH3 = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float)


def two_triangles(bridge=0.0):
    w = np.zeros((6, 6))
    for a, b in [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]:
        w[a, b] = w[b, a] = 1.0
    w[2, 3] = w[3, 2] = bridge
    return w


def test_one_dimensional_entropy_by_hand():
    # triangle: d = (2,2,2), vol 6 -> log2(3)
    tri = np.ones((3, 3)) - np.eye(3)
    assert structural_entropy_1d(tri) == pytest.approx(math.log2(3))
    # path 0-1-2: d = (1,2,1), vol 4 -> 1/4·2 + 1/2·1 + 1/4·2 = 1.5
    assert structural_entropy_1d(PATH3) == pytest.approx(1.5)
    assert structural_entropy_1d(np.zeros((3, 3))) == 0.0


def test_two_dimensional_entropy_by_hand():
    # path 0-1-2, P = {0,1},{2}: vol_C = 3 and 1, cut 1 each
    h = (-(1 / 4) * math.log2(1 / 3) - (2 / 4) * math.log2(2 / 3) - (1 / 4) * math.log2(3 / 4)
         - (1 / 4) * math.log2(1 / 1) - (1 / 4) * math.log2(1 / 4))
    assert h == pytest.approx(1.29248, abs=1e-5)
    assert structural_entropy_2d(PATH3, [0, 0, 1]) == pytest.approx(h)
    # singletons: H2 = H1; one community: H2 = H1 as well (no cut, vol_C = vol)
    assert structural_entropy_2d(PATH3, [0, 1, 2]) == pytest.approx(1.5)
    assert structural_entropy_2d(PATH3, [0, 0, 0]) == pytest.approx(1.5)
    # two disconnected triangles split into themselves: each -3·(2/12)·log2(2/6)
    assert structural_entropy_2d(two_triangles(), [0, 0, 0, 1, 1, 1]) == pytest.approx(math.log2(3))


def test_bad_graphs_are_refused():
    with pytest.raises(ValueError, match="symmetric"):
        structural_entropy_1d(np.array([[0, 1], [0, 0]], float))
    with pytest.raises(ValueError, match="square"):
        structural_entropy_1d(np.zeros((2, 3)))


def test_greedy_minimisation_never_increases_and_finds_communities():
    labels, history = minimise_2d_entropy(two_triangles(bridge=0.1))
    assert all(b <= a + 1e-12 for a, b in zip(history, history[1:]))
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.random((9, 9))
        w = np.triu(w * (w > 0.5), 1)
        w = w + w.T
        labels, history = minimise_2d_entropy(w)
        assert all(b <= a + 1e-12 for a, b in zip(history, history[1:]))
        assert history[-1] <= structural_entropy_1d(w) + 1e-12
        assert structural_entropy_2d(w, labels) == pytest.approx(history[-1])
    reps = representatives(two_triangles(0.1), np.array([0, 0, 0, 1, 1, 1]))
    assert len(reps) == 2 and reps[0] in (0, 1, 2) and reps[1] in (3, 4, 5)


def test_picked_groups_drop_duplicates_and_silent_groups():
    rng = np.random.default_rng(1)
    base = rng.random((3, 400))
    # groups 0 and 1 carry the same signals (one community), group 2 independent, group 3 silent
    act = np.concatenate([base, base[:1] + 0.01 * rng.random((1, 400)),
                          base + 0.01 * rng.random((3, 400)), base[:1],
                          rng.random((4, 400)), np.zeros((4, 400))])
    picks = picked_groups(act, 4)
    assert 3 not in picks
    assert not (0 in picks and 1 in picks)
    assert 2 in picks


def test_prune_block_is_physical_and_folds_constant_channels():
    torch.manual_seed(0)
    block = DenseResBlock(8, 8)
    with torch.no_grad():                                 # channels 4..7 constant after ReLU
        block.conv1.weight[4:] = 0.0
        block.conv1.bias[4:] = 0.3
    x = torch.rand(1, 8, 12, 12)
    ref = block(x)
    before = sum(p.numel() for p in block.parameters())
    mean = torch.relu(block.conv1(x)).mean(dim=(0, 2, 3))
    prune_block(block, [0, 1, 2, 3], mean)
    assert block.conv1.out_channels == 4 and block.conv2.in_channels == 4
    assert sum(p.numel() for p in block.parameters()) < before
    out = block(x)
    assert torch.allclose(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)   # exact away from borders


def test_pruned_route_runs_costs_less_and_exports(tmp_path):
    from tir.engines.training.export import export_onnx

    torch.manual_seed(0)
    model = OpenWorldModel("tiny")
    model.add_task("noise")
    route = RouteModule(model, "noise")
    path_full = tmp_path / "full.onnx"
    export_onnx(route, path_full, input_shape=(1, 1, 32, 32))
    macs_full = count_macs(route, (1, 1, 64, 64)).macs
    blocks = {f"b{i}": b for i, b in enumerate(model.branches["noise"].res_blocks())}
    samples = [torch.rand(2, 1, 32, 32) for _ in range(3)]
    plans, means, n = collect_picks(blocks, lambda x: model.route_forward(x, "noise"), samples, group=4)
    assert n == 6 and all(len(p.counts) == b.mid // 4 for p, b in zip(plans.values(), blocks.values()))
    for plan in plans.values():                 # force a real cut: keep only the first group
        plan.counts = [n] + [0] * (len(plan.counts) - 1)
    select_groups(plans, n, 0.5)
    apply_plans(blocks, plans, 4, means)
    assert [b.mid for b in blocks.values()] == [4, 4, 4]
    assert count_macs(route, (1, 1, 64, 64)).macs < macs_full
    path = tmp_path / "pruned.onnx"
    export_onnx(route, path, input_shape=(1, 1, 32, 32))
    assert path.stat().st_size < path_full.stat().st_size
