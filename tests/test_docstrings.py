"""Public docstrings (issue #12 item 7): the counting tool, and coverage that cannot regress."""
import json
import textwrap

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
    assert (doc.array, doc.shapes, doc.units, doc.raising, doc.raises_documented) == (True, True, True, True, True)
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
