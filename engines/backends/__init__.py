"""Inference backends: ONNX Runtime (CPU/CUDA), torch, TensorRT; each imported on first use.

Every backend is one entry of :data:`BACKENDS` (the registry pattern of tir.edge.registry): its
class (``"module:Class"``), the file suffixes it picks in ``auto`` mode and the ones it can run
(``accepts``), the Python modules it needs and how to install them, and its typed options (the
keyword arguments of its class). ``load_engine(x)`` picks the backend from what ``x`` is:
``.onnx`` -> ONNX Runtime, an ``nn.Module`` or ``.pt``/``.pth`` -> torch, ``.engine``/``.plan``
(or ``backend="tensorrt"``) -> TensorRT. ``available_backends()`` lists what this machine can
run. Adding a backend: one module with an :class:`Engine` subclass and one
``BACKENDS.register(...)`` call here (docs/architecture.md).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ...edge.registry import OptionError, Registry, option
from ..engine import Engine, EngineError


class EngineOptionError(EngineError, OptionError):
    """An unknown backend option or a bad value; the message names the backend and the option."""


def _at_least_one(value: int) -> Optional[str]:
    return None if value >= 1 else "must be >= 1"


@dataclass(frozen=True)
class ONNXRuntimeOptions:
    """Options of the ``onnxruntime`` backend (keyword arguments of :class:`ONNXRuntimeEngine`)."""
    providers: Any = option(None, "execution providers in order (default: CUDA where present, then CPU)")
    threads: Optional[int] = option(None, "intra-op threads (default: one per core)", check=_at_least_one)
    spinning: bool = option(False, "let idle intra-op threads spin (lower latency, busy cores)")
    name: Optional[str] = option(None, "engine name (default: the file's stem)")


@dataclass(frozen=True)
class TorchOptions:
    """Options of the ``torch`` backend (keyword arguments of :class:`TorchEngine`)."""
    device: str = option("cpu", "torch device, e.g. cpu or cuda:0")
    name: Optional[str] = option(None, "engine name (default: the file's stem or the module's class)")


@dataclass(frozen=True)
class TensorRTOptions:
    """Options of the ``tensorrt`` backend (keyword arguments of :class:`TensorRTEngine`)."""
    name: Optional[str] = option(None, "engine name (default: the plan's stem)")
    check_platform: bool = option(True, "refuse a plan built for another GPU / TensorRT version")
    device: int = option(0, "CUDA device index")
    precision: Optional[str] = option(None, "which cached plan a .onnx route runs (default: the best built)",
                                      choices=("fp32", "fp16", "int8"))
    cache_dir: Any = option(None, "engine cache folder (default: tir build's)")
    threads: Optional[int] = option(None, "accepted for parity with the CPU backends; ignored")


#: backend name -> Engine class. Meta: ``suffixes`` picked in auto mode, ``accepts`` the file
#: suffixes it can run, ``requires`` Python modules, ``install`` what to do when they are missing,
#: ``modules``: it runs an in-memory torch ``nn.Module``.
BACKENDS = Registry("backend", EngineError, option_error=EngineOptionError,
                    meta={"suffixes": (), "accepts": (), "requires": (), "install": "", "modules": False})
BACKENDS.register("onnxruntime", "tir.engines.backends.onnxruntime:ONNXRuntimeEngine", options=ONNXRuntimeOptions,
                  help="ONNX Runtime (CPU, or CUDA with onnxruntime-gpu): runs .onnx files",
                  suffixes=(".onnx",), accepts=(".onnx",), requires=("onnxruntime",),
                  install="pip install onnxruntime (onnxruntime-gpu for CUDA)", modules=False)
BACKENDS.register("torch", "tir.engines.backends.torch:TorchEngine", options=TorchOptions,
                  help="PyTorch eager/TorchScript: runs .pt/.pth/.ts files and in-memory nn.Modules",
                  suffixes=(".pt", ".pth", ".ts"), accepts=(".pt", ".pth", ".ts"), requires=("torch",),
                  install="pip install torch", modules=True)
BACKENDS.register("tensorrt", "tir.engines.backends.tensorrt:TensorRTEngine", options=TensorRTOptions,
                  help="TensorRT on an NVIDIA GPU: runs .engine/.plan files and .onnx routes built by tir build",
                  suffixes=(".engine", ".plan", ".trt"), accepts=(".engine", ".plan", ".trt", ".onnx"),
                  requires=("tensorrt", "pycuda"),
                  install=("on a Jetson install JetPack's python3-libnvinfer (TensorRT) and `pip install pycuda`; "
                           "on a desktop GPU `pip install tensorrt pycuda`. Without a GPU use --backend onnxruntime"),
                  modules=False)
_FILE_KINDS = {".onnx": "ONNX"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(entry) -> List[str]:
    return [m for m in entry.requires if not _importable(m)]


def _needs(entry) -> Optional[str]:
    """What ``entry`` still needs here, as the line to print (None: it can run)."""
    missing = _missing(entry)
    return f"the {entry.name} backend needs {' and '.join(missing)}: {entry.install}" if missing else None


def require_backend(name: str) -> None:
    """Check before anything starts that backend ``name`` can run here (``"auto"`` always can).

    Raises:
        OptionError: ``name`` is not a registered backend (the message lists them).
        MissingDependency: a Python module the backend needs is not importable (exit 3; the
            message says what to install), so ``tir run --backend tensorrt`` on a machine
            without TensorRT stops at start-up instead of failing in the infer stage.
    """
    from ...edge.errors import MissingDependency

    if name == "auto":
        return
    needs = _needs(BACKENDS.get(name))
    if needs:
        raise MissingDependency(needs)


def backend_details() -> Dict[str, str]:
    """Backend name -> one line saying whether it runs here (and on what), without heavy imports
    beyond ONNX Runtime's provider list."""
    details = {}
    for entry in BACKENDS:
        missing = _missing(entry)
        if missing:
            details[entry.name] = ("no: " + entry.install if entry.name != "tensorrt"
                                   else f"no: {' and '.join(missing)} not importable")
        elif entry.name == "onnxruntime":
            from .onnxruntime import available_providers

            details[entry.name] = "yes: providers " + ", ".join(available_providers())
        else:
            details[entry.name] = "yes"
    return details


def available_backends() -> List[str]:
    """Names from :data:`BACKENDS` whose Python packages are importable here."""
    return [name for name, line in backend_details().items() if line.startswith("yes")]


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def check_backend(path, backend: str) -> None:
    """Fail now when ``backend`` cannot run the model file ``path`` by its type (torch cannot
    run .onnx), so a bundle whose routes load lazily fails at start, not at its first frame.

    Raises:
        EngineError: another backend runs this file type (the message names it); an unknown
            ``backend`` raises too.
    """
    if backend == "auto":
        return
    path = Path(path)
    suffix = path.suffix.lower()
    accepts = BACKENDS.get(backend).accepts
    if suffix and suffix not in accepts:
        others = [e.name for e in BACKENDS if suffix in e.accepts]
        kind = _FILE_KINDS.get(suffix, f"a {suffix} file")
        if others:
            raise EngineError(f"{path.name} is {kind}: run it with --backend {' or '.join(others)}, not {backend}")


def _create(entry, target, kw: Dict[str, Any]):
    """``entry``'s class on ``target`` with the options ``kw`` checked against its declaration."""
    needs = _needs(entry)
    if needs:
        raise EngineError(needs)
    options = entry.parse(kw, where=f"backend {entry.name}")
    try:
        cls = entry.load()
    except ImportError as exc:
        raise EngineError(f"the {entry.name} backend module cannot be imported: {exc}") from exc
    return cls(target, **{k: getattr(options, k) for k in kw})


def load_engine(path_or_module, backend: str = "auto", **kw) -> Engine:
    """An :class:`Engine` for a model file or a torch module.

    Args:
        path_or_module: a ``.onnx``, ``.pt``/``.pth``/``.ts``, ``.engine``/``.plan``/``.trt``
            file, or a ``torch.nn.Module``.
        backend: ``auto`` (by file type) or a name in :data:`BACKENDS`.
        **kw: the backend's options (checked against its options dataclass).

    Raises:
        EngineError: an unknown backend, a file no backend runs, a folder, a backend whose
            packages are missing, or one the backend's class refuses (missing file, bad model).
        EngineOptionError: an unknown option (listing the valid ones) or a bad value.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS.names())}")
    if _is_torch_module(path_or_module):
        runs_modules = [e for e in BACKENDS if e.modules]
        if backend != "auto" and not BACKENDS.get(backend).modules:
            raise EngineError(f"a torch module runs on the {' or '.join(e.name for e in runs_modules)} backend, "
                              f"not {backend!r}; export it to ONNX first")
        return _create(BACKENDS.get(backend) if backend != "auto" else runs_modules[0], path_or_module, kw)
    path = Path(path_or_module)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise EngineError(
            f"{str(path)!r} is a folder; a model bundle loads through tir.engines.restorer.Restorer "
            "(`tir run --model FOLDER`), load_engine takes one .onnx/.pt/.engine file"
        )
    if backend == "auto":
        entry = BACKENDS.find(lambda e: suffix in e.suffixes)
        if entry is None:
            raise EngineError(f"cannot tell the backend for {str(path)!r}: expected "
                              + ", ".join(f"{'/'.join(e.suffixes)} ({e.name})" for e in BACKENDS))
    else:
        entry = BACKENDS.get(backend)
        check_backend(path, backend)
        if suffix not in entry.accepts:
            raise EngineError(f"cannot run {str(path)!r} on the {backend} backend: it runs "
                              f"{'/'.join(entry.accepts)} files")
    return _create(entry, path, kw)


__all__ = ["BACKENDS", "Engine", "EngineError", "EngineOptionError", "available_backends", "backend_details", "check_backend",
           "load_engine"]
