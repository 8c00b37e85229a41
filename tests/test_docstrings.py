"""Public docstrings (issue #12 item 7): the counting tool, and coverage that cannot regress."""
import json
import textwrap

import pytest

from tir.tools import docstats

SAMPLE = textwrap.dedent('''
    """A module."""
    import numpy as np


    def documented(frame: np.ndarray) -> np.ndarray:
        """Scale a frame.

        Args:
            frame: (H, W) uint16 Y16 counts.

        Raises:
            ValueError: ``frame`` is not 2-D.
        """
        if frame.ndim != 2:
            raise ValueError("not 2-D")
        return frame


    def bare(x):
        return x


    def reraises():
        """Period in ms."""
        try:
            pass
        except OSError:
            raise


    def _private():
        pass


    class Thing:
        """A thing."""

        def method(self):
            raise RuntimeError("no")

        @property
        def value(self):
            """The value."""
            return 1

        @value.setter
        def value(self, v):
            pass

        def _hidden(self):
            pass


    class _Private:
        def method(self):
            pass


    if __name__ == "__main__":
        def main():
            pass
''')


def sample_definitions(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    return docstats.module_definitions(path, "pkg", tmp_path)


def test_module_definitions_counts_public_functions_classes_and_methods_once(tmp_path):
    defs = sample_definitions(tmp_path)
    assert [(d.name, d.kind, d.documented) for d in defs] == [
        ("documented", "function", True),
        ("bare", "function", False),
        ("reraises", "function", True),
        ("Thing", "class", True),
        ("Thing.method", "method", False),
        ("Thing.value", "method", True),
    ]
    assert docstats.missing(defs) == ["sample.py:20 bare", "sample.py:39 Thing.method"]


def test_shapes_units_and_raises_are_detected(tmp_path):
    by_name = {d.name: d for d in sample_definitions(tmp_path)}
    doc = by_name["documented"]
    assert (doc.array, doc.shapes, doc.units) == (True, True, True)
    assert (doc.raising, doc.raises_documented) == (True, True)
    assert by_name["bare"].array  # parameter named x
    assert not by_name["reraises"].raising  # a bare re-raise is not a new error
    assert by_name["reraises"].units  # "ms"
    assert by_name["Thing.method"].raising


def test_table_rows_and_total(tmp_path):
    rows = docstats.table(sample_definitions(tmp_path))
    assert [r.package for r in rows] == ["pkg", "total"]
    pkg = rows[0]
    assert (pkg.public, pkg.documented, pkg.array, pkg.shapes, pkg.units, pkg.raising,
            pkg.raises_documented) == (6, 4, 1, 1, 2, 1, 1)
    assert rows[1] == docstats.Row("total", 6, 4, 1, 1, 2, 1, 1)
    text = docstats.format_table(rows)
    assert "4 (67%)" in text  # documented 4 of 6


def test_main_json_and_unknown_package(capsys):
    assert docstats.main(["tir.calibration", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["package"] for r in rows] == ["tir.calibration", "total"]
    assert rows[0]["public"] == rows[1]["public"] > 0
    try:
        docstats.main(["tir.nothing"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("an unknown package must be refused")
    assert "unknown package 'tir.nothing'" in capsys.readouterr().err


# --- coverage that cannot regress ------------------------------------------------------------
#: the whole package: every package of setup.py's FOLDERS, every public definition in it
COVERED_PACKAGES = tuple(docstats.PACKAGES)

#: documented definitions whose own body raises but which raise nothing to the caller, so their
#: docstring rightly has no "Raises:" section: path and name -> why
RAISES_NOTHING = {
    ("edge/outputs/http.py", "HTTPOutput.pipeline_stats"):
        "its TypeError is caught by its own except, which reports every error in stats_error",
}


def covered_definitions():
    return docstats.collect(COVERED_PACKAGES)


def test_covered_definitions_are_all_found():
    defs = covered_definitions()
    assert {d.package for d in defs} == set(docstats.PACKAGES)  # no package of setup.py left out
    modules = {d.path for d in defs}
    for path in ("engines/engine.py", "edge/agc.py", "calibration/qdq.py", "engines/adapt.py",
                 "engines/router.py", "engines/training/pruning.py", "engines/training/models/plainnet.py",
                 "engines/training/distill.py", "engines/training/train.py",
                 "engines/training/models/ecmrnet.py", "engines/training/models/student.py",
                 "tools/run.py", "tools/cli.py", "tools/camera.py", "tools/docstats.py"):
        assert path in modules, f"{path} has no public definitions any more"
    names = {(d.path, d.name) for d in defs}
    assert ("tools/docstats.py", "Row.add") in names and ("engines/adapt.py", "source_stats") in names
    for key in RAISES_NOTHING:
        assert key in names, f"{key} is gone: drop it from RAISES_NOTHING"
    assert len(defs) > 1100


def test_every_public_definition_has_a_docstring():
    offenders = docstats.missing(covered_definitions())
    assert not offenders, ("public definitions without a docstring (write one: summary, shapes/dtypes, "
                           "units, Raises):\n" + "\n".join(offenders))


def test_every_array_function_names_a_shape_or_dtype():
    offenders = [f"{d.path}:{d.line} {d.name}" for d in covered_definitions()
                 if d.documented and d.array and not d.shapes]
    assert not offenders, ("functions taking or returning arrays whose docstring names no shape or dtype "
                           "(say e.g. (N, 1, H, W) float32):\n" + "\n".join(offenders))


def test_every_raising_function_says_raises():
    offenders = [f"{d.path}:{d.line} {d.name}" for d in covered_definitions()
                 if d.documented and d.raising and not d.raises_documented
                 and (d.path, d.name) not in RAISES_NOTHING]
    assert not offenders, ("functions that raise but whose docstring has no Raises: section (name each "
                           "exception and when):\n" + "\n".join(offenders))


def test_engine_infer_documents_shapes_and_errors():
    by_name = {d.name: d for d in docstats.collect(["tir.engines"]) if d.path == "engines/engine.py"}
    infer = by_name["Engine.infer"]
    assert infer.documented and infer.shapes and infer.raises_documented


def test_main_counts_another_checkout_with_root(tmp_path, capsys):
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "sample.py").write_text(SAMPLE)
    assert docstats.main(["tir.engines", "--root", str(tmp_path), "--json", "--fail-missing"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert (rows[0]["package"], rows[0]["public"], rows[0]["documented"]) == ("tir.engines", 6, 4)
    try:
        docstats.main(["--root", str(tmp_path / "nothing")])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("a root without engines/ must be refused")


def test_package_map_is_read_from_setup_py(tmp_path):
    assert docstats.PACKAGES["tir.edge.camera"] == "edge/camera"
    assert docstats.PACKAGES["tir.engines.training.models"] == "engines/training/models"
    assert len(docstats.PACKAGES) == 12 and list(docstats.PACKAGES)[0] == "tir.edge"
    (tmp_path / "setup.py").write_text('FOLDERS = {"tir.a": "a", "tir.a.b": "a/b"}\nsetup(packages=list(FOLDERS))\n')
    assert docstats.package_folders(tmp_path) == {"tir.a": "a", "tir.a.b": "a/b"}
    (tmp_path / "setup.py").write_text("setup(packages=[])\n")
    with pytest.raises(ValueError, match="assigns no FOLDERS"):
        docstats.package_folders(tmp_path)
    installed = tmp_path / "site" / "tir"  # an installed tir folder: no setup.py, packages by __init__.py
    for folder in ("edge", "edge/camera", "tools"):
        (installed / folder).mkdir(parents=True)
        (installed / folder / "__init__.py").write_text("")
    (installed / "web").mkdir()
    assert docstats.package_folders(installed) == {"tir.edge": "edge", "tir.edge.camera": "edge/camera",
                                                   "tir.tools": "tools"}
