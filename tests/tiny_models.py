"""Tiny torch modules exported to ONNX for tests: a route that scales the frame, a router that always
names one class, and student-like two-input (frame, prompt weights) models."""
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


def export_prompted(module, path, k, prompts, multiple=1):
    """A student-like ``module(x, w)`` (frame (N, 1, H, W), prompt weights (N, k)) as ONNX with the
    inputs ``input`` and ``prompt`` and the metadata a distilled student carries
    (``tir.multiple``, ``tir.prompts``)."""
    import onnx

    torch.onnx.export(module, (torch.rand(1, 1, 24, 32), torch.rand(1, k)), str(path),
                      input_names=["input", "prompt"], output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "prompt": {0: "n"}, "output": {0: "n"}})
    model = onnx.load(str(path))
    for key, value in (("tir.multiple", str(multiple)), ("tir.prompts", ",".join(prompts))):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))
    return path
