"""MAC counting sees every convolution however it is called (issue 11: the reconstruction conv,
applied through F.conv2d, was missing from every route's GMAC)."""
import torch
import torch.nn.functional as F
from torch import nn

from tir.engines.training.continual import OpenWorldModel, RouteModule
from tir.engines.training.macs import count_macs


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(6, 3, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, padding=1)


def test_functional_conv_is_counted():
    report = count_macs(_Functional(), (2, 3, 8, 10))
    assert report.macs == 6 * 8 * 10 * 3 * 9           # per frame, batch of 2
    assert report.per_layer == {"": 2 * 6 * 8 * 10 * 3 * 9}


def test_transposed_conv_is_counted():
    up = nn.ConvTranspose2d(4, 2, 2, stride=2)
    # each of the 5·5 input pixels meets a 4×2×2×2 weight
    assert count_macs(up, (1, 4, 5, 5)).macs == 25 * 4 * 2 * 2 * 2


def test_route_counts_the_reconstruction_conv():
    torch.manual_seed(0)
    model = OpenWorldModel("tiny")
    model.add_task("noise")
    h, w = 64, 80
    report = count_macs(RouteModule(model, "noise"), (1, 1, h, w))
    hooked = 0

    def hook(layer, inputs, out):
        nonlocal hooked
        kh, kw = layer.kernel_size
        hooked += out[0].numel() * (layer.in_channels // layer.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        RouteModule(model, "noise")(torch.zeros(1, 1, h, w))
    for hd in handles:
        hd.remove()
    cfg = model.cfg
    r2 = cfg.unshuffle ** 2
    recon = r2 * (h // cfg.unshuffle) * (w // cfg.unshuffle) * cfg.width * 9
    assert report.macs == hooked + recon
    assert report.per_layer[""] == recon                 # the F.conv2d in EdgeRecon.residual
    assert sum(report.per_layer.values()) == report.macs
    assert report.per_layer["model.stem.conv"] == cfg.width * (h // 4) * (w // 4) * r2 * 9
