"""``tir MODE [options]``: one entry point, modes as verbs (after ``yolo`` / ``polygraphy``).

Each mode lives in its own module ``tir.tools.<mode>`` exposing ``add_arguments(parser)``
and ``main(args) -> int``; modules are imported only when their mode runs, so
``tir run`` never imports torch.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

from tir.edge.registry import Registry

from . import __version__

#: mode -> its module (``tir.tools.<module>``, imported only when the mode runs) and one line of help
MODES = Registry("mode", ValueError)
for _mode, _help in (
    ("run", "capture, restore and stream thermal video"),
    ("bench", "benchmark model-only and full-pipeline latency"),
    ("doctor", "report what this machine has and what it means for tir run"),
    ("camera", "list, inspect and control thermal cameras (FFC, gain, ...)"),
    ("train", "train the open-world restoration model (whole continual sequence)"),
    ("discover", "cluster frames collected with tir run --collect; propose specs for new degradations"),
    ("distill", "distil a bundle's routes into one prompt-conditioned student"),
    ("learn", "add one new degradation task to an existing bundle"),
    ("eval", "evaluate a bundle and baselines on clean frames with seeded degradations"),
    ("export", "export a bundle's routes to ONNX with parity check and op audit"),
    ("calibrate", "INT8 calibration: Q/DQ models, TensorRT cache, accuracy gate"),
    ("build", "build TensorRT engines from a bundle"),
    ("adapt", "adapt a bundle's router to your camera from unlabeled frames (UDAIR / CORAL)"),
):
    MODES.register(_mode, f"tir.tools.{_mode}", help=_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tir", description="tir-edge: real-time thermal video restoration")
    parser.add_argument("--version", action="version", version=f"tir-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for entry in MODES:
        sub.add_parser(entry.name, help=entry.help, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Parse only up to the mode; the mode's own parser takes the rest.
    mode_index = next((i for i, a in enumerate(argv) if a in MODES.names()), None)
    if mode_index is None:
        args = top.parse_args(argv)
        top.print_help()
        return 0 if not argv else 2
    top_args = top.parse_args(argv[: mode_index + 1])
    mode = argv[mode_index]
    module = MODES.load(mode)
    parser = argparse.ArgumentParser(prog=f"tir {mode}", description=MODES.get(mode).help,
                                     epilog=getattr(module, "EXIT_CODES_HELP", None))
    module.add_arguments(parser)
    args = parser.parse_args(argv[mode_index + 1 :])
    args.command_line = f"tir {mode} " + " ".join(shlex.quote(a) for a in argv[mode_index + 1:])
    from tir.edge.logs import RateLimitFilter

    handler = logging.StreamHandler()
    handler.addFilter(RateLimitFilter())  # a line repeating every frame: once per kind every 10 s
    # (basicConfig does nothing where logging is already configured, e.g. inside pytest)
    logging.basicConfig(
        level=logging.DEBUG if top_args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[handler],
    )
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
