"""Inference backends: ONNX Runtime (CPU/CUDA), torch, TensorRT; each imported on first use.

``load_engine(x)`` picks the backend from what ``x`` is: ``.onnx`` -> ONNX Runtime, an
``nn.Module`` or ``.pt``/``.pth`` -> torch, ``.engine``/``.plan`` (or ``backend="tensorrt"``)
-> TensorRT. ``available_backends()`` lists what this machine can run.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List

from ..engine import Engine, EngineError

BACKENDS = ("onnxruntime", "torch", "tensorrt")
_TORCH_SUFFIXES = (".pt", ".pth", ".ts")
_TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_details() -> Dict[str, str]:
    """Backend name -> one line saying whether it runs here (and on what), without heavy imports
    beyond ONNX Runtime's provider list."""
    details = {}
    if _importable("onnxruntime"):
        from .onnxruntime import available_providers

        details["onnxruntime"] = "yes: providers " + ", ".join(available_providers())
    else:
        details["onnxruntime"] = "no: pip install onnxruntime (onnxruntime-gpu for CUDA)"
    details["torch"] = "yes" if _importable("torch") else "no: pip install torch"
    missing = [m for m in ("tensorrt", "pycuda") if not _importable(m)]
    details["tensorrt"] = "yes" if not missing else f"no: {' and '.join(missing)} not importable"
    return details


def available_backends() -> List[str]:
    """Names from :data:`BACKENDS` whose Python packages are importable here."""
    return [name for name, line in backend_details().items() if line.startswith("yes")]


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _tensorrt_engine(path, **kw) -> Engine:
    missing = [m for m in ("tensorrt", "pycuda") if not _importable(m)]
    if missing:
        raise EngineError(
            f"the TensorRT backend needs {' and '.join(missing)}: on a Jetson install JetPack's "
            "python3-libnvinfer (TensorRT) and `pip install pycuda`; on a desktop GPU `pip install "
            "tensorrt pycuda`. Without a GPU use --backend onnxruntime"
        )
    try:
        module = importlib.import_module("tir.engines.backends.tensorrt")
    except ImportError as exc:
        raise EngineError(f"the TensorRT backend module cannot be imported: {exc}") from exc
    return module.TensorRTEngine(path, **kw)


def check_backend(path, backend: str) -> None:
    """Raise EngineError now when ``backend`` cannot run the model file ``path`` by its type
    (torch cannot run .onnx), so a bundle whose routes load lazily fails at start, not at
    its first frame."""
    path = Path(path)
    if backend == "torch" and path.suffix.lower() == ".onnx":
        raise EngineError(f"{path.name} is ONNX: run it with --backend onnxruntime or tensorrt, not torch")


def load_engine(path_or_module, backend: str = "auto", **kw) -> Engine:
    """An :class:`Engine` for a model file or a torch module; ``kw`` go to the backend class."""
    if backend not in ("auto",) + BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if _is_torch_module(path_or_module):
        if backend not in ("auto", "torch"):
            raise EngineError(f"a torch module runs on the torch backend, not {backend!r}; export it to ONNX first")
        from .torch import TorchEngine

        return TorchEngine(path_or_module, **kw)
    path = Path(path_or_module)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise EngineError(
            f"{str(path)!r} is a folder; a model bundle loads through tir.engines.restorer.Restorer "
            "(`tir run --model FOLDER`), load_engine takes one .onnx/.pt/.engine file"
        )
    if backend == "tensorrt" or (backend == "auto" and suffix in _TENSORRT_SUFFIXES):
        return _tensorrt_engine(path, **kw)
    if backend == "torch" or (backend == "auto" and suffix in _TORCH_SUFFIXES):
        check_backend(path, "torch")
        from .torch import TorchEngine

        return TorchEngine(path, **kw)
    if suffix == ".onnx":
        from .onnxruntime import ONNXRuntimeEngine

        return ONNXRuntimeEngine(path, **kw)
    raise EngineError(
        f"cannot tell the backend for {str(path)!r}: expected .onnx (onnxruntime), "
        f"{'/'.join(_TORCH_SUFFIXES)} (torch) or {'/'.join(_TENSORRT_SUFFIXES)} (tensorrt)"
    )


__all__ = ["BACKENDS", "Engine", "EngineError", "available_backends", "backend_details", "check_backend",
           "load_engine"]
