"""``python -m tir.tools.docstats``: how well the public definitions of ``tir`` are documented.

Walks the package's source files with :mod:`ast` (nothing is imported or run) and counts, per
package (``tir.edge``, ``tir.edge.camera``, ``tir.engines`` ...):

* **public**: module-level functions and classes whose name does not start with ``_``, and
  the public methods (name not starting with ``_``) of those classes; a property's setter or
  deleter is the same definition as its getter and is not counted again;
* **documented**: those with a docstring;
* **array** / **shapes**: documented functions and methods that take or return arrays (an
  annotation naming ``ndarray``/``Tensor``, or an unannotated parameter named like a frame or
  batch, see :data:`ARRAY_PARAMS`), and of those how many mention a shape or a dtype
  (``(H, W)``, ``N×1×H×W``, ``shape``, ``uint16``, ``float32`` ...);
* **units**: documented definitions that name a unit (ms, °C, K, counts, GMAC, Hz, fps,
  bytes, seconds ...);
* **raising** / **Raises**: documented functions and methods whose own body has a
  ``raise SomeError`` (a bare re-``raise`` does not count), and of those how many say
  ``Raises``.

The issue that asked for this (#12 item 7) counted 747 public definitions, 56 % documented,
15 % of those giving shapes and 7 % the errors raised. ``--missing`` lists the undocumented
definitions as ``path:line name``; ``--json`` prints the table as JSON; ``--root DIR`` counts another
checkout (e.g. the main branch, for before/after numbers). The same counts are
available to tests through :func:`collect` and :func:`missing`.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

#: The repository root (editable install) or the installed ``tir`` folder: both hold the
#: package folders below side by side.
ROOT = Path(__file__).resolve().parent.parent


def package_folders(root: Path = ROOT) -> Dict[str, str]:
    """Import name -> folder under ``root`` (``"tir.edge.camera": "edge/camera"``).

    In a checkout (an editable install) this is setup.py's ``FOLDERS``, the one place the
    mapping is written: read with :func:`ast.literal_eval`, nothing run. In an installed ``tir``
    folder (no setup.py) it is every folder below ``root`` that holds an ``__init__.py``.

    Raises:
        ValueError: ``root/setup.py`` assigns no ``FOLDERS`` dict literal (say where the
            package-to-folder map went, here and in setup.py).
    """
    setup = root / "setup.py"
    if not setup.is_file():
        folders = sorted(p.parent.relative_to(root) for p in root.glob("*/**/__init__.py"))
        return {"tir." + ".".join(f.parts): f.as_posix() for f in folders}
    for node in ast.parse(setup.read_text(encoding="utf-8"), str(setup)).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["FOLDERS"]:
            return dict(ast.literal_eval(node.value))
    raise ValueError(f"{setup} assigns no FOLDERS = {{import name: folder}} literal; "
                     "docstats reads the package map from there")


#: Import name -> folder under :data:`ROOT`: setup.py's mapping (:func:`package_folders`).
PACKAGES: Dict[str, str] = package_folders()

#: Parameter names taken to be arrays when not annotated (frames, batches, images, tensors).
ARRAY_PARAMS = frozenset({
    "frame", "frames", "image", "images", "img", "batch", "batches", "y16", "counts", "array",
    "arr", "tensor", "x", "clean", "noisy", "degraded", "restored", "pred", "lut",
    "display", "bgr", "gray", "embedding", "embeddings", "features", "stack",
})
_ARRAY_ANNOTATION = re.compile(r"ndarray|NDArray|\bTensor\b|\barray\b")
_SHAPE = re.compile(
    r"\(\s*[NCHWB]\s*,|\(\w+,\)|[NCHWB]\s*[×x]\s*[0-9NCHW]|\b[1-4N]-D\b|\bshape\b|\bdtype\b"
    r"|\b(?:u?int(?:8|16|32|64)|float(?:16|32|64)|bool)\b",
)
_UNITS = re.compile(
    r"\bms\b|°C|\bdeg ?C\b|\bK\b|kelvin|\bcounts?\b|\bGMACs?\b|\bMACs?\b|\bHz\b|\bfps\b"
    r"|\bbytes?\b|\bMiB\b|\bMB\b|\bGB\b|\bseconds?\b|\bs\)|\bpixels?\b|\bpx\b|\bbits?\b|\bbaud\b"
    r"|\bframes per\b|\bdB\b|\bpercent\b|%",
    re.IGNORECASE,
)
_RAISES = re.compile(r"\bRaises?\b")


@dataclass
class Definition:
    """One public definition: where it is, what it is, what its docstring says."""

    package: str
    path: str  # relative to ROOT
    line: int
    name: str  # qualified within the module: ``func``, ``Class`` or ``Class.method``
    kind: str  # "function", "class" or "method"
    documented: bool
    array: bool = False  # takes or returns arrays (functions and methods only)
    shapes: bool = False  # docstring names a shape or dtype
    units: bool = False  # docstring names a unit
    raising: bool = False  # own body raises an exception (functions and methods only)
    raises_documented: bool = False  # docstring says "Raises"


@dataclass
class Row:
    """Counts for one package (or the total)."""

    package: str
    public: int = 0
    documented: int = 0
    array: int = 0
    shapes: int = 0
    units: int = 0
    raising: int = 0
    raises_documented: int = 0

    def add(self, d: Definition) -> None:
        """Count one definition: ``public`` always; the other columns only when it is documented
        (``shapes`` among the ``array`` ones, ``raises_documented`` among the ``raising`` ones).
        """
        self.public += 1
        if not d.documented:
            return
        self.documented += 1
        self.array += d.array
        self.shapes += d.array and d.shapes
        self.units += d.units
        self.raising += d.raising
        self.raises_documented += d.raising and d.raises_documented


def _own_raises(node: ast.AST) -> bool:
    """Whether ``node``'s body raises an exception itself (nested defs and classes excluded)."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(child, ast.Raise) and child.exc is not None:
            return True
        stack.extend(ast.iter_child_nodes(child))
    return False


def _takes_arrays(node) -> bool:
    args = node.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    for a in params:
        if a.annotation is not None:  # an annotation decides (``frame: Frame`` is no array)
            if _ARRAY_ANNOTATION.search(ast.unparse(a.annotation)):
                return True
        elif a.arg in ARRAY_PARAMS:
            return True
    return node.returns is not None and bool(_ARRAY_ANNOTATION.search(ast.unparse(node.returns)))


def _is_accessor(node) -> bool:
    """A ``@prop.setter`` / ``@prop.deleter``: the same public definition as its getter."""
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
               for d in node.decorator_list)


def _top_level(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking inside ``if``/``try`` blocks (e.g. TYPE_CHECKING)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if isinstance(stmt.test, ast.Compare) and "__name__" in ast.unparse(stmt.test):
                continue  # ``if __name__ == "__main__":`` defines nothing public
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *[h.body for h in stmt.handlers]):
                yield from _top_level(block)
        else:
            yield stmt


def _definition(package, rel, node, name, kind) -> Definition:
    doc = ast.get_docstring(node) or ""
    d = Definition(package, rel, node.lineno, name, kind, documented=bool(doc.strip()))
    d.units = bool(_UNITS.search(doc))
    d.raises_documented = bool(_RAISES.search(doc))
    d.shapes = bool(_SHAPE.search(doc))
    if kind != "class":
        d.array = _takes_arrays(node)
        d.raising = _own_raises(node)
    return d


def module_definitions(path: Path, package: str = "", root: Path = ROOT) -> List[Definition]:
    """The public definitions in one source file, in source order.

    Args:
        path: a ``.py`` file.
        package: the import name reported for it (e.g. ``"tir.edge"``).
        root: ``path`` is reported relative to this folder.

    Raises:
        SyntaxError: the file does not parse.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    try:
        rel = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        rel = str(path)
    out: List[Definition] = []
    for node in _top_level(tree.body):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith("_"):
            continue
        if isinstance(node, ast.ClassDef):
            out.append(_definition(package, rel, node, node.name, "class"))
            for member in node.body:
                if (isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                        and not member.name.startswith("_") and not _is_accessor(member)):
                    kind = "class" if isinstance(member, ast.ClassDef) else "method"
                    out.append(_definition(package, rel, member, f"{node.name}.{member.name}", kind))
        else:
            out.append(_definition(package, rel, node, node.name, "function"))
    return out


def package_files(package: str, root: Path = ROOT) -> List[Path]:
    """The source files of one package (not its subpackages), public modules and ``__init__``."""
    folder = root / PACKAGES[package]
    return sorted(p for p in folder.glob("*.py")
                  if p.name == "__init__.py" or not p.name.startswith("_"))


def collect(packages: Optional[Iterable[str]] = None, root: Path = ROOT) -> List[Definition]:
    """Every public definition of ``packages`` (default: all of :data:`PACKAGES`).

    Raises:
        KeyError: a name in ``packages`` is not one of :data:`PACKAGES`.
    """
    out: List[Definition] = []
    for package in (PACKAGES if packages is None else packages):
        for path in package_files(package, root):
            out.extend(module_definitions(path, package, root))
    return out


def missing(definitions: Iterable[Definition]) -> List[str]:
    """``path:line name`` for each definition without a docstring."""
    return [f"{d.path}:{d.line} {d.name}" for d in definitions if not d.documented]


def table(definitions: Iterable[Definition]) -> List[Row]:
    """Per-package counts in :data:`PACKAGES` order, then a ``total`` row."""
    rows: Dict[str, Row] = {}
    total = Row("total")
    for d in definitions:
        rows.setdefault(d.package, Row(d.package)).add(d)
        total.add(d)
    ordered = [rows[p] for p in PACKAGES if p in rows] + [r for p, r in rows.items() if p not in PACKAGES]
    return ordered + [total]


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.0f}%)" if whole else f"{part} (-)"


def format_table(rows: Sequence[Row]) -> str:
    """The table as aligned text: counts with percentages of the column they are part of."""
    head = ("package", "public", "documented", "array fns", "shapes/dtypes", "units", "raising",
            "Raises")
    lines = [head]
    for r in rows:
        lines.append((r.package, str(r.public), _pct(r.documented, r.public), str(r.array),
                      _pct(r.shapes, r.array), _pct(r.units, r.documented), str(r.raising),
                      _pct(r.raises_documented, r.raising)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines]
    text.insert(1, "-" * len(text[0]))
    text.insert(len(text) - 1, "-" * len(text[0]))
    return "\n".join(text)


LEGEND = ("documented: % of public; shapes/dtypes: % of documented functions taking or returning "
          "arrays;\nunits: % of documented; Raises: % of documented functions whose own body raises.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table (or JSON, or the undocumented definitions); returns the exit status.

    ``--fail-missing`` makes the exit status 1 when any definition lacks a docstring.
    """
    parser = argparse.ArgumentParser(prog="python -m tir.tools.docstats", description=__doc__.split("\n")[0])
    parser.add_argument("packages", nargs="*", metavar="PACKAGE",
                        help=f"packages to count (default: all): {', '.join(PACKAGES)}")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--missing", action="store_true",
                        help="list the public definitions without a docstring (path:line name)")
    parser.add_argument("--fail-missing", action="store_true",
                        help="exit status 1 when a public definition lacks a docstring")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the tree to count (a checkout holding edge/, engines/, calibration/, tools/; "
                             "default: this installation's)")
    args = parser.parse_args(argv)
    if not (args.root / "engines").is_dir():
        parser.error(f"--root {args.root} holds no engines/ folder; give a tir-edge checkout")
    unknown = [p for p in args.packages if p not in PACKAGES]
    if unknown:
        parser.error(f"unknown package {unknown[0]!r}; choose from {', '.join(PACKAGES)}")
    definitions = collect(args.packages or None, args.root)
    rows = table(definitions)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(format_table(rows))
        print(LEGEND)
    undocumented = missing(definitions)
    if args.missing:
        print("\n".join(undocumented) if undocumented else "every public definition has a docstring")
    return 1 if args.fail_missing and undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
