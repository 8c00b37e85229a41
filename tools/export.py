"""``tir export --bundle DIR``: validate every ONNX of a bundle for TensorRT and ONNX Runtime.

Per route (and the router): TensorRT operator/opset/Q-DQ audit (:func:`tir.engines.training.export.audit_onnx`,
TRT 8.5 and 10 parsers), ONNX Runtime load, a run at ``--size`` and at a second size (the dynamic
H/W axes), finite outputs of the input's shape (routes), and the ``tir.multiple`` metadata.
Exports from PyTorch happen in ``tir train`` through :func:`tir.engines.training.fast_route.export_route`, which
adds the torch-vs-ORT parity check; this command re-checks shipped files without torch.

``tir export --bundle DIR --out NEW``: re-export every route of DIR from its checkpoint (model.pt)
with the current export form (:func:`tir.engines.training.fast_route.reexport_bundle`; needs torch and onnx),
each checked against the reference route and against DIR's ONNX (max abs diff ≤ ``--tolerance``),
into the new bundle folder NEW with fresh hashes and MAC counts, the router in its fast form
(:mod:`tir.engines.training.fast_router`); then NEW is checked as above.

``tir export --bundle DIR --fast-router [--out NEW]``: only put the router into its fast form (exact
rewrite of the ONNX graph, checked against the old one within 1e-5; needs onnx, not torch): in DIR
itself, or in a copy NEW of DIR (routes byte for byte); the manifest gets the new hash and the
router's ``export`` record. Then the bundle is checked as above.
"""
from __future__ import annotations

import numpy as np

from tir.edge.errors import TirError, UsageError

from .cli import frame_size, number, refusing


def add_arguments(parser) -> None:
    """Add ``tir export``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--size WxH`` (px), ``--targets`` (TensorRT parser versions), ``--out`` (re-export) and
    ``--tolerance`` (max abs difference of a re-export).
    """
    parser.add_argument("--bundle", required=True, help="model bundle folder")
    parser.add_argument("--size", default="640x512", help="test frame size WxH (default 640x512)")
    parser.add_argument("--targets", default="8.5,10", help="TensorRT parsers to audit for (default 8.5,10)")
    parser.add_argument("--out", metavar="DIR", help="re-export the bundle's routes from its model.pt into this "
                        "new bundle folder (the original is kept), then check that one")
    parser.add_argument("--tolerance", type=number(float, 0, what="a max abs difference"), default=1e-4,
                        help="--out: max abs difference allowed against the reference and the old ONNX (default 1e-4)")
    parser.add_argument("--fast-router", action="store_true",
                        help="only rewrite the router into its fast form (exact; in the bundle itself, or in a copy "
                        "at --out), leaving the routes as they are")


def check_onnx(path, size, targets, is_route: bool = True) -> dict:
    """Check one ONNX file: TensorRT audit, ONNX Runtime load, runs on (1, 1, H, W) float32 inputs
    in [0, 1] at ``size`` and at half of it (rounded up to the ``tir.multiple`` metadata; the
    router at its fixed input size), finite outputs, and for a route output shape = input shape.

    Args:
        path: the ONNX file.
        size: ``(w, h)`` in px.
        targets: TensorRT versions to audit for (e.g. ``("8.5", "10")``).
        is_route: a route (dynamic H/W, same-shape output) rather than the router.

    Returns:
        {"file", "errors", "warnings", "ops" (node count), "multiple"}: no errors means it passed.

    Raises:
        ValueError: a target is not a known TensorRT version (from :func:`audit_onnx`).
    """
    from tir.engines.backends.onnxruntime import ort_session
    from tir.engines.training.export import audit_onnx, read_metadata

    result = {"file": str(path), "errors": [], "warnings": []}
    audit = audit_onnx(str(path), targets)
    result["ops"] = sum(audit.ops.values())
    result["errors"] += audit.errors
    result["warnings"] += audit.warnings
    meta = read_metadata(str(path))
    multiple = int(meta.get("tir.multiple", 1))
    result["multiple"] = multiple
    try:
        sess = ort_session(str(path))
    except Exception as exc:  # ORT raises its own types
        result["errors"].append(f"ONNX Runtime cannot load it: {exc}")
        return result
    name = sess.get_inputs()[0].name
    def up(v: int) -> int:
        return max(multiple, -(-v // multiple) * multiple)

    w, h = size
    rng = np.random.default_rng(0)
    shapes = [(1, 1, up(h), up(w)), (1, 1, up(h // 2), up(w // 2))]
    dims = sess.get_inputs()[0].shape
    if not is_route and len(dims) == 4 and all(isinstance(d, int) for d in dims[2:]):
        shapes = [(1, 1, dims[2], dims[3])]   # the router takes one fixed size (prepare_frames fits frames)
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        try:
            y = sess.run(None, {name: x})[0]
        except Exception as exc:
            result["errors"].append(f"run at {shape[3]}x{shape[2]} failed: {exc}")
            continue
        if not np.all(np.isfinite(y)):
            result["errors"].append(f"non-finite output at {shape[3]}x{shape[2]}")
        if is_route and y.shape != x.shape:
            result["errors"].append(f"output {y.shape} != input {x.shape} at {shape[3]}x{shape[2]}")
    if is_route and "tir.multiple" not in meta:
        result["warnings"].append("no tir.multiple metadata (engines assume 4)")
    return result


def main(args) -> int:
    """Run ``tir export`` with the parsed ``args``: with ``--out``, re-export the bundle's routes
    first; then check every route and the router and print the table.

    Returns:
        0 every file passed; 1 a file failed its check (FAIL rows in the table).

    Raises:
        TirError: (exit 1) the re-export exceeded ``--tolerance`` or the fast router differed
            from the old one.
        UsageError, BundleError: (exit 2) the bundle, ``--size`` (a side outside 1..8192 px,
            :func:`tir.tools.cli.frame_size`) or ``--targets`` (an unknown parser) was refused,
            or ``--out`` names an existing non-empty folder, a file or a place where no folder
            can be written, or ``--fast-router`` refuses the router or cannot write the bundle
            (read-only, full disk; a copy at ``--out`` is removed again); nothing is overwritten.
        ``tir`` (tools/cli.py) prints each as one line ``tir export: error: ...`` on stderr (they
        were printed on stdout).
    """
    from tir.engines.bundle import load_bundle
    from tir.engines.training.export import TRT_SUPPORTED_OPS

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TRT_SUPPORTED_OPS]
    if unknown or not targets:  # was one FAIL row per model and exit 1, after a re-export
        raise UsageError(f"--targets {args.targets!r}: unknown TensorRT parser version(s) "
                         f"{', '.join(unknown) or '(none given)'}; known: {', '.join(sorted(TRT_SUPPORTED_OPS))}")
    with refusing(ValueError):
        size = frame_size(args.size)  # 0x0 was checked silently at the multiple; 99999x99999 a MemoryError
        if getattr(args, "fast_router", False):
            from tir.engines.training.export import ExportError
            from tir.engines.training.fast_router import rewrite_bundle_router

            if args.out:
                from .cli import folder_problem

                problem = folder_problem(args.out)
                if problem:
                    raise ValueError(f"--out {args.out}: {problem}; give a writable new folder")
            with refusing(ExportError, kind=TirError):   # exit 1: a check failed
                rec = rewrite_bundle_router(args.bundle, args.out)
            print(f"router: {rec['form']}" + (f", vs previous ONNX {rec['max_abs_diff_vs_previous']:.2g}, "
                                              f"{rec['macs'] / 1e9:.4f} GMAC per call "
                                              f"({rec['graph_macs'] / 1e9:.4f} executed)"
                                              if rec.get("changed") else " (already in that form; unchanged)"))
            args.bundle = args.out or args.bundle
        elif getattr(args, "out", None):
            from tir.engines.training.export import ExportError

            from .cli import folder_problem

            problem = folder_problem(args.out)  # was a traceback after every route was re-exported
            if problem:
                raise ValueError(f"--out {args.out}: {problem}; give a writable new folder")
            from tir.engines.training.fast_route import reexport_bundle

            with refusing(ExportError, kind=TirError):   # exit 1: a check failed
                args.bundle = str(reexport_bundle(args.bundle, args.out, size=size, tolerance=args.tolerance,
                                                  progress=lambda line: print(f"re-export {line}")))
        bundle = load_bundle(args.bundle)
    items = [(route, bundle.route_path(route), True) for route in bundle.tasks]
    if bundle.router_path is not None:
        items.append(("router", bundle.router_path, False))
    rows = []
    failed = False
    for label, path, is_route in items:
        try:
            r = check_onnx(path, size, targets, is_route)
        except ValueError as exc:
            r = {"errors": [str(exc)], "warnings": [], "ops": 0, "multiple": "?"}
        failed |= bool(r["errors"])
        rows.append((label, r))
    head = f"{'model':<12} {'nodes':>6} {'multiple':>8}  status"
    print(head)
    print("-" * len(head))
    for label, r in rows:
        status = "ok" if not r["errors"] else "FAIL"
        print(f"{label:<12} {r['ops']:>6} {r['multiple']:>8}  {status}")
        for e in r["errors"]:
            print(f"    error: {e}")
        for w in r["warnings"]:
            print(f"    note: {w}")
    return 1 if failed else 0
