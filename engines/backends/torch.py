"""torch backend: run an ``nn.Module`` (or a saved one) directly, mostly for checks and training.

torch is imported only when this backend is used, so ``tir run`` on ONNX Runtime never
loads it. The spatial multiple is the module's ``multiple`` attribute when it has one
(our architectures set it), else 4 as for ONNX models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..engine import DEFAULT_MULTIPLE, Engine, EngineError


def _load_module(path: Path):
    import torch

    if not path.is_file():
        raise EngineError(f"torch model {str(path)!r} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        pass  # not TorchScript
    # Never a full unpickle: weights_only=True admits tensors and plain containers, so a file
    # cannot run code when loaded. A pickled nn.Module is therefore refused (save it with
    # torch.jit.save, or export ONNX).
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineError(
            f"torch will not load {str(path)!r} as weights only ({str(exc).splitlines()[0]}); a pickled "
            "module runs code when loaded: save it with torch.jit.save(torch.jit.script(model), PATH) "
            "or export ONNX") from None
    raise EngineError(
        f"{path.name} holds a {type(obj).__name__}, not a module (a state_dict needs its "
        "architecture: build the module and pass it to TorchEngine, save it with torch.jit.save, "
        "or export to ONNX)"
    )


class TorchEngine(Engine):
    """An ``nn.Module`` (or a TorchScript / weights-only ``.pt``/``.pth`` file) run in eager mode.

    ``device`` is a torch device string (``cpu``, ``cuda:0``); the spatial multiple is the
    module's ``multiple`` attribute, else :data:`DEFAULT_MULTIPLE`. Outputs come back as
    float32 numpy arrays.

    Raises:
        EngineError: the file does not exist, is not TorchScript and does not load with
            ``weights_only=True`` (a pickled module is refused: loading it would run code), holds
            no module, the argument is neither module nor path, or CUDA is asked for without a GPU.
    """
    backend = "torch"

    def __init__(self, module_or_path, device: str = "cpu", name: Optional[str] = None):
        import torch

        if isinstance(module_or_path, (str, Path)):
            path = Path(module_or_path)
            module = _load_module(path)
            name = name or path.stem
        elif isinstance(module_or_path, torch.nn.Module):
            module = module_or_path
            name = name or type(module).__name__
        else:
            raise EngineError(f"TorchEngine needs an nn.Module or a .pt/.pth path, got {type(module_or_path).__name__}")
        super().__init__(name)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} asked for but torch {torch.__version__} sees no CUDA GPU")
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.multiple = int(getattr(module, "multiple", DEFAULT_MULTIPLE))
        self._torch = torch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            y = self.module(x)
            return y.float().cpu().numpy()
