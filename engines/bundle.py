"""The model bundle: one folder holding everything a deployment needs, verified on load.

Layout::

    <bundle>/manifest.json      format_version, version, name, preset, tasks, router, normalisation,
                                training, files {name: sha256}, multiple, checkpoint, config, notes
    <bundle>/route-<task>.onnx  one restoration model per task (input N×1×H×W)
    <bundle>/router.onnx        optional degradation router (input N×1×H×W)
    <bundle>/model.pt           optional training checkpoint (tensors only; ``tir learn``)
    <bundle>/student.onnx       optional distilled student (inputs ``input`` N×1×H×W and
                                ``prompt`` N×K; ``tir distill``); ``deploy`` (routes|student|auto)
                                says which the Restorer runs; with ``auto`` the manifest's
                                ``auto_deploy`` table names, per task, routes, student or
                                tone (a contrast-carrying task: its partner's network and the
                                camera's tone map; :func:`choose_auto_deploy`)

:func:`load_bundle` refuses a bundle whose manifest breaks the schema (:func:`validate_manifest`:
unknown keys, wrong types, out-of-range router values, a codebook that does not match the
router's task list), whose listed files (routes, router, the training checkpoint ``model.pt``, the student)
are missing or altered (sha256), of another format version, or not N×1×H×W ONNX models, with a
message naming the file or key. Unknown extra files in the folder are ignored and never used.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..edge import jsontext
from ..edge.errors import ModelError
from .engine import DEFAULT_MULTIPLE

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROUTER_FILE = "router.onnx"
REQUIRED_KEYS = ("format_version", "name", "tasks", "router", "normalisation", "files")

PathLike = Union[str, Path]


class BundleError(RuntimeError, ModelError):
    """A bundle that cannot be written or trusted; the message names the file and the fix."""


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of the file at ``path``, read in ``chunk``-byte blocks (1 MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def route_file(task: str) -> str:
    """The file name of ``task``'s route in a bundle: ``route-<task>.onnx``."""
    return f"route-{task}.onnx"


def default_bundle_path() -> Optional[Path]:
    """The bundle shipped with the package (engines/bundles/edge/), if it is there."""
    path = Path(__file__).resolve().parent / "bundles" / "edge"
    return path if (path / MANIFEST).is_file() else None


# ---------------------------------------------------------------------------------------------
# ONNX checks
# ---------------------------------------------------------------------------------------------

def _input_dims_onnx(path: Path) -> List[object]:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BundleError(f"{path.name}: expected one image input, found {len(inputs)} "
                          f"({', '.join(i.name for i in inputs)})")
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def _input_dims_ort(path: Path) -> List[object]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BundleError(f"{path.name}: expected one image input, found {len(inputs)}")
    return list(inputs[0].shape)


def check_onnx_input(path: PathLike) -> List[object]:
    """Load ``path`` as an ONNX model (onnx, else onnxruntime) and check its input is (N, 1, H, W).

    Returns:
        The input's 4 dims: ints, or names/None for dynamic axes.

    Raises:
        BundleError: not a loadable ONNX model, not exactly one image input, or an input that is
            not 4-D with one channel; the message names the file.
    """
    path = Path(path)
    try:
        import onnx  # noqa: F401
        reader = _input_dims_onnx
    except ImportError:
        reader = _input_dims_ort
    try:
        dims = reader(path)
    except BundleError:
        raise
    except Exception as exc:  # onnx / onnxruntime raise many types for a broken file
        raise BundleError(f"{path.name} is not a loadable ONNX model: {exc}") from exc
    if len(dims) != 4 or dims[1] not in (1, "1"):
        shape = "×".join(str(d) for d in dims)
        raise BundleError(f"{path.name}: input must be N×1×H×W (grey frames), model has {shape}")
    return dims


def count_onnx_params(path: PathLike) -> Optional[int]:
    """Number of weights stored as initializers (None when onnx is not installed)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    model = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).size for t in model.graph.initializer))


# ---------------------------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------------------------

class Bundle:
    """A verified bundle folder; see the module docstring."""

    def __init__(self, path: PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._tasks = {t["name"]: t for t in manifest["tasks"]}

    @property
    def name(self) -> str:
        """The bundle's name from the manifest."""
        return self.manifest["name"]

    @property
    def preset(self) -> Optional[str]:
        """The model preset the routes were trained with (e.g. ``tiny``), or None."""
        return self.manifest.get("preset")

    @property
    def tasks(self) -> List[str]:
        """The route names (degradation tasks) in manifest order."""
        return [t["name"] for t in self.manifest["tasks"]]

    def task_info(self, task: str) -> dict:
        """A copy of the manifest entry of route ``task`` (file, sha256, params, metrics ...).

        Raises:
            BundleError: the bundle has no such route (the message lists its routes).
        """
        if task not in self._tasks:
            raise BundleError(f"bundle {self.name!r} has no route {task!r}; "
                              f"routes: {', '.join(self.tasks)}")
        return dict(self._tasks[task])

    def route_path(self, task: str) -> Path:
        """The ONNX file of route ``task``.

        Raises:
            BundleError: the bundle has no such route.
        """
        return self.path / self.task_info(task)["file"]

    @property
    def router(self) -> Optional[dict]:
        """The manifest's router entry (file, codebook, threshold, input_size, tasks ...), or None."""
        return self.manifest.get("router")

    @property
    def router_path(self) -> Optional[Path]:
        """The router's ONNX file, or None for a bundle without router."""
        return None if self.router is None else self.path / self.router["file"]

    @property
    def normalisation(self) -> dict:
        """The manifest's normalisation entry (how counts map to [0, 1]); {} when absent."""
        return self.manifest.get("normalisation") or {}

    @property
    def multiple(self) -> int:
        """The spatial multiple in pixels that H and W must be padded to (manifest ``multiple``, default 4).
        """
        return int(self.manifest.get("multiple", DEFAULT_MULTIPLE))

    @property
    def version(self) -> int:
        """The bundle's version: 1 unless the manifest says more (``tir learn`` bumps it)."""
        return int(self.manifest.get("version", 1))

    @property
    def deploy(self) -> str:
        """What runs: ``routes`` (default), ``student`` (the distilled student,
        engines/training/distill.py) or ``auto`` (per task, the ``auto_deploy`` table)."""
        return self.manifest.get("deploy", "routes")

    @property
    def auto_deploy(self) -> Optional[dict]:
        """The manifest's ``auto_deploy`` entry ({margin_db, tasks, delta_db, source}), or None."""
        return self.manifest.get("auto_deploy")

    def deploy_table(self, deploy: Optional[str] = None) -> Dict[str, str]:
        """What runs each route's task under ``deploy`` (None: the manifest's): {task: "routes" |
        "student"}, every route named. ``routes``/``student``: the same for every task; ``auto``:
        the manifest's ``auto_deploy.tasks``, or, when the manifest records none (a bundle written
        before ``auto``, run with ``--deploy auto``), the rule of :func:`choose_auto_deploy` on the
        student's recorded val PSNR with the default margin (:data:`DEFAULT_AUTO_MARGIN_DB`).

        Raises:
            BundleError: an unknown ``deploy``; ``student``/``auto`` on a bundle without a student;
                ``auto`` without a table and without the student's val numbers for every task.
        """
        deploy = self.deploy if deploy is None else deploy
        if deploy not in DEPLOY_CHOICES:
            raise BundleError(f"deploy {deploy!r} must be one of {', '.join(DEPLOY_CHOICES)}")
        if deploy == "routes":
            return {t: "routes" for t in self.tasks}
        if self.student is None:
            raise BundleError(f"bundle {self.name!r} has no student, so deploy {deploy!r} cannot run; distill "
                              "one with `tir distill` or run its routes (--deploy routes)")
        if deploy == "student":
            return {t: "student" for t in self.tasks}
        if self.auto_deploy is not None:
            return dict(self.auto_deploy["tasks"])
        return auto_deploy_entry(self.manifest)["tasks"]

    @property
    def student(self) -> Optional[dict]:
        """The manifest's student entry (file, prompts, preset, GMAC ...), or None."""
        return self.manifest.get("student")

    @property
    def student_path(self) -> Optional[Path]:
        """The distilled student's ONNX file, or None."""
        return None if self.student is None else self.path / self.student["file"]

    def check_file(self, path: PathLike) -> None:
        """Refuse a listed file that changed since the bundle was verified: its sha256 against
        the manifest's, read now (routes and the student load lazily, on first use, so a file
        replaced in between would otherwise run unchecked). A file the manifest does not list
        (e.g. a TensorRT plan built on the device) is not checked here.

        Raises:
            BundleError: the file is missing or its sha256 differs from the manifest's.
        """
        path = Path(path)
        digest = listed_files(self.manifest).get(path.name)
        if digest is None or path.parent.resolve() != self.path.resolve():
            return
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise BundleError(f"bundle {self.name!r}: {path.name} cannot be read ({exc.strerror or exc}); "
                              "restore the bundle folder") from None
        if actual != digest:
            raise BundleError(f"bundle {self.name!r}: {path.name} changed since the bundle was loaded (sha256 "
                              f"{_short(actual)}, manifest {_short(digest)}); it is not run. Restore the file, or "
                              "write the bundle again (tir train/learn/distill) and reload it")

    def __repr__(self) -> str:
        router = "router" if self.router else "no router"
        return f"Bundle({self.name!r}, {self.path}, tasks={self.tasks}, {router})"


def _fresh_tmp(dst: Path) -> Path:
    """``dst``'s temporary sibling (``NAME.tmp``), removed first if it exists, so a file or
    symlink left there is never written through."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    return tmp


def _copy(src: PathLike, dst: Path) -> None:
    """Copy file ``src`` to ``dst`` inside a bundle folder: written to ``dst``.tmp, then renamed
    over ``dst``. A ``dst`` that is a symlink (e.g. pointing outside the bundle) is replaced by
    the file, never written through, so updating a bundle in place writes only inside it.

    Raises:
        BundleError: ``src`` is not a file.
        OSError: the copy cannot be written.
    """
    src = Path(src)
    if not src.is_file():
        raise BundleError(f"cannot bundle {src}: no such file")
    if dst.is_symlink() or src.resolve() != dst.resolve():
        tmp = _fresh_tmp(dst)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _sub_tasks(task: str) -> List[str]:
    from .degrade import COMPOUND_PARTS  # the ECMRNet compound decomposition

    return list(COMPOUND_PARTS.get(task, ()))


def write_bundle(out_dir: PathLike, routes: Mapping[str, PathLike], router: Optional[PathLike],
                 manifest: Mapping) -> Bundle:
    """Copy route and router ONNX files into ``out_dir``, hash them, write manifest.json.

    ``manifest`` supplies name, preset, normalisation, training, multiple, checkpoint, config, notes,
    ``tasks`` (a list of dicts whose "name" matches a key of ``routes``: their keys are merged
    into that route's entry) and ``router`` (a dict of router metadata such as codebook,
    threshold, input_size, tasks). Returns the bundle as :func:`load_bundle` reads it back.

    Raises:
        BundleError: no routes, unknown manifest keys, a task entry without a name or without a
            route file, a bad task name, a missing source file, router metadata without a router
            file, a model whose input is not (N, 1, H, W), or any check of :func:`load_bundle`.
    """
    if not routes:
        raise BundleError("a bundle needs at least one route")
    unknown = sorted(set(manifest) - set(TOP_KEYS))
    if unknown:
        raise BundleError(f"unknown manifest keys {unknown}; known: {', '.join(TOP_KEYS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(manifest)
    task_meta: Dict[str, dict] = {}
    for entry in meta.pop("tasks", None) or []:
        if "name" not in entry:
            raise BundleError(f"manifest task entry without a name: {entry}")
        task_meta[entry["name"]] = dict(entry)
    unknown = sorted(set(task_meta) - set(routes))
    if unknown:
        raise BundleError(f"manifest describes tasks {unknown} with no route file; "
                          f"routes given: {', '.join(routes)}")

    files: Dict[str, str] = {}
    tasks = []
    for task, src in routes.items():
        if not task or any(c in task for c in "/\\ ") or task.startswith("."):
            raise BundleError(f"bad task name {task!r}: use letters, digits, '-' or '_'")
        name = route_file(task)
        _copy(src, out / name)
        check_onnx_input(out / name)
        files[name] = sha256_file(out / name)
        entry = {"name": task, "file": name, "sha256": files[name],
                 "params": count_onnx_params(out / name), "gmac_640x512": None,
                 "sub_tasks": _sub_tasks(task)}
        extras = dict(task_meta.get(task, {}))
        extras.pop("file", None)
        extras.pop("sha256", None)
        entry.update({k: v for k, v in extras.items() if v is not None or k not in entry})
        tasks.append(entry)

    router_meta = meta.pop("router", None)
    router_entry = None
    if router is not None:
        _copy(router, out / ROUTER_FILE)
        check_onnx_input(out / ROUTER_FILE)
        files[ROUTER_FILE] = sha256_file(out / ROUTER_FILE)
        router_entry = {"file": ROUTER_FILE, "sha256": files[ROUTER_FILE]}
        router_entry.update({k: v for k, v in (router_meta or {}).items()
                             if k not in ("file", "sha256")})
    elif router_meta:
        raise BundleError("manifest has router metadata but no router ONNX file was given")

    training = {"data": None, "command": " ".join(sys.argv),
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    training.update(meta.pop("training", None) or {})
    doc = {
        "format_version": FORMAT_VERSION,
        "name": meta.pop("name", out.name),
        "preset": meta.pop("preset", None),
        "multiple": int(meta.pop("multiple", DEFAULT_MULTIPLE)),
        "tasks": tasks,
        "router": router_entry,
        "normalisation": dict(meta.pop("normalisation", None) or {}),
        "training": training,
        "files": files,
    }
    meta.pop("format_version", None)
    meta.pop("files", None)
    doc.update(meta)
    tmp = _fresh_tmp(out / MANIFEST)
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return load_bundle(out)


def _manifest_text(doc: Mapping) -> str:
    """manifest.json text: indent 2, with lists of numbers (codebook rows, matrices) kept on
    one line each so embedding statistics stay readable and small."""
    text = json.dumps(doc, indent=2) + "\n"
    return re.sub(r"\[\s*([-+0-9.eE]+(?:,\s*[-+0-9.eE]+)*)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def save_manifest(bundle_dir: PathLike, manifest: Mapping) -> Bundle:
    """Replace ``bundle_dir``/manifest.json with ``manifest`` (atomically) and read the bundle
    back with :func:`load_bundle`, so every listed file is re-verified against its sha256.
    Only the metadata changes; use :func:`write_bundle` to add or replace model files.

    Raises:
        BundleError: the manifest cannot be written there (a read-only folder, a full disk: was a
            PermissionError traceback from ``tir deploy --set`` and ``tir adapt --source-stats``);
            the old manifest is left as it was and no temporary file stays behind; or the bundle
            read back fails its checks."""
    out = Path(bundle_dir)
    tmp = out / (MANIFEST + ".tmp")
    try:
        tmp = _fresh_tmp(out / MANIFEST)
        tmp.write_text(_manifest_text(manifest), encoding="utf-8")
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise BundleError(f"cannot rewrite {out / MANIFEST}: {exc.strerror or exc}; the bundle is unchanged: make "
                          "the folder writable, or write a copy (--out DIR)") from exc
    return load_bundle(out)


def copy_listed_files(src: PathLike, manifest: dict, out_dir: PathLike) -> None:
    """Copy the files ``manifest`` lists besides the routes and the router (the checkpoint, the
    distilled student) from bundle folder ``src`` into ``out_dir`` (made if needed), byte for
    byte, before :func:`write_bundle` verifies every listed file there. A listed file that is not
    in ``src`` is left for write_bundle to report.

    Raises:
        OSError: a file cannot be copied.
    """
    src, out = Path(src), Path(out_dir)
    for entry in (manifest.get("checkpoint"), manifest.get("student")):
        name = (entry or {}).get("file")
        if name and (src / name).is_file():
            out.mkdir(parents=True, exist_ok=True)
            _copy(src / name, out / name)


def copy_bundle(src: PathLike, dst: PathLike) -> Path:
    """Copy a verified bundle folder to ``dst`` (a new folder), every file byte for byte; returns
    ``dst``. The source is not touched.

    Raises:
        BundleError: the source fails :func:`load_bundle`, ``dst`` already exists or lies inside
            the source, or the copy cannot be written (a parent that is a file, no permission, a
            full disk: what was copied is removed again, nothing half-written is left).
    """
    bundle = load_bundle(src)
    dst = Path(dst)
    if dst.exists():
        raise BundleError(f"{dst} already exists; choose a new folder for the copy (the original stays "
                          f"in {bundle.path})")
    if dst.resolve().is_relative_to(bundle.path.resolve()):
        raise BundleError(f"{dst} is inside the bundle {bundle.path} it would copy; choose a folder outside it")
    try:
        shutil.copytree(bundle.path, dst, ignore=shutil.ignore_patterns(MANIFEST + ".tmp"))
    except OSError as exc:
        shutil.rmtree(dst, ignore_errors=True)
        # shutil.Error gathers (src, dst, why) per failed file: name the first
        first = exc.args[0][0] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else None
        why = first[2] if first else (exc.strerror or str(exc))
        raise BundleError(f"cannot write the copy {dst}: {why} ({first[1] if first else exc.filename or dst}); "
                          "choose a writable new folder (nothing was left there)") from exc
    return dst


@contextlib.contextmanager
def new_copy(src: PathLike, dst: PathLike) -> Iterator[Path]:
    """:func:`copy_bundle` for a change that completes the copy (a new manifest, an added
    student, a rewritten router): yields ``dst``; an error inside the block removes the copy
    again, so no half-made bundle (the original's manifest under the new name) stays behind
    for a second try to be refused on as existing.

    Raises:
        BundleError: from :func:`copy_bundle`; whatever the block raises, after the removal.
    """
    out = copy_bundle(src, dst)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _short(digest: str) -> str:
    return f"{digest[:12]}…"


# ---------------------------------------------------------------------------------------------
# the manifest schema, checked at load time
# ---------------------------------------------------------------------------------------------

#: top-level keys of manifest.json; any other key is refused (a typo would otherwise be ignored)
#: the per-task deploy value "restore the contrast part by the camera's tone" (TASK_DEPLOY_CHOICES)
TONE = "tone"
TOP_KEYS = ("format_version", "name", "preset", "multiple", "tasks", "router", "normalisation",
            "training", "files", "checkpoint", "config", "notes", "adapted_from", "version",
            "deploy", "student", "auto_deploy")
#: what the Restorer runs: the per-task routes (default), the distilled student
#: (engines/training/distill.py) or, per task, whichever the ``auto_deploy`` table names
DEPLOY_CHOICES = ("routes", "student", "auto")
#: what one task runs under deploy=auto (the values of ``auto_deploy.tasks``): its route, the
#: student, or ``tone``: a contrast-carrying task (contrast, CB, CN, CBN) runs what its partner
#: without the contrast part runs (clean: nothing; CB: the blur task's route or student) and the
#: contrast part is restored by mapping the output onto the camera's own tone (engines/restorer.py,
#: engines/contrast_gate.py ``ContrastGate.align``)
TASK_DEPLOY_CHOICES = ("routes", "student", TONE)
#: keys of the auto_deploy entry (written by :func:`set_deploy` / :func:`add_student`)
AUTO_DEPLOY_KEYS = ("margin_db", "tasks", "delta_db", "tone_delta_db", "source")
#: deploy=auto runs the student on a task when its val PSNR is at least the route's minus this
#: margin, in dB: the INT8 accuracy gate's tolerance (calibration/gate.py ``MAX_LOSS_DB``), so a
#: task loses at most what an INT8 route may lose
DEFAULT_AUTO_MARGIN_DB = 0.3
#: the widest margin deploy=auto takes, in dB: 10·log10(2) ≈ 3.01 dB is a student with twice the
#: route's mean squared error, no longer "about as good"; a wider margin is deploy=student under
#: another name (and a typo such as 30 for 0.3 would silently run the student everywhere)
MAX_AUTO_MARGIN_DB = 3.0
#: slack in dB when a recorded table is checked against its own delta_db (rounded to 1e-4 dB)
_DELTA_ROUNDING_DB = 1e-4
#: where the auto rule's numbers come from (recorded as ``auto_deploy.source``)
AUTO_SOURCE = "student.metrics.val_psnr vs student.metrics.teacher_val_psnr (val split)"
#: the source of a table chosen on the user's path (tir deploy --measure)
AUTO_SOURCE_USER = "student.metrics.user_val: the user's path (tir eval, automatic routing), student vs routes"
#: the student metrics key of the user's-path table (engines/training/camera_eval.py user_path_table)
USER_VAL_KEY = "user_val"
#: keys of the student entry (written by add_student)
STUDENT_KEYS = ("file", "sha256", "prompts", "preset", "gmac_640x512", "params", "config", "metrics",
                "training", "int8")
#: keys of the router entry (written by tir.engines.training.router_train.train_router / calibrate_router;
#: adapt_source and adaptation by engines.adapt; added by tir.engines.training.router_train.add_router_class:
#: one report per codebook row added after training, by ``tir learn``; contrast_span, the contrast
#: gate's training prior, by engines.adapt.add_source_stats; export, the record of the fast-form
#: rewrite of router.onnx, by tir.engines.training.fast_router.rewrite_bundle_router)
ROUTER_KEYS = ("file", "sha256", "codebook", "tasks", "threshold", "thresholds", "temperature",
               "input_size", "features", "metrics", "source", "calibrated_from", "training", "adapt_source",
               "adaptation", "added", "contrast_span", "export")
MAX_MULTIPLE = 256
MAX_INPUT_SIDE = 16384
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name \
        and "\\" not in name


def _check_file_ref(where: str, entry: dict, problems: List[str]) -> None:
    name, digest = entry.get("file"), entry.get("sha256")
    if not _is_plain_name(name):
        problems.append(f"{where}.file {name!r} must be a plain name inside the folder")
    if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
        problems.append(f"{where}.sha256 must be 64 lowercase hex digits, got {str(digest)[:20]!r}")


def _check_router(router: dict, problems: List[str]) -> None:
    _check_adaptation(router, problems)
    unknown = sorted(set(router) - set(ROUTER_KEYS))
    if unknown:
        problems.append(f"router: unknown keys {unknown}; known: {', '.join(ROUTER_KEYS)}")
    lacking = [k for k in ("file", "sha256", "codebook", "tasks") if k not in router]
    if lacking:
        problems.append(f"router lacks {lacking}")
    _check_file_ref("router", router, problems)
    rows = None
    book = router.get("codebook")
    if "codebook" in router:
        if (not isinstance(book, list) or not book or not all(isinstance(r, list) and r for r in book)
                or not all(_is_number(v) for r in book for v in r)):
            problems.append("router.codebook must be a non-empty list of rows of finite numbers")
        elif len({len(r) for r in book}) != 1:
            problems.append(f"router.codebook rows differ in length: {sorted({len(r) for r in book})}")
        else:
            rows = len(book)
    tasks = router.get("tasks")
    if "tasks" in router:
        if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
            problems.append("router.tasks must be a list of task names")
        elif len(set(tasks)) != len(tasks):
            problems.append(f"router.tasks has duplicates: {tasks}")
        elif rows is not None and len(tasks) != rows:
            problems.append(f"router.tasks lists {len(tasks)} classes but router.codebook has {rows} rows; "
                            "they must match one to one")
    # thresholds are cosine similarities of an embedding to a codebook row: within [-1, 1]
    if "threshold" in router and not (_is_number(router["threshold"]) and -1.0 <= router["threshold"] <= 1.0):
        problems.append(f"router.threshold {router['threshold']!r} must be a cosine similarity in [-1, 1]")
    if "thresholds" in router:
        th = router["thresholds"]
        if not isinstance(th, list) or not all(_is_number(v) and -1.0 <= v <= 1.0 for v in th):
            problems.append("router.thresholds must be a list of cosine similarities in [-1, 1]")
        elif rows is not None and len(th) != rows:
            problems.append(f"router.thresholds has {len(th)} values for {rows} codebook rows")
    if "temperature" in router and not (_is_number(router["temperature"]) and router["temperature"] > 0):
        problems.append(f"router.temperature {router['temperature']!r} must be a number > 0")
    added = router.get("added")
    if added is not None:
        names = tasks if isinstance(tasks, list) else []
        if not isinstance(added, list) or not all(isinstance(a, dict) and a.get("task") in names for a in added):
            problems.append("router.added must be a list of reports, each naming a class of router.tasks "
                            "(written by tir learn when it adds a codebook row)")
    export = router.get("export")
    if export is not None and not (isinstance(export, dict) and isinstance(export.get("form"), str)):
        problems.append("router.export must be {\"form\": ..., ...} (the record tir export writes when it "
                        "rewrites router.onnx into its fast form)")
    span = router.get("contrast_span")
    if span is not None and not (isinstance(span, dict) and _is_number(span.get("median"))
                                 and 0.0 < span["median"] <= 1.0):
        problems.append("router.contrast_span must be {\"median\": span in (0, 1], ...} (the contrast gate's "
                        "training prior, written by tir adapt --source-stats)")
    if "input_size" in router:
        size = router["input_size"]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_INPUT_SIDE
                        for v in size)):
            problems.append(f"router.input_size {size!r} must be [width, height] in pixels, "
                            f"each 1..{MAX_INPUT_SIDE}")


def _is_matrix(value, rows: int, cols: int) -> bool:
    return (isinstance(value, list) and len(value) == rows
            and all(isinstance(r, list) and len(r) == cols and all(_is_number(v) for v in r) for r in value))


def _is_vector(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(_is_number(v) for v in value)


def _check_adaptation(router: dict, problems: List[str]) -> None:
    """router.adapt_source (mean D, covariance D×D) and router.adaptation (A D×D, b D), with D
    the codebook's embedding size (engines/adapt.py)."""
    book = router.get("codebook")
    if not (isinstance(book, list) and book and isinstance(book[0], list)):
        return  # already reported by _check_router
    d = len(book[0])
    stats = router.get("adapt_source")
    if stats is not None:
        if not isinstance(stats, dict) or not _is_vector(stats.get("mean"), d) \
                or not _is_matrix(stats.get("covariance"), d, d):
            problems.append(f"router.adapt_source must hold mean ({d}) and covariance ({d}×{d}) of finite numbers; "
                            "recompute it with `tir adapt --source-stats`")
    fit = router.get("adaptation")
    if fit is not None:
        if not isinstance(fit, dict) or not _is_matrix(fit.get("A"), d, d) or not _is_vector(fit.get("b"), d):
            problems.append(f"router.adaptation must hold A ({d}×{d}) and b ({d}) of finite numbers; "
                            "re-run `tir adapt`")


def validate_manifest(manifest: dict) -> List[str]:
    """Every schema violation of a parsed manifest.json, one line each (empty when valid).

    Checked: known top-level and router keys; types; ``multiple`` a power of two in 1..256
    (the frame is padded to it, so the model's down-sampling must divide it); route and
    router entries name plain files with 64-hex sha256; ``files`` maps plain names to 64-hex
    digests; the router's ``codebook`` is a rectangular list of finite numbers with one row per
    name in ``tasks``, ``threshold``/``thresholds`` are cosine similarities in [-1, 1] and
    ``temperature`` > 0; ``checkpoint`` names a plain file with a sha256. File existence and
    hashes are checked by :func:`load_bundle`.
    """
    problems: List[str] = []
    unknown = sorted(set(manifest) - set(TOP_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown}; known: {', '.join(TOP_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        problems.append(f"lacks required keys {missing}")
    name = manifest.get("name")
    if "name" in manifest and not (isinstance(name, str) and name):
        problems.append(f"name must be a non-empty string, got {name!r}")
    preset = manifest.get("preset")
    if preset is not None and not isinstance(preset, str):
        problems.append(f"preset must be a string or null, got {preset!r}")
    if "version" in manifest:
        v = manifest["version"]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            problems.append(f"version {v!r} must be an integer >= 1 (bumped by every tir learn; a running "
                            "tir run --watch-bundle reports it)")
    if "multiple" in manifest:
        m = manifest["multiple"]
        if not (isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= MAX_MULTIPLE and m & (m - 1) == 0):
            problems.append(f"multiple {m!r} must be a power of two from 1 to {MAX_MULTIPLE}")
    for key in ("normalisation", "training", "config"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], dict):
            problems.append(f"{key} must be an object")
    files = manifest.get("files")
    if "files" in manifest:
        if not isinstance(files, dict):
            problems.append("files must be an object {file name: sha256}")
        else:
            for fname, digest in files.items():
                if not _is_plain_name(fname):
                    problems.append(f"files: {fname!r} must be a plain name inside the folder")
                if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
                    problems.append(f"files: {fname!r} sha256 must be 64 lowercase hex digits")
    tasks = manifest.get("tasks")
    if "tasks" in manifest:
        if not isinstance(tasks, list) or not tasks:
            problems.append("tasks must be a non-empty list")
        else:
            seen = []
            for i, task in enumerate(tasks):
                if not isinstance(task, dict):
                    problems.append(f"tasks[{i}] must be an object")
                    continue
                lacking = [k for k in ("name", "file", "sha256") if k not in task]
                if lacking:
                    problems.append(f"task entry {i} lacks {lacking}")
                tname = task.get("name")
                if not (isinstance(tname, str) and _TASK_NAME.fullmatch(tname)):
                    problems.append(f"tasks[{i}].name {tname!r} must be letters, digits, '-' or '_'")
                else:
                    seen.append(tname)
                _check_file_ref(f"tasks[{i}]", task, problems)
                for key in ("params",):
                    v = task.get(key)
                    if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                        problems.append(f"tasks[{i}].{key} {v!r} must be a count ≥ 0 or null")
                for key in ("sub_tasks", "parts"):
                    v = task.get(key)
                    if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                        problems.append(f"tasks[{i}].{key} must be a list of task names")
            if len(set(seen)) != len(seen):
                problems.append(f"duplicate task names in {seen}")
    router = manifest.get("router")
    if router is not None:
        if not isinstance(router, dict):
            problems.append("router must be null or an object")
        else:
            _check_router(router, problems)
    ckpt = manifest.get("checkpoint")
    if ckpt is not None:
        if not isinstance(ckpt, dict):
            problems.append("checkpoint must be null or an object {file, sha256}")
        else:
            _check_file_ref("checkpoint", ckpt, problems)
    _check_student(manifest, problems)
    return problems


def _check_student(manifest: dict, problems: List[str]) -> None:
    """``deploy`` is routes|student|auto; ``student`` is null or {file, sha256, prompts, ...} whose
    prompts are distinct task names covering every route plus ``clean``; deploy=student and
    deploy=auto need it; ``auto_deploy`` is checked by :func:`_check_auto_deploy`."""
    deploy = manifest.get("deploy", "routes")
    if deploy not in DEPLOY_CHOICES:
        problems.append(f"deploy {deploy!r} must be one of {', '.join(DEPLOY_CHOICES)}")
    _check_auto_deploy(manifest, problems)
    student = manifest.get("student")
    if student is None:
        if deploy in ("student", "auto"):
            problems.append(f"deploy is {deploy!r} but the manifest has no student entry; add one with "
                            "`tir distill` or set deploy to 'routes'")
        return
    if not isinstance(student, dict):
        problems.append("student must be null or an object {file, sha256, prompts, ...}")
        return
    unknown = sorted(set(student) - set(STUDENT_KEYS))
    if unknown:
        problems.append(f"student: unknown keys {unknown}; known: {', '.join(STUDENT_KEYS)}")
    lacking = [k for k in ("file", "sha256", "prompts") if k not in student]
    if lacking:
        problems.append(f"student lacks {lacking}")
    _check_file_ref("student", student, problems)
    _check_student_metrics(student.get("metrics"), problems)
    prompts = student.get("prompts")
    if "prompts" in student:
        if not (isinstance(prompts, list) and prompts and all(isinstance(p, str) and _TASK_NAME.fullmatch(p)
                                                              for p in prompts)):
            problems.append("student.prompts must be a non-empty list of task names")
        elif len(set(prompts)) != len(prompts):
            problems.append(f"student.prompts has duplicates: {prompts}")
        else:
            tasks = [t.get("name") for t in manifest.get("tasks") or [] if isinstance(t, dict)]
            missing = [t for t in tasks if t not in prompts]
            if missing:
                problems.append(f"student.prompts {prompts} lack routes {missing}: the student must have a "
                                "prompt for every route")


def _check_student_metrics(metrics, problems: List[str]) -> None:
    """``student.metrics`` is absent/null or an object whose dB tables, which ``tir deploy`` and
    deploy=auto read (``val_psnr``, ``teacher_val_psnr``, and ``user_val``'s ``student``,
    ``routes``, ``tone``), are {task name: finite number} when present (a string there was an
    AttributeError traceback out of ``tir deploy``)."""
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        problems.append(f"student.metrics must be an object (val_psnr, teacher_val_psnr, ...), got {metrics!r:.60}")
        return
    tables = [(f"student.metrics.{key}", metrics.get(key)) for key in ("val_psnr", "teacher_val_psnr")]
    user = metrics.get(USER_VAL_KEY)
    if user is not None and not isinstance(user, dict):
        problems.append(f"student.metrics.{USER_VAL_KEY} must be an object (split, sets, student, routes, tone)")
    elif user is not None:
        tables += [(f"student.metrics.{USER_VAL_KEY}.{key}", user.get(key)) for key in ("student", "routes", TONE)]
    for where, table in tables:
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(f"{where} must be an object {{task: dB}}, got {table!r:.60}")
            continue
        bad = {k: v for k, v in table.items() if not (isinstance(k, str) and _is_number(v))}
        if bad:
            problems.append(f"{where} values {bad!r:.120} must be finite numbers of dB")


def _check_auto_deploy(manifest: dict, problems: List[str]) -> None:
    """``auto_deploy`` is null or {margin_db: number ≥ 0, tasks: {route: routes|student|tone}
    (:func:`deploy_table_problems`) agreeing with delta_db and tone_delta_db at margin_db,
    delta_db: {route: dB}, tone_delta_db: {route: dB} (optional), source: text}; deploy=auto
    needs it. A recorded margin above :data:`MAX_AUTO_MARGIN_DB`
    (written before the cap) still loads: :func:`choose_auto_deploy` refuses it only when a
    table is computed again."""
    entry = manifest.get("auto_deploy")
    fix = "rewrite it with `tir deploy --bundle DIR --set auto`"
    if entry is None:
        if manifest.get("deploy") == "auto":
            problems.append(f"deploy is 'auto' but the manifest has no auto_deploy table; {fix}")
        return
    if not isinstance(entry, dict):
        problems.append(f"auto_deploy must be null or an object {{margin_db, tasks, delta_db, source}}; {fix}")
        return
    unknown = sorted(set(entry) - set(AUTO_DEPLOY_KEYS))
    if unknown:
        problems.append(f"auto_deploy: unknown keys {unknown}; known: {', '.join(AUTO_DEPLOY_KEYS)}")
    lacking = [k for k in ("margin_db", "tasks") if k not in entry]
    if lacking:
        problems.append(f"auto_deploy lacks {lacking}; {fix}")
    margin = entry.get("margin_db")
    if "margin_db" in entry and not (_is_number(margin) and margin >= 0):
        problems.append(f"auto_deploy.margin_db {margin!r} must be a number of dB ≥ 0")
    if "source" in entry and not isinstance(entry["source"], str):
        problems.append("auto_deploy.source must be a string")
    routes = [t.get("name") for t in manifest.get("tasks") or [] if isinstance(t, dict)]
    table = entry.get("tasks")
    if "tasks" in entry:
        if not isinstance(table, dict):
            problems.append(f"auto_deploy.tasks must be an object {{task: {'|'.join(TASK_DEPLOY_CHOICES)}}}; {fix}")
        else:
            problems.extend(deploy_table_problems(table, manifest, "auto_deploy.tasks", fix))
    delta, tone_delta = entry.get("delta_db"), entry.get("tone_delta_db")
    if delta is not None and not (isinstance(delta, dict) and all(t in routes and _is_number(v)
                                                                  for t, v in delta.items())):
        problems.append("auto_deploy.delta_db must be an object {route: student − route val PSNR in dB}")
        delta = None
    if tone_delta is not None and not (isinstance(tone_delta, dict) and all(t in routes and _is_number(v)
                                                                            for t, v in tone_delta.items())):
        problems.append("auto_deploy.tone_delta_db must be an object {route: tone − max(route, student) val "
                        "PSNR in dB}")
        tone_delta = None
    if isinstance(table, dict) and _is_number(margin) and margin >= 0 and (delta or tone_delta):
        # the table is the rule of choose_auto_deploy on delta_db (and tone_delta_db) at margin_db:
        # a hand edit that contradicts its own numbers is refused (a tie within the 1e-4 dB
        # rounding goes either way)
        wrong = {t: v for t, v in table.items() if v in TASK_DEPLOY_CHOICES
                 and _expected_choice((delta or {}).get(t), (tone_delta or {}).get(t), margin) not in (None, v)}
        if wrong:
            problems.append(f"auto_deploy.tasks {wrong} contradict auto_deploy.delta_db/tone_delta_db at margin_db "
                            f"{margin:g} (tone where tone − best ≥ −margin, else the student where student − route "
                            f"≥ −margin); {fix}, or set deploy to 'routes' or 'student'")


def _auto_choice(delta: float, tone_delta: Optional[float], margin: float) -> str:
    """deploy=auto's rule for one task: ``tone`` when tone − max(route, student) ≥ −margin, else
    the student when student − route ≥ −margin, else the route."""
    if tone_delta is not None and tone_delta >= -margin:
        return TONE
    return "student" if delta >= -margin else "routes"


def _expected_choice(delta: Optional[float], tone_delta: Optional[float], margin: float) -> Optional[str]:
    """What :func:`choose_auto_deploy` chose for one task from its recorded differences
    (:func:`_auto_choice`), or None where the deciding difference lies within the rounding of the
    margin, or is not recorded (either choice stands)."""
    def tie(value):
        return abs(value + margin) <= _DELTA_ROUNDING_DB

    if tone_delta is not None:
        if tie(tone_delta):
            return None
        if tone_delta >= -margin:
            return TONE
    if delta is None or tie(delta):
        return None
    return _auto_choice(delta, None, margin)


def contrast_carrying(manifest: Mapping) -> Dict[str, str]:
    """{contrast-carrying task: its partner without the contrast part} of a manifest's routes,
    from their specs (engines/contrast_gate.py :func:`~tir.engines.contrast_gate.contrast_partners`):
    the tasks that may run ``tone``."""
    from .contrast_gate import contrast_partners

    specs = {t["name"]: (t.get("spec") or {}).get("steps") or [] for t in manifest.get("tasks") or []
             if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("spec") or {}, dict)}
    return contrast_partners(specs)


def deploy_table_problems(table: Mapping, manifest: Mapping, where: str = "deploy table",
                          fix: str = "") -> List[str]:
    """Every problem of a per-task deploy table {task: routes|student|tone} for a manifest: it
    names every route and nothing else; values from :data:`TASK_DEPLOY_CHOICES`; ``student``
    needs a student entry; ``tone`` only on a contrast-carrying task with a partner
    (:func:`contrast_carrying`) whose own choice is not ``tone``. One line each; empty when valid."""
    problems: List[str] = []
    fix = f"; {fix}" if fix else ""
    routes = [t.get("name") for t in manifest.get("tasks") or [] if isinstance(t, dict)]
    extra = sorted(str(t) for t in table if t not in routes)
    if extra:
        problems.append(f"{where} names {extra}, which are not routes of this bundle "
                        f"(routes: {', '.join(map(str, routes))}){fix}")
    missing = [t for t in routes if t not in table]
    if missing:
        problems.append(f"{where} lacks routes {missing}: every route needs one of "
                        f"{', '.join(TASK_DEPLOY_CHOICES)}{fix}")
    bad = {t: v for t, v in table.items() if v not in TASK_DEPLOY_CHOICES}
    if bad:
        problems.append(f"{where} values {bad} must be one of {', '.join(TASK_DEPLOY_CHOICES)}")
    if "student" in table.values() and manifest.get("student") is None:
        problems.append(f"{where} runs the student on "
                        f"{sorted(t for t, v in table.items() if v == 'student')} but the manifest has no "
                        "student entry; add one with `tir distill` or set those tasks to 'routes'")
    tone = sorted(t for t, v in table.items() if v == TONE)
    if tone:
        partners = contrast_carrying(manifest)
        wrong = [t for t in tone if t not in partners or table.get(partners[t]) == TONE]
        if wrong:
            problems.append(f"{where} runs {wrong} by the camera's tone, but only a contrast-carrying task with a "
                            f"partner may (here: {', '.join(sorted(partners)) or 'none'})")
    return problems


def choose_auto_deploy(student_psnr: Mapping[str, float], route_psnr: Mapping[str, float], tasks,
                       margin_db: float = DEFAULT_AUTO_MARGIN_DB,
                       tone_psnr: Optional[Mapping[str, float]] = None) -> dict:
    """The per-task choice of deploy=auto: the cheapest way within ``margin_db`` of the best
    measured val PSNR, in the order ``tone`` (the partner's network and the camera's tone map, for
    the tasks ``tone_psnr`` names), the student, the route. Without ``tone_psnr`` this is the rule
    "the student when student − route ≥ −margin, else the route"; a task of ``tone_psnr`` runs
    ``tone`` when tone − max(route, student) ≥ −margin. Differences are compared after rounding
    to 1e-6 dB so float noise does not flip an exact tie.

    Args:
        student_psnr: {task: the student's mean val PSNR in dB} (the manifest's
            ``student.metrics.val_psnr``, or the user's-path table).
        route_psnr: {task: the route's mean val PSNR in dB} on the same frames
            (``student.metrics.teacher_val_psnr``, or the user's-path table).
        tasks: the bundle's routes, every one of which gets a choice.
        margin_db: tolerated loss in dB, 0 to :data:`MAX_AUTO_MARGIN_DB` (default
            :data:`DEFAULT_AUTO_MARGIN_DB`).
        tone_psnr: {contrast-carrying task: mean val PSNR in dB with ``tone``} on the same frames
            (engines/training/camera_eval.py ``user_path_table``), or None.

    Returns:
        The manifest's ``auto_deploy`` entry: ``{"margin_db", "tasks": {task: "routes"|"student"|"tone"},
        "delta_db": {task: student − route, dB, rounded to 1e-4}, "source"}``, plus
        ``"tone_delta_db": {task: tone − max(route, student)}`` when ``tone_psnr`` names a task.

    Raises:
        BundleError: ``margin_db`` not a finite number in [0, :data:`MAX_AUTO_MARGIN_DB`], a task
            without a finite number on either side, or a ``tone_psnr`` value that is not a finite
            number (the message names the tasks and how to get the numbers).
    """
    if not (_is_number(margin_db) and margin_db >= 0):
        raise BundleError(f"auto deploy margin {margin_db!r} must be a number of dB ≥ 0 (default "
                          f"{DEFAULT_AUTO_MARGIN_DB})")
    if margin_db > MAX_AUTO_MARGIN_DB:
        raise BundleError(f"auto deploy margin {margin_db!r} dB must be ≤ {MAX_AUTO_MARGIN_DB:g} dB (a student with "
                          "twice the route's mean squared error; default "
                          f"{DEFAULT_AUTO_MARGIN_DB}); to run the student on every task use deploy 'student'")
    tasks = list(tasks)
    lacking = [t for t in tasks if not (_is_number((student_psnr or {}).get(t))
                                        and _is_number((route_psnr or {}).get(t)))]
    if lacking:
        raise BundleError(f"no student and route val PSNR for tasks {lacking} (student.metrics.val_psnr and "
                          "teacher_val_psnr), so deploy=auto cannot choose for them; re-run `tir distill` "
                          "(it measures both) or choose deploy routes or student (tir deploy --set, tir run --deploy)")
    tone_psnr = {t: v for t, v in (tone_psnr or {}).items() if t in tasks}
    bad = sorted(t for t, v in tone_psnr.items() if not _is_number(v))
    if bad:
        raise BundleError(f"tone val PSNR of tasks {bad} is not a finite number; measure it again with "
                          "`tir deploy --set auto --measure SETS`")
    table, delta, tone_delta = {}, {}, {}
    for t in tasks:
        s, r = float(student_psnr[t]), float(route_psnr[t])
        d = float(tone_psnr[t]) - max(s, r) if t in tone_psnr else None
        table[t] = _auto_choice(round(s - r, 6), None if d is None else round(d, 6), float(margin_db))
        delta[t] = round(s - r, 4)
        if d is not None:
            tone_delta[t] = round(d, 4)
    entry = {"margin_db": float(margin_db), "tasks": table, "delta_db": delta, "source": AUTO_SOURCE}
    if tone_delta:
        entry["tone_delta_db"] = tone_delta
    return entry


def auto_deploy_entry(manifest: Mapping, margin_db: float = DEFAULT_AUTO_MARGIN_DB) -> dict:
    """:func:`choose_auto_deploy` on a manifest's student metrics (its val numbers, never test)
    for every route of the manifest: the user's-path table ``student.metrics.user_val``
    ({"student": {task: dB}, "routes": {task: dB}, "tone": {contrast-carrying task: dB}},
    written by ``tir deploy --measure``) when there is one, else ``val_psnr`` against
    ``teacher_val_psnr`` (``tir distill``'s protocol, no tone).

    Raises:
        BundleError: no student entry, or the student's metrics lack a task (see
            :func:`choose_auto_deploy`).
    """
    student = manifest.get("student")
    if not student:
        raise BundleError("deploy=auto needs a student; distill one with `tir distill`")
    student_psnr, route_psnr, source = auto_deploy_numbers(student)
    tone = ((student.get("metrics") or {}).get(USER_VAL_KEY) or {}).get(TONE)
    carrying = contrast_carrying(manifest) if isinstance(tone, dict) else {}
    entry = choose_auto_deploy(student_psnr, route_psnr, [t["name"] for t in manifest["tasks"]], margin_db,
                               tone_psnr={t: v for t, v in tone.items() if t in carrying} if carrying else None)
    return {**entry, "source": source}


def auto_deploy_numbers(student: Mapping) -> Tuple[dict, dict, str]:
    """The val numbers deploy=auto chooses on, from a manifest's ``student`` entry: (student
    {task: dB}, route {task: dB}, source) from ``metrics.user_val`` (the user's path, ``tir deploy
    --measure``) when there is one, else ``val_psnr`` / ``teacher_val_psnr`` (``tir distill``);
    empty dicts when absent."""
    metrics = student.get("metrics") or {}
    user = metrics.get(USER_VAL_KEY)
    if isinstance(user, dict):   # measured on the user's path: what the user gets
        return user.get("student") or {}, user.get("routes") or {}, AUTO_SOURCE_USER
    return metrics.get("val_psnr") or {}, metrics.get("teacher_val_psnr") or {}, AUTO_SOURCE


def set_deploy(bundle_dir: PathLike, deploy: str, margin_db: Optional[float] = None,
               out_dir: Optional[PathLike] = None, user_val: Optional[dict] = None) -> Bundle:
    """Set what bundle ``bundle_dir`` runs: its manifest's ``deploy`` and, for ``auto``, the
    ``auto_deploy`` table computed from the student's val numbers (:func:`auto_deploy_entry`;
    ``margin_db`` None: the table's recorded margin, else :data:`DEFAULT_AUTO_MARGIN_DB`). With
    ``routes``/``student`` an existing table is recomputed only when ``margin_db`` is given, else
    kept as it is. ``out_dir`` None rewrites the manifest in place (a running ``tir run`` takes it
    with ``POST /bundle/reload``); else a byte-for-byte copy is made there first (a new folder).
    ``user_val`` (engines/training/camera_eval.py ``user_path_table``) is recorded as the
    student's ``metrics.user_val`` first, so auto chooses on it.
    Returns the re-verified bundle.

    Raises:
        BundleError: an unknown ``deploy``, a bundle that fails the checks, ``student``/``auto``
            without a student, missing val numbers for ``auto``, an existing ``out_dir``.
    """
    if deploy not in DEPLOY_CHOICES:
        raise BundleError(f"deploy {deploy!r} must be one of {', '.join(DEPLOY_CHOICES)}")
    bundle = load_bundle(bundle_dir)
    manifest = jsontext.loads((bundle.path / MANIFEST).read_text(encoding="utf-8"))
    if deploy != "routes" and manifest.get("student") is None:
        raise BundleError(f"bundle {bundle.name!r} has no student, so deploy {deploy!r} cannot run; distill one "
                          "with `tir distill`")
    if user_val is not None:
        if manifest.get("student") is None:
            raise BundleError(f"bundle {bundle.name!r} has no student to measure against its routes")
        manifest["student"].setdefault("metrics", {})[USER_VAL_KEY] = user_val
    if deploy == "auto" or margin_db is not None or user_val is not None:
        if margin_db is None:
            margin_db = (manifest.get("auto_deploy") or {}).get("margin_db", DEFAULT_AUTO_MARGIN_DB)
        manifest["auto_deploy"] = auto_deploy_entry(manifest, margin_db)
    manifest["deploy"] = deploy
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError("\n".join(problems))
    if out_dir is None:
        return save_manifest(bundle.path, manifest)
    with new_copy(bundle.path, out_dir) as target:   # a manifest that cannot be written: no copy left
        return save_manifest(target, manifest)


def listed_files(manifest: dict) -> Dict[str, str]:
    """{file name: sha256} of every file a (schema-valid) manifest names: ``files``, the route
    and router entries and the training ``checkpoint``. Raises BundleError when one name is
    given two different digests."""
    out: Dict[str, str] = {}
    refs = [(t["file"], t["sha256"]) for t in manifest["tasks"]]
    for key in ("router", "checkpoint", "student"):
        if manifest.get(key):
            refs.append((manifest[key]["file"], manifest[key]["sha256"]))
    for name, digest in list(manifest["files"].items()) + refs:
        if out.setdefault(name, digest) != digest:
            raise BundleError(f"{name} has two different sha256 values listed in {MANIFEST}")
    return out


def _verify_file(root: Path, name: str, expected: str) -> None:
    if not _is_plain_name(name):
        raise BundleError(f"bundle {root}: file name {name!r} must be a plain name inside the folder")
    path = root / name
    if not path.is_file():
        raise BundleError(f"incomplete bundle {root}: {name} is listed in {MANIFEST} but missing; "
                          "rebuild with `tir train` or restore the file")
    _check_digest(name, sha256_file(path), expected)


def _check_digest(name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise BundleError(f"tampered or mismatched bundle: {name} sha256 is {_short(actual)}, "
                          f"manifest says {_short(str(expected))}; rebuild with `tir train` "
                          "or restore the file")


def read_verified(bundle: "Bundle", name: str) -> bytes:
    """The bytes of ``name`` in ``bundle``, hashed in memory against the manifest's sha256.

    Use this instead of opening the file when its contents are deserialised (torch.load):
    the bytes checked are the bytes used, so a file swapped after :func:`load_bundle` is still
    refused. Raises BundleError when the file is not listed, missing or altered.
    """
    digests = listed_files(bundle.manifest)
    if name not in digests:
        raise BundleError(f"bundle {bundle.path}: {name} is not listed in {MANIFEST}, so it cannot be "
                          "verified; only files the manifest hashes are used")
    path = bundle.path / name
    if not path.is_file():
        raise BundleError(f"incomplete bundle {bundle.path}: {name} is listed in {MANIFEST} but missing")
    data = path.read_bytes()
    _check_digest(name, hashlib.sha256(data).hexdigest(), digests[name])
    return data


def load_bundle(path: PathLike) -> Bundle:
    """Read and verify a bundle folder (or its manifest.json).

    Order: manifest JSON → format_version → schema (:func:`validate_manifest`, every violation
    reported, one line each) → sha256 of every listed file (routes, router, checkpoint,
    ``files``) → each ONNX model's input is (N, 1, H, W) → the student's inputs.

    Raises:
        BundleError: on any problem; the message names the file or key and the fix.
    """
    path = Path(path)
    root = path.parent if path.name == MANIFEST else path
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        hint = "" if root.is_dir() else " (no such folder)"
        shipped = default_bundle_path()
        raise BundleError(f"no {MANIFEST} in {root}{hint}; make one with `tir train`"
                          + (f" or use the shipped bundle {shipped}" if shipped else ""))
    try:
        manifest = jsontext.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version {version!r}, this tir reads "
                          f"{FORMAT_VERSION}; rebuild the bundle with this version's `tir train`")
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError("\n".join(f"{manifest_path}: {p}" for p in problems))
    try:
        digests = listed_files(manifest)
    except BundleError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    for name, digest in digests.items():
        _verify_file(root, name, digest)
    onnx_files = [t["file"] for t in manifest["tasks"]]
    if manifest["router"] is not None:
        onnx_files.append(manifest["router"]["file"])
    for name in onnx_files:
        check_onnx_input(root / name)
    if manifest.get("student"):
        check_student_inputs(root / manifest["student"]["file"], len(manifest["student"]["prompts"]))
    return Bundle(root, manifest)


def check_student_inputs(path: PathLike, prompts: int) -> None:
    """The student ONNX must take ``input`` (N, 1, H, W) and ``prompt`` (N, ``prompts``) (one
    weight per prompt slot).

    Raises:
        BundleError: not a loadable ONNX model, or other inputs; the message names the file.
    """
    path = Path(path)
    try:
        import onnx

        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        inits = {i.name for i in model.graph.initializer}
        inputs = {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                           for d in i.type.tensor_type.shape.dim]
                  for i in model.graph.input if i.name not in inits}
    except ImportError:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for a broken file
            raise BundleError(f"{path.name} is not a loadable ONNX model: {exc}") from exc
        inputs = {i.name: list(i.shape) for i in session.get_inputs()}
    except Exception as exc:  # onnx raises many types for a broken file
        raise BundleError(f"{path.name} is not a loadable ONNX model: {exc}") from exc
    image, prompt = inputs.get("input"), inputs.get("prompt")
    if set(inputs) != {"input", "prompt"} or len(image) != 4 or image[1] not in (1, "1") \
            or len(prompt) != 2 or prompt[1] not in (prompts, str(prompts)):
        raise BundleError(f"{path.name}: a student takes input N×1×H×W and prompt N×{prompts} "
                          f"(one weight per prompt slot); the model has {inputs}; re-export it with `tir distill`")


def route_digests(folder: PathLike) -> Dict[str, str]:
    """{route name: sha256} of the bundle in ``folder``, as its manifest lists them; {} when the
    folder holds no bundle that loads (a rerun's output is recognised by its routes)."""
    try:
        return {t["name"]: t["sha256"] for t in load_bundle(folder).manifest["tasks"]}
    except BundleError:
        return {}


def check_student_out(src: Bundle, out_dir: PathLike) -> None:
    """Refuse an existing ``out_dir`` for :func:`add_student` that is neither ``src`` itself
    (updated in place) nor an earlier output of the same teachers (every route equal by the
    manifests' sha256: a rerun, updated in place); a missing one passes (a copy is made).

    Raises:
        BundleError: ``out_dir`` exists and is none of those (nothing is written).
    """
    out = Path(out_dir)
    if not out.exists() or out.resolve() == src.path.resolve():
        return
    if route_digests(out) != route_digests(src.path):
        raise BundleError(f"{out} exists and is not a copy of {src.path} (other or altered routes, or not a "
                          "bundle); choose a new folder")


def add_student(bundle_dir: PathLike, out_dir: PathLike, student_onnx: PathLike, info: Mapping,
                deploy: str = "routes", margin_db: float = DEFAULT_AUTO_MARGIN_DB) -> Bundle:
    """Write ``out_dir``: bundle ``bundle_dir`` with the student ONNX added as ``student.onnx``
    (sha256 in the manifest's ``student`` entry, with ``info``: prompts, preset, GMAC, metrics,
    training) and ``deploy`` set. The ``auto_deploy`` table (:func:`auto_deploy_entry` with
    ``margin_db``, dB) is recorded whenever ``info``'s metrics hold both val numbers for every
    task (needed with deploy=auto), so ``--deploy auto`` can run the bundle; a table of an earlier
    student is dropped. ``out_dir`` may be the bundle itself (it is updated in place)
    or a new folder (a byte-for-byte copy is made first; the source is not touched). Returns the
    re-verified bundle.

    Raises:
        BundleError: a bad ``deploy`` value, a source bundle that fails the checks, an existing
            ``out_dir`` that is not a copy of it, a manifest/student that fails the checks, or
            deploy=auto without val numbers for every task.
    """
    if deploy not in DEPLOY_CHOICES:
        raise BundleError(f"deploy {deploy!r} must be one of {', '.join(DEPLOY_CHOICES)}")
    choose_auto_deploy({}, {}, [], margin_db)   # a bad margin is refused before anything is written
    src = load_bundle(bundle_dir)
    out = Path(out_dir)
    check_student_out(src, out)   # an earlier output of the same teachers is updated in place
    if out.exists():
        return _add_student_to(out, student_onnx, info, deploy, margin_db)
    with new_copy(src.path, out):   # a student or manifest that cannot be written: no copy left
        return _add_student_to(out, student_onnx, info, deploy, margin_db)


def _add_student_to(out: Path, student_onnx: PathLike, info: Mapping, deploy: str, margin_db: float) -> Bundle:
    """:func:`add_student` into ``out``, a bundle folder already there."""
    name = "student.onnx"
    _copy(student_onnx, out / name)
    entry = {k: v for k, v in dict(info).items() if k not in ("file", "sha256")}
    entry.update({"file": name, "sha256": sha256_file(out / name)})
    manifest = jsontext.loads((out / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"] = {k: v for k, v in manifest.get("files", {}).items() if k != name}
    manifest["student"] = entry
    manifest["deploy"] = deploy
    manifest.pop("auto_deploy", None)   # an earlier student's numbers
    try:
        manifest["auto_deploy"] = auto_deploy_entry(manifest, margin_db)
    except BundleError:
        if deploy == "auto":
            raise
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError("\n".join(problems))
    return save_manifest(out, manifest)
