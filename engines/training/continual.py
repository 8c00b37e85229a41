"""The open-world restoration model: shared frozen stem/reconstruction, one branch per task.

Design after ECMRNet (ecmrnet.md §1.1 ``IncModel``): the stem and reconstruction are trained
once on clean→clean reconstruction and frozen; every task gets its own branch (its own
channels and weights: group isolation), initialised from the clean-pretrained branch or from
the most similar earlier branch; when task *t* is learned every earlier parameter is frozen
(``requires_grad=False`` and left out of the optimiser), so earlier routes stay bit-identical.

Compound tasks (CB, CN, BN, CBN) get a :class:`SubDegradationMiner`, in the spirit of
ECMRNet's SCCM: it takes the restored features of the frozen single-degradation branches for
its parts (each part branch runs once per frame), mixes them with an input-conditioned
low-rank mixing matrix behind a sigmoid gate that starts nearly closed (bias −3), and a small
residual block of its own refines the result.

Every task can also own a :class:`~tir.engines.training.models.ecmrnet.FieldHead` (config ``field``):
a whole-frame low-frequency correction of the route's output, trained on whole frames in its
own stage after the branch.

Every task also owns a :class:`~tir.engines.training.models.ecmrnet.ToneHead` (when the config has
``tone``): a per-frame global affine correction from whole-frame statistics, applied before the
stem, so a route sees the frame's global contrast even when it is trained on small crops (the
crops carry their whole frame's statistics). Compound routes feed the toned frame to their
parts too.

A route is ``t + recon.residual(features - stem(t))`` with ``t = tone(x)``
(``t = x`` without a tone head); :class:`RouteModule` wraps one route
for ONNX export (the graph holds only the stem, the branches the route needs and the recon).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .models.ecmrnet import (DenseResBlock, ECMRNetConfig, EdgeBranch, EdgeRecon, EdgeStem,
                             FieldHead, ToneHead, conv1x1, get_config)

CLEAN = "clean"


class SubDegradationMiner(nn.Module):
    """Mine K frozen part features for a compound task (ecmrnet.md §1.1 SCCM, simplified).

    U = φ(ref), V = ψ(concat parts); a hyper-MLP on the pooled U and V gives a dynamic
    low-rank P·Qᵀ that is added to a static one and a bias of −4, squashed by a sigmoid and
    row-normalised into the mixing matrix A; a gate g = σ(MLP) starts near σ(−3).
    ΔU = g·(A·V − U); the output is refine(ref + adapt(ΔU)).
    """

    def __init__(self, channels: int, parts: int, rank: int, hidden: int, refine_mid: Optional[int] = None):
        super().__init__()
        c = channels
        self.channels, self.rank = c, rank
        self.phi = conv1x1(c, c)
        self.psi = conv1x1(parts * c, c)
        self.hyper = nn.Sequential(conv1x1(2 * c, hidden), nn.ReLU(), conv1x1(hidden, 2 * c * rank))
        nn.init.normal_(self.hyper[2].weight, std=1e-3)
        nn.init.zeros_(self.hyper[2].bias)
        self.p = nn.Parameter(torch.randn(c, rank) * 0.1)
        self.q = nn.Parameter(torch.randn(c, rank) * 0.1)
        self.gate = nn.Sequential(conv1x1(2 * c, hidden), nn.ReLU(), conv1x1(hidden, c))
        nn.init.constant_(self.gate[2].bias, -3.0)
        self.adapt = conv1x1(c, c)
        self.refine = DenseResBlock(c, refine_mid)
        nn.init.zeros_(self.refine.conv2.weight)
        nn.init.zeros_(self.refine.conv2.bias)

    def forward(self, ref: torch.Tensor, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mix the compound's part features into the reference features (see the class docstring).

        Args:
            ref: (N, C, H, W) float32 features of the compound's own branch.
            parts: the K frozen part branches' (N, C, H, W) features.

        Returns:
            (N, C, H, W) float32 refined features.
        """
        n, c, h, w = ref.shape
        u = self.phi(ref)
        v = self.psi(torch.cat(list(parts), dim=1))
        pooled = torch.cat([u.mean(dim=(2, 3), keepdim=True), v.mean(dim=(2, 3), keepdim=True)], dim=1)
        pq = self.hyper(pooled).reshape(n, 2, c, self.rank)
        dynamic = torch.matmul(pq[:, 0], pq[:, 1].transpose(1, 2))          # N×C×C
        logits = torch.matmul(self.p, self.q.t()).unsqueeze(0) + dynamic - 4.0
        mix = torch.sigmoid(logits)
        mix = mix / mix.sum(dim=2, keepdim=True)
        mixed = torch.matmul(mix, v.reshape(n, c, h * w)).reshape(n, c, h, w)
        gate = torch.sigmoid(self.gate(pooled))
        return self.refine(ref + self.adapt(gate * (mixed - u)))


class OpenWorldModel(nn.Module):
    """Shared stem + reconstruction, a clean branch, and one branch (+ miner) per task."""

    def __init__(self, cfg: Union[str, ECMRNetConfig] = "edge"):
        super().__init__()
        cfg = get_config(cfg)
        if cfg.family != "edge":
            raise ValueError(f"the open-world model is built from the edge family; preset "
                             f"{cfg.name!r} is family {cfg.family!r} (use 'edge' or 'tiny')")
        self.cfg = cfg
        self.stem = EdgeStem(cfg)
        self.recon = EdgeRecon(cfg)
        self.branches = nn.ModuleDict({CLEAN: EdgeBranch(cfg)})
        self.miners = nn.ModuleDict()
        self.tones = nn.ModuleDict()
        self.fields = nn.ModuleDict()
        self.parts: Dict[str, Tuple[str, ...]] = {}
        self.init_from: Dict[str, str] = {}

    # ------------------------------------------------------------------ structure
    @property
    def tasks(self) -> List[str]:
        """Learned tasks in learning order (the clean branch is not a task)."""
        return [t for t in self.branches if t != CLEAN]

    def architecture(self) -> dict:
        """Everything needed to rebuild the module tree before loading a state dict."""
        return {
            "config": self.cfg.to_dict(),
            "clean_mids": self.branches[CLEAN].mids(),
            "tasks": [{"name": t, "parts": list(self.parts.get(t, ())), "mids": self.branches[t].mids(),
                       "miner_mid": self.miners[t].refine.mid if t in self.miners else None,
                       "init": self.init_from.get(t, CLEAN)} for t in self.tasks],
        }

    @classmethod
    def from_architecture(cls, arch: dict) -> "OpenWorldModel":
        """An untrained model with the module tree :meth:`architecture` describes (widths, tasks,
        miners), ready for ``load_state_dict``.

        Args:
            arch: the dict :meth:`architecture` returned.

        Returns:
            the model, weights freshly initialised.

        Raises:
            ValueError: the config's family is not ``edge`` (from the constructor).
        """
        model = cls(ECMRNetConfig.from_dict(arch["config"]))
        model.branches[CLEAN] = EdgeBranch(model.cfg, arch.get("clean_mids"))
        for task in arch["tasks"]:
            model._attach(task["name"], tuple(task["parts"]), task["mids"], task.get("miner_mid"))
            model.init_from[task["name"]] = task.get("init", CLEAN)
        return model

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "OpenWorldModel":
        """Rebuild and load a ``{"architecture", "state_dict"}`` checkpoint.

        Pruned miner widths missing from older architectures are read off the weights.
        """
        arch = dict(ckpt["architecture"])
        state = ckpt["state_dict"]
        arch["tasks"] = [dict(t) for t in arch["tasks"]]
        for task in arch["tasks"]:
            key = f"miners.{task['name']}.refine.conv1.weight"
            if task.get("miner_mid") is None and key in state:
                task["miner_mid"] = int(state[key].shape[0])
        model = cls.from_architecture(arch)
        model.load_state_dict(state)
        return model

    def _attach(self, name: str, parts: Tuple[str, ...], mids: Optional[Sequence[int]],
                miner_mid: Optional[int] = None) -> None:
        self.branches[name] = EdgeBranch(self.cfg, mids)
        if self.cfg.tone:
            self.tones[name] = ToneHead(self.cfg.tone_hidden, self.cfg.tone_pool)
        if self.cfg.field:
            self.fields[name] = FieldHead(self.cfg.field, self.cfg.field_width)
        if parts:
            self.miners[name] = SubDegradationMiner(self.cfg.width, len(parts), self.cfg.miner_rank,
                                                    self.cfg.miner_hidden, miner_mid)
            self.parts[name] = tuple(parts)

    def add_task(self, name: str, parts: Sequence[str] = (), init: str = CLEAN) -> None:
        """Expand: a new branch for ``name`` copied from branch ``init``; freeze all else.

        The copy keeps the source's (possibly pruned) inner widths; its output projection is
        zeroed so the new route starts as the identity.

        Raises:
            ValueError: ``name`` is learned already, a compound's ``parts`` are not all learned
                single-degradation branches, or ``init`` names no branch.
        """
        if name in self.branches:
            raise ValueError(f"task {name!r} already learned; tasks: {', '.join(self.tasks)}")
        missing = [p for p in parts if p not in self.branches or p in self.parts]
        if missing:
            raise ValueError(f"compound task {name!r} needs single-degradation branches {missing} "
                             f"first; learned: {', '.join(self.tasks) or 'none'}")
        if init not in self.branches:
            raise ValueError(f"cannot initialise {name!r} from unknown branch {init!r}")
        source = self.branches[init]
        self._attach(name, tuple(parts), source.mids())
        self.branches[name].load_state_dict(source.state_dict())
        nn.init.zeros_(self.branches[name].out.weight)
        nn.init.zeros_(self.branches[name].out.bias)
        self.init_from[name] = init
        self.freeze_except(name)

    def task_modules(self, name: str) -> List[nn.Module]:
        """The modules that belong to ``name`` alone (its branch, tone head and miner)."""
        mods = [self.branches[name]]
        if name in self.tones:
            mods.append(self.tones[name])
        if name in self.fields:
            mods.append(self.fields[name])
        if name in self.miners:
            mods.append(self.miners[name])
        return mods

    def freeze_except(self, name: Optional[str]) -> None:
        """Freeze every parameter except those of task ``name`` (None: freeze all)."""
        for p in self.parameters():
            p.requires_grad_(False)
        if name is not None:
            for mod in self.task_modules(name):
                for p in mod.parameters():
                    p.requires_grad_(True)

    def trainable_parameters(self, name: str) -> List[nn.Parameter]:
        """What an optimiser for task ``name`` may update (nothing of earlier tasks)."""
        return [p for mod in self.task_modules(name) for p in mod.parameters()]

    def unfreeze_autoencoder(self) -> None:
        """Clean pretraining trains the stem, the reconstruction and the clean branch."""
        self.freeze_except(None)
        for mod in (self.stem, self.recon, self.branches[CLEAN]):
            for p in mod.parameters():
                p.requires_grad_(True)

    def route_params(self, task: str) -> int:
        """Parameters a route's graph holds (stem, recon, its branches and miner)."""
        mods = [self.stem, self.recon] + [self.branches[p] for p in self.parts.get(task, ())]
        mods += self.task_modules(task)
        return sum(p.numel() for m in mods for p in m.parameters())

    # ------------------------------------------------------------------ forward passes
    def autoencode(self, x: torch.Tensor) -> torch.Tensor:
        """Clean→clean pretraining pass: decode(stem + clean branch).

        Args:
            x: (N, 1, H, W) float32 frames in [0, 1], H and W multiples of ``cfg.multiple``.

        Returns:
            (N, 1, H, W) float32 reconstruction.
        """
        s = self.stem(x)
        return self.recon.decode(s + self.branches[CLEAN](s))

    def route_features(self, x: torch.Tensor, task: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(stem features, restored features) of ``task``'s route.

        Args:
            x: (N, 1, H, W) float32 frames in [0, 1].
            task: a learned task.

        Returns:
            two (N, C, h, w) float32 feature tensors.

        Raises:
            KeyError: ``task`` is not a learned route (the message lists the routes).
        """
        if task not in self.branches or task == CLEAN:
            raise KeyError(f"no route {task!r}; routes: {', '.join(self.tasks) or 'none'}")
        s = self.stem(x)
        feats = s + self.branches[task](s)
        if task in self.parts:
            part_feats = [s + self.branches[p](s) for p in self.parts[task]]
            feats = self.miners[task](feats, part_feats)
        return s, feats

    def route_forward(self, x: torch.Tensor, task: str, stats: Optional[torch.Tensor] = None,
                      field: bool = True) -> torch.Tensor:
        """Restore ``x`` (N×1×H×W, H and W multiples of ``cfg.multiple``) with ``task``'s route.

        ``stats``: whole-frame tone statistics (:func:`~tir.engines.training.models.ecmrnet.tone_stats`)
        when ``x`` is a crop of a larger frame (training); by default they are taken from ``x``.
        ``field=False`` leaves out the route's whole-frame field head (training on crops, and
        the inputs of the field stage).

        Returns:
            (N, 1, H, W) float32 restored frames.

        Raises:
            ValueError: H or W is not a multiple of ``cfg.multiple``.
            KeyError: ``task`` is not a learned route.
        """
        m = self.cfg.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of {m}; pad it first")
        if task in self.tones:
            x = self.tones[task](x, stats)
        s, feats = self.route_features(x, task)
        y = x + self.recon.residual(feats - s)
        if field and task in self.fields:
            y = self.fields[task](y)
        return y

    def forward(self, x: torch.Tensor, task: str, stats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`route_forward` with the field head: (N, 1, H, W) float32 in, the same shape out.

        Raises:
            ValueError: H or W is not a multiple of ``cfg.multiple``.
            KeyError: ``task`` is not a learned route.
        """
        return self.route_forward(x, task, stats)


class RouteModule(nn.Module):
    """One route as a plain ``forward(x)`` module, for ONNX export and MAC counting."""

    def __init__(self, model: OpenWorldModel, task: str):
        super().__init__()
        if task not in model.tasks:
            raise KeyError(f"no route {task!r}; routes: {', '.join(model.tasks) or 'none'}")
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The route's :meth:`OpenWorldModel.route_forward`: (N, 1, H, W) float32 in, the same shape out.

        Raises:
            ValueError: H or W is not a multiple of the model's ``cfg.multiple``.
        """
        return self.model.route_forward(x, self.task)


def parameter_snapshot(modules: Iterable[nn.Module]) -> List[torch.Tensor]:
    """Detached copies of every parameter and buffer (for freeze checks).

    Args:
        modules: torch modules.

    Returns:
        one tensor per parameter then buffer of each module, same shape and dtype, in order.
    """
    return [t.detach().clone() for m in modules for t in list(m.parameters()) + list(m.buffers())]
