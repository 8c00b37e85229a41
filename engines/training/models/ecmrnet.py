"""ECMRNet-family restoration networks: the paper's grouped U-Net and a CPU/INT8 edge design.

Presets by name (``create_model("edge")``):

* ``paper`` - ECMRNet's GroupAE body as read in Kust-lp/ECMRNet ``codes/model/GroupAE.py``
  (ecmrnet.md §1.1): 3×3 stem 1→32, six stages of GroupResBlocks (GroupNorm, two grouped
  3×3 convs, GELU, SCA gate, beta residual initialised to 0) at widths 32/128/512 with
  PixelUnshuffle/PixelShuffle(2) between them, a shared 1×1 bottom, skips scaled by
  per-channel vectors, 3×3 out conv, no global residual. ≈97 GMAC at 640×512; kept for
  fidelity and cost comparisons, not trained here.
* ``edge`` - built for this CPU (cpu_budget.md: pixel-unshuffle ×4 first, dense 3×3 convs at
  ≥32 channels on the H/4 grid run near the GEMM rate; grouped convs/GroupNorm/GELU at full
  resolution run ~20× slower). Stem PixelUnshuffle(4) + 3×3 conv + ReLU; a branch of dense
  residual blocks at H/4 (32 ch) and H/8 (64 ch) with a global-statistics FiLM at H/8
  (most CBN error is global brightness/contrast, cpu_budget.md); a linear reconstruction
  conv + PixelShuffle(4); global residual to the input. No normalisation, ReLU only,
  opset-17 ops. Spatial multiple 8.
* ``tiny`` - the edge design at toy widths, for tests.

The edge network is split into :class:`EdgeStem`, :class:`EdgeBranch` and :class:`EdgeRecon`
so the open-world model (:mod:`tir.engines.training.continual`) can share the stem and reconstruction
and give every task its own branch. A branch returns a *feature delta*; the restored image is
``x + recon.residual(delta)`` where ``residual`` is the reconstruction conv without bias (it is
linear, so this equals ``recon(stem + delta) - recon(stem) + x``): a new branch whose output
projection is zero starts as the identity.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...models import presets


class EdgeConfig:
    """What the edge configs (:class:`ECMRNetConfig`, the student's ``StudentConfig``) share: the
    input multiple of the edge layout and the dict round trip of a checkpoint's ``architecture``.

    A subclass is a frozen dataclass with ``unshuffle`` and ``field`` fields; ``tuple_keys`` names
    the fields a dict holds as lists (JSON) and the config as tuples.
    """

    tuple_keys: Tuple[str, ...] = ()

    def edge_multiple(self) -> int:
        """Input H and W must be multiples of this: 2×``unshuffle`` (the stem's pixel-unshuffle
        and one 2× down step), and of ``field`` (the field head's pooling) when there is one."""
        m = self.unshuffle * 2
        return math.lcm(m, self.field) if self.field else m

    def to_dict(self) -> dict:
        """The fields as a plain dict (tuples stay tuples; JSON writes them as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """A config from :meth:`to_dict`'s dict (or its JSON form): ``tuple_keys`` lists back to tuples.

        Raises:
            TypeError: a key that is not a field of the config.
        """
        data = dict(data)
        for key in cls.tuple_keys:
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class ECMRNetConfig(EdgeConfig):
    """Numbers that define one network; ``family`` picks the block type."""

    name: str = "edge"
    family: str = "edge"                 # "edge" (dense, ReLU) or "paper" (grouped, GroupNorm)
    # edge family
    unshuffle: int = 4                   # stem pixel-unshuffle factor
    width: int = 32                      # channels on the H/unshuffle grid
    low_width: int = 64                  # channels on the H/(2·unshuffle) grid
    blocks: Tuple[int, int, int] = (1, 2, 1)   # residual blocks: high in, low, high out
    stats_hidden: int = 16               # global-statistics MLP width
    miner_rank: int = 4                  # low-rank mixing matrix rank (compound miner)
    miner_hidden: int = 16
    tone: bool = True                    # per-route global tone head before the stem (ToneHead)
    tone_pool: int = 8                   # the tone statistics are taken on an 8×8-average frame
    tone_hidden: int = 16
    field: int = 0                       # >0: per-route low-frequency field head at H/field (FieldHead)
    field_width: int = 16
    # paper family (ecmrnet.md §1.1)
    paper_widths: Tuple[int, int, int] = (32, 128, 512)
    paper_groups: Tuple[int, int, int] = (8, 16, 32)
    paper_blocks: Tuple[int, int, int] = (2, 4, 8)

    tuple_keys = ("blocks", "paper_widths", "paper_groups", "paper_blocks")

    @property
    def multiple(self) -> int:
        """Input H and W must be multiples of this."""
        return 4 if self.family == "paper" else self.edge_multiple()

    @classmethod
    def from_dict(cls, data: dict) -> "ECMRNetConfig":
        """A config from :meth:`to_dict`'s dict; configs written before the tone and field heads
        existed get ``tone=False``, ``field=0``."""
        return super().from_dict({"tone": False, "field": 0, **data})


#: preset -> config, declared in the model registry (tir.engines.models.MODELS, "ecmrnet:NAME")
PRESETS: Dict[str, ECMRNetConfig] = presets("ecmrnet")


def get_config(preset: Union[str, ECMRNetConfig]) -> ECMRNetConfig:
    """The config for ``preset``: a name in :data:`PRESETS`, or a config returned as it is.

    Raises:
        ValueError: ``preset`` names no preset (the message lists them).
    """
    if isinstance(preset, ECMRNetConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[preset]


def conv3x3(cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    """A 3×3 ``nn.Conv2d`` ``cin`` -> ``cout`` channels with padding 1 (H and W kept), bias, ``groups``
    groups (both channel counts must divide by it).
    """
    return nn.Conv2d(cin, cout, 3, padding=1, groups=groups)


def conv1x1(cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    """A 1×1 ``nn.Conv2d`` ``cin`` -> ``cout`` channels with bias and ``groups`` groups (both channel
    counts must divide by it).
    """
    return nn.Conv2d(cin, cout, 1, groups=groups)


# ---------------------------------------------------------------------------------------------
# edge family
# ---------------------------------------------------------------------------------------------

class DenseResBlock(nn.Module):
    """x + conv(relu(conv(x))): ``mid`` is the prunable inner width."""

    def __init__(self, channels: int, mid: Optional[int] = None):
        super().__init__()
        mid = channels if mid is None else int(mid)
        self.conv1 = conv3x3(channels, mid)
        self.conv2 = conv3x3(mid, channels)

    @property
    def mid(self) -> int:
        """The inner width: channels of ``conv1``'s output (what structured pruning shrinks)."""
        return self.conv1.out_channels

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        """The post-ReLU inner activation relu(conv1(x)) (what pruning looks at).

        Args:
            x: (N, C, h, w) float32 features, C = the block's channels.

        Returns:
            (N, mid, h, w) float32.
        """
        return F.relu(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + conv2(relu(conv1(x))).

        Args:
            x: (N, C, h, w) float32 features, C = the block's channels.

        Returns:
            (N, C, h, w) float32, the same shape.
        """
        return x + self.conv2(self.inner(x))


class GlobalStats(nn.Module):
    """FiLM from pooled features: x·(1 + scale) + shift, both per channel and per frame."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = conv1x1(channels, hidden)
        self.fc2 = conv1x1(hidden, 2 * channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x·(1 + scale) + shift, (scale, shift) from a 1×1-conv MLP on the spatial mean of ``x``.

        Args:
            x: (N, C, h, w) float32 features, C = ``channels``.

        Returns:
            (N, C, h, w) float32; the identity while the last layer is still zero.
        """
        pooled = x.mean(dim=(2, 3), keepdim=True)
        scale, shift = self.fc2(F.relu(self.fc1(pooled))).chunk(2, dim=1)
        return x * (1.0 + scale) + shift


TONE_FEATURES = 5


def tone_stats(x: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """Whole-frame tone statistics, N×5×1×1: mean, low, high, log(high−low), log(std).

    Taken on the ``pool``×``pool``-averaged frame so single hot/dead pixels and per-pixel noise
    barely move the extremes. Flip-invariant, so training crops can carry the statistics of the
    whole frame they were cut from (a crop's own range is not the frame's).
    """
    p = F.avg_pool2d(x, pool) if pool > 1 else x
    mean = p.mean(dim=(2, 3), keepdim=True)
    std = (p - mean).pow(2).mean(dim=(2, 3), keepdim=True).add(1e-6).sqrt()
    lo = p.amin(dim=(2, 3), keepdim=True)
    hi = p.amax(dim=(2, 3), keepdim=True)
    return torch.cat([mean, lo, hi, torch.log(hi - lo + 1e-3), torch.log(std + 1e-3)], dim=1)


def frame_tone_stats(frames, pool: Optional[int]) -> Optional[torch.Tensor]:
    """:func:`tone_stats` of (N,H,W) numpy frames without autograd; None when ``pool`` is None
    (a network without a tone head). Used by the training pools for their whole frames."""
    if pool is None:
        return None
    import numpy as np

    with torch.no_grad():
        return tone_stats(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)[:, None]), pool)


class ToneHead(nn.Module):
    """Per-frame global affine tone correction from whole-frame statistics.

    x' = low + shift + exp(gain)·(x − low), with (gain, shift) from a small MLP on
    :func:`tone_stats`. Low contrast (x·α + β, ecmrnet.md §1.3) is inverted by gain = −log α,
    shift = −β-ish: a linear function of the log-range and low statistics, which a convolutional
    body on 128-px training crops cannot see. The last layer starts at zero, so a new head is
    the identity.
    """

    def __init__(self, hidden: int = 16, pool: int = 8, extra: int = 0):
        super().__init__()
        self.pool = pool
        self.fc1 = conv1x1(TONE_FEATURES + extra, hidden)  # extra: more N×extra×1×1 inputs (a prompt)
        self.fc2 = conv1x1(hidden, 2)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def stats(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`tone_stats` of ``x`` (N, 1, H, W) float32 on this head's ``pool``: (N, 5, 1, 1)."""
        return tone_stats(x, self.pool)

    def tone(self, x: torch.Tensor, f: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """x' = low + shift + exp(gain)·(x − low): low from the statistics ``f`` (N×5×1×1),
        (gain, shift) from the MLP on ``inputs`` (``f``, with any extra inputs concatenated)."""
        gain, shift = self.fc2(F.relu(self.fc1(inputs))).chunk(2, dim=1)
        lo = f[:, 1:2]
        return lo + shift + torch.exp(gain) * (x - lo)

    def forward(self, x: torch.Tensor, stats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The tone-corrected frame, (gain, shift) from the frame's own statistics.

        Args:
            x: (N, 1, H, W) float32 frames (values ~[0, 1]).
            stats: (N, 5, 1, 1) float32 whole-frame :func:`tone_stats` when ``x`` is a crop of a
                larger frame; None takes them from ``x``.

        Returns:
            (N, 1, H, W) float32: low + shift + exp(gain)·(x − low).
        """
        f = self.stats(x) if stats is None else stats
        return self.tone(x, f, f)


def dilated_convs(width: int, dilations: Sequence[int] = (1, 2, 4, 8)) -> nn.ModuleList:
    """The field heads' context stack: 3×3 convs 1→``width``→…→``width`` channels with these
    dilations (padding = dilation, so the size stays); the receptive field spans
    1 + 2·sum(dilations) cells (31 for 1, 2, 4, 8)."""
    chans = [1] + [width] * len(dilations)
    return nn.ModuleList(nn.Conv2d(a, b, 3, padding=d, dilation=d)
                         for a, b, d in zip(chans[:-1], chans[1:], dilations))


class FieldHead(nn.Module):
    """A whole-frame low-frequency correction of a route's output: y + up(f(avgpool(y))).

    The recipe's optical non-uniformity is a smooth additive field over the whole frame (radial
    cos⁴ around a random centre, δ = 15–55 grey levels, ecmrnet.md §1.3), and 128-px training
    crops of the branch cannot see it: measured on val, the noise route removed high-frequency
    noise (error std 0.046 → 0.026) but left the low-frequency error as it was (0.046 → 0.050),
    while an oracle smooth correction of its output would take it from 24.2 to 30.0 dB. This
    head looks at the ``pool``×``pool``-averaged output (16×20 cells at 640×512), runs dilated
    3×3 convs (dilations 1, 2, 4, 8: the receptive field spans the whole thumbnail) and adds the
    bilinearly upsampled field. It is trained on whole frames in its own stage
    (``<task>-field`` in tir.engines.training.train), after the branch; the last conv starts at zero.
    """

    def __init__(self, pool: int = 32, width: int = 16):
        super().__init__()
        self.pool = pool
        self.convs = dilated_convs(width)
        self.out = conv3x3(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def field(self, y: torch.Tensor) -> torch.Tensor:
        """The correction at thumbnail resolution, N×1×H/pool×W/pool."""
        t = F.avg_pool2d(y, self.pool)
        for conv in self.convs:
            t = F.relu(conv(t))
        return self.out(t)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y + the bilinearly upsampled :meth:`field` of ``y``.

        Args:
            y: (N, 1, H, W) float32 route output; H and W multiples of ``pool`` (32 px by default),
                else the upsampled field does not match ``y`` and torch raises.

        Returns:
            (N, 1, H, W) float32.
        """
        return y + F.interpolate(self.field(y), scale_factor=float(self.pool), mode="bilinear",
                                 align_corners=False)


class EdgeStem(nn.Module):
    """PixelUnshuffle(r) then 3×3 conv + ReLU on the H/r grid."""

    def __init__(self, cfg: ECMRNetConfig):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(cfg.unshuffle)
        self.conv = conv3x3(cfg.unshuffle ** 2, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(conv3x3(pixel_unshuffle(x, r))), r = ``cfg.unshuffle``.

        Args:
            x: (N, 1, H, W) float32 frames; H and W multiples of r (torch's PixelUnshuffle raises
                otherwise).

        Returns:
            (N, width, H/r, W/r) float32 stem features.
        """
        return F.relu(self.conv(self.unshuffle(x)))


class EdgeRecon(nn.Module):
    """3×3 conv to r² channels then PixelShuffle(r); linear, so deltas decode without bias."""

    def __init__(self, cfg: ECMRNetConfig):
        super().__init__()
        self.conv = conv3x3(cfg.width, cfg.unshuffle ** 2)
        self.shuffle = nn.PixelShuffle(cfg.unshuffle)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> image (clean autoencoder pretraining): pixel_shuffle(conv3x3(features), r).

        Args:
            features: (N, width, h, w) float32 stem or body features.

        Returns:
            (N, 1, h·r, w·r) float32 image, r = ``cfg.unshuffle``.
        """
        return self.shuffle(self.conv(features))

    def residual(self, delta: torch.Tensor) -> torch.Tensor:
        """Feature delta -> image delta: the same conv without its bias, then pixel-shuffle.

        Args:
            delta: (N, width, h, w) float32 feature delta (a branch's output).

        Returns:
            (N, 1, h·r, w·r) float32 image delta, r = ``cfg.unshuffle``; zero for a zero delta.
        """
        return self.shuffle(F.conv2d(delta, self.conv.weight, None, padding=1))


class EdgeBranch(nn.Module):
    """One task's body: blocks at H/r, down to H/2r with a global-statistics FiLM, back up.

    ``mids`` optionally gives each block's inner width (after pruning), in block order.
    """

    def __init__(self, cfg: ECMRNetConfig, mids: Optional[Sequence[int]] = None):
        super().__init__()
        c, lc = cfg.width, cfg.low_width
        n_in, n_low, n_out = cfg.blocks
        widths = [c] * n_in + [lc] * n_low + [c] * n_out
        mids = list(widths) if mids is None else list(mids)
        if len(mids) != len(widths):
            raise ValueError(f"branch has {len(widths)} blocks, got {len(mids)} inner widths")
        self.high_in = nn.Sequential(*[DenseResBlock(c, m) for m in mids[:n_in]])
        self.down = nn.Sequential(nn.PixelUnshuffle(2), conv1x1(4 * c, lc))
        self.low = nn.Sequential(*[DenseResBlock(lc, m) for m in mids[n_in:n_in + n_low]])
        self.stats = GlobalStats(lc, cfg.stats_hidden)

        self.up = nn.Sequential(conv1x1(lc, 4 * c), nn.PixelShuffle(2))
        self.high_out = nn.Sequential(*[DenseResBlock(c, m) for m in mids[n_in + n_low:]])
        self.out = conv1x1(c, c)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def res_blocks(self) -> List[DenseResBlock]:
        """The branch's :class:`DenseResBlock` s in order: high in, low, high out."""
        return [*self.high_in, *self.low, *self.high_out]

    def mids(self) -> List[int]:
        """Each residual block's inner width in :meth:`res_blocks` order (the ``mids`` that rebuild
        this branch after pruning).
        """
        return [b.mid for b in self.res_blocks()]

    def body(self, s: torch.Tensor) -> torch.Tensor:
        """Features before the output projection (what a compound miner refines).

        Args:
            s: (N, width, h, w) float32 stem features; h and w even (one PixelUnshuffle(2) down).

        Returns:
            (N, width, h, w) float32.
        """
        h = self.high_in(s)
        low = self.stats(self.low(self.down(h)))
        return self.high_out(h + self.up(low))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """The feature delta: out(body(s)), a 1×1 projection that starts at zero.

        Args:
            s: (N, width, h, w) float32 stem features; h and w even.

        Returns:
            (N, width, h, w) float32 feature delta (all zero for a new branch).
        """
        return self.out(self.body(s))


class EdgeNet(nn.Module):
    """Single-route edge network: t + recon.residual(branch(stem(t))), t = tone(x) (or x)."""

    def __init__(self, cfg: ECMRNetConfig):
        super().__init__()
        self.cfg = cfg
        self.tone = ToneHead(cfg.tone_hidden, cfg.tone_pool) if cfg.tone else None
        self.stem = EdgeStem(cfg)
        self.branch = EdgeBranch(cfg)
        self.recon = EdgeRecon(cfg)

    def forward(self, x: torch.Tensor, stats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The restored frame t + recon.residual(branch(stem(t))), t = tone(x) (x without a tone head).

        Args:
            x: (N, 1, H, W) float32 frames (values ~[0, 1]); H and W multiples of 2·``cfg.unshuffle``
                (8 px for the edge presets: the stem's pixel-unshuffle and one 2× down step).
            stats: (N, 5, 1, 1) float32 whole-frame :func:`tone_stats` when ``x`` is a training crop;
                None takes them from ``x``.

        Returns:
            (N, 1, H, W) float32 on the input's scale.
        """
        if self.tone is not None:
            x = self.tone(x, stats)
        return x + self.recon.residual(self.branch(self.stem(x)))


# ---------------------------------------------------------------------------------------------
# paper family (ecmrnet.md §1.1, read from codes/model/GroupAE.py)
# ---------------------------------------------------------------------------------------------

class GroupResBlock(nn.Module):
    """GN -> grouped 3×3 -> grouped 3×3 -> GELU -> SCA gate -> x + beta·y (beta starts at 0)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.conv1 = conv3x3(channels, channels, groups)
        self.conv2 = conv3x3(channels, channels, groups)
        self.sca = conv1x1(channels, channels, groups)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + beta·y, y = SCA-gated GELU(conv2(conv1(GroupNorm(x)))) (ecmrnet.md §1.1).

        Args:
            x: (N, C, h, w) float32 features, C = ``channels``.

        Returns:
            (N, C, h, w) float32; x itself while beta is 0 (its initial value).
        """
        y = F.gelu(self.conv2(self.conv1(self.norm(x))))
        y = y * torch.sigmoid(self.sca(y.mean(dim=(2, 3), keepdim=True)))
        return x + self.beta * y


class GroupStage(nn.Module):
    """1×1 in -> N GroupResBlocks -> 1×1 out."""

    def __init__(self, channels: int, groups: int, n_blocks: int):
        super().__init__()
        self.conv_in = conv1x1(channels, channels)
        self.blocks = nn.Sequential(*[GroupResBlock(channels, groups) for _ in range(n_blocks)])
        self.conv_out = conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One U-Net stage: 1×1 in, the GroupResBlocks, 1×1 out (ecmrnet.md §1.1).

        Args:
            x: (N, C, h, w) float32 features, C = ``channels``.

        Returns:
            (post-1×1-in feature for the skip, stage output), both (N, C, h, w) float32.
        """
        entry = self.conv_in(x)
        return entry, self.conv_out(self.blocks(entry))


class PaperNet(nn.Module):
    """ECMRNet's six-stage grouped U-Net with widths 32/128/512 (one task's full body)."""

    def __init__(self, cfg: ECMRNetConfig):
        super().__init__()
        self.cfg = cfg
        (c1, c2, c3), (g1, g2, g3), (n1, n2, n3) = cfg.paper_widths, cfg.paper_groups, cfg.paper_blocks
        if c2 != 4 * c1 or c3 != 4 * c2:
            raise ValueError("paper widths must grow ×4 per PixelUnshuffle(2)")
        self.stem = conv3x3(1, c1)
        self.e1, self.e2, self.e3 = GroupStage(c1, g1, n1), GroupStage(c2, g2, n2), GroupStage(c3, g3, n3)
        self.bottom = conv1x1(c3, c3)
        self.d1, self.d2, self.d3 = GroupStage(c3, g3, n3), GroupStage(c2, g2, n2), GroupStage(c1, g1, n1)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.skip_a = nn.Parameter(torch.ones(1, c1, 1, 1))
        self.skip_b = nn.Parameter(torch.ones(1, c2, 1, 1))
        self.skip_c = nn.Parameter(torch.ones(1, c3, 1, 1))
        self.out = conv3x3(c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The restored frame: stem, three encoder stages, bottom, three decoder stages with scaled
        skips, 3×3 out conv; no global residual (ecmrnet.md §1.1).

        Args:
            x: (N, 1, H, W) float32 frames in [0, 1]; H and W multiples of 4 (two PixelUnshuffle(2)).

        Returns:
            (N, 1, H, W) float32.
        """
        s1, h = self.e1(self.stem(x))
        s2, h = self.e2(self.down(h))
        s3, h = self.e3(self.down(h))
        h = self.bottom(h)
        _, h = self.d1(h)
        h = h + self.skip_c * s3
        _, h = self.d2(self.up(h))
        h = h + self.skip_b * s2
        _, h = self.d3(self.up(h))
        h = h + self.skip_a * s1
        return self.out(h)


def create_model(preset: Union[str, ECMRNetConfig] = "edge") -> nn.Module:
    """A single-route network for ``preset`` (a name in :data:`PRESETS` or a config).

    Returns:
        :class:`PaperNet` for the ``paper`` family, :class:`EdgeNet` for ``edge``.

    Raises:
        ValueError: an unknown preset name, a config whose ``family`` is neither ``edge`` nor
            ``paper``, or paper widths that do not grow ×4 per stage.
    """
    cfg = get_config(preset)
    if cfg.family == "paper":
        return PaperNet(cfg)
    if cfg.family == "edge":
        return EdgeNet(cfg)
    raise ValueError(f"unknown family {cfg.family!r}; families: edge, paper")
