"""Tiny torch modules exported to ONNX for Restorer tests: a route that scales the frame and a
router that always names one class (its embedding is that class's one-hot row)."""
import torch


class Scale(torch.nn.Module):
    """A route: ``x * factor``."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class OneHotRouter(torch.nn.Module):
    """The same embedding for every frame: one-hot at class ``k`` of ``n``."""

    def __init__(self, k, n):
        super().__init__()
        self.k, self.n = k, n

    def forward(self, x):
        ones = x.mean(dim=(1, 2, 3))[:, None] * 0 + 1.0
        return torch.cat([ones if i == self.k else ones * 0 for i in range(self.n)], dim=1)


def export(module, path, h, w):
    """``module`` as ONNX at ``path`` (the project's exporter; any frame size at run time)."""
    from tir.engines.training.export import export_onnx

    export_onnx(module, path, input_shape=(1, 1, h, w), audit=False)
    return path
