"""The distilled student: one prompt-conditioned network for every degradation (issue 11).

After Uni-Removal (multi-teacher distillation of degradation-specific networks into one
student) and CPL (a sparse prompt per task; other tasks' prompts as negatives). The teachers
are the bundle's routes; the student replaces the per-task branches (and the compound routes'
frozen part branches) with one body whose blocks are modulated by a *prompt*.

Inputs of :class:`StudentNet` (and of its ONNX graph):

* ``input``  - float32 N×1×H×W normalised frames (values ~[0, 1]); H and W multiples of
  :attr:`StudentConfig.multiple` (32: two pixel-unshuffles need 8, the field head's 32×32
  pooling needs 32, the same as the ``edge`` routes).
* ``prompt`` - float32 N×K mixing weights over the K prompt slots (:attr:`StudentNet.prompts`:
  the tasks then ``clean``), e.g. the router's softmax scores. The weights mix the learned
  prompt vectors *inside* the graph: p = w·P (P is K×D, one learned vector per slot), so a
  one-hot row selects a task and a soft row gives a mixed prompt for a compound or
  in-between degradation instead of a hard switch.

Output ``output``: float32 N×1×H×W restored frames on the input's scale.

A student can also take a teacher route's architecture and weights (tir.engines.training.distill
``student_from_route``: widths 32/64, the route's pruned inner widths in ``mids``), with every
prompt path zero so it starts as that route.

Design (``edge`` preset, 1.05 GMAC at 640×512 counting every conv, :func:`student_gmac`):
the routes' edge layout (ecmrnet.py: pixel-unshuffle ×4, dense 3×3 residual blocks at H/4 and
H/8, a global-statistics FiLM at H/8, linear reconstruction + pixel-shuffle, global residual)
at widths 24/48 instead of 32/64, with

* a FiLM on each residual block's inner activation from the prompt (1×1 convs on the N×D×1×1
  prompt: no spatial cost),
* a prompt-conditioned tone head (the routes' ToneHead: whole-frame statistics, plus the
  prompt) before the stem,
* a prompt-conditioned field head (the routes' FieldHead: a low-frequency correction on the
  32×32-pooled output; its first layer is FiLM-modulated by the prompt).

Ops: Conv, Relu, Add, Mul, Sub, MatMul, Reshape, DepthToSpace/SpaceToDepth, ReduceMean/Min/Max,
Sqrt, Pow, Log, Exp, AveragePool, Resize (bilinear), Concat, Split/Slice: the routes' op set
(docs/model.md), opset 17, checked by :func:`tir.engines.training.export.audit_onnx`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .ecmrnet import DenseResBlock, EdgeConfig, ToneHead, conv1x1, conv3x3, dilated_convs

#: the name of the student's second ONNX input (N×K prompt weights)
PROMPT_INPUT = "prompt"
CLEAN = "clean"


@dataclass(frozen=True)
class StudentConfig(EdgeConfig):
    """Numbers that define one student network."""

    name: str = "edge"
    unshuffle: int = 4                     # stem pixel-unshuffle factor
    width: int = 24                        # channels on the H/4 grid
    low_width: int = 48                    # channels on the H/8 grid
    blocks: Tuple[int, int, int] = (1, 2, 1)   # residual blocks: high in, low, high out
    prompt_dim: int = 16                   # D, length of one prompt vector
    stats_hidden: int = 16
    tone_pool: int = 8
    tone_hidden: int = 16
    field: int = 32                        # field-head pooling (0: no field head)
    field_width: int = 16
    feature_width: int = 32                # teacher feature width the training adapter maps to
    mids: Optional[Tuple[int, ...]] = None  # inner width per residual block (None: the block width);
                                            # a student initialised from a pruned route takes its widths

    tuple_keys = ("blocks", "mids")

    @property
    def multiple(self) -> int:
        """Input H and W must be multiples of this (recorded as ``tir.multiple`` on export)."""
        return self.edge_multiple()


PRESETS: Dict[str, StudentConfig] = {
    "edge": StudentConfig(),
    "tiny": StudentConfig(name="tiny", width=8, low_width=16, blocks=(1, 1, 1), prompt_dim=4, stats_hidden=4,
                          tone_hidden=4, field_width=4, feature_width=8),
}


def get_student_config(preset: Union[str, StudentConfig]) -> StudentConfig:
    """The config for ``preset``: a name in :data:`PRESETS`, or a config returned as it is.

    Raises:
        ValueError: ``preset`` names no student preset (the message lists them).
    """
    if isinstance(preset, StudentConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown student preset {preset!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[preset]


class PromptBlock(DenseResBlock):
    """x + conv2(relu(conv1(x)·(1 + γ(p)) + β(p))): a dense residual block (the routes'
    DenseResBlock, inner width ``mid``) whose inner activation is FiLM-modulated by the prompt
    p (N×D×1×1). γ, β start at zero, so a block copied from a route starts as that block."""

    def __init__(self, channels: int, prompt_dim: int, mid: Optional[int] = None):
        super().__init__(channels, mid)
        self.film = conv1x1(prompt_dim, 2 * self.mid)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """x + conv2(relu(conv1(x)·(1 + γ(p)) + β(p))).

        Args:
            x: (N, C, h, w) float32 features, C = ``channels``.
            p: (N, D, 1, 1) float32 prompt vectors, D = ``prompt_dim``.

        Returns:
            (N, C, h, w) float32.
        """
        gamma, beta = self.film(p).chunk(2, dim=1)
        return x + self.conv2(F.relu(self.conv1(x) * (1.0 + gamma) + beta))


class PromptTone(ToneHead):
    """The routes' ToneHead with the prompt as extra input: x' = lo + shift + exp(gain)·(x − lo),
    (gain, shift) from an MLP on [tone_stats(x), p]; the last layer starts at zero (identity)."""

    def __init__(self, prompt_dim: int, hidden: int, pool: int):
        super().__init__(hidden, pool, extra=prompt_dim)

    def forward(self, x: torch.Tensor, p: torch.Tensor, stats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The tone-corrected frame, (gain, shift) from the frame statistics and the prompt.

        Args:
            x: (N, 1, H, W) float32 frames (values ~[0, 1]).
            p: (N, D, 1, 1) float32 prompt vectors.
            stats: (N, 5, 1, 1) float32 whole-frame tone statistics when ``x`` is a crop; None
                takes them from ``x``.

        Returns:
            (N, 1, H, W) float32.
        """
        f = self.stats(x) if stats is None else stats
        return self.tone(x, f, torch.cat([f, p], dim=1))


class PromptField(nn.Module):
    """The routes' FieldHead (y + up(f(avgpool(y)))) with a prompt FiLM after its first conv;
    the output conv starts at zero (identity)."""

    def __init__(self, prompt_dim: int, pool: int, width: int):
        super().__init__()
        self.pool = pool
        self.convs = dilated_convs(width)
        self.film = conv1x1(prompt_dim, 2 * width)
        self.out = conv3x3(width, 1)
        for layer in (self.film, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """y + the bilinearly upsampled low-frequency field of ``y`` under prompt ``p``.

        Args:
            y: (N, 1, H, W) float32 output before the head; H and W multiples of ``pool`` (32 px).
            p: (N, D, 1, 1) float32 prompt vectors.

        Returns:
            (N, 1, H, W) float32.
        """
        return y + F.interpolate(self.field(F.avg_pool2d(y, self.pool), p), scale_factor=float(self.pool),
                                 mode="bilinear", align_corners=False)

    def field(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The low-frequency field at the pooled resolution, before the upsample.

        Args:
            t: (N, 1, H/P, W/P) float32 pooled output (P = ``pool``).
            p: (N, D, 1, 1) float32 prompt vectors.

        Returns:
            (N, 1, H/P, W/P) float32.
        """
        gamma, beta = self.film(p).chunk(2, dim=1)
        for i, conv in enumerate(self.convs):
            t = conv(t)
            if i == 0:
                t = t * (1.0 + gamma) + beta
            t = F.relu(t)
        return self.out(t)


class StudentNet(nn.Module):
    """One prompt-conditioned restoration network; see the module docstring.

    ``prompts``: the names of the K prompt slots in order (the tasks, then ``clean``).
    ``forward(x, w)``: x N×1×H×W float32, w N×K float32 mixing weights -> N×1×H×W.
    """

    def __init__(self, cfg: Union[str, StudentConfig] = "edge", prompts: Sequence[str] = ()):
        super().__init__()
        cfg = get_student_config(cfg)
        prompts = list(prompts)
        if not prompts or len(set(prompts)) != len(prompts):
            raise ValueError(f"a student needs distinct prompt names (the tasks and {CLEAN}), got {prompts}")
        self.cfg = cfg
        self.prompts = prompts
        d, c, lc = cfg.prompt_dim, cfg.width, cfg.low_width
        n_in, n_low, n_out = cfg.blocks
        # one learned vector per slot; small random start so the slots differ from step 0
        self.prompt_table = nn.Parameter(torch.randn(len(prompts), d) * 0.5)
        self.tone = PromptTone(d, cfg.tone_hidden, cfg.tone_pool)
        self.unshuffle = nn.PixelUnshuffle(cfg.unshuffle)
        self.stem = conv3x3(cfg.unshuffle ** 2, c)
        widths = [c] * n_in + [lc] * n_low + [c] * n_out
        mids = list(widths) if cfg.mids is None else list(cfg.mids)
        if len(mids) != len(widths):
            raise ValueError(f"student has {len(widths)} residual blocks, config gives {len(mids)} inner widths")
        self.high_in = nn.ModuleList(PromptBlock(c, d, m) for m in mids[:n_in])
        self.down = nn.Sequential(nn.PixelUnshuffle(2), conv1x1(4 * c, lc))
        self.low = nn.ModuleList(PromptBlock(lc, d, m) for m in mids[n_in:n_in + n_low])
        self.stats_fc1 = conv1x1(lc + d, cfg.stats_hidden)
        self.stats_fc2 = conv1x1(cfg.stats_hidden, 2 * lc)
        nn.init.zeros_(self.stats_fc2.weight)
        nn.init.zeros_(self.stats_fc2.bias)
        self.up = nn.Sequential(conv1x1(lc, 4 * c), nn.PixelShuffle(2))
        self.high_out = nn.ModuleList(PromptBlock(c, d, m) for m in mids[n_in + n_low:])
        self.out = conv1x1(c, c)
        # linear and bias-free, like the routes' recon.residual: the body's output is an image delta
        self.recon = nn.Conv2d(c, cfg.unshuffle ** 2, 3, padding=1, bias=False)
        self.shuffle = nn.PixelShuffle(cfg.unshuffle)
        self.field = PromptField(d, cfg.field, cfg.field_width) if cfg.field else None

    # ------------------------------------------------------------------ pieces
    def prompt_vector(self, weights: torch.Tensor) -> torch.Tensor:
        """The mixed prompt w·P for each row of mixing weights.

        Args:
            weights: (N, K) float32 mixing weights over the K prompt slots.

        Returns:
            (N, D, 1, 1) float32, D = ``cfg.prompt_dim``.

        Raises:
            ValueError: ``weights`` is not 2-D with K columns.
        """
        if weights.dim() != 2 or weights.shape[1] != len(self.prompts):
            raise ValueError(f"prompt weights must be N×{len(self.prompts)} (slots {self.prompts}), "
                             f"got {tuple(weights.shape)}")
        return torch.matmul(weights, self.prompt_table).reshape(weights.shape[0], -1, 1, 1)

    def one_hot(self, tasks: Sequence[str], device=None) -> torch.Tensor:
        """One-hot mixing weights selecting the slot of each name in ``tasks``.

        Args:
            tasks: N prompt names (tasks or ``clean``).
            device: the torch device of the result (None: the default).

        Returns:
            (N, K) float32.

        Raises:
            ValueError: a name in ``tasks`` has no prompt slot.
        """
        missing = [t for t in tasks if t not in self.prompts]
        if missing:
            raise ValueError(f"student has no prompt for {missing}; prompts: {', '.join(self.prompts)}")
        w = torch.zeros(len(tasks), len(self.prompts), device=device)
        for i, t in enumerate(tasks):
            w[i, self.prompts.index(t)] = 1.0
        return w

    def features(self, x: torch.Tensor, p: torch.Tensor, stats: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(toned frame t, stem features s, body features h before the output projection, low
        features) for prompt vectors ``p``.

        Args:
            x: (N, 1, H, W) float32 frames; H and W multiples of ``cfg.multiple``.
            p: (N, D, 1, 1) float32 prompt vectors (:meth:`prompt_vector`).
            stats: (N, 5, 1, 1) float32 whole-frame tone statistics when ``x`` is a crop, or None.

        Returns:
            t (N, 1, H, W), s and h (N, C, H/4, W/4), low (N, 2C, H/8, W/8), all float32; C =
            ``cfg.width``, 2C = ``cfg.low_width`` for the presets.
        """
        t = self.tone(x, p, stats)
        s = F.relu(self.stem(self.unshuffle(t)))
        h = s
        for block in self.high_in:
            h = block(h, p)
        low = self.down(h)
        for block in self.low:
            low = block(low, p)
        pooled = torch.cat([low.mean(dim=(2, 3), keepdim=True), p], dim=1)
        scale, shift = self.stats_fc2(F.relu(self.stats_fc1(pooled))).chunk(2, dim=1)
        low = low * (1.0 + scale) + shift
        h = h + self.up(low)
        for block in self.high_out:
            h = block(h, p)
        return t, s, h, low

    def run(self, x: torch.Tensor, weights: torch.Tensor, stats: Optional[torch.Tensor] = None,
            field: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(restored N×1×H×W, body features N×C×H/4×W/4, low features N×2C×H/8×W/8), all float32.

        ``weights``: (N, K) float32 mixing weights. ``stats``: whole-frame tone statistics
        (N, 5, 1, 1) when ``x`` is a training crop. ``field=False`` leaves out the whole-frame field
        head (training on crops).

        Raises:
            ValueError: H or W of ``x`` is not a multiple of ``cfg.multiple`` (pad it first), or
                ``weights`` is not (N, K).
        """
        m = self.cfg.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of {m}; pad it first")
        p = self.prompt_vector(weights)
        t, s, h, low = self.features(x, p, stats)
        y = t + self.shuffle(self.recon(self.out(h)))
        if field and self.field is not None:
            y = self.field(y, p)
        return y, h, low

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The restored frames (the ONNX graph's ``output``).

        Args:
            x: (N, 1, H, W) float32 normalised frames; H and W multiples of ``cfg.multiple`` (32 px
                for the presets).
            weights: (N, K) float32 mixing weights over :attr:`prompts`.

        Returns:
            (N, 1, H, W) float32 on the input's scale.

        Raises:
            ValueError: see :meth:`run`.
        """
        return self.run(x, weights)[0]

    # ------------------------------------------------------------------ bookkeeping
    def architecture(self) -> dict:
        """What rebuilds this network (:meth:`from_checkpoint`): ``{"config": cfg.to_dict(), "prompts":
        [slot names]}``, JSON-ready but for tuples (JSON writes them as lists).
        """
        return {"config": self.cfg.to_dict(), "prompts": list(self.prompts)}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "StudentNet":
        """Rebuild from ``{"architecture", "state_dict"}`` (tensors and plain containers)."""
        arch = ckpt["architecture"]
        net = cls(StudentConfig.from_dict(arch["config"]), arch["prompts"])
        net.load_state_dict(ckpt["state_dict"])
        return net


class StudentWithPrompt(nn.Module):
    """A student with fixed prompt weights as a plain ``forward(x)`` (MAC counting, benches)."""

    def __init__(self, net: StudentNet, weights: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("weights", weights.reshape(1, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student on ``x`` (N, 1, H, W) float32 with the fixed weights repeated per frame:
        (N, 1, H, W) float32.
        """
        return self.net(x, self.weights.expand(x.shape[0], -1))


def create_student(preset: Union[str, StudentConfig] = "edge", prompts: Sequence[str] = ()) -> StudentNet:
    """A student network for ``preset`` with prompt slots ``prompts`` (tasks, then clean)."""
    return StudentNet(preset, prompts)


def student_gmac(net: StudentNet, frame=(1, 1, 512, 640)) -> float:
    """GMAC per frame, every conv counted (tir.engines.training.macs: forward hooks on nn.Conv2d; the
    student applies no conv through F.conv2d), with the first prompt slot selected.

    Args:
        net: the student.
        frame: the input shape (N, 1, H, W); default one 640×512 frame.

    Returns:
        Multiply-accumulates per forward pass of ``frame``, in GMAC (1e9 MACs).
    """
    from ..macs import count_macs

    w = torch.zeros(len(net.prompts))
    w[0] = 1.0
    return count_macs(StudentWithPrompt(net, w), frame).gmac
