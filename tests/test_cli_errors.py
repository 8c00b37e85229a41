"""The thin CLI: one TirError base with exit codes (edge/errors.py), caught once by tir.tools.cli,
and modes that import no other mode's module (issue #12, item 3)."""
import ast
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tir.edge import errors
from tir.edge.errors import (InputError, MissingDependency, ModelError, OutputFailed, OutputUnavailable, TirError,
                             UsageError)
from tir.tools import cli

TOOLS = Path(cli.__file__).parent


def test_the_exit_code_table():
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_REFUSED, errors.EXIT_OUTPUT_LOST,
            errors.EXIT_INTERRUPTED) == (0, 1, 2, 3, 130)
    assert [k.exit_code for k in (TirError, UsageError, InputError, ModelError, OutputUnavailable, OutputFailed,
                                  MissingDependency)] == [1, 2, 2, 2, 2, 3, 3]
    assert issubclass(UsageError, ValueError)  # `except ValueError` around argument checks still catches it


def _kinds():
    from tir.calibration.data import CalibrationDataError
    from tir.edge.camera.boson import BosonCRCError, BosonPortError, BosonTimeout
    from tir.edge.camera.ffc import CameraNotFound
    from tir.edge.camera.tau import TauPortError
    from tir.edge.outputs.base import OutputError, OutputOptionError
    from tir.edge.registry import OptionError
    from tir.edge.sources.base import SourceError, SourceOptionError
    from tir.engines.adapt import AdaptationRefused
    from tir.engines.bundle import BundleError
    from tir.engines.cache import EngineCacheError
    from tir.engines.training.datasets import DatasetError
    from tir.engines.degrade import DegradationError
    from tir.engines.engine import EngineError
    from tir.engines.loading import ModelNotFound
    from tir.tools.run import CameraControlError

    return [  # (class, kind, exit code, the built-in base it kept)
        (SourceOptionError, UsageError, 2, RuntimeError), (OutputOptionError, UsageError, 2, RuntimeError),
        (OptionError, UsageError, 2, ValueError), (DegradationError, UsageError, 2, ValueError),
        (SourceError, InputError, 2, RuntimeError), (CameraNotFound, InputError, 2, LookupError),
        (BosonPortError, InputError, 2, Exception), (TauPortError, InputError, 2, Exception),
        (DatasetError, InputError, 2, ValueError), (CalibrationDataError, InputError, 2, ValueError),
        (AdaptationRefused, InputError, 2, ValueError), (CameraControlError, InputError, 2, RuntimeError),
        (BundleError, ModelError, 2, RuntimeError), (EngineError, ModelError, 2, RuntimeError),
        (ModelNotFound, ModelError, 2, RuntimeError), (EngineCacheError, ModelError, 2, RuntimeError),
        (OutputError, OutputUnavailable, 2, RuntimeError),
        (BosonTimeout, TirError, 1, Exception), (BosonCRCError, TirError, 1, Exception),
    ]


def test_the_project_errors_are_tir_errors_of_their_kind_and_keep_their_bases():
    for cls, kind, code, base in _kinds():
        assert issubclass(cls, kind) and issubclass(cls, base), cls
        assert cls.exit_code == code, cls


@pytest.mark.parametrize("exc, code, lines", [
    (UsageError("--frames 0: give a number of frames >= 1"), 2, ["--frames 0: give a number of frames >= 1"]),
    (ModelError("manifest.json: files: route-a.onnx sha256 differs\nmanifest.json: no router"), 2,
     ["manifest.json: files: route-a.onnx sha256 differs", "manifest.json: no router"]),
    (OutputFailed("recording to /mnt/r: No space left on device (ENOSPC)"), 3,
     ["recording to /mnt/r: No space left on device (ENOSPC)"]),
    (TirError("stage infer failed: boom"), 1, ["stage infer failed: boom"]),
])
def test_the_entry_point_prints_each_line_of_a_tir_error_and_returns_its_code(monkeypatch, capsys, exc, code, lines):
    def raising(args):
        raise exc

    fake = types.SimpleNamespace(add_arguments=lambda parser: None, main=raising)
    monkeypatch.setattr(cli.MODES, "load", lambda name: fake)
    assert cli.main(["doctor"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == "".join(f"tir doctor: error: {line}\n" for line in lines)


def _tir(*argv, timeout=120):
    """``python -m tir.tools ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "tir.tools", *argv], capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def test_unknown_uri_option_is_one_line_and_exit_2():
    code, out, err = _tir("run", "--source", "synthetic://?degarde=noise", "--port", "0", "--frames", "1")
    assert code == 2, err
    assert err.startswith("tir run: error: synthetic://?degarde=noise: unknown option degarde; valid options:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "tir run: output" not in out


def test_missing_bundle_dir_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "no-bundle"
    code, _, err = _tir("run", "--source", "synthetic://?size=160x120&realtime=0", "--model", str(missing),
                        "--port", "0", "--frames", "1")
    assert code == 2
    from tir.engines.models import runnable

    assert err == (f"tir run: error: model {str(missing)!r} does not exist; pass a bundle folder, an "
                   f".onnx/.pt/.engine file or one of {', '.join(runnable())}\n")
    code, _, err = _tir("adapt", "--bundle", str(missing), "--measure", "cam8")
    assert code == 2 and err.startswith("tir adapt: error: ") and len(err.splitlines()) == 1, err


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    from tir.engines.training.models.plainnet import export_plainnet_onnx

    model = export_plainnet_onnx("tiny", tmp_path / "tiny.onnx")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        code, _, err = _tir("run", "--source", "synthetic://?size=160x120&realtime=0", "--model", str(model),
                            "--frames", "1", "--port", str(port))
    finally:
        busy.close()
    assert code == 2
    assert err == (f"tir run: error: port {port} on 127.0.0.1 is in use; pick another with --port / "
                   "http://127.0.0.1:PORT\n")


def test_bad_size_in_bench_is_a_usage_error():
    code, _, err = _tir("bench", "--size", "big", "--mode", "model")
    assert code == 2 and err == "tir bench: error: size 'big' is not WIDTHxHEIGHT, e.g. 640x512\n"


def _imported_modules(path: Path):
    """Every module name ``path`` imports, relative imports resolved inside tir.tools."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"tir.tools.{base}" if base else "tir.tools"
            names.append(base)
            if base == "tir.tools":  # from . import run / from tir.tools import run
                names += [f"tir.tools.{a.name}" for a in node.names]
    return names


def test_no_mode_imports_another_mode():
    modes = set(cli.MODES.names())
    files = sorted(TOOLS.glob("*.py"))
    assert {p.stem for p in files} >= modes
    offenders = {}
    for path in files:
        if path.stem not in modes:
            continue  # cli.py (shared argument groups), __init__, __main__, soak (a script)
        others = sorted({n for n in _imported_modules(path)
                         if n.startswith("tir.tools.") and n.split(".")[2] in modes and n.split(".")[2] != path.stem})
        if others:
            offenders[path.name] = others
    assert offenders == {}


def test_the_moved_library_modules_do_not_import_torch():
    code = ("import sys; import tir.engines.loading, tir.engines.benchmarks, tir.edge.machine, tir.edge.errors, "
            "tir.tools.run, tir.tools.bench, tir.tools.doctor; "
            "print(sorted(m for m in ('torch', 'tir.tools.build') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


SHARED_OPTIONS = ("--model", "--backend", "--task", "--deploy", "--threads", "--source", "--bundle", "--json")


def test_shared_options_are_defined_once_in_cli():
    """--model/--backend/--threads/--source/--bundle/--json of the runtime modes come from the argument
    groups of tools/cli.py (the training modes train/learn/distill/export keep their own torch options;
    doctor's and camera's --json are on/off flags, discover's --model names the collecting bundle)."""
    defined = {}
    for mode in ("run", "bench", "eval", "adapt", "calibrate", "build"):
        tree = ast.parse((TOOLS / f"{mode}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in SHARED_OPTIONS):
                defined.setdefault(mode, []).append(node.args[0].value)
    assert defined == {}
    import argparse

    for mode, expected in (("run", {"threads": None, "source": None, "model": None}),
                           ("calibrate", {"threads": 2, "source": "synthetic"}),
                           ("eval", {"threads": None, "json": None, "bundle": None})):
        parser = argparse.ArgumentParser()
        cli.MODES.load(mode).add_arguments(parser)
        argv = ["--bundle", "b", "--out", "o"] if mode == "calibrate" else []
        values = vars(parser.parse_args(argv))
        assert {k: values[k] for k in expected} == {**expected, **({"bundle": None} if "bundle" in expected else {})}


def test_add_a_cli_mode_is_one_module_and_its_registry_entry(monkeypatch, tmp_path, capsys):
    """docs/architecture.md, "Add a CLI mode": a library function, a mode module using the shared
    argument groups, one MODES line; --help, error lines and exit codes come from the entry point."""
    import json

    def count_frames(folder: Path) -> int:  # 1. the library function: raises a TirError kind
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder; give one with recordings (tir run --record DIR)")
        return len(list(folder.glob("*.png")))

    mode = types.ModuleType("tir_toy_mode")  # 2. the mode module

    def add_arguments(parser):
        cli.add_source_argument(parser, "a folder of PNG frames")
        cli.add_json_argument(parser)

    def main(args):
        n = count_frames(Path(args.source))
        print(f"tir frames: {n} frames")
        if args.json:
            Path(args.json).write_text(json.dumps({"frames": n}))
        return 0

    mode.add_arguments, mode.main = add_arguments, main
    monkeypatch.setitem(sys.modules, "tir_toy_mode", mode)
    cli.MODES.register("frames", "tir_toy_mode", help="count the frames of a folder")  # 3. one MODES line
    try:
        (tmp_path / "a.png").write_bytes(b"")
        assert cli.main(["frames", "--source", str(tmp_path), "--json", str(tmp_path / "n.json")]) == 0
        assert capsys.readouterr().out == "tir frames: 1 frames\n"
        assert json.loads((tmp_path / "n.json").read_text()) == {"frames": 1}
        assert cli.main(["frames", "--source", str(tmp_path / "nowhere")]) == 2
        assert capsys.readouterr().err == (f"tir frames: error: {tmp_path / 'nowhere'}: no such folder; give one "
                                           "with recordings (tir run --record DIR)\n")
        with pytest.raises(SystemExit):
            cli.main(["frames", "--help"])
        assert "a folder of PNG frames" in capsys.readouterr().out
    finally:
        cli.MODES.unregister("frames")


def test_a_missing_optional_package_is_one_line_and_exit_3(monkeypatch, capsys):
    """`tir export` without onnx (and `tir train`/`learn`/`distill` without torch, `tir calibrate`
    without onnx): one line naming the package and how to install it, MissingDependency's exit 3,
    no traceback (before: ModuleNotFoundError traceback, exit 1)."""
    bundle = Path(cli.__file__).parents[1] / "engines" / "bundles" / "edge"
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ModuleNotFoundError(name="onnx")
    assert cli.main(["export", "--bundle", str(bundle), "--size", "64x64"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tir export: error: this mode needs the onnx package (pip install onnx")
    assert err[0].endswith("install it and run tir export again")


def test_only_optional_packages_become_missing_dependency(monkeypatch, capsys):
    mode = types.ModuleType("tir_toy_import")

    def main(args):
        import torch  # noqa: F401  (blocked below)
        return 0

    mode.add_arguments, mode.main = (lambda parser: None), main
    monkeypatch.setitem(sys.modules, "tir_toy_import", mode)
    monkeypatch.setitem(sys.modules, "torch", None)
    cli.MODES.register("toyimport", "tir_toy_import", help="imports torch")
    try:
        assert cli.main(["toyimport"]) == 3
        assert capsys.readouterr().err.startswith("tir toyimport: error: this mode needs torch (pip install torch")
        # a module of the project itself that is missing is a bug: its traceback is kept
        exc = ModuleNotFoundError("No module named 'tir.engines.train'", name="tir.engines.train")
        assert cli.missing_dependency("train", exc) is None
        monkeypatch.setitem(sys.modules, "torch", None)

        def broken(args):
            raise exc
        mode.main = broken
        with pytest.raises(ModuleNotFoundError, match="tir.engines.train"):
            cli.main(["toyimport"])
    finally:
        cli.MODES.unregister("toyimport")


def test_a_backend_that_cannot_run_here_stops_before_the_model_loads(monkeypatch):
    """``--backend tensorrt`` without TensorRT: MissingDependency (exit 3) from load_model,
    naming what to install, before any bundle is read (it used to fail in the infer stage)."""
    from tir.edge.errors import MissingDependency
    from tir.engines import backends
    from tir.engines.loading import load_model

    monkeypatch.setattr(backends, "_importable", lambda module: module not in ("tensorrt", "pycuda"))
    with pytest.raises(MissingDependency, match="tensorrt backend needs tensorrt and pycuda") as err:
        load_model("/nonexistent/bundle", backend="tensorrt")
    assert err.value.exit_code == 3
    backends.require_backend("auto")  # auto always runs (it picks what is installed)


def test_export_out_never_overwrites_an_existing_folder(tmp_path, capsys):
    """``tir export --out DIR`` writes a new bundle; an existing non-empty DIR (or a file) is
    refused with exit 2 before anything is exported, and its contents are kept."""
    from tir.engines.bundle import default_bundle_path
    from tir.tools import cli

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert cli.main(["export", "--bundle", str(default_bundle_path()), "--out", str(taken)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli.main(["export", "--bundle", str(default_bundle_path()), "--out", str(afile)]) == 2
    assert afile.read_text() == "x"


@pytest.mark.parametrize("mode", ["run", "bench", "eval", "adapt", "calibrate", "deploy", "train", "distill", "learn"])
def test_threads_below_one_is_refused_by_the_parser_in_every_mode(mode, capsys):
    # `tir run --threads 0` used to start, then stop with "stage infer failed" (exit 1)
    import argparse

    parser = argparse.ArgumentParser(prog=f"tir {mode}")
    cli.MODES.load(mode).add_arguments(parser)
    for bad, says in (("0", "0: give a number of threads >= 1"), ("-2", "-2: give a number of threads >= 1"),
                      ("two", "'two' is not a whole number of threads")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--threads", bad])
        assert stop.value.code == 2
        assert capsys.readouterr().err.endswith(f"tir {mode}: error: argument --threads: {says}\n")
    assert cli.thread_count("3") == 3


def test_threads_zero_stops_tir_run_before_it_starts():
    code, out, err = _tir("run", "--source", "synthetic://?size=160x120&realtime=0", "--port", "0",
                          "--frames", "1", "--threads", "0")
    assert code == 2 and err.endswith("tir run: error: argument --threads: 0: give a number of threads >= 1\n")
    assert "tir run: output" not in out


@pytest.mark.parametrize("argv, option", [
    (["run", "--record", ""], "--record"),            # recorded nothing, exit 0
    (["run", "--source", " "], "--source"),           # took the default camera
    (["run", "--output", "http://127.0.0.1:0", "--output", ""], "--output"),
    (["run", "--reference", ""], "--reference"),      # read the current folder
    (["adapt", "--source", "synthetic://", "--out", ""], "--out"),
    (["eval", "--data", ""], "--data"),
])
def test_an_empty_option_value_is_refused_in_every_mode(capsys, argv, option):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert f"argument {option}: an empty value names nothing" in capsys.readouterr().err
