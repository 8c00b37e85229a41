"""What this machine is: CPU, Python, ONNX Runtime/OpenCV versions, Jetson L4T release and
power mode, whether the GPU has fast INT8 (stdlib at import; each probe imports what it reads).

Library side of ``tir doctor`` (its findings) and ``tir bench`` (``machine`` in every report:
pipelines.md (d)7, versions in every report).
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional

TEGRA_RELEASE = "/etc/nv_tegra_release"
# L4T major release -> JetPack major line (NVIDIA's JetPack/L4T release tables)
L4T_TO_JETPACK = {"32": "4.x", "34": "5.0 (developer preview)", "35": "5.x", "36": "6.x"}


def parse_tegra_release(text: str) -> Optional[str]:
    """``# R35 (release), REVISION: 4.1, ...`` (the first line of /etc/nv_tegra_release) -> ``"35.4.1"``;
    None when the text has no release."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def available_memory(meminfo: str = "/proc/meminfo") -> Optional[int]:
    """Bytes of memory the kernel says a new allocation can get without swapping: ``MemAvailable``
    of ``meminfo`` (Linux >= 3.14, proc(5)), else ``os.sysconf`` free pages × page size; None when
    neither can be read."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file's unit is kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def run_command(cmd: List[str], timeout: float = 5.0) -> Optional[str]:
    """stdout + stderr of ``cmd`` (a program and its arguments, no shell), or None when the
    program is not on PATH, cannot start or runs longer than ``timeout`` seconds."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or "") + (done.stderr or "")


def fast_int8(compute_capability) -> bool:
    """INT8 is only faster than FP16 from Volta/Xavier (SM 7.x) on; Jetson Nano (5.3) and TX2 (6.2)
    run it slower than FP16 (torch2trt#255: 44 vs 90 FPS on Nano; pipelines.md pain point 5).
    Decided from the compute capability (``"8.7"`` or 8.7), not the deprecated ``platform_has_fast_int8``;
    False when it does not parse."""
    try:
        major = int(str(compute_capability).split(".")[0])
    except ValueError:
        return False
    return major >= 7


def cpu_model() -> Optional[str]:
    """The CPU's model name (/proc/cpuinfo, else ``platform.processor()``), None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


#: /proc/cpuinfo flags of x86 integer dot-product instructions that accumulate u8 x s8 products
#: straight into int32: AVX512-VNNI ``vpdpbusd`` (Cascade Lake, Ice Lake, Zen 4 on), AVX-VNNI (the
#: VEX form: Alder Lake, Zen 5 on) and AMX-INT8 tiles (Sapphire Rapids). ONNX Runtime's MLAS picks
#: its U8S8 GEMM/conv kernels by these at run time (mlas platform.cpp).
X86_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: without those, the AVX2 / AVX512BW U8S8 kernels multiply with ``vpmaddubsw``
X86_PMADDUBSW_FLAGS = frozenset({"avx2", "avx512bw"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[FrozenSet[str]]:
    """The first ``flags`` (x86) or ``Features`` (Arm) line of ``cpuinfo`` as a set of lower-case
    names; None when the file cannot be read or has no such line (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.lower().split())
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Int8Cpu:
    """How ONNX Runtime's integer (U8S8: uint8 activations x int8 weights) kernels add up on a CPU.

    ``saturating``: True where the kernel sums each *pair* of u8 x s8 products into a
    saturating int16 (x86 ``vpmaddubsw``: AVX2 or AVX512BW without VNNI): 2 x 255 x 127 = 64,770 >
    32,767, so full-range 8-bit weights can clip, and INT8 models for such a CPU need 7-bit weights
    (``reduce_range``: 2 x 255 x 63 = 32,130 fits; docs/int8.md measured 0.7-1.4 dB lost without
    them on an AVX2 EPYC). False with VNNI/AMX (int32 accumulation), on x86 without AVX2 (the SSE
    kernel widens to int16 and multiplies with ``pmaddwd`` into int32) and on non-x86 CPUs (Arm's
    kernels widen or use ``sdot``/``udot``, int32). Unknown x86 flags count as saturating (the safe
    side: 7-bit weights cost nothing in speed, docs/int8.md).

    Fields: ``arch`` (``platform.machine()``, lower case), ``vnni`` (True/False), ``flags`` (the
    relevant flags found, sorted), ``saturating``.
    """
    arch: str
    vnni: bool
    flags: tuple
    saturating: bool

    @property
    def reduce_range(self) -> bool:
        """The ``reduce_range`` (7-bit weights) INT8 CPU models for this CPU need."""
        return self.saturating

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: arch, vnni, flags (list), saturating, needs_reduce_range (:attr:`reduce_range`)."""
        return {"arch": self.arch, "vnni": self.vnni, "flags": list(self.flags), "saturating": self.saturating,
                "needs_reduce_range": self.reduce_range}


def int8_cpu_features(flags: Optional[Iterable[str]] = None, arch: Optional[str] = None) -> Int8Cpu:
    """:class:`Int8Cpu` of this CPU, or of the given ``flags`` (cpuinfo flag names; default
    :func:`cpu_flags`) and ``arch`` (default ``platform.machine()``: ``x86_64``/``amd64``/``i686``
    are x86). Pure function of its inputs when both are given."""
    arch = (arch if arch is not None else platform.machine() or "unknown").lower()
    found = cpu_flags() if flags is None else frozenset(f.lower() for f in flags)
    x86 = arch in ("x86_64", "amd64", "x86", "i386", "i686")
    if not x86:
        return Int8Cpu(arch, False, tuple(sorted((found or frozenset()) & {"asimddp", "i8mm"})), False)
    if found is None:
        return Int8Cpu(arch, False, (), True)
    vnni = bool(found & X86_VNNI_FLAGS)
    relevant = tuple(sorted(found & (X86_VNNI_FLAGS | X86_PMADDUBSW_FLAGS)))
    return Int8Cpu(arch, vnni, relevant, bool(found & X86_PMADDUBSW_FLAGS) and not vnni)


def jetson_info(release_file: str = TEGRA_RELEASE) -> Dict[str, Any]:
    """L4T release (``l4t``) and power mode (``nvpmodel``, first line of ``nvpmodel -q``) on a
    Jetson (pipelines.md (d)7, pain point 10), else an empty dict."""
    if not os.path.exists(release_file):
        return {}
    with open(release_file, encoding="utf-8", errors="replace") as f:
        info: Dict[str, Any] = {"l4t": parse_tegra_release(f.read())}
    mode = run_command(["nvpmodel", "-q"])
    if mode:
        info["nvpmodel"] = mode.strip().splitlines()[0]
    return info


def machine_info() -> Dict[str, Any]:
    """What the numbers were measured on (pipelines.md (d)7: versions in every report): host,
    platform, Python, CPU count and model, its INT8 kernel features (:func:`int8_cpu_features`:
    VNNI or not), 1/5/15-min load average, ONNX Runtime version and
    providers, OpenCV, torch/TensorRT versions when already imported, Jetson L4T and power mode."""
    info: Dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "int8_cpu": int8_cpu_features().to_dict(),
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    import cv2

    info["opencv"] = cv2.__version__
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    if "tensorrt" in sys.modules:
        info["tensorrt"] = getattr(sys.modules["tensorrt"], "__version__", None)
    info.update(jetson_info())
    return info
