import json

from tir.tools import doctor
from tir.tools.cli import main

BUILD_INFO = """
  Video I/O:
    DC1394:                      NO
    FFMPEG:                      YES
    GStreamer:                   NO
    v4l/v4l2:                    YES (linux/videodev2.h)
"""


def test_video_io_support_parsing():
    assert doctor.video_io_support(BUILD_INFO) == {"V4L2": True, "GStreamer": False, "FFMPEG": True}
    gst = BUILD_INFO.replace("GStreamer:                   NO", "GStreamer:                   1.20.3")
    assert doctor.video_io_support(gst)["GStreamer"] is True


def test_tegra_release_parsing(tmp_path):
    text = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
    assert doctor.parse_tegra_release(text) == "35.4.1"
    release = tmp_path / "nv_tegra_release"
    release.write_text(text + "\n")
    findings = doctor.check_jetson(str(release))
    assert "L4T 35.4.1" in findings[0].finding and "JetPack 5.x" in findings[0].finding
    assert doctor.check_jetson(str(tmp_path / "missing"))[0].finding.startswith("no")


def test_doctor_runs_cleanly_here(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for what in ("OpenCV V4L2", "OpenCV GStreamer", "ONNX Runtime", "torch", "TensorRT", "INT8", "TensorRT plans",
                 "model bundle", "Jetson"):
        assert f"] {what}:" in out
    assert "check failed" not in out
    assert all(" -- " in line for line in out.splitlines() if line.startswith("[warn]"))


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert {f["status"] for f in findings} <= {"ok", "warn", "no", "info"}


def test_int8_speed_from_compute_capability():
    orin = doctor.check_int8(("Orin", "8.7"))[0]
    assert orin.status == "ok" and "fast INT8" in orin.finding
    nano = doctor.check_int8(("NVIDIA Tegra X1", "5.3"))[0]
    assert nano.status == "warn" and "no fast INT8" in nano.finding and "fp16" in nano.meaning
    assert doctor.check_int8(False)[0].finding == "no CUDA GPU here"


def test_cached_plans_are_listed(tmp_path):
    from tir.engines.cache import EngineCache, EngineKey, profile_for_sizes

    cache = EngineCache(tmp_path / "engines")
    assert "none in" in doctor.check_engine_cache(cache)[0].finding
    key = EngineKey("ab" * 32, "8.5.2", "Orin", "8.7", "35.4.1", "int8-qdq", profile_for_sizes([(640, 512)]))
    plan = cache.store(key, b"plan bytes", "denoise")
    (cache.root / "orphan-fp16-0000.plan").write_bytes(b"x")  # no sidecar
    findings = doctor.check_engine_cache(cache)
    assert findings[0].finding == f"2 in {cache.root}"
    listed = [f for f in findings if plan.name in f.finding]
    assert len(listed) == 1 and "int8-qdq, TensorRT 8.5.2, Orin (SM 8.7)" in listed[0].finding
    assert "cannot check" in listed[0].meaning  # no TensorRT on this machine
    orphan = [f for f in findings if "orphan" in f.finding]
    assert len(orphan) == 1 and orphan[0].status == "warn"
