"""Multiply-accumulate and parameter counts by forward hooks on conv and linear layers.

A conv's MACs per frame are ``C_out·H_out·W_out·(C_in/groups)·k_h·k_w``; linear layers
``in·out``. Norms, activations, pooling and element-wise ops are not counted (as in
ecmrnet.md §1.5). Everything a forward pass touches is counted once per call, so a route
that runs several branches counts each of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import nn


@dataclass
class MacReport:
    macs: int                                  # per frame (batch 1)
    params: int                                # parameters of the counted module
    per_layer: Dict[str, int] = field(default_factory=dict)

    @property
    def gmac(self) -> float:
        return self.macs / 1e9


def _conv_macs(layer: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = layer.kernel_size
    per_pixel = (layer.in_channels // layer.groups) * kh * kw
    return int(out.shape[1] * out.shape[2] * out.shape[3] * per_pixel)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: Tuple[int, int, int, int] = (1, 1, 512, 640)) -> MacReport:
    """MACs of one forward pass of ``module`` on a zero tensor of ``input_shape`` (per frame)."""
    per_layer: Dict[str, int] = {}
    hooks = []

    def hook(name):
        def record(layer, inputs, output):
            if isinstance(layer, nn.Conv2d):
                macs = _conv_macs(layer, output)
            else:
                macs = int(output.numel() // output.shape[0] * layer.in_features)
            per_layer[name] = per_layer.get(name, 0) + macs
        return record

    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            hooks.append(layer.register_forward_hook(hook(name)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return MacReport(macs=sum(per_layer.values()), params=count_params(module), per_layer=per_layer)
