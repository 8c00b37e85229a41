"""INT8 on the CPU it runs on: VNNI detection (edge/machine.py), the model's recorded weight range
and calibration CPU (calibration/qdq.py stamp_int8_cpu), the refusal of full 8-bit weights on a
CPU whose U8S8 kernel saturates, and the INT8 graph optimisation level per CPU
(engines/backends/onnxruntime.py)."""
import json

import onnxruntime as ort
import pytest

from tir.calibration.qdq import stamp_int8_cpu
from tir.edge import machine
from tir.edge.machine import cpu_flags, int8_cpu_features
from tir.engines.backends.onnxruntime import (INT8_ACTIVATIONS_KEY, INT8_CPU_KEY, INT8_WEIGHT_BITS_KEY,
                                              ONNXRuntimeEngine, int8_cpu_problem, optimization_level)
from tir.engines.engine import EngineError
from tir.engines.training import roofline

# the flags that matter, as /proc/cpuinfo lists them on the CPUs named
ZEN3 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2".split()            # AVX2 EPYC, no VNNI
SKYLAKE_X = ZEN3 + "avx512f avx512bw avx512vl".split()                        # AVX512BW, no VNNI
ICELAKE = SKYLAKE_X + ["avx512_vnni"]
ALDER_LAKE = ZEN3 + ["avx_vnni"]                                              # VEX VNNI, no AVX-512
SAPPHIRE = ICELAKE + "amx_tile amx_int8 amx_bf16".split()
OLD_X86 = "fpu sse sse2 ssse3 sse4_1 sse4_2".split()                          # no AVX2: SSE kernel


@pytest.mark.parametrize("flags, saturating, vnni", [
    (ZEN3, True, False), (SKYLAKE_X, True, False), (ICELAKE, False, True), (ALDER_LAKE, False, True),
    (SAPPHIRE, False, True), (OLD_X86, False, False)])
def test_vnni_decides_whether_u8s8_saturates(flags, saturating, vnni):
    cpu = int8_cpu_features(flags, "x86_64")
    assert (cpu.saturating, cpu.vnni, cpu.reduce_range) == (saturating, vnni, saturating)
    assert cpu.to_dict()["needs_reduce_range"] is saturating and set(cpu.flags) <= set(flags)


def test_arm_and_unknown_x86():
    arm = int8_cpu_features("fp asimd asimddp i8mm".split(), "aarch64")
    assert not arm.saturating and not arm.vnni and arm.flags == ("asimddp", "i8mm")
    assert not int8_cpu_features([], "arm64").saturating
    assert int8_cpu_features(ZEN3, "AMD64").saturating  # Windows spelling


def test_unreadable_cpuinfo_on_x86_is_the_safe_side(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": None)
    cpu = int8_cpu_features(arch="x86_64")
    assert cpu.saturating and cpu.reduce_range and cpu.flags == ()


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: FPU avx2 AVX512_VNNI\n\nprocessor\t: 1\n"
                 "flags\t\t: fpu\n")
    assert cpu_flags(str(p)) == frozenset({"fpu", "avx2", "avx512_vnni"})
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert "asimddp" in cpu_flags(str(tmp_path / "arm"))
    assert cpu_flags(str(tmp_path / "missing")) is None
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_flags(str(tmp_path / "empty")) is None


def _meta(act="uint8", bits="8"):
    return {INT8_ACTIVATIONS_KEY: act, INT8_WEIGHT_BITS_KEY: bits, INT8_CPU_KEY: '{"vnni": true}'}


def test_full_range_u8s8_is_a_problem_only_where_the_kernel_saturates():
    avx2, vnni = int8_cpu_features(ZEN3, "x86_64"), int8_cpu_features(ICELAKE, "x86_64")
    why = int8_cpu_problem(_meta(), avx2)
    assert "VNNI" in why and "--reduce-range" in why and '{"vnni": true}' in why
    assert int8_cpu_problem(_meta(), vnni) is None
    assert int8_cpu_problem(_meta(bits="7"), avx2) is None          # 7-bit weights fit int16
    assert int8_cpu_problem(_meta(act="int8"), avx2) is None        # S8S8: no vpmaddubsw pairs
    assert int8_cpu_problem({}, avx2) is None                       # unstamped: not judged


def test_int8_level_is_all_on_x86_with_avx2_or_vnni(tmp_path):
    paths = roofline.write_reference(tmp_path, (32, 32))
    avx2, vnni = int8_cpu_features(ZEN3, "x86_64"), int8_cpu_features(ICELAKE, "x86_64")
    ALL, EXT = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert optimization_level(paths["int8"], cpu=avx2) == ALL   # docs/int8.md "Session 23": 13-15 % faster
    assert optimization_level(paths["int8"], cpu=vnni) == ALL
    assert optimization_level(paths["int8"], cpu=int8_cpu_features(["sse4_1"], "x86_64")) == EXT  # not measured
    assert optimization_level(paths["fp32"], cpu=avx2) == ALL == optimization_level(paths["fp32"], cpu=vnni)
    assert optimization_level(paths["int8"], cpu=int8_cpu_features(arch="aarch64")) == EXT  # not measured: as before


def test_stamp_and_engine_refusal(tmp_path, monkeypatch):
    paths = roofline.write_reference(tmp_path, (32, 32))
    vnni = int8_cpu_features(ICELAKE, "x86_64")
    meta = stamp_int8_cpu(paths["int8"], "uint8", reduce_range=False, cpu=vnni)
    assert meta[INT8_WEIGHT_BITS_KEY] == "8" and json.loads(meta[INT8_CPU_KEY])["vnni"] is True
    monkeypatch.setattr(machine, "int8_cpu_features", lambda *a, **k: vnni)
    eng = ONNXRuntimeEngine(paths["int8"], threads=1)
    assert eng.metadata[INT8_WEIGHT_BITS_KEY] == "8" and eng.metadata[INT8_ACTIVATIONS_KEY] == "uint8"
    monkeypatch.setattr(machine, "int8_cpu_features", lambda *a, **k: int8_cpu_features(ZEN3, "x86_64"))
    with pytest.raises(EngineError, match="no VNNI"):
        ONNXRuntimeEngine(paths["int8"], threads=1)
    stamp_int8_cpu(paths["int8"], "uint8", reduce_range=True, cpu=vnni)   # 7-bit: runs anywhere
    assert ONNXRuntimeEngine(paths["int8"], threads=1).metadata[INT8_WEIGHT_BITS_KEY] == "7"


def test_bench_reports_say_whether_the_cpu_has_vnni():
    info = machine.machine_info()
    assert info["int8_cpu"] == int8_cpu_features().to_dict()


def test_a_stamp_for_another_cpu_does_not_name_this_machines_cpu(tmp_path, monkeypatch):
    """stamp_int8_cpu(cpu=<another CPU's features>) recorded this machine's CPU model name next to
    the other CPU's flags: a model stamped for an Ice Lake on an EPYC said 'AMD EPYC ... vnni: true'."""
    monkeypatch.setattr(machine, "cpu_model", lambda: "This Machine CPU")
    paths = roofline.write_reference(tmp_path, (32, 32))
    given = json.loads(stamp_int8_cpu(paths["int8"], "uint8", True, cpu=int8_cpu_features(ICELAKE, "x86_64"))[INT8_CPU_KEY])
    assert given["model"] is None and given["vnni"] is True
    here = json.loads(stamp_int8_cpu(paths["int8"], "uint8", True)[INT8_CPU_KEY])
    assert here["model"] == "This Machine CPU" and here == {"model": "This Machine CPU", **int8_cpu_features().to_dict()}
