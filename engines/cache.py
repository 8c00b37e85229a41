"""TensorRT engine cache: plans keyed by everything that makes a plan valid, refused otherwise.

A serialized TensorRT plan only runs on the TensorRT version and GPU that built it
("engines are not portable across different GPU architectures", "by default engines only work
with the TRT version that built them": tensorrt_int8.md §3), and users keep hitting stale plans
after JetPack upgrades (pipelines.md pain point 3). jetson-inference keys on the TRT version and
precision but not the GPU; here the key is (pipelines.md recommendation 4):

    sha256(ONNX) + TensorRT version + GPU name + compute capability + L4T/JetPack release
    + precision + input profile + calibration-cache hash + builder flags

Plans live in ``~/.cache/tir-edge/engines/`` (override: ``$TIR_ENGINE_CACHE``), not in the
package folder: site-packages is often read-only (system Python on JetPack, root-owned venvs),
a plan belongs to one machine while the package is shared, and a package upgrade must not
carry plans along. Each plan ``<route>-<precision>-<key16>.plan`` has a JSON sidecar with the
full key, the build command and timings. Loading a plan whose sidecar disagrees with this
machine is refused with the differing fields and the exact ``tir build`` command to rebuild.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..edge import jsontext
from ..edge.errors import ModelError
from .bundle import sha256_file  # one implementation of the file hash for bundles and plans

PathLike = Union[str, os.PathLike]
ENV_VAR = "TIR_ENGINE_CACHE"
KEY_VERSION = 1
PLATFORM_FIELDS = ("trt_version", "gpu_name", "compute_capability", "l4t_release")


class EngineCacheError(RuntimeError, ModelError):
    """A plan that does not match this machine/model; the message has the rebuild command."""


def default_cache_dir() -> Path:
    """Where plans live: ``$TIR_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/tir-edge/engines``, else
    ``~/.cache/tir-edge/engines``.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tir-edge" / "engines"


def parse_l4t_release(text: str) -> Optional[str]:
    """``/etc/nv_tegra_release`` first line → "35.4.1" (``# R35 (release), REVISION: 4.1, ...``)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def l4t_release(path: str = "/etc/nv_tegra_release") -> Optional[str]:
    """The L4T release of this Jetson ("35.4.1") read from ``path``, or None off a Jetson (or unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_l4t_release(f.read())
    except OSError:
        return None


# JetPack ↔ L4T (tensorrt_int8.md §5: JetPack 6.2 = L4T 36.4.x; JetPack 5.1.x = L4T 35.x)
def jetpack_major(l4t: Optional[str]) -> Optional[int]:
    """The JetPack major version of an L4T release (L4T 35 -> 5, 36 -> 6, 38 -> 7; tensorrt_int8.md §5), None
    when unknown.
    """
    if not l4t:
        return None
    major = int(l4t.split(".")[0])
    return {35: 5, 36: 6, 38: 7}.get(major)


def current_platform() -> Dict[str, Optional[str]]:
    """TensorRT version, GPU name, compute capability, L4T release of this machine.

    Returns:
        ``{"trt_version", "gpu_name", "compute_capability", "l4t_release"}`` (str values,
        ``l4t_release`` None off a Jetson). The GPU is device 0, queried through pycuda, else torch.

    Raises:
        EngineCacheError: tensorrt is not importable, or no CUDA device can be queried.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineCacheError(f"tensorrt is not importable ({exc}); see docs/jetson.md") from None
    name = cc = None
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        name = dev.name()
        cc = "%d.%d" % dev.compute_capability()
    except Exception:  # pycuda missing or no context: try torch
        try:
            import torch

            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
                cc = "%d.%d" % torch.cuda.get_device_capability(0)
        except ImportError:
            pass
    if name is None:
        raise EngineCacheError("no CUDA device found (pycuda and torch.cuda could not query one)")
    return {"trt_version": trt.__version__, "gpu_name": name, "compute_capability": cc,
            "l4t_release": l4t_release()}


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes a TensorRT plan valid (pipelines.md recommendation 4): the ONNX's
    sha256, TensorRT version, GPU name, compute capability, L4T release, precision
    (``fp32``, ``fp16``, ``int8-qdq``, ``int8-calibrator``), the optimisation profile
    (name, min, opt, max (N, C, H, W) shapes), the calibration cache's sha256 and builder flags.
    """
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    l4t_release: Optional[str]
    precision: str  # fp32 | fp16 | int8-qdq | int8-calib
    profile: Tuple[Tuple[str, Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]], ...]
    calib_sha256: Optional[str] = None
    flags: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The key as a JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["profile"] = [[n, list(a), list(b), list(c)] for n, a, b, c in self.profile]
        d["flags"] = list(self.flags)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EngineKey":
        """The key from :meth:`to_dict`'s form; unknown fields are ignored (later key versions)."""
        d = dict(d)
        d["profile"] = tuple((n, tuple(a), tuple(b), tuple(c)) for n, a, b, c in d.get("profile", ()))
        d["flags"] = tuple(d.get("flags", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def digest(self) -> str:
        """sha256 hex digest of the key (with the key format version): names and identifies the plan."""
        blob = json.dumps({"v": KEY_VERSION, **self.to_dict()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def differences(self, other: "EngineKey") -> List[str]:
        """One line per field that differs from ``other``: ``field: plan has X, expected Y``."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: plan has {a[k]!r}, expected {b[k]!r}" for k in a if a[k] != b[k]]


def profile_for_sizes(sizes: Sequence[Tuple[int, int]], input_name: str = "input", batch: int = 1,
                      multiple: int = 1):
    """One optimisation profile covering the camera sizes (w, h), padded up to ``multiple``.

    Returns:
        ``((input_name, min, opt, max),)`` with (N, 1, H, W) shapes: min has N = 1 and the
        smallest padded H and W, opt is the first size at N = ``batch``, max the largest.

    Raises:
        ValueError: ``sizes`` is empty.
    """
    if not sizes:
        raise ValueError("need at least one --size WxH")
    hs = [-(-h // multiple) * multiple for _, h in sizes]
    ws = [-(-w // multiple) * multiple for w, _ in sizes]
    lo = (1, 1, min(hs), min(ws))
    opt = (batch, 1, hs[0], ws[0])
    hi = (batch, 1, max(hs), max(ws))
    return ((input_name, lo, opt, hi),)


def build_command(bundle: Optional[PathLike], precision: str, sizes: Sequence[Tuple[int, int]],
                  route: Optional[str] = None) -> str:
    """The ``tir build`` command line (shell-quoted) that builds ``bundle`` at ``precision`` for ``sizes`` (w,
    h).
    """
    parts = ["tir", "build", "--bundle", str(bundle) if bundle else "DIR", "--precision", precision]
    for w, h in sizes:
        parts += ["--size", f"{w}x{h}"]
    if route:
        parts += ["--route", route]
    return " ".join(shlex.quote(p) for p in parts)


@dataclass
class CacheEntry:
    """A stored plan: its path, its :class:`EngineKey` and the sidecar's whole JSON (``meta``)."""
    plan: Path
    key: EngineKey
    meta: dict = field(default_factory=dict)

    @property
    def rebuild_command(self) -> str:
        """The sidecar's ``rebuild_command``, else a generic ``tir build`` line for the key's precision."""
        return self.meta.get("rebuild_command") or build_command(None, self.key.precision, [])


class EngineCache:
    """Plans + sidecars under one folder (see the module docstring)."""

    def __init__(self, root: Optional[PathLike] = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def plan_path(self, key: EngineKey, name: str) -> Path:
        """Where the plan for ``key`` named ``name`` lives: ``<name>-<precision>-<digest[:16]>.plan`` under
        :attr:`root`.
        """
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return self.root / f"{safe}-{key.precision}-{key.digest()[:16]}.plan"

    @staticmethod
    def sidecar(plan: PathLike) -> Path:
        """The JSON sidecar path of a plan (the same name with ``.json``)."""
        return Path(plan).with_suffix(".json")

    def store(self, key: EngineKey, plan_bytes: bytes, name: str, meta: Optional[dict] = None) -> Path:
        """Write the plan and its sidecar (key, digest, name, plan sha256, UTC creation time and
        ``meta``), each through a temporary file renamed into place; returns the plan path.

        Raises:
            OSError: the folder or files cannot be written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.plan_path(key, name)
        tmp = path.with_suffix(".plan.tmp")
        tmp.write_bytes(bytes(plan_bytes))
        os.replace(tmp, path)
        doc = {"key": key.to_dict(), "digest": key.digest(), "name": name,
               "plan_sha256": hashlib.sha256(bytes(plan_bytes)).hexdigest(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        doc.update(meta or {})
        side = self.sidecar(path)
        side.with_suffix(".json.tmp").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(side.with_suffix(".json.tmp"), side)
        return path

    def _read_sidecar(self, plan: Path) -> Tuple[EngineKey, dict]:
        side = self.sidecar(plan)
        if not plan.is_file():
            raise EngineCacheError(f"no TensorRT plan at {plan}; build one with `tir build`")
        if not side.is_file():
            raise EngineCacheError(f"refusing TensorRT plan {plan}: it has no sidecar {side.name}, so "
                                   "nothing tells what it was built for; delete it and rebuild with `tir build`")
        try:
            doc = jsontext.loads(side.read_text(encoding="utf-8"))
            key = EngineKey.from_dict(doc["key"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EngineCacheError(f"refusing TensorRT plan {plan}: unreadable sidecar {side.name} ({exc}); "
                                   "delete both and rebuild with `tir build`") from None
        return key, doc

    def read_entry(self, plan: PathLike) -> CacheEntry:
        """The plan's entry after its integrity check.

        A plan is refused when its sidecar is missing or unreadable, when the sidecar has no
        ``plan_sha256`` (nothing to check the plan against), or when the plan's sha256 differs
        from it (the plan was altered after ``tir build`` wrote it). Deserialising a TensorRT
        plan runs its plugins, so an unchecked plan is never handed on.

        Raises:
            EngineCacheError: the plan is missing or refused; the message names the reason and the
                rebuild command.
        """
        plan = Path(plan)
        key, doc = self._read_sidecar(plan)
        rebuild = doc.get("rebuild_command") or "tir build"
        expected = doc.get("plan_sha256")
        if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise EngineCacheError(f"refusing TensorRT plan {plan}: its sidecar {self.sidecar(plan).name} has no "
                                   f"valid plan_sha256, so its integrity cannot be checked; delete it and "
                                   f"rebuild with `{rebuild}`")
        actual = sha256_file(plan)
        if actual != expected:
            raise EngineCacheError(f"refusing TensorRT plan {plan}: tampered or corrupt, sha256 is "
                                   f"{actual[:12]}…, its sidecar says {expected[:12]}…; delete it and "
                                   f"rebuild with `{rebuild}`")
        return CacheEntry(plan, key, doc)

    def lookup(self, key: EngineKey, name: str) -> Optional[CacheEntry]:
        """The verified entry for ``key`` (None when no plan is stored for it); a stored plan
        that fails its integrity check raises EngineCacheError."""
        path = self.plan_path(key, name)
        if not path.is_file():
            return None
        entry = self.read_entry(path)
        return entry if entry.key == key else None

    def check_platform(self, entry: CacheEntry, platform: Dict[str, Optional[str]]) -> None:
        """Refuse a plan built on another TensorRT/GPU/L4T than ``platform``.

        Raises:
            EngineCacheError: a platform field differs; the message lists them and the rebuild command.
        """
        key = entry.key.to_dict()
        diffs = [f"{f}: plan built for {key[f]!r}, this machine has {platform.get(f)!r}"
                 for f in PLATFORM_FIELDS if key.get(f) != platform.get(f)]
        if diffs:
            raise EngineCacheError(
                f"refusing TensorRT plan {entry.plan.name}: " + "; ".join(diffs)
                + f". Rebuild it on this machine with: {entry.rebuild_command}")

    def check_key(self, entry: CacheEntry, expected: EngineKey) -> None:
        """Refuse a plan whose full key (model, precision, profile, calibration...) differs.

        Raises:
            EngineCacheError: the key differs; the message lists the fields and the rebuild command.
        """
        diffs = entry.key.differences(expected)
        if diffs:
            raise EngineCacheError(f"refusing TensorRT plan {entry.plan.name}: " + "; ".join(diffs)
                                   + f". Rebuild it with: {entry.rebuild_command}")

    def scan(self) -> Tuple[List[CacheEntry], List[Tuple[Path, Optional[dict], str]]]:
        """(verified entries, refused plans) of the folder; a refused plan is
        (plan path, its sidecar dict or None when unreadable, the reason)."""
        if not self.root.is_dir():
            return [], []
        good, refused = [], []
        for plan in sorted(self.root.glob("*.plan")):
            try:
                good.append(self.read_entry(plan))
            except EngineCacheError as exc:
                try:
                    doc = self._read_sidecar(plan)[1]
                except EngineCacheError:
                    doc = None
                refused.append((plan, doc, str(exc)))
        return good, refused

    def entries(self) -> List[CacheEntry]:
        """The verified entries; plans failing their integrity check are left out (see scan)."""
        return self.scan()[0]


PRECISION_PREFERENCE = ("int8-qdq", "int8-calibrator", "fp16", "fp32")


def resolve_plan(onnx_path: PathLike, precision: Optional[str] = None, cache: Optional[EngineCache] = None,
                 platform: Optional[Dict[str, Optional[str]]] = None) -> CacheEntry:
    """The cached plan built from ``onnx_path`` (a bundle route) for this machine.

    Plans built from the route's Q/DQ variant carry the route ONNX's hash as ``source_onnx_sha256``.
    Preference without ``precision``: INT8, FP16, FP32. Raises EngineCacheError naming the
    ``tir build`` command when nothing fits, and the reason when a plan for this route fails
    its integrity check (altered plan, sidecar without ``plan_sha256``, unreadable sidecar, or
    a plan named for this route with no sidecar at all).
    """
    cache = cache or EngineCache()
    digest = sha256_file(onnx_path)
    route = Path(onnx_path).stem.replace("route-", "")
    entries, refused = cache.scan()
    for plan, doc, reason in refused:
        # A plan that may belong to this route (its sidecar names the ONNX, or is unreadable)
        # and fails its integrity check is an error, never silently skipped.
        if doc is None:
            mine = plan.name.startswith(re.sub(r"[^A-Za-z0-9_.-]", "_", route) + "-")
        else:
            key = doc.get("key") if isinstance(doc.get("key"), dict) else {}
            mine = digest in (key.get("onnx_sha256"), doc.get("source_onnx_sha256"))
        if mine:
            raise EngineCacheError(reason)
    candidates = [e for e in entries
                  if digest in (e.key.onnx_sha256, e.meta.get("source_onnx_sha256"))]
    if platform is not None:
        candidates = [e for e in candidates if all(e.key.to_dict().get(f) == platform.get(f) for f in PLATFORM_FIELDS)]
    if precision is not None:
        candidates = [e for e in candidates if e.key.precision.startswith(precision)]
    if not candidates:
        bundle = Path(onnx_path).resolve().parent
        raise EngineCacheError(
            f"no TensorRT plan for {Path(onnx_path).name} in {cache.root} for this machine"
            + (f" at precision {precision}" if precision else "")
            + f"; build it with: {build_command(bundle, precision or 'fp16', [(640, 512)], route=route)}")
    rank = {p: i for i, p in enumerate(PRECISION_PREFERENCE)}
    candidates.sort(key=lambda e: (rank.get(e.key.precision, 99), -e.plan.stat().st_mtime))
    return candidates[0]
