"""PlainNet: the fixed small reference network for benchmarks and tests.

The shape that runs fastest on a small CPU (shared/reference/cpu_budget.md, "pixel-unshuffle
×4 first, 4 residual blocks of 3×3 convs at 32 ch, pixel-shuffle back": 1.7 GMAC and
25–33 ms per 640×512 frame on 2 Xeon cores with ONNX Runtime): fold 4×4 pixel blocks into
channels, work with dense 3×3 convolutions + ReLU at C channels on the 1/4-resolution grid,
unfold, and add the input back (global residual). It is a speed reference, not the
restoration model: benchmark weights are seeded-random.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ...models import presets


@dataclass(frozen=True)
class PlainNetConfig:
    """PlainNet's shape.

    Attributes:
        channels: channels C of the 3×3 convs on the 1/scale grid.
        blocks: residual blocks.
        scale: pixel-unshuffle factor, hence the spatial multiple (px) H and W must be.
        in_channels: input (and output) channels: 1 for Y16-derived frames.
    """
    channels: int = 32
    blocks: int = 4
    scale: int = 4  # pixel-unshuffle factor, hence the spatial multiple the input needs
    in_channels: int = 1


#: preset -> config, declared in the model registry (tir.engines.models.MODELS, "plainnet:NAME")
PRESETS = presets("plainnet")


class ResidualBlock(nn.Module):
    """conv3×3 -> ReLU -> conv3×3, plus the block input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        """(N, C, h, w) float32 in, the same shape out: x + conv(ReLU(conv(x)))."""
        return x + self.conv2(self.relu(self.conv1(x)))


class PlainNet(nn.Module):
    """Pixel-unshuffle, 3×3 conv + ReLU head, residual blocks, 3×3 tail, pixel-shuffle, plus the
    input (see the module docstring); ``multiple`` is the spatial multiple the input needs.
    """
    def __init__(self, config: PlainNetConfig = PRESETS["bench"]):
        super().__init__()
        self.config = config
        self.multiple = config.scale
        folded = config.in_channels * config.scale**2
        self.unshuffle = nn.PixelUnshuffle(config.scale)
        self.head = nn.Sequential(nn.Conv2d(folded, config.channels, 3, padding=1), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[ResidualBlock(config.channels) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(config.channels, folded, 3, padding=1)
        self.shuffle = nn.PixelShuffle(config.scale)

    def forward(self, x):
        """Restore a batch: (N, in_channels, H, W) float32 (frames in [0, 1]), H and W multiples of
        ``config.scale``, to the same shape (not clipped).
        """
        return x + self.shuffle(self.tail(self.body(self.head(self.unshuffle(x)))))


def resolve_config(spec: Union[str, PlainNetConfig]) -> PlainNetConfig:
    """A preset name (``"bench"``, ``"plainnet:tiny"``) or a config -> config.

    Raises:
        ValueError: an unknown preset name (the message lists the presets).
    """
    if isinstance(spec, PlainNetConfig):
        return spec
    name = str(spec).split(":", 1)[1] if str(spec).startswith("plainnet:") else str(spec)
    if name not in PRESETS:
        raise ValueError(f"unknown PlainNet preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_plainnet(spec: Union[str, PlainNetConfig] = "bench", seed: int = 0) -> PlainNet:
    """A PlainNet with seeded-random weights; the tail is scaled down so the output stays
    near the input (a plausible picture for demos, while every layer still computes)."""
    config = resolve_config(spec)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = PlainNet(config)
        with torch.no_grad():
            model.tail.weight.mul_(0.05)
            model.tail.bias.zero_()
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def export_plainnet_onnx(spec: Union[str, PlainNetConfig, PlainNet], path, seed: int = 0) -> Path:
    """Export to ONNX (opset 17, dynamic N/H/W, metadata ``tir.multiple``) and return the path."""
    import onnx

    model = spec if isinstance(spec, PlainNet) else build_plainnet(spec, seed=seed)
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = model.multiple
    dummy = torch.zeros(1, model.config.in_channels, 16 * m, 16 * m)
    axes = {0: "n", 2: "h", 3: "w"}
    with torch.no_grad(), warnings.catch_warnings():
        # the brief pins the TorchScript exporter (dynamo=False); its deprecation notice is noise
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), opset_version=17, dynamo=False,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
        )
    proto = onnx.load(str(path))
    meta = {"tir.multiple": str(m), "tir.model": "plainnet", "tir.config": str(asdict(model.config))}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path
