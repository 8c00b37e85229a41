"""The runtime / training line (issue #12 item 2, docs/architecture.md "Layers").

Three layers, read from the source with ``ast`` (every ``import`` and ``from ... import`` in
the file, at module level or inside a function, relative ones resolved):

- the **leaf**, ``tir.engines.degrade`` (degradation catalogue and synthesis): imports nothing
  from tir except :data:`LEAF_MAY_IMPORT`, and no torch;
- the **runtime**, every other module of ``tir.edge``, ``tir.engines`` and ``tir.calibration``:
  never imports the training package, and imports torch only inside a function of the modules in
  :data:`LAZY_TORCH` (backends a user picks explicitly);
- **training**, ``tir.engines.training``: may import the runtime and the leaf.

The CLI (``tir.tools``) may import both, but training and torch only inside functions (a mode
imports what it needs when it runs); ``test_tir_run_and_bench_run_with_torch_unimportable``
runs the default modes with torch and the training package blocked.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = "tir.engines.training"
LEAF = "tir.engines.degrade"
#: the leaf's only tir imports: the registry helpers its op table is built with, its errors, the JSON reader
LEAF_MAY_IMPORT = {"tir.edge.registry", "tir.edge.errors", "tir.edge.jsontext", "tir.edge.regular"}  # stdlib, numpy, OpenCV
#: runtime modules that may import torch, only inside a function: the torch backend (.pt files,
#: chosen by file type or --backend torch), and the TensorRT engine cache / CUDA stream pipeline,
#: which fall back to torch.cuda to query the device or run a torch stage on the stream
LAZY_TORCH = {"tir.engines.backends.torch", "tir.engines.cache", "tir.engines.cuda_pipeline"}
#: runtime modules that may NAME a training module in a string ("module:attr" registry entries,
#: imported on first use): the preset registry's reference networks, built (with torch) only for
#: ``tir run/bench --model plainnet:*``
MAY_NAME_TRAINING = {"tir.engines.models"}
HEAVY = ("torch", "torchvision")


def folders() -> Dict[str, str]:
    """setup.py's FOLDERS (package -> folder), read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "FOLDERS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FOLDERS mapping")


def modules() -> Dict[str, Path]:
    """Every module of the tir namespace -> its file."""
    out = {}
    for package, folder in folders().items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def imports(name: str, path: Path, source: str = None) -> List[Tuple[str, int, bool]]:
    """(absolute module, line, inside a function) of every import in the file; ``from P import
    x`` gives ``P.x`` too when that is a module of tir (so ``from tir.engines import training``
    counts)."""
    known = set(modules())
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                found.append((target, child.lineno, in_function))
                found.extend((f"{target}.{a.name}", child.lineno, in_function) for a in child.names
                             if f"{target}.{a.name}" in known)
            visit(child, inner)

    visit(tree, False)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer(name: str) -> str:
    if _within(name, TRAINING):
        return "training"
    if name == LEAF:
        return "leaf"
    if _within(name, "tir.tools"):
        return "cli"
    return "runtime"


def violations(name: str, path: Path, source: str = None) -> List[str]:
    """The imports of module ``name`` (file ``path``) that cross the line, one line each."""
    where = layer(name)
    bad, lines = [], set()
    for target, line, in_function in imports(name, path, source):
        if line in lines:
            continue  # one report per statement
        heavy = target.split(".")[0] in HEAVY
        training = _within(target, TRAINING)
        at = f"{path.relative_to(ROOT)}:{line}: {name} imports {target}"
        if where == "leaf":
            if heavy or (_within(target, "tir") and target not in LEAF_MAY_IMPORT and not _within(target, LEAF)):
                bad.append(at + " (the degradation leaf imports only " + ", ".join(sorted(LEAF_MAY_IMPORT)) + ")")
        elif where == "runtime":
            if training:
                bad.append(at + " (the runtime never imports the training package)")
            elif heavy and not (name in LAZY_TORCH and in_function):
                bad.append(at + " (the runtime imports torch only inside the lazy backends "
                                + ", ".join(sorted(LAZY_TORCH)) + ")")
        elif where == "cli" and (training or heavy) and not in_function:
            bad.append(at + " (the CLI imports training/torch only inside the mode that needs it)")
        if bad and bad[-1].startswith(at):
            lines.add(line)
    if where == "runtime" and name not in MAY_NAME_TRAINING:
        tree = ast.parse(source if source is not None else path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(TRAINING):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} names {node.value!r} "
                           "(a runtime module loads no training module, not even by name)")
    return bad


def test_the_layers_are_where_the_docs_say():
    mods = modules()
    assert LEAF in mods
    assert {"tir.engines.training.train", "tir.engines.training.router_train", "tir.engines.training.export",
            "tir.engines.training.models.ecmrnet"} <= set(mods)
    runtime = {m for m in mods if layer(m) == "runtime"}
    assert {"tir.engines.restorer", "tir.engines.router", "tir.engines.adapt", "tir.engines.bundle",
            "tir.engines.backends.onnxruntime", "tir.edge.pipeline.pipeline", "tir.calibration.qdq"} <= runtime
    assert all(m in mods for m in LAZY_TORCH | MAY_NAME_TRAINING | LEAF_MAY_IMPORT)


def test_no_import_crosses_the_runtime_training_line():
    bad = [v for name, path in modules().items() for v in violations(name, path)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module, added, inside", [
    ("tir.engines.restorer", "from .training.train import ContinualTrainer", True),
    ("tir.engines.router", "import torch", True),
    ("tir.engines.cache", "import torch", False),
    ("tir.edge.sources.synthetic", "from tir.engines import training", True),
    ("tir.engines.degrade", "from .router import CLEAN", False),
    ("tir.tools.run", "from tir.engines.training import datasets", False),
    ("tir.engines.hotswap", "X = 'tir.engines.training.train:ContinualTrainer'", False),
])
def test_the_walk_catches_a_crossing_import(module, added, inside):
    """The check is not vacuous: one added import (module level, or inside a new function) is
    reported, with its file and line."""
    path = modules()[module]
    source = path.read_text()
    assert not violations(module, path, source)
    extra = f"\n\ndef _added():\n    {added}\n" if inside else f"\n{added}\n"
    bad = violations(module, path, source + extra)
    assert len(bad) == 1 and str(path.relative_to(ROOT)) in bad[0], bad


def test_agc_and_the_pipeline_do_not_import_each_other():
    """edge.agc used the normaliser from inside the pipeline package, whose stages use the AGC;
    the normaliser is now tir.edge.normalize and the AGC imports nothing of the pipeline."""
    mods = modules()
    agc = [t for t, _, _ in imports("tir.edge.agc", mods["tir.edge.agc"])]
    assert "tir.edge.normalize" in agc
    assert not [t for t in agc if _within(t, "tir.edge.pipeline")]
    stages = [t for t, _, _ in imports("tir.edge.pipeline.stages", mods["tir.edge.pipeline.stages"])]
    assert "tir.edge.agc" in stages


BLOCKER = textwrap.dedent('''
    import sys

    BLOCKED = ("torch", "tir.engines.training")


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{name} is blocked for this test (runtime without training)")
            return None


    sys.meta_path.insert(0, _Blocker())
''')


def _run_blocked(tmp_path, *args):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               TIR_NO_BROWSER="1")
    return subprocess.run([sys.executable, "-m", "tir.tools", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for module in ("torch", "tir.engines.training.train"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert done.returncode == 1 and "blocked for this test" in done.stderr, (module, done.stderr)


def test_tir_run_and_bench_run_with_torch_unimportable(tmp_path):
    """``tir run`` on the virtual camera and ``tir bench`` with the installed bundle (router,
    routes, restorer) work with torch and the training package unimportable (a sitecustomize
    meta-path blocker in the child process)."""
    import json

    from tir.edge.outputs.recorder import read_recording
    from tir.engines.bundle import default_bundle_path

    if default_bundle_path() is None:
        pytest.skip("no bundle installed (engines/bundles/edge/manifest.json)")
    folder = tmp_path / "rec"
    run = _run_blocked(tmp_path, "run", "--source", "synthetic://?degrade=noise&size=160x120&realtime=0",
                       "--frames", "6", "--output", f"file://{folder}?preview=0", "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    frames, index = read_recording(folder)
    assert len(index) >= 6 and frames.shape[1:] == (120, 160)
    out = tmp_path / "bench.json"
    bench = _run_blocked(tmp_path, "bench", "--size", "160x120", "--frames", "4", "--warmup", "1",
                         "--no-progress", "--json", str(out))
    assert bench.returncode == 0, bench.stdout + bench.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["model_only"]["frames"] >= 4 and result["pipeline"]["frames"] >= 4
