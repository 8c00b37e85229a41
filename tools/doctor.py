"""``tir doctor``: what this machine has, and what each finding means for ``tir run``.

Checks (pipelines.md (d)10): OpenCV build (V4L2 / GStreamer), video devices and their
formats (Y16 for raw 16-bit capture), serial ports for camera control, ONNX Runtime and
its providers, torch, TensorRT + pycuda, the GPU's INT8 speed, cached TensorRT plans
(engines/cache.py) and whether they fit this machine, the model bundle, and on a Jetson the
L4T release and power mode. Every line is ``[status] what: finding -- meaning``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from tir.edge.machine import L4T_TO_JETPACK, TEGRA_RELEASE, fast_int8, parse_tegra_release  # noqa: F401
from tir.edge.machine import run_command as _run

OK, WARN, NO, INFO = "ok", "warn", "no", "info"


@dataclass
class Finding:
    """One line of ``tir doctor``.

    Attributes:
        status: ``"ok"``, ``"warn"``, ``"no"`` or ``"info"``.
        what: what was checked (e.g. ``"OpenCV V4L2"``).
        finding: what was found.
        meaning: what it means for ``tir run`` (may be empty).
    """
    status: str
    what: str
    finding: str
    meaning: str = ""

    def line(self) -> str:
        """The finding as ``[status] what: finding -- meaning`` (no `` -- meaning`` when it is empty)."""
        text = f"[{self.status:>4}] {self.what}: {self.finding}"
        return text + (f" -- {self.meaning}" if self.meaning else "")


def video_io_support(build_info: str) -> Dict[str, bool]:
    """Backends of OpenCV's "Video I/O" section: {"V4L2": True, "GStreamer": False, ...}."""
    support = {}
    for name, pattern in (("V4L2", r"v4l/v4l2"), ("GStreamer", r"gstreamer"), ("FFMPEG", r"ffmpeg")):
        m = re.search(rf"^\s*{pattern}\s*:\s*(\S+)", build_info, flags=re.IGNORECASE | re.MULTILINE)
        support[name] = bool(m) and m.group(1).upper() not in ("NO", "NO.")
    return support


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
def check_system() -> List[Finding]:
    """One info finding: platform, Python version, CPU count and the 1/5/15-minute load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [Finding(INFO, "system", f"{platform.platform()}, Python {platform.python_version()}, "
                                    f"{os.cpu_count()} CPUs, load {load}",
                    "ONNX Runtime uses one thread per core by default; other busy processes slow tir run")]


def check_opencv() -> List[Finding]:
    """OpenCV's version and whether its build has V4L2 (v4l2:// cameras) and GStreamer (rtsp://
    output), from ``cv2.getBuildInformation()``.
    """
    import cv2

    support = video_io_support(cv2.getBuildInformation())
    out = [Finding(INFO, "OpenCV", f"{cv2.__version__} ({cv2.__file__})")]
    out.append(Finding(OK if support["V4L2"] else NO, "OpenCV V4L2", "yes" if support["V4L2"] else "no",
                       "v4l2:// cameras can be opened" if support["V4L2"] else
                       "v4l2:// cameras cannot be opened: install an OpenCV built with V4L2 "
                       "(pip opencv-python on Linux has it)"))
    out.append(Finding(OK if support["GStreamer"] else WARN, "OpenCV GStreamer", "yes" if support["GStreamer"] else "no",
                       "rtsp:// output and GStreamer capture pipelines work" if support["GStreamer"] else
                       "no rtsp:// output or GStreamer capture; http:// and file:// still work. On a Jetson use "
                       "JetPack's system OpenCV (pip's opencv-python has no GStreamer)"))
    return out


def check_cameras() -> List[Finding]:
    """Video devices (/dev/video*) with their formats (via v4l2-ctl; Y16 = raw 16-bit counts
    capture), the thermal camera found by USB id, and serial ports for camera control.
    """
    from tir.edge.sources.devices import find_thermal_camera, list_serial_ports, list_video_devices

    out = []
    devices = list_video_devices()
    if not devices:
        out.append(Finding(WARN, "video devices", "none (/dev/video*)",
                           "tir run falls back to synthetic:// (a simulated camera); plug in a UVC thermal camera"))
    for device in devices:
        out.append(Finding(INFO, "video device", device.describe()))
        formats = _run(["v4l2-ctl", "--list-formats-ext", "-d", device.path])
        if formats is not None:
            fourccs = sorted(set(re.findall(r"'(\w{3,4}\s?)'", formats)))
            has_y16 = any(f.strip() == "Y16" for f in fourccs)
            out.append(Finding(OK if has_y16 else INFO, f"  formats {device.path}", ", ".join(f.strip() for f in fourccs) or "none",
                               "raw 16-bit (Y16) capture possible" if has_y16 else
                               "no Y16: only 8-bit or camera-specific layouts (TC001 YUYV is handled)"))
    if devices and _run(["v4l2-ctl", "--version"]) is None:
        out.append(Finding(INFO, "v4l2-ctl", "not installed", "install v4l-utils to list each camera's formats"))
    found = find_thermal_camera()
    if found is not None:
        out.append(Finding(OK, "thermal camera", f"{found[0]} ({getattr(found[1], 'name', found[1])})",
                           "tir run uses it by default"))
    elif devices:
        out.append(Finding(WARN, "thermal camera", "none recognised by USB id",
                           "pass --source v4l2:///dev/videoN to use one of the devices above"))
    ports = list_serial_ports()
    if ports:
        for port in ports:
            out.append(Finding(INFO, "serial port", port.describe(), "camera control (tir camera) can use it"))
    else:
        out.append(Finding(INFO, "serial ports", "none (ttyACM*, ttyUSB*)",
                           "no camera control channel (FFC, gain); video still works"))
    return out


def check_inference() -> List[Finding]:
    """ONNX Runtime and its execution providers, torch (and CUDA), TensorRT and pycuda: which
    ``--backend`` choices work here.
    """
    out = []
    if _importable("onnxruntime"):
        import onnxruntime as ort

        providers = ort.get_available_providers()
        gpu = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
        out.append(Finding(OK, "ONNX Runtime", f"{ort.__version__}, providers {', '.join(providers)}",
                           f"tir run --backend onnxruntime runs on {gpu[0]}" if gpu else
                           "runs on the CPU (install onnxruntime-gpu, or JetPack's wheel on a Jetson, for CUDA)"))
    else:
        out.append(Finding(NO, "ONNX Runtime", "not installed", "pip install onnxruntime: tir run needs it off TensorRT"))
    if _importable("torch"):
        import torch

        cuda = torch.cuda.is_available()
        detail = f"{torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if cuda else 'no'}"
        out.append(Finding(OK, "torch", detail, "training, export and --backend torch are available"))
    else:
        out.append(Finding(INFO, "torch", "not installed", "only needed to train/export (pip install torch)"))
    trt = _importable("tensorrt")
    pycuda = _importable("pycuda")
    version = ""
    if trt:
        try:
            version = " " + importlib.import_module("tensorrt").__version__
        except Exception as exc:  # a broken install imports with errors
            version = f" (import fails: {exc})"
    both = trt and pycuda
    out.append(Finding(OK if both else INFO, "TensorRT", f"tensorrt {'yes' + version if trt else 'no'}, "
                                                         f"pycuda {'yes' if pycuda else 'no'}",
                       "--backend tensorrt (INT8/FP16 engines) is available" if both else
                       "--backend tensorrt unavailable: on a Jetson install JetPack's TensorRT python "
                       "bindings and `pip install pycuda`; elsewhere ONNX Runtime is used"))
    return out


def gpu_compute_capability() -> Optional[tuple]:
    """(GPU name, "major.minor") of CUDA device 0 through torch or pycuda, None without a GPU."""
    if _importable("torch"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), "%d.%d" % torch.cuda.get_device_capability(0)
    if _importable("pycuda"):
        try:
            import pycuda.driver as cuda

            cuda.init()
            device = cuda.Device(0)
            return device.name(), "%d.%d" % device.compute_capability()
        except Exception:  # no driver or no device
            return None
    return None


def check_int8(gpu: Optional[tuple] = None) -> List[Finding]:
    """Whether the GPU has fast INT8 (compute capability ≥ 7.0, :func:`tir.edge.machine.fast_int8`).

    Args:
        gpu: ``(name, "major.minor")``, default :func:`gpu_compute_capability`.
    """
    gpu = gpu_compute_capability() if gpu is None else gpu
    if not gpu:
        return [Finding(INFO, "INT8", "no CUDA GPU here", "INT8 TensorRT engines are built and run on the "
                        "Jetson/GPU itself; ONNX Runtime runs the FP32 model here")]
    name, cc = gpu
    if fast_int8(cc):
        return [Finding(OK, "INT8", f"{name}, compute capability {cc}: fast INT8",
                        "tir build --precision int8 gives the fastest engines")]
    return [Finding(WARN, "INT8", f"{name}, compute capability {cc}: no fast INT8",
                    "INT8 runs slower than FP16 below SM 7 (Jetson Nano, TX2): build --precision fp16")]


def check_engine_cache(cache=None) -> List[Finding]:
    """The cached TensorRT plans (engines/cache.py) and whether each fits this machine's TensorRT,
    GPU and L4T; refused plans with their reason.

    Args:
        cache: an EngineCache (default: :func:`tir.engines.cache.default_cache_dir`).
    """
    from tir.engines.cache import EngineCache, EngineCacheError, current_platform

    cache = cache or EngineCache()
    plans = sorted(cache.root.glob("*.plan")) if cache.root.is_dir() else []
    if not plans:
        return [Finding(INFO, "TensorRT plans", f"none in {cache.root}",
                        "tir build --bundle DIR builds them on this machine (they only run where built)")]
    entries, refused = cache.scan()
    out = [Finding(INFO, "TensorRT plans", f"{len(plans)} in {cache.root}")]
    try:
        platform_now = current_platform()
    except EngineCacheError as exc:
        platform_now, why = None, str(exc)
    for entry in entries:
        key = entry.key
        what = (f"{entry.plan.name}: {key.precision}, TensorRT {key.trt_version}, {key.gpu_name} "
                f"(SM {key.compute_capability}), built {entry.meta.get('created', '?')}")
        if platform_now is None:
            out.append(Finding(INFO, "  plan", what, f"cannot check it against this machine ({why})"))
            continue
        try:
            cache.check_platform(entry, platform_now)
            out.append(Finding(OK, "  plan", what, "fits this machine's TensorRT and GPU"))
        except EngineCacheError as exc:
            out.append(Finding(WARN, "  plan", what, str(exc)))
    for plan, _, reason in refused:
        out.append(Finding(WARN, "  plan", f"{plan.name}: refused", reason))
    return out


def check_bundle() -> List[Finding]:
    """The installed model bundle ``tir run`` uses by default, or a warning that there is none."""
    try:
        from tir.engines.bundle import default_bundle_path
    except ImportError as exc:
        return [Finding(NO, "model bundle", f"bundle support missing ({exc})")]
    path = default_bundle_path()
    if path is None:
        return [Finding(WARN, "model bundle", "none installed (engines/bundles/edge/)",
                        "tir run needs --model PATH (a bundle folder or .onnx); train one with tir train")]
    return [Finding(OK, "model bundle", str(path), "tir run uses it by default")]


def check_jetson(release_file: str = TEGRA_RELEASE) -> List[Finding]:
    """On a Jetson: the L4T release and its JetPack, and the nvpmodel power mode (MAXN or not).

    Args:
        release_file: the L4T release file (default /etc/nv_tegra_release).
    """
    if not os.path.exists(release_file):
        return [Finding(INFO, "Jetson", "no (no /etc/nv_tegra_release)", "TensorRT INT8 engines are built on the Jetson itself")]
    with open(release_file, encoding="utf-8", errors="replace") as f:
        l4t = parse_tegra_release(f.read())
    major = l4t.split(".")[0] if l4t else None
    out = [Finding(OK, "Jetson", f"L4T {l4t or 'unknown'}, JetPack {L4T_TO_JETPACK.get(major, 'unknown')}",
                   "TensorRT engines must be built for this exact L4T/TensorRT; rebuild after a JetPack upgrade")]
    mode = _run(["nvpmodel", "-q"])
    if mode is None:
        out.append(Finding(WARN, "power mode", "nvpmodel not found", "cannot tell the power mode"))
    else:
        m = re.search(r"NV Power Mode:\s*(\S+)", mode)
        name = m.group(1) if m else mode.strip().splitlines()[0] if mode.strip() else "unknown"
        maxed = "MAXN" in name.upper()
        out.append(Finding(OK if maxed else WARN, "power mode", name,
                           "maximum performance" if maxed else
                           "not MAXN: fps will be lower; `sudo nvpmodel -m 0 && sudo jetson_clocks` for benchmarks"))
    return out


CHECKS = (check_system, check_opencv, check_cameras, check_inference, check_int8, check_engine_cache,
          check_bundle, check_jetson)


def collect() -> List[Finding]:
    """Every check of :data:`CHECKS` in order; a check that raises becomes one warn finding naming
    the exception, so one broken probe does not hide the others.
    """
    findings: List[Finding] = []
    for check in CHECKS:
        try:
            findings += check()
        except Exception as exc:  # one broken probe must not hide the others
            findings.append(Finding(WARN, check.__name__.replace("check_", ""), f"check failed: {type(exc).__name__}: {exc}"))
    return findings


def add_arguments(parser) -> None:
    """Add ``tir doctor``'s option to ``parser``: ``--json`` (the findings as JSON)."""
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def main(args) -> int:
    """Run ``tir doctor``: print every finding (as ``[status] what: finding -- meaning`` lines or,
    with ``--json``, a JSON list).

    Returns:
        0 (findings are reported, never an exit status).
    """
    findings = collect()
    if getattr(args, "json", False):
        import json

        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    sys.stdout.flush()
    return 0
