"""ECMRNet-family networks: shapes, presets, costs (MACs are arithmetic, so exact)."""
import pytest
import torch
from torch import nn

from tir.engines.training.macs import count_macs, count_params
from tir.engines.training.models.ecmrnet import (PRESETS, ECMRNetConfig, EdgeNet, GroupResBlock, PaperNet,
                                        create_model, get_config)


def test_edge_and_tiny_keep_shape_and_need_their_multiple():
    for name, multiple in (("edge", 32), ("tiny", 8)):   # edge: two unshuffles (8) and the H/32 field head
        model = create_model(name)
        assert isinstance(model, EdgeNet)
        assert model.cfg.multiple == multiple
        x = torch.rand(2, 1, 32, 64)
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
    tone = set(model.tone.modules())   # a per-frame MLP on 5 statistics (1×1 spatial): no GEMM rule
    assert len(tone) == 3
    for m in model.modules():
        assert not isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.GELU))
        if isinstance(m, nn.Conv2d) and m not in tone:
            assert m.groups == 1
            assert m.out_channels % 8 == 0 or m.out_channels == 16


def test_config_round_trip_and_unknown_preset():
    cfg = PRESETS["tiny"]
    assert ECMRNetConfig.from_dict(cfg.to_dict()) == cfg
    assert get_config(cfg) is cfg
    with pytest.raises(ValueError, match="edge"):
        create_model("huge")


def test_tone_stats_are_whole_frame_and_flip_invariant():
    from tir.engines.training.models.ecmrnet import tone_stats

    x = torch.zeros(1, 1, 16, 16)
    x[..., :8, :] = 0.2
    x[..., 8:, :] = 0.6
    f = tone_stats(x, 8)[0, :, 0, 0]           # the 8×8-averaged frame is [[0.2,0.2],[0.6,0.6]]
    assert f[0].item() == pytest.approx(0.4)
    assert (f[1].item(), f[2].item()) == pytest.approx((0.2, 0.6))
    assert f[3].item() == pytest.approx(torch.log(torch.tensor(0.401)).item(), abs=1e-5)
    assert f[4].item() == pytest.approx(torch.log(torch.tensor(0.2 + 1e-3)).item(), abs=1e-4)
    y = torch.rand(2, 1, 32, 40)
    assert torch.allclose(tone_stats(y.flip(-1).flip(-2)), tone_stats(y), atol=1e-6)
    # a single hot pixel barely moves the high statistic (it is averaged over 64 pixels)
    hot = y.clone()
    hot[0, 0, 3, 3] = 50.0 / 64 + y[0, 0, 3, 3]
    assert tone_stats(hot)[0, 2].item() - tone_stats(y)[0, 2].item() < 50.0 / 64 / 64 * 64 + 1e-6


def test_tone_head_on_a_crop_with_whole_frame_stats_equals_the_whole_frame_run():
    """Why training crops carry their frame's statistics: the head is pointwise given them."""
    from tir.engines.training.models.ecmrnet import ToneHead, tone_stats

    torch.manual_seed(0)
    head = ToneHead(8, 8)
    nn.init.normal_(head.fc2.weight, std=0.3)
    frame = torch.rand(1, 1, 64, 80) * 0.4 + 0.1
    whole = head(frame)
    crop = frame[..., 16:48, 8:40]
    assert torch.allclose(head(crop, tone_stats(frame, 8)), whole[..., 16:48, 8:40], atol=1e-6)
    assert not torch.allclose(head(crop), whole[..., 16:48, 8:40], atol=1e-3)


def test_tone_head_learns_to_undo_low_contrast():
    """x·α + β (the contrast recipe) is inverted by the head alone from whole-frame statistics."""
    from tir.engines import degrade as deg
    from tir.engines.training.models.ecmrnet import ToneHead

    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    clean = torch.rand(64, 1, 8, 8, generator=rng).repeat_interleave(4, 2).repeat_interleave(4, 3)
    clean = (clean - clean.amin((2, 3), True)) / (clean.amax((2, 3), True) - clean.amin((2, 3), True))
    low = torch.from_numpy(deg.degrade(clean[:, 0].numpy(), "contrast", 0)[:, None])
    head = ToneHead(16, 4)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 600)
    before = (low - clean).abs().mean().item()
    for _ in range(600):
        loss = (head(low) - clean).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 0.05 * before   # measured 0.012-0.018 of the input's error
