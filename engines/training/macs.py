"""Multiply-accumulate and parameter counts: one function for the manifest, ``tir eval`` and
``tir bench --roofline``.

:func:`count_macs` runs one forward pass under PyTorch's ``torch.utils.flop_counter.FlopCounterMode``,
which sees every convolution and matrix product at the ATen level however it is called
(``nn.Conv2d``, ``F.conv2d`` on a module's weight as in ``EdgeRecon.residual``, transposed
convs, ``nn.Linear``, ``torch.matmul``), so nothing a route computes through a functional call is
missed. MACs = FlopCounterMode's flops / 2 (it counts a multiply-accumulate as two flops; for a
conv ``2·C_out·H_out·W_out·(C_in/groups)·k_h·k_w`` per frame). Norms, activations, pooling and
element-wise ops are not counted (as in ecmrnet.md §1.5).

Until issue 11 the count came from forward hooks on ``nn.Conv2d``/``nn.Linear`` modules and
missed the reconstruction conv that routes apply through ``F.conv2d``: every route of the
shipped bundle was 0.094 GMAC (640×512) heavier than its manifest said.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import nn


@dataclass
class MacReport:
    """Multiply-accumulates of one forward pass, per frame.

    Attributes:
        macs: MACs per frame (the batch's divided by the batch size).
        params: parameters of the counted module.
        per_layer: module name -> MACs per frame of its own calls.
    """
    macs: int                                  # per frame (divided by the batch size)
    params: int                                # parameters of the counted module
    per_layer: Dict[str, int] = field(default_factory=dict)   # module name -> MACs of its own calls

    @property
    def gmac(self) -> float:
        """MACs per frame in GMAC (10⁹ MACs)."""
        return self.macs / 1e9


def count_params(module: nn.Module) -> int:
    """The number of parameters (elements, trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: Tuple[int, int, int, int] = (1, 1, 512, 640)) -> MacReport:
    """MACs per frame of one forward pass of ``module`` on a zero float32 tensor of ``input_shape``
    (N×C×H×W; the total is divided by N).

    ``per_layer`` maps a module's name (as in ``module.named_modules()``, ``""`` for the module
    itself) to the MACs of the ops it ran itself, not through a child module: a functional
    ``F.conv2d`` in a method of the root lands on ``""``. Its values sum to ``macs``·N.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
            module(torch.zeros(input_shape))
    finally:
        module.train(was_training)
    n = int(input_shape[0]) or 1
    root = type(module).__name__
    totals: Dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = "" if key == root else key[len(root) + 1:] if key.startswith(root + ".") else key
        totals[name] = sum(ops.values()) // 2
    def parent(name: str) -> str:
        """The nearest recorded ancestor (modules called through a method are not recorded)."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in totals:
                return ".".join(parts[:i])
        return ""

    own = dict(totals)
    for name, total in totals.items():
        if name:
            own[parent(name)] = own.get(parent(name), 0) - total
    per_layer = {name: v for name, v in own.items() if v}
    whole = counter.get_total_flops() // 2
    return MacReport(macs=whole // n, params=count_params(module), per_layer=per_layer)
