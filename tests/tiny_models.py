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


class TwoConv(torch.nn.Module):
    """conv 1→4, ReLU, conv 4→1 (3×3, seeded weights): the smallest model with an activation
    range to calibrate between two convolutions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


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


def one_hot_bundle(tmp, factors, say, h, w, unknown=False):
    """A bundle whose routes scale the frame (``factors``: {task: factor}, each task with its
    shipped spec) and whose router always names ``say`` (a task or ``clean``) with similarity 1,
    or (``unknown``) names nothing it knows (its embedding is orthogonal to every codebook row).
    Written to ``tmp / "bundle"``; returns that path."""
    import numpy as np

    from tir.engines import degrade as deg
    from tir.engines.bundle import write_bundle

    tasks = list(factors)
    classes = tasks + ["clean"]
    routes = {t: export(Scale(f), tmp / f"{t}.onnx", h, w) for t, f in factors.items()}
    router = export(OneHotRouter(classes.index(say), len(classes)), tmp / "router.onnx", h, w)
    codebook = np.eye(len(classes))
    if unknown:
        codebook[classes.index(say)] = codebook[(classes.index(say) + 1) % len(classes)]
    meta = {"name": "one-hot",
            "tasks": [{"name": t, "spec": {"name": t, "steps": deg.load_spec(t).steps}} for t in tasks],
            "router": {"codebook": codebook.tolist(), "tasks": classes, "threshold": 0.5,
                       "temperature": 0.1, "input_size": [w, h]}}
    write_bundle(tmp / "bundle", routes, router, meta)
    return tmp / "bundle"


class Unshuffled(torch.nn.Module):
    """A route with convolutions at half resolution (pixel-unshuffle, two 3×3 convs, pixel-shuffle):
    ``x + 0.1·f(x)``, weights seeded by ``seed``: something INT8 calibration has work to do on."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.down, self.up = torch.nn.PixelUnshuffle(2), torch.nn.PixelShuffle(2)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return x + 0.1 * self.up(self.body(self.down(x)))


def calibration_bundle(tmp):
    """A bundle of two :class:`Unshuffled` routes (noise, blur), spatial multiple 2, written under
    ``tmp`` (for tir calibrate / build / export tests)."""
    from tir.engines.bundle import write_bundle
    from tir.engines.training.export import export_onnx

    routes = {}
    for i, task in enumerate(("noise", "blur")):
        routes[task] = tmp / f"{task}.onnx"
        export_onnx(Unshuffled(i), routes[task], input_shape=(1, 1, 16, 16), metadata={"tir.multiple": 2})
    return write_bundle(tmp / "b", routes, None, {"name": "tiny", "multiple": 2})


def scheduled(r):
    """Restorer ``r`` as on a camera it has run on for a while: its start-up warming (frames routed
    off the schedule to give the gates their references, and the router's noise or blur part held
    while the gate that would check it has none: engines/restorer.py ``Restorer._warming``,
    ``Restorer._gate``) is over, for tests whose subject is not the start-up."""
    r._warm_left = 0
    return r
