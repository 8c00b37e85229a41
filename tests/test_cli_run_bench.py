import json

import numpy as np
import pytest

from tir.engines.backends import available_backends
from tir.engines.training.models.plainnet import export_plainnet_onnx
from tir.tools import bench, run
from tir.tools.cli import main

SOURCE = "synthetic://?size=160x120&realtime=0"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_plainnet_onnx("tiny", tmp_path_factory.mktemp("m") / "tiny.onnx")


def test_bench_both_modes_writes_json(tmp_path, capsys, tiny_onnx):
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny_onnx), "--size", "160x120", "--frames", "8", "--warmup", "2",
                 "--source", SOURCE, "--json", str(out), "--no-progress", "--repeat", "2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "pipeline (e2e)" in text and "infer" in text
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert result["backend"] == "onnxruntime"
    model = result["model_only"]
    assert model["frames"] == 8 and model["size"] == "160x120"
    assert {"p50", "p90", "p99", "max"} <= set(model["latency_ms"])
    pipe = result["pipeline"]
    assert pipe["frames"] >= 8 and pipe["latency_ms"]["e2e"]["n"] >= 8
    assert result["ratio_pipeline_over_model"] > 0
    assert len(result["rounds"]) == 2 and all(r["ratio"] > 0 for r in result["rounds"])
    assert "rounds (onnxruntime)" in text
    assert report["machine"]["cpus"] >= 1


def test_bench_compares_backends_and_reports_missing_ones(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["bench", "--mode", "model", "--model", "plainnet:tiny", "--backend", "onnxruntime", "torch",
                 "tensorrt", "--size", "64x48", "--frames", "3", "--warmup", "1", "--json", str(out), "--no-progress"])
    assert code == 0
    results = {r["requested"] if "requested" in r else r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert results["onnxruntime"]["model_only"]["size"] == "64x48"
    assert results["torch"]["backend"] == "torch" and results["torch"]["model_only"]["frames"] == 3
    if "tensorrt" not in available_backends():
        assert "pycuda" in results["tensorrt"]["error"] or "tensorrt" in results["tensorrt"]["error"]


def test_bench_model_function_is_reusable():
    class Doubler:
        def infer(self, batch):
            return batch * 2

    batches = bench.synthetic_batches((96, 80), count=2)
    assert batches[0].shape == (1, 1, 80, 96) and batches[0].dtype == np.float32
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0
    result = bench.bench_model(Doubler(), batches, warmup=1, n=5, progress=False)
    assert result["frames"] == 5 and result["fps"] > 0 and result["latency_ms"]["n"] == 5


def test_bench_bad_size_is_explained(capsys):
    assert main(["bench", "--size", "big"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_run_records_restored_frames(tmp_path, capsys, tiny_onnx):
    recorder = pytest.importorskip("tir.edge.outputs.recorder", reason="H3's recorder output not present")
    folder = tmp_path / "rec"
    code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "6",
                 "--output", f"file://{folder}?preview=0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames, index = recorder.read_recording(folder)
    assert len(index) >= 6
    assert frames.dtype == np.uint16 and frames.shape[1:] == (120, 160)


@pytest.mark.parametrize("record", ["file://{rec}?overwrite=1", "{rec}/raw.u16"])
def test_recording_over_the_recording_being_replayed_is_refused(tmp_path, capsys, tiny_onnx, record):
    # --source REC --record REC?overwrite=1 deleted the recording before its first frame was read
    # and left a one-frame recording in its place
    from tir.edge.frame import Frame
    from tir.edge.outputs import open_output

    rec = tmp_path / "rec"
    with open_output(f"file://{rec}?what=raw&preview=0") as out:
        for seq in range(4):
            out.write(Frame(raw=np.full((120, 160), 1000 + seq, np.uint16), seq=seq, t_capture=float(seq)))
    before = {p.name: p.read_bytes() for p in rec.iterdir()}
    source = record.format(rec=rec) if record.endswith(".u16") else str(rec)
    target = str(rec) if record.endswith(".u16") else record.format(rec=rec)
    code = main(["run", "--source", source, "--model", str(tiny_onnx), "--frames", "3", "--record", target,
                 "--output", "http://127.0.0.1:0", "--quiet"])
    assert code == 2 and "which the source" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in rec.iterdir()} == before


def test_record_to_a_folder_whose_name_holds_hash_and_percent(tmp_path, capsys, tiny_onnx):
    # --record PATH became file://PATH unquoted: '#' cut the path, '%20' was decoded
    from tir.edge.outputs.recorder import read_recording

    folder = tmp_path / "take #2 at 50%20"
    code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3",
                 "--record", str(folder), "--output", "http://127.0.0.1:0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames, index = read_recording(folder)
    assert len(index) >= 3 and [p.name for p in tmp_path.iterdir()] == [folder.name]
    # --collect DIR likewise: it collected into 'col ' and lost its ?max_frames=...
    collected = tmp_path / "col #1"
    code = main(["run", "--source", SOURCE, "--frames", "2",  # the shipped bundle: it has a router
                 "--collect", str(collected), "--collect-max-frames", "7", "--output", "http://127.0.0.1:0"])
    assert code == 0, capsys.readouterr().err
    assert f"collect://{tmp_path}/col%20%231?max_frames=7&" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, collected.name])


def test_run_status_line_and_limits(capsys, tiny_onnx, tmp_path):
    pytest.importorskip("tir.edge.outputs.recorder", reason="H3's recorder output not present")
    code = main(["run", "--source", "synthetic://?size=160x120", "--model", str(tiny_onnx), "--duration", "1.5",
                 "--output", f"file://{tmp_path / 'r'}?preview=0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "fps" in out and "e2e p50" in out and "connected" in out


def test_run_without_bundle_says_how_to_get_one(capsys, monkeypatch):
    import tir.engines.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "default_bundle_path", lambda: None)
    assert main(["run", "--source", SOURCE, "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "no model bundle" in err and "--model" in err


def test_run_bad_source_and_model_exit_2(capsys, tiny_onnx):
    assert main(["run", "--source", "v4l2:///dev/video99", "--model", str(tiny_onnx), "--frames", "1"]) == 2
    assert "video99" in capsys.readouterr().err
    assert main(["run", "--source", SOURCE, "--model", "/nonexistent/model.onnx", "--frames", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "--source", "nosuch://x", "--model", str(tiny_onnx), "--frames", "1"]) == 2
    assert "unknown source scheme" in capsys.readouterr().err


def test_run_port_in_use_exits_2(capsys, tiny_onnx):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1",
                     "--output", f"http://127.0.0.1:{port}"])
    finally:
        busy.close()
    assert code == 2
    assert "in use" in capsys.readouterr().err


def test_run_port_option_busy_is_one_line_exit_2(capsys, tiny_onnx):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1", "--port", str(port)])
    finally:
        busy.close()
    assert code == 2
    err = capsys.readouterr().err
    assert err == (f"tir run: error: port {port} on 127.0.0.1 is in use; pick another with --port / "
                   f"http://127.0.0.1:PORT\n")


def test_run_host_and_port_options_move_the_page(capsys, tiny_onnx):
    code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "2", "--quiet",
                 "--host", "0.0.0.0", "--port", "0"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    line = [s for s in lines if s.startswith("tir run: output http")][0]
    port = int(line.rsplit(":", 1)[1].strip("/"))
    assert port not in (0, 8080)
    # every interface: a warning, then the URLs this machine's addresses give (issue 10 item 8)
    warning = [s for s in lines if s.startswith("tir run: warning: listening on 0.0.0.0")]
    assert len(warning) == 1 and "--host 127.0.0.1" in warning[0]
    reachable = [s for s in lines if s.startswith("tir run: reachable at ")]
    assert len(reachable) == 1 and f":{port}/" in reachable[0] and "127.0.0.1" not in reachable[0]
    token = [s for s in lines if s.startswith("tir run: POST token (X-Tir-Token header")]
    assert len(token) == 1 and len(token[0].rsplit(" ", 1)[1]) >= 32
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1", "--quiet",
                 "--output", "http://127.0.0.1:0?token=fixed-token-for-this-test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "tir run: POST token (X-Tir-Token header; the page carries it): fixed-token-for-this-test" in lines
    assert not [s for s in lines if "warning" in s or "reachable" in s]
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1", "--port", "70000"]) == 2
    assert "0..65535" in capsys.readouterr().err


def test_http_address_goes_to_the_one_http_output():
    assert run.with_http_address(["http://127.0.0.1:8080"], None, None) == ["http://127.0.0.1:8080"]
    assert run.with_http_address(["http://127.0.0.1:8080"], None, 9000) == ["http://127.0.0.1:9000"]
    assert run.with_http_address(["file:///tmp/r", "http://10.0.0.2:81?quality=60"], "0.0.0.0", None) == [
        "file:///tmp/r", "http://0.0.0.0:81?quality=60"]
    assert run.with_http_address(["http://localhost"], None, 5) == ["http://localhost:5"]
    with pytest.raises(ValueError, match="no http:// output"):
        run.with_http_address(["file:///tmp/r"], None, 9000)
    for empty in ("", "  "):  # e.g. --host "$HOST" with HOST unset: it listened on every interface
        with pytest.raises(ValueError, match="--host is empty; give an address: 127.0.0.1"):
            run.with_http_address(["http://127.0.0.1:8080"], empty, None)
    with pytest.raises(ValueError, match="there are 2"):
        run.with_http_address(["http://127.0.0.1:1", "http://127.0.0.1:2"], None, 9000)


def test_status_line_text():
    line = run.status_line({"fps": 29.5, "latency_ms": {"e2e": {"p50": 31.0, "p99": 40.0}}, "frames": 100,
                            "drops": {"infer": 2, "display": 1}, "task": "noise", "confidence": 0.9,
                            "connected": False})
    assert "fps  29.5" in line and "drops 3" in line and "task noise 0.90" in line and "NO SIGNAL" in line
    assert "new files" not in line
    # session 18: a recording that rolled to new files at FAT32's 4 GiB says so on the status line
    line = run.status_line({"fps": 29.5, "frames": 100, "connected": True, "recording": {"written": 90, "segments": 2}})
    assert "recording went on in 2 new files (file size limit)" in line


def test_normalizer_follows_bundle_percentiles():
    class FakeBundle:
        normalisation = {"low_pct": 1.0, "high_pct": 99.0, "input": "text is ignored"}

    class BundleModel:
        bundle = FakeBundle()

    norm = run.normalizer_for(BundleModel())
    assert (norm.low_pct, norm.high_pct) == (1.0, 99.0)
    default = run.normalizer_for(object())
    assert (default.low_pct, default.high_pct) == (0.5, 99.5)


def test_run_with_a_bundle_and_forced_task(tmp_path, capsys, tiny_onnx):
    recorder = pytest.importorskip("tir.edge.outputs.recorder", reason="H3's recorder output not present")
    from tir.engines.bundle import write_bundle

    write_bundle(tmp_path / "bundle", {"noise": tiny_onnx}, None,
                 {"name": "test", "normalisation": {"low_pct": 1.0, "high_pct": 99.0}, "multiple": 4})
    folder = tmp_path / "rec"
    code = main(["run", "--source", SOURCE, "--model", str(tmp_path / "bundle"), "--task", "noise",
                 "--frames", "4", "--output", f"file://{folder}?preview=0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "task noise" in captured.out and "bundle" in captured.out
    frames, index = recorder.read_recording(folder)
    assert len(index) >= 4
    assert main(["run", "--source", SOURCE, "--model", str(tmp_path / "bundle"), "--task", "nosuch",
                 "--frames", "1"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_run_ctrl_c_shuts_down_cleanly(tmp_path, tiny_onnx):
    import signal
    import subprocess
    import sys
    import time

    recorder = pytest.importorskip("tir.edge.outputs.recorder", reason="H3's recorder output not present")
    folder = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tir.tools.cli", "run", "--source", "synthetic://?size=160x120&fps=30",
         "--model", str(tiny_onnx), "--duration", "60", "--output", f"file://{folder}?preview=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until frames are being recorded
            index = folder / "frames.csv"
            if index.exists() and index.read_text().count("\n") > 4:  # header + 4 frames
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping" in out and "Traceback" not in err
    frames, index = recorder.read_recording(folder)
    assert len(index) > 3 and frames.shape[1:] == (120, 160)


@pytest.mark.parametrize("limit", [["--frames", "-3"], ["--frames", "0"], ["--duration", "-1"]])
def test_run_refuses_limits_that_mean_nothing(capsys, limit):
    assert main(["run", "--source", SOURCE, "--model", "plainnet:tiny", *limit]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tir run: error: {limit[0]} {limit[1]}") and err.count("\n") == 1


def test_run_with_a_backend_that_cannot_run_the_bundle_fails_at_start(capsys):
    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no bundle installed")
    assert main(["run", "--source", SOURCE, "--backend", "torch", "--deploy", "routes", "--frames", "3",
                 "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert "is ONNX: run it with --backend onnxruntime or tensorrt, not torch" in err
    assert "tir run: output" not in out  # refused before anything was opened
    # the shipped bundle's own deploy (auto) falls back to the routes on a backend without the
    # student, so the routes' message; auto asked for on the command line names the student
    assert main(["run", "--source", SOURCE, "--backend", "torch", "--frames", "3", "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert "is ONNX: run it with --backend onnxruntime or tensorrt, not torch" in err
    assert main(["run", "--source", SOURCE, "--backend", "torch", "--deploy", "auto", "--frames", "3",
                 "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert "the student runs on ONNX Runtime only, not 'torch'; use --backend onnxruntime or --deploy routes" in err
    assert "tir run: output" not in out


def test_run_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "3 the recording failed" in out and "SIGTERM" in out


def test_default_bench_times_a_real_route_and_says_which(tmp_path, capsys):
    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no bundle installed")
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "320x256", "--frames", "4", "--warmup", "1", "--no-progress",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    result = report["results"][0]
    # the default frames carry the noise degradation: the router runs a restoration route, not passthrough
    from tir.engines.bundle import load_bundle

    routes = set(load_bundle(default_bundle_path()).tasks)
    assert result["model_only"]["route"] in routes and result["pipeline"]["route"] in routes
    assert "degrade=noise" in result["pipeline"]["source"]
    # as tir run: the virtual camera's clean frames pinned as the reference, so the always-noisy
    # stream is not taken for the camera's own look while the gates warm up
    assert result["camera_reference"] == "48 clean frames of the virtual camera"      # model-only
    # the pipeline row runs the same model: its pin is kept, not repeated (48 frames, not 96)
    assert result["pipeline"]["camera_reference"] == "48 frames pinned before the pipeline ran"
    assert report["args"]["display"] == "auto" and report["args"]["degrade"] == "noise"
    header = next(line for line in text.splitlines() if line.startswith("mode"))
    assert header.split()[:3] == ["mode", "backend", "route"]
    model_row = next(line for line in text.splitlines() if line.startswith("model "))
    assert model_row.split()[2] == result["model_only"]["route"]
    assert "passthrough:" not in text


def test_bench_on_clean_frames_says_nothing_was_restored(capsys):
    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no bundle installed")
    assert main(["bench", "--mode", "model", "--size", "320x256", "--frames", "3", "--warmup", "1",
                 "--no-progress", "--degrade", "none"]) == 0
    text = capsys.readouterr().out
    assert " passthrough " in text and "these rows time no restoration" in text


def test_run_reference_options_are_checked(capsys, tiny_onnx, tmp_path):
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1",
                 "--reference-frames", "0"]) == 2
    assert "--reference-frames 0" in capsys.readouterr().err
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1",
                 "--reference", SOURCE, "--output", f"file://{tmp_path / 'r'}?preview=0"]) == 2
    assert "--reference pins the gates of automatic routing" in capsys.readouterr().err
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "1",
                 "--reference", "nope://x"]) == 2                      # checked before the model loads
    assert "nope" in capsys.readouterr().err


def test_bench_psnr_of_a_routed_model_is_judged_against_its_own_camera(tmp_path, monkeypatch):
    """The timed model's gates are pinned to the virtual camera's clean frames; the PSNR column's
    frames are another camera's, so they are scored by a fresh model pinned to their own clean
    frames, not by the one that knows only the virtual camera."""
    from tir.engines.bundle import default_bundle_path
    from tir.tools import bench

    if default_bundle_path() is None:
        pytest.skip("no bundle installed")
    clean = np.stack([np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32), (48, 1)) + 0.01 * i for i in range(5)])
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
    monkeypatch.setattr(bench, "psnr_frames", lambda sets, split, n, task: {
        "clean": clean, "degraded": noisy, "data": f"{sets} {split}", "task": task})
    scored = []
    real = bench.bench_psnr
    models = []
    monkeypatch.setattr(bench, "bench_psnr", lambda model, frames: models.append(model) or scored.append(model.status())
                        or real(model, frames))
    out = tmp_path / "b.json"
    assert main(["bench", "--mode", "model", "--size", "64x48", "--frames", "2", "--warmup", "0", "--no-progress",
                 "--backend", "onnxruntime", "--psnr-data", "fake", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert "clean frames of the virtual camera" in result["camera_reference"]
    assert scored[0]["camera_reference"] == {"pinned": len(clean)} and scored[0]["frames"] == 0
    assert result["psnr"]["frames"] == len(clean)
    # the scorer ran a network on the noisy frames, and its engines were closed after it
    assert result["psnr"]["db"] > 0 and models[0].status()["loaded_routes"] == []
    assert not models[0].status()["student_loaded"]


@pytest.mark.parametrize("options", [["--collect-rate", "5"], ["--collect-max-frames", "9", "--collect-max-mb", "1"]])
def test_collect_limits_without_collect_are_refused(capsys, options):
    # they were silently ignored (the run collected nothing, the user believed a limit applied)
    code = main(["run", "--source", SOURCE, "--frames", "2", "--output", "http://127.0.0.1:0", *options])
    err = capsys.readouterr().err
    assert code == 2 and f"{', '.join(o for o in options if o.startswith('--'))} " in err
    assert "only with --collect DIR" in err


def test_bench_both_with_another_source_times_the_pipeline_on_a_model_not_pinned_to_the_virtual_camera(
        tmp_path, monkeypatch):
    """--mode both: the model-only row pins the gates to the virtual camera's clean frames, for the
    model's life. The pipeline row on --source (another camera) ran that pinned model: a clean
    Boson-like folder was judged against the virtual camera's quieter look and timed on the noise
    route, where --mode pipeline (and tir run) passed it through. It now runs on a fresh model, which
    meets the folder's camera as tir run does."""
    import cv2

    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no bundle installed")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((48, 64), 60 + 20 * i, np.uint8))
    seen = []
    real = bench.bench_pipeline
    monkeypatch.setattr(bench, "bench_pipeline", lambda model, *a, **k: seen.append(model.status()) or real(model, *a, **k))
    out = tmp_path / "b.json"
    assert main(["bench", "--mode", "both", "--size", "64x48", "--frames", "2", "--warmup", "0", "--no-progress",
                 "--backend", "onnxruntime", "--source", f"file://{tmp_path}?loop=1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert "clean frames of the virtual camera" in result["camera_reference"]     # the model-only row's
    assert seen[0]["camera_reference"] is None and seen[0]["frames"] == 0
    assert result["pipeline"]["camera_reference"] is None


@pytest.mark.parametrize("outputs, says", [
    # the second output failed on the first: "port 8765 on 127.0.0.1 is in use"
    (["--output", "http://127.0.0.1:{port}", "--output", "http://127.0.0.1:{port}"], "both listen on port {port}"),
    (["--output", "http://127.0.0.1:{port}", "--output", "http://0.0.0.0:{port}"], "both listen on port {port}"),
    # "already holds a recording (frames.csv)": the first recorder had just made it
    (["--record", "{tmp}/rec", "--output", "file://{tmp}/rec"], "both write into {tmp}/rec"),
    (["--record", "{tmp}/rec", "--collect", "{tmp}/rec/unknown"], "one writes inside the other's folder"),
])
def test_two_outputs_that_would_take_the_same_port_or_folder_are_refused_before_any_opens(tmp_path, capsys,
                                                                                          outputs, says):
    import socket

    from tir.tools.cli import main

    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [a.format(port=port, tmp=tmp_path) for a in outputs]
    code = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--frames", "2", "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says.format(port=port, tmp=tmp_path) in err[0], err
    assert not (tmp_path / "rec").exists()   # nothing was opened


def test_two_records_record_both_folders(tmp_path, capsys, tiny_onnx):
    # `tir run --record A --record B` kept only B (argparse's last value wins)
    from tir.edge.outputs.recorder import read_recording

    a, b = tmp_path / "a", tmp_path / "b"
    code = main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3",
                 "--record", str(a), "--record", str(b), "--output", "http://127.0.0.1:0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    for folder in (a, b):
        frames, index = read_recording(folder)
        assert len(index) >= 3 and frames.shape[1:] == (120, 160)


@pytest.mark.parametrize("mode, args, says", [
    ("run", ["--frames", "3", "--frames", "4"], "--frames 3, then --frames 4"),
    ("run", ["--collect", "{tmp}/a", "--collect", "{tmp}/b"], "--collect {tmp}/a, then --collect {tmp}/b"),
    ("eval", ["--max-frames", "2", "--max-frames", "5"], "--max-frames 2, then --max-frames 5"),
    ("calibrate", ["--reduce-range", "--no-reduce-range"], "--reduce-range, then --no-reduce-range"),
    ("camera", ["info", "--port", "/dev/a", "--port", "/dev/b"], "--port /dev/a, then --port /dev/b"),
])
def test_an_option_of_one_value_given_twice_is_refused(tmp_path, capsys, mode, args, says):
    # argparse keeps the last of a repeated single-value option without a word
    with pytest.raises(SystemExit) as stop:
        main([mode, *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "given twice (" + says.format(tmp=tmp_path) + ")" in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_option_given_twice_with_one_value_passes(capsys, tiny_onnx):
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "2", "--frames", "2",
                 "--quiet", "--quiet", "--output", "http://127.0.0.1:0"]) == 0, capsys.readouterr().err


def test_two_windows_of_one_title_are_refused_before_any_opens():
    from tir.edge.outputs.base import OutputOptionError, check_output, check_outputs_apart

    with pytest.raises(OutputOptionError, match="both show in the window titled 'tir-edge'"):
        check_outputs_apart([check_output("display://0"), check_output("display://0?view=raw")])
    check_outputs_apart([check_output("display://0"), check_output("display://0?view=raw&title=raw")])


def test_a_long_reference_says_how_long_it_reads_and_keeps_no_frame(capsys, monkeypatch):
    # --reference-frames 100000 on a live reference read for an hour without a word, holding
    # every raw frame in a list (64 GB at 640x512) before pinning them
    from tir.engines import loading

    real = loading.pin_reference
    seen = []

    def pin(model, frames):
        seen.append(type(frames))
        return real(model, frames)

    monkeypatch.setattr(run, "pin_reference", pin)
    code = main(["run", "--source", SOURCE, "--frames", "2", "--quiet", "--output", "http://127.0.0.1:0",
                 "--reference", "synthetic://?size=160x120&realtime=0", "--reference-frames", "60"])
    out = capsys.readouterr().out
    assert code == 0
    assert "tir run: reading the camera reference: 60 source frames, read as fast as they decode" in out
    assert "camera reference pinned to 60 frames of synthetic://" in out
    assert seen and seen[0] is not list            # pinned as read, not gathered first


def test_output_none_runs_without_an_output_and_other_spellings_are_told_the_right_one(tmp_path, capsys, tiny_onnx,
                                                                                       monkeypatch):
    """Session 18: ``--output none`` (a user benchmarking, or recording only) recorded into a folder
    named ``none`` in the current folder, and there was no way to run without the HTTP output.
    Now it runs with no output of its own (``--record`` still records); ``null``/``off``/… name the
    right spelling; ``none`` beside another output is refused; ``./none`` is still a folder."""
    from tir.edge.outputs.recorder import read_recording

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3", "--output", "none"]) == 0
    out = capsys.readouterr().out
    assert "tir run: no output (--output none)" in out
    assert not (tmp_path / "none").exists()
    rec = tmp_path / "rec"
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3", "--output", "NONE",
                 "--record", str(rec), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"tir run: output file://{rec}" in out and "http://" not in out
    assert len(read_recording(rec)[1]) >= 3 and not (tmp_path / "NONE").exists()
    for word in ("null", "off", "headless"):
        assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3", "--output", word]) == 2
        err = capsys.readouterr().err
        assert f"--output {word}: to run without an output write --output none" in err and f"./{word}" in err
        assert not (tmp_path / word).exists()
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3", "--output", "none",
                 "--output", "http://127.0.0.1:0"]) == 2
    assert "--output none runs without an output, but --output http://127.0.0.1:0 is given too" in \
        capsys.readouterr().err
    assert main(["run", "--source", SOURCE, "--model", str(tiny_onnx), "--frames", "3", "--output", "./none",
                 "--quiet"]) == 0
    assert len(read_recording(tmp_path / "none")[1]) >= 3


@pytest.mark.parametrize("args, says", [
    (["--mode", "model", "--source", "synthetic://?size=160x120"],
     "--source does nothing here (tir bench --mode model): it acts in the pipeline rows"),
    (["--mode", "pipeline", "--warmup", "5"], "--warmup does nothing here (tir bench --mode pipeline)"),
    (["--mode", "pipeline", "--source", SOURCE, "--size", "320x256"],
     "--size does nothing here (tir bench --mode pipeline with --source)"),
    (["--mode", "pipeline", "--source", SOURCE, "--degrade", "blur"],
     "--degrade does nothing here (tir bench --mode pipeline with --source)"),
    (["--mode", "pipeline", "--duration", "2", "--frames", "9"],
     "--frames does nothing here (tir bench --mode pipeline with --duration)"),
    (["--mode", "model", "--duration", "2"], "--duration does nothing here (tir bench --mode model)"),
    (["--mode", "model", "--agc", "clahe"], "--agc does nothing here (tir bench --mode model)"),
    (["--mode", "model", "--in-flight", "3"], "--in-flight does nothing here (tir bench --mode model): it acts in "
                                              "--trt-style"),
    # its default written out is given too (only values were compared: --in-flight 2 ran)
    (["--mode", "model", "--in-flight", "2"], "--in-flight does nothing here (tir bench --mode model)"),
    (["--mode", "pipeline", "--trt-style"], "--trt-style does nothing here (tir bench --mode pipeline)"),
    (["--psnr-frames", "4"], "--psnr-frames does nothing here (tir bench --mode both): it acts in --psnr-data"),
    (["--rounds", "3"], "--rounds does nothing here (tir bench --mode both): it acts in --roofline"),
    (["--roofline", "--backend", "onnxruntime", "--frames", "9"], "--backend does nothing here (tir bench --roofline)"),
    (["--roofline", "--mode", "model"], "--mode does nothing here (tir bench --roofline)"),
])
def test_bench_refuses_an_option_its_run_does_not_read(capsys, args, says):
    """tir bench --mode model --source DIR timed synthetic frames without a word about DIR; every
    option a run ignores is refused the same way, before any model loads (exit 2)."""
    assert main(["bench", *args, "--no-progress"]) == 2
    assert says in capsys.readouterr().err


def test_bench_option_table_names_every_option_and_accepts_what_each_run_reads(tiny_onnx):
    import argparse

    from tir.tools.cli import option_defaults

    assert set(option_defaults(bench.add_arguments)) == set(bench.BENCH_READS)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    for argv in (["--mode", "both", "--source", SOURCE, "--size", "160x120", "--degrade", "blur", "--warmup", "1"],
                 ["--mode", "model", "--trt-style", "--in-flight", "3", "--psnr-data", "x", "--psnr-frames", "2"],
                 ["--mode", "pipeline", "--duration", "2", "--sample-every", "1", "--agc", "clahe"],
                 ["--roofline", "160x120", "--rounds", "2", "--int8", "d", "--size", "320x256", "--threads", "1"]):
        bench.refuse_ignored(parser.parse_args(argv))   # read by that run: no error
