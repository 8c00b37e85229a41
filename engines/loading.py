"""Load the model ``tir run`` / ``tir bench`` run: a bundle, a model file or a reference network.

The library side of ``--model``/``--backend``/``--task``/``--deploy``/``--threads``: the CLI
(``tools/``) parses the options and calls :func:`load_model`; nothing here prints. Torch-free at
import (a bundle on ONNX Runtime never imports torch); the model registry, the bundle and the
backends are imported inside the functions, so ``tir run`` pays only for what it loads.

Errors are :class:`~tir.edge.errors.TirError` kinds with a message to print:
:class:`ModelNotFound` (no model, or options that do not fit it), ``EngineError``,
``BundleError`` (all exit 2) and ``AdaptationRefused`` (exit 2).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Tuple

from ..edge.errors import ModelError


class ModelNotFound(RuntimeError, ModelError):
    """No model given and none installed, or an option that does not fit the model given; the
    message says how to get one or what to change (exit 2)."""


NO_BUNDLE_HELP = (
    "no model bundle is installed (engines/bundles/edge/ has no manifest.json) and no --model was given. "
    "Train one with `tir train` and export it with `tir export` (see README), or pass --model PATH to a "
    "bundle folder or an .onnx file. (`tir bench --model plainnet:bench` measures speed with the "
    "random-weight reference network; it does not restore anything.)"
)


def load_model(spec: Optional[str], backend: str = "auto", task: Optional[str] = None,
               threads: Optional[int] = None, fallback: Optional[str] = None,
               precision: Optional[str] = None, adapt: Optional[int] = None,
               adapt_save: Optional[str] = None, source_uri: str = "",
               deploy: Optional[str] = None) -> Tuple[object, str]:
    """The model to run and a one-line description.

    ``spec``: None (the installed bundle, else ``fallback``), a bundle folder, a model file,
    or a reference network of the model registry (``plainnet:bench``, exported on the fly). ``precision``
    (fp32/fp16/int8) picks which cached TensorRT plan a bundle route or .onnx file runs
    (``tir build``); None takes the best one built (INT8 > FP16 > FP32). ``adapt`` (a bundle
    only): adapt its router online on the first ``adapt`` frames (engines/adapt.py; fewer than
    its ``MIN_FRAMES`` are refused before anything loads, as ``tir adapt --frames`` does),
    ``adapt_save`` writes the adapted copy there (a new folder: an existing one is refused before
    anything loads). ``deploy`` (a bundle only): ``routes``,
    ``student`` or ``auto`` (per task, the bundle's ``auto_deploy`` table; None: the manifest's
    ``deploy``). The model's ``infer`` takes float32
    N×1×H×W frames normalised to [0, 1] and returns the same shape. Raises :class:`ModelNotFound`,
    ``EngineError``, ``BundleError`` or ``AdaptationRefused`` with a message to print, and
    ``MissingDependency`` when ``backend``'s runtime is not installed (before anything loads).
    """
    from .backends import EngineError, load_engine, require_backend

    require_backend(backend)  # a backend that cannot run here stops before any model loads
    if spec is None:
        from .bundle import default_bundle_path

        bundle = default_bundle_path()
        if bundle is None:
            if fallback is None:
                raise ModelNotFound(NO_BUNDLE_HELP)
            spec = fallback
        else:
            spec = str(bundle)
    if adapt is None and adapt_save is not None:
        raise ModelNotFound("--adapt-save DIR needs --adapt N (the number of frames to adapt the router on)")
    if adapt is not None and task is not None:
        raise ModelNotFound("--adapt adapts the router, which --task switches off; give one of them")
    from .adapt import DEFAULT_FRAMES, MIN_FRAMES

    if adapt is not None and 1 <= adapt < MIN_FRAMES:
        # tir adapt --frames refuses this up front; tir run collected the N frames, then said "refused" on the page
        raise ModelNotFound(f"--adapt {adapt}: too few frames to fit the adaptation: need at least {MIN_FRAMES} "
                            f"({DEFAULT_FRAMES} recommended)")
    if adapt_save is not None and Path(adapt_save).exists():
        # write_adapted_bundle writes a new folder only; found out after N frames, the run would go on
        # with the copy 'not written'
        raise ModelNotFound(f"--adapt-save {adapt_save} already exists; the adapted copy is written to a new "
                            "folder: choose a path that does not exist yet")
    from .models import MODELS, runnable

    preset = MODELS.get(spec) if spec in MODELS else None
    if adapt is not None and (preset is not None or not Path(spec).is_dir()):
        raise ModelNotFound(f"--adapt adapts a bundle's router; {spec} is a single model")
    if deploy is not None and (preset is not None or not Path(spec).is_dir()):
        raise ModelNotFound(f"--deploy picks what a bundle runs; {spec} is a single model")
    if preset is not None:
        if not preset.build:
            raise ModelNotFound(f"{spec} is a training preset (tir train --preset {spec.split(':', 1)[1]}); "
                                f"the networks tir run builds on the fly are {', '.join(runnable())}")
        if task is not None:
            raise ModelNotFound(f"--task picks a route of a bundle; {spec} has none")
        return _reference_engine(preset, backend, threads), f"{spec} (seeded-random reference weights)"
    path = Path(spec)
    if path.is_dir():
        from .restorer import Restorer

        restorer = Restorer(path, backend=backend, task=task, threads=threads, precision=precision,
                            adapt=adapt, adapt_save=adapt_save, source_uri=source_uri, deploy=deploy)
        adapting = f", adapting the router on the first {adapt} frames" if adapt is not None else ""
        runs = describe_deploy(restorer)
        return restorer, f"bundle {path} ({restorer.name}, routes: {', '.join(restorer.routes)}{adapting}{runs})"
    if not path.exists():
        raise ModelNotFound(f"model {spec!r} does not exist; pass a bundle folder, an .onnx/.pt/.engine "
                            f"file or one of {', '.join(runnable())}")
    if task is not None:
        raise ModelNotFound(f"--task picks a route of a bundle; {path.name} is a single model")
    kw = {"threads": threads} if threads is not None and _runs_on_ort(path, backend) else {}
    if precision is not None and backend == "tensorrt":
        kw["precision"] = precision
    engine = load_engine(path, backend=backend, **kw)
    if not callable(getattr(engine, "infer", None)):
        raise EngineError(f"{path} did not load as a model")
    return engine, f"{path} on {engine.backend}"


def describe_deploy(restorer) -> str:
    """The part of :func:`load_model`'s description that says what a Restorer runs besides its
    routes: "" for deploy=routes, ``, deploy: student (...)``, or for auto which tasks run the
    student, which their routes and which the camera's tone (with the margin in dB); with
    ``--precision int8`` it names the CPU INT8 student file the student runs."""
    if restorer.deploy == "routes":
        return ""
    int8 = f", CPU INT8 {restorer.student_file()}" if restorer.uses_student and restorer.precision == "int8" else ""
    if restorer.deploy == "student":
        return f", deploy: student (router scores as prompt mix{int8})"
    on = {v: [t for t, w in restorer.deploy_tasks.items() if w == v] for v in ("student", "routes", "tone")}
    tone = f"; camera's tone: {', '.join(on['tone'])}" if on["tone"] else ""
    return (f", deploy: auto at {restorer.deploy_margin_db:g} dB (student: {', '.join(on['student']) or 'none'}; "
            f"routes: {', '.join(on['routes']) or 'none'}{tone}{int8})")


def hot_swappable(model, watch: Optional[float] = None):
    """A bundle's Restorer wrapped so its bundle can be reloaded while running; other models unchanged.

    engines/hotswap.py: POST /bundle/reload; ``watch`` > 0 also polls the manifest every
    ``watch`` seconds (``--watch-bundle``). A forced task is kept across reloads.

    Args:
        model: what :func:`load_model` returned (a Restorer or any engine).
        watch: manifest poll interval in seconds, or None (reload on request only).

    Returns:
        a HotSwapRestorer for a Restorer, else ``model`` itself.

    Raises:
        UsageError: (a ValueError) ``watch`` given for a model that is no bundle, or ``watch`` <= 0.
    """
    from ..edge.errors import UsageError
    from .restorer import Restorer

    if not isinstance(model, Restorer):
        if watch is not None:
            raise UsageError("--watch-bundle watches a bundle folder; give --model BUNDLE_DIR (or none: the "
                             "installed bundle)")
        return model
    if watch is not None and not watch > 0:
        raise UsageError(f"--watch-bundle {watch:g}: give a poll interval in seconds > 0")
    from .hotswap import HotSwapRestorer

    task = model.current if model.forced else None
    task = "passthrough" if model.forced and task == "clean" else task

    # a --deploy given on the command line holds for every version; else each manifest's own deploy
    deploy = model.deploy if getattr(model, "deploy_forced", False) else None

    def factory(path):
        return Restorer(path, backend=model.backend, task=task, threads=model.threads, precision=model.precision,
                        every=model.every, hysteresis=model.hysteresis, min_confidence=model.min_confidence,
                        deploy=deploy)
    return HotSwapRestorer(model, factory, watch=watch is not None, poll_s=watch or 1.0)


def normalizer_for(model):
    """The pipeline's input normalisation (counts -> [0, 1] float32), taking the bundle's
    percentiles where it names them (``normalisation: {"low_pct": .., "high_pct": ..}`` in
    manifest.json), else the :class:`~tir.edge.normalize.Normalizer` defaults."""
    from ..edge.normalize import Normalizer

    spec = getattr(getattr(model, "bundle", None), "normalisation", None) or {}
    kw = {k: float(spec[k]) for k in ("low_pct", "high_pct") if isinstance(spec.get(k), (int, float))}
    return Normalizer(**kw)


#: frames of the camera's healthy look ``tir run`` pins the gates to by default (``--reference-frames``)
DEFAULT_REFERENCE_FRAMES = 48


def pinnable(model) -> bool:
    """Whether ``model``'s gate references can be pinned (:func:`pin_reference`): a bundle's
    Restorer, or the hot-swap wrapper around one, with a router and no forced task."""
    return callable(getattr(model, "pin_camera", None)) and getattr(model, "router_info", None) is not None \
        and not getattr(model, "forced", False)


def pin_reference(model, frames) -> int:
    """Pin a Restorer's gate references (:meth:`~tir.engines.restorer.Restorer.pin_camera`) to
    ``frames`` of the camera's healthy look, each through the pipeline's own preprocessing
    (edge/pipeline/stages.py ``Preprocess`` with :func:`normalizer_for` the model, a fresh
    normaliser per frame: independent frames, as ``tir eval`` shows a camera's frames).

    Args:
        model: a Restorer (or the hot-swap wrapper around one) with a router and no forced task.
        frames: :class:`~tir.edge.frame.Frame` objects: ``raw`` an (H, W) uint16 (or uint8) array
            of counts, any size, with its meta (e.g. ``bits``); each becomes an (H, W) float32
            model input in [0, 1].

    Returns:
        The number of frames pinned.

    Raises:
        ValueError: the model cannot be pinned (no router, a forced task, not a bundle), or no frame.
    """
    from ..edge.pipeline.stages import MODEL_INPUT_KEY, Preprocess

    if not pinnable(model):
        raise ValueError("a camera reference needs a bundle with a router and automatic routing (no --task)")
    count = 0
    for frame in frames:
        pre = Preprocess(normalizer_for(model))
        pre(frame)
        model.pin_camera(frame.meta.pop(MODEL_INPUT_KEY))
        count += 1
    if count == 0:
        raise ValueError("no frame of the camera's healthy look to pin the reference to")
    return count


def pin_source_reference(model, source, frames: int = DEFAULT_REFERENCE_FRAMES) -> Optional[str]:
    """Pin a routed model's gate references to the clean frames a source offers of its own healthy
    look (a source's ``reference_frames(n)``: the virtual camera, ``synthetic://``, when it degrades
    its own frames) through :func:`pin_reference`, as ``tir run`` and ``tir bench``'s pipeline both
    do, so the gates judge such a stream against its clean look rather than taking its
    degradation for the camera's own (the Restorer routes every frame from the start until the
    gates have references, engines/restorer.py ``_warming``).

    Args:
        model: the model the pipeline runs (a Restorer, the hot-swap wrapper, or any engine).
        source: an opened source (edge/sources/); only one with a callable ``reference_frames``
            is used.
        frames: how many clean frames to pin (``--reference-frames``); < 1 pins none.

    Returns:
        What was pinned, in words, or None when nothing was (no router, a forced task, a
        source without clean frames of its own, ``frames`` < 1).
    """
    offer = getattr(source, "reference_frames", None)
    if not pinnable(model) or not callable(offer) or int(frames) < 1:
        return None
    clean = offer(int(frames))
    return f"{pin_reference(model, clean)} clean frames of the virtual camera" if clean else None


def _runs_on_ort(path: Path, backend: str) -> bool:
    return backend == "onnxruntime" or (backend == "auto" and path.suffix.lower() == ".onnx")


def _reference_engine(preset, backend: str, threads: Optional[int]):
    """A reference network of the model registry (its ``build``/``export`` functions) on ``backend``."""
    from ..edge.registry import resolve
    from .backends import load_engine

    spec = preset.name
    if backend == "torch":
        return load_engine(resolve(preset.build)(spec), backend="torch")
    with tempfile.TemporaryDirectory(prefix="tir-reference-") as folder:
        onnx_path = resolve(preset.export)(spec, Path(folder) / f"{spec.replace(':', '-')}.onnx")
        kw = {"threads": threads} if threads is not None and backend in ("auto", "onnxruntime") else {}
        # the session holds the model in memory; the temporary file can go
        return load_engine(onnx_path, backend="onnxruntime" if backend == "auto" else backend, **kw)
