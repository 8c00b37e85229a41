"""ECMRNet-family networks: shapes, presets, costs (MACs are arithmetic, so exact)."""
import pytest
import torch
from torch import nn

from tir.engines.macs import count_macs, count_params
from tir.engines.models.ecmrnet import (PRESETS, ECMRNetConfig, EdgeNet, GroupResBlock, PaperNet,
                                        create_model, get_config)


def test_edge_and_tiny_keep_shape_and_need_multiple_8():
    for name in ("edge", "tiny"):
        model = create_model(name)
        assert isinstance(model, EdgeNet)
        assert model.cfg.multiple == 8
        x = torch.rand(2, 1, 32, 48)
        assert model(x).shape == x.shape


def test_new_edge_network_starts_as_identity():
    model = create_model("tiny")
    x = torch.rand(1, 1, 16, 24)
    assert torch.allclose(model(x), x, atol=1e-6)


def test_paper_preset_shape_and_group_blocks():
    model = create_model("paper")
    assert isinstance(model, PaperNet)
    assert model.cfg.multiple == 4
    blocks = [m for m in model.modules() if isinstance(m, GroupResBlock)]
    assert len(blocks) == 2 * (2 + 4 + 8)
    assert blocks[0].conv1.groups == 8 and blocks[-1].conv1.groups == 8
    assert all(torch.count_nonzero(b.beta) == 0 for b in blocks)   # beta starts at 0
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 20)).shape == (1, 1, 16, 20)


def test_paper_costs_match_hand_arithmetic():
    # ecmrnet.md §1.5: ≈97.2 GMAC at 640×512 and ≈4.10 M parameters; MACs scale with pixels
    model = create_model("paper")
    report = count_macs(model, (1, 1, 64, 80))
    assert abs(report.macs * 64 / 1e9 - 97.16) < 0.5
    assert abs(count_params(model) / 1e6 - 4.10) < 0.02


def test_edge_branch_is_at_most_2_gmac_at_640x512():
    report = count_macs(create_model("edge"), (1, 1, 512, 640))
    assert report.gmac <= 2.0
    assert report.gmac > 1.0


def test_mac_count_of_one_conv_is_hand_arithmetic():
    conv = nn.Conv2d(2, 8, 3, padding=1, groups=2)
    assert count_macs(conv, (1, 2, 10, 10)).macs == 8 * 100 * 1 * 9
    assert count_macs(conv, (3, 2, 10, 10)).macs == 8 * 100 * 1 * 9     # per frame


def test_edge_preset_uses_no_norm_or_grouped_convs():
    model = create_model("edge")
    for m in model.modules():
        assert not isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.GELU))
        if isinstance(m, nn.Conv2d):
            assert m.groups == 1
            assert m.out_channels % 8 == 0 or m.out_channels == 16


def test_config_round_trip_and_unknown_preset():
    cfg = PRESETS["tiny"]
    assert ECMRNetConfig.from_dict(cfg.to_dict()) == cfg
    assert get_config(cfg) is cfg
    with pytest.raises(ValueError, match="edge"):
        create_model("huge")
