"""The model bundle: one folder holding everything a deployment needs, verified on load.

Layout::

    <bundle>/manifest.json      format_version, name, preset, tasks, router, normalisation,
                                training, files {name: sha256}, multiple, caller extras
    <bundle>/route-<task>.onnx  one restoration model per task (input N×1×H×W)
    <bundle>/router.onnx        optional degradation router (input N×1×H×W)

:func:`load_bundle` refuses a bundle whose files are missing, altered (sha256), of another
format version, or not N×1×H×W ONNX models, with a message naming the file. Unknown extra files
in the folder are ignored.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from .engine import DEFAULT_MULTIPLE

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROUTER_FILE = "router.onnx"
REQUIRED_KEYS = ("format_version", "name", "tasks", "router", "normalisation", "files")

PathLike = Union[str, Path]


class BundleError(RuntimeError):
    """A bundle that cannot be written or trusted; the message names the file and the fix."""


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def route_file(task: str) -> str:
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
    """Load ``path`` as an ONNX model (onnx, else onnxruntime) and check its input is N×1×H×W."""
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
        return self.manifest["name"]

    @property
    def preset(self) -> Optional[str]:
        return self.manifest.get("preset")

    @property
    def tasks(self) -> List[str]:
        return [t["name"] for t in self.manifest["tasks"]]

    def task_info(self, task: str) -> dict:
        if task not in self._tasks:
            raise BundleError(f"bundle {self.name!r} has no route {task!r}; "
                              f"routes: {', '.join(self.tasks)}")
        return dict(self._tasks[task])

    def route_path(self, task: str) -> Path:
        return self.path / self.task_info(task)["file"]

    @property
    def router(self) -> Optional[dict]:
        return self.manifest.get("router")

    @property
    def router_path(self) -> Optional[Path]:
        return None if self.router is None else self.path / self.router["file"]

    @property
    def normalisation(self) -> dict:
        return self.manifest.get("normalisation") or {}

    @property
    def multiple(self) -> int:
        return int(self.manifest.get("multiple", DEFAULT_MULTIPLE))

    def __repr__(self) -> str:
        router = "router" if self.router else "no router"
        return f"Bundle({self.name!r}, {self.path}, tasks={self.tasks}, {router})"


def _copy(src: PathLike, dst: Path) -> None:
    src = Path(src)
    if not src.is_file():
        raise BundleError(f"cannot bundle {src}: no such file")
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)


def _sub_tasks(task: str) -> List[str]:
    from .degrade import COMPOUND_PARTS  # the ECMRNet compound decomposition

    return list(COMPOUND_PARTS.get(task, ()))


def write_bundle(out_dir: PathLike, routes: Mapping[str, PathLike], router: Optional[PathLike],
                 manifest: Mapping) -> Bundle:
    """Copy route and router ONNX files into ``out_dir``, hash them, write manifest.json.

    ``manifest`` supplies name, preset, normalisation, training, multiple, any extra keys,
    ``tasks`` (a list of dicts whose "name" matches a key of ``routes``: their keys are merged
    into that route's entry) and ``router`` (a dict of router metadata such as codebook,
    threshold, input_size, tasks). Returns the bundle as :func:`load_bundle` reads it back.
    """
    if not routes:
        raise BundleError("a bundle needs at least one route")
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
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return load_bundle(out)


def _short(digest: str) -> str:
    return f"{digest[:12]}…"


def _verify_file(root: Path, name: str, expected: str) -> None:
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise BundleError(f"bundle {root}: file name {name!r} must be a plain name inside the folder")
    path = root / name
    if not path.is_file():
        raise BundleError(f"incomplete bundle {root}: {name} is listed in {MANIFEST} but missing; "
                          "rebuild with `tir train` or restore the file")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(f"tampered or mismatched bundle: {name} sha256 is {_short(actual)}, "
                          f"manifest says {_short(str(expected))}; rebuild with `tir train` "
                          "or restore the file")


def load_bundle(path: PathLike) -> Bundle:
    """Read and verify a bundle folder (or its manifest.json); raise BundleError on any problem."""
    path = Path(path)
    root = path.parent if path.name == MANIFEST else path
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        hint = "" if root.is_dir() else " (no such folder)"
        shipped = default_bundle_path()
        raise BundleError(f"no {MANIFEST} in {root}{hint}; make one with `tir train`"
                          + (f" or use the shipped bundle {shipped}" if shipped else ""))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version {version!r}, this tir reads "
                          f"{FORMAT_VERSION}; rebuild the bundle with this version's `tir train`")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks required keys {missing}")
    files = manifest["files"]
    tasks = manifest["tasks"]
    if not isinstance(files, dict) or not isinstance(tasks, list) or not tasks:
        raise BundleError(f"{manifest_path}: 'files' must be an object and 'tasks' a non-empty list")

    onnx_files = []
    for i, task in enumerate(tasks):
        lacking = [k for k in ("name", "file", "sha256") if k not in task]
        if lacking:
            raise BundleError(f"{manifest_path}: task entry {i} lacks {lacking}")
        onnx_files.append((task["file"], task["sha256"]))
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise BundleError(f"{manifest_path}: duplicate task names in {names}")
    router = manifest["router"]
    if router is not None:
        if not isinstance(router, dict) or "file" not in router or "sha256" not in router:
            raise BundleError(f"{manifest_path}: router must be null or have 'file' and 'sha256'")
        onnx_files.append((router["file"], router["sha256"]))
    for name, digest in onnx_files:
        if files.get(name, digest) != digest:
            raise BundleError(f"{manifest_path}: {name} has two different sha256 values listed")
    for name, digest in {**files, **dict(onnx_files)}.items():
        _verify_file(root, name, digest)
    for name, _ in onnx_files:
        check_onnx_input(root / name)
    return Bundle(root, manifest)
