"""``tir MODE [options]``: one entry point, modes as verbs (after ``yolo`` / ``polygraphy``).

Each mode lives in its own module ``tir.tools.<mode>`` exposing ``add_arguments(parser)``
and ``main(args) -> int``; modules are imported only when their mode runs, so
``tir run`` never imports torch. A mode parses its options and calls library functions
(``tir.edge``, ``tir.engines``, ``tir.calibration``); it imports no other mode's module: the
argument groups several modes share are defined here once (:func:`add_model_arguments`,
:func:`add_source_argument`, :func:`add_bundle_argument`, :func:`add_backend_argument`, :func:`add_threads_argument`,
:func:`add_json_argument`, :func:`precision_list`) with the output file check and writer
(:func:`output_file`, :func:`write_json`).

Errors: library and modes raise :class:`~tir.edge.errors.TirError` (its kinds and the exit
code table are in ``edge/errors.py``); :func:`main` catches it once, prints
``tir <mode>: error: <line>`` on stderr for each line of its message and returns its
``exit_code``. Ctrl-C outside a mode's own handling returns 130.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import stat
import sys
from contextlib import contextmanager
from typing import Optional

from tir.edge.errors import EXIT_INTERRUPTED, TirError, UsageError
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
    ("deploy", "show or set what a bundle runs: routes, student, or auto (per task, by val PSNR)"),
    ("learn", "add one new degradation task to an existing bundle"),
    ("eval", "evaluate a bundle and baselines on clean frames with seeded degradations"),
    ("export", "export a bundle's routes to ONNX with parity check and op audit"),
    ("calibrate", "INT8 calibration: Q/DQ models, TensorRT cache, accuracy gate"),
    ("build", "build TensorRT engines from a bundle"),
    ("adapt", "adapt a bundle's router to your camera from unlabeled frames (UDAIR / CORAL)"),
):
    MODES.register(_mode, f"tir.tools.{_mode}", help=_help)


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``tir`` parser: ``--version``, ``-v/--verbose`` and one sub-command per mode
    of :data:`MODES` (each mode's own parser takes the rest of the line).
    """
    parser = argparse.ArgumentParser(prog="tir", description="tir-edge: real-time thermal video restoration",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"tir-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for entry in MODES:
        sub.add_parser(entry.name, help=entry.help, add_help=False)
    return parser


def main(argv=None) -> int:
    """The ``tir`` entry point: parse up to the mode, load the mode's module, parse its options and
    run its ``main``.

    Args:
        argv: the arguments after ``tir`` (default ``sys.argv[1:]``).

    Returns:
        the exit status: the mode's, a TirError's ``exit_code`` (its message printed as
        ``tir <mode>: error: <line>`` on stderr), 130 on Ctrl-C, or 0/2 without a mode (help).
        A missing optional package (torch, onnx, matplotlib, TensorRT, pycuda) is turned into a
        ``MissingDependency`` line and exit 3.

    Raises:
        ImportError: a module that is not one of those optional packages failed to import (a
            broken install or a bug: its traceback is kept, not turned into one line).
        SystemExit: argparse's own exit for ``--help`` and bad options (status 0 or 2).
    """
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
    refuse_repeated_options(parser)
    refuse_abbreviations(parser)
    args = parser.parse_args(argv[mode_index + 1 :])
    # the options the command line gave (single-value ones and flags; refuse_ignored_options)
    args.given_options = sorted(vars(args).pop(GIVEN_OPTIONS, None) or ())   # a list: reports write vars(args)
    refuse_empty_values(parser, args)
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
        try:
            return int(module.main(args) or 0)
        except ModuleNotFoundError as exc:
            missing = missing_dependency(mode, exc)
            if missing is None:
                raise
            raise missing from exc
    except TirError as exc:
        for line in exc.lines():
            print(f"tir {mode}: error: {line}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


#: optional packages a mode may import lazily -> how to install them (setup.py extras; TensorRT
#: and pycuda come with JetPack on a Jetson, `tir build` prints the full guide)
OPTIONAL_PACKAGES = {
    "torch": "torch (pip install torch, or the [train] extras: pip install 'tir-edge[train]')",
    "torchvision": "torchvision (pip install torchvision)",
    "onnx": "the onnx package (pip install onnx, or the [train] extras: pip install 'tir-edge[train]')",
    "matplotlib": "matplotlib (pip install matplotlib, or the [discover] extras)",
    "tensorrt": "TensorRT's Python bindings (JetPack on a Jetson, pip install tensorrt on x86 with an NVIDIA "
                "GPU; see tir doctor)",
    "pycuda": "pycuda (pip install pycuda, or the [jetson] extras)",
}


#: the Namespace attribute in which :func:`refuse_repeated_options` notes what each option got
GIVEN_OPTIONS = "_tir_given_options"


def _shown(values) -> str:
    """An option's parsed value as the command line wrote it (a list as its words)."""
    return " ".join(map(str, values)) if isinstance(values, (list, tuple)) else str(values)


class _OnceMixin:
    """An option that takes one value refuses a second, different one (argparse keeps the last
    without a word). Mixed into the option's own action class by :func:`refuse_repeated_options`."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault(GIVEN_OPTIONS, {})
        flag = self.nargs == 0     # a flag: what it means is its constant, or --x / --no-x
        value = (not option_string.startswith("--no-") if isinstance(self, argparse.BooleanOptionalAction)
                 else self.const) if flag else values
        if self.dest in given and given[self.dest][1] != value:
            first, before = given[self.dest]
            said = (f"{first}, then {option_string}" if flag else
                    f"{first} {_shown(before)}, then {option_string} {_shown(value)}")
            parser.error(f"argument {'/'.join(self.option_strings)}: given twice ({said}); it takes one value "
                         "and would keep only the last: give it once")
        given[self.dest] = (option_string, value)
        super().__call__(parser, namespace, values, option_string)


def refuse_repeated_options(parser: argparse.ArgumentParser) -> None:
    """Make every single-value option of ``parser`` (and of its sub-commands) refuse a second,
    different value: argparse keeps the last one without a word, so ``tir run --record A
    --record B`` recorded only B and ``--frames 10 --frames 20`` ran 20. The same value twice
    passes (it means the same). Options meant to repeat (``append``, ``count``) are untouched.
    Call it once, after the options are added and before ``parse_args``; the parsed Namespace
    carries the notes in :data:`GIVEN_OPTIONS` (:func:`main` removes it).

    Raises:
        SystemExit: (from ``parse_args``) argparse's error, status 2, naming the option and both
            values.
    """
    for each in parsers_of(parser):
        for action in each._actions:   # argparse keeps the option actions only here
            if action.option_strings and type(action) in (argparse._StoreAction, argparse._StoreConstAction,
                                                          argparse._StoreTrueAction, argparse._StoreFalseAction,
                                                          argparse.BooleanOptionalAction):
                action.__class__ = type(f"Once{type(action).__name__}", (_OnceMixin, type(action)), {})


def parsers_of(parser: argparse.ArgumentParser) -> list:
    """``parser`` and the parsers of its sub-commands (``tir camera info``), each once."""
    found = [parser]
    for action in parser._actions:   # argparse keeps the sub-command parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):   # aliases share one parser
                found += [p for p in parsers_of(sub) if p not in found]
    return found


def refuse_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` and its sub-commands take whole option names only: argparse's default
    prefix matching (``allow_abbrev``) read ``tir run --frame 3`` as ``--frames 3``, ``tir eval --max
    3`` as ``--max-frames 3`` and ``--rec DIR`` as ``--record DIR`` without a word, so a mistyped
    option ran as another one, and a command written against one version changed meaning (or
    became ambiguous) when a later one added an option with the same start. Call it before
    ``parse_args``.

    Raises:
        SystemExit: (from ``parse_args``) argparse's "unrecognized arguments" error, status 2.
    """
    for each in parsers_of(parser):
        each.allow_abbrev = False


def refuse_empty_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an option given an empty (or blank) value, in every mode: no option's default is
    an empty string, so one came from the command line, and it names nothing (an option's own
    ``const``, what a flag such as ``tir bench --roofline`` means without a value, passes). ``tir run
    --record ''`` recorded nothing, ``--source ''`` and ``--output ''`` took the defaults,
    ``--reference ''`` and ``--adapt-save ''`` meant the current folder, all without a word.

    Raises:
        SystemExit: argparse's error (status 2) naming the option.
    """
    for action in parser._actions:   # argparse keeps the option strings of each dest only here
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if action.option_strings and any(isinstance(v, str) and not v.strip() and v != action.const
                                         for v in values):   # const: the flag given without a value
            parser.error(f"argument {'/'.join(action.option_strings)}: an empty value names nothing; "
                         f"give {action.metavar or action.dest.upper()} or leave the option out")


def missing_dependency(mode: str, exc: ModuleNotFoundError):
    """The :class:`~tir.edge.errors.MissingDependency` (exit 3) for an optional package of
    :data:`OPTIONAL_PACKAGES` that ``mode`` imported and that is not installed (e.g. ``tir train``
    without torch, ``tir export`` without onnx), or None for any other missing module (a bug: the
    caller re-raises it with its traceback)."""
    from tir.edge.errors import MissingDependency

    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL_PACKAGES:
        return None
    return MissingDependency(f"this mode needs {OPTIONAL_PACKAGES[top]}, which is not installed here "
                             f"({exc}); install it and run tir {mode} again")


@contextmanager
def refusing(*types, kind=UsageError, prefix: str = ""):
    """Inside it, an exception of ``types`` (default ``ValueError``, ``FileNotFoundError``) that is
    not already a TirError becomes ``kind`` (default UsageError, exit 2) with ``prefix`` + its
    message; a TirError passes unchanged. For library checks without a TirError kind of their
    own (a plain ``ValueError`` of an argument check, a missing file).

    Raises:
        kind: (default UsageError) for an exception of ``types`` that is not a TirError, chained
            to it.
    """
    try:
        yield
    except TirError:
        raise
    except (types or (ValueError, FileNotFoundError)) as exc:
        raise kind(f"{prefix}{exc}") from exc


#: in an option table of :func:`refuse_ignored_options`: the option is read in every run of the mode
EVERY_RUN = frozenset({"*"})


def option_defaults(add_arguments) -> dict:
    """``{dest: (default, "--option")}`` of every option ``add_arguments(parser)`` adds (a mode's
    ``add_arguments``), from a fresh parser: what an option is when the command line leaves it out."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return {a.dest: (a.default, next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0]))
            for a in parser._actions if a.option_strings}


def refuse_ignored_options(args, add_arguments, reads, active, run: str, acts_in, hints=None) -> None:
    """Refuse every option that this run of a mode would ignore: one check, from one table per
    mode, instead of a line per combination someone happened to try (``tir eval --sequence
    --baselines none``, ``tir bench --mode model --source DIR`` ran without a word, the option
    doing nothing).

    An option counts as given when the command line gave it (``args.given_options``, set by
    :func:`main` from :func:`refuse_repeated_options`' notes: ``--in-flight 2`` in model mode, its
    default written out, ran without a word when only values were compared), or when its value
    differs from its default (:func:`option_defaults`; a Namespace built without :func:`main`, and
    the options meant to repeat).

    Args:
        args: the parsed options (argparse.Namespace).
        add_arguments: the mode's ``add_arguments(parser)`` (for each option's default and name).
        reads: ``{dest: frozenset of tags}``: the kinds of run that read the option
            (:data:`EVERY_RUN`: every run). An option missing from it counts as read everywhere (the
            modes' tests check that their table names every option).
        active: the tags of this run (e.g. ``{"model", "pipeline"}`` for ``tir bench --mode both``).
        run: this run in words, for the message (``"--mode model"``).
        acts_in: ``{tag: words}``: where an option of that tag acts, for the message.
        hints: ``{dest: text}`` added to that option's line (what to do instead).

    Raises:
        UsageError: one line per ignored option, naming it, this run and where it acts.
    """
    lines = []
    given = getattr(args, "given_options", None) or frozenset()
    for dest, (default, name) in option_defaults(add_arguments).items():
        tags = reads.get(dest, EVERY_RUN)
        if tags is EVERY_RUN or tags & set(active):
            continue
        if dest not in given and getattr(args, dest, default) == default:
            continue
        where = " or ".join([acts_in[t] for t in acts_in if t in tags] + sorted(t for t in tags if t not in acts_in))
        lines.append(f"{name} does nothing here ({run}): it acts in {where}; drop it"
                     + (f" ({hints[dest]})" if hints and dest in hints else ""))
    if lines:
        raise UsageError("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# argument groups shared by several modes (defined once; a mode calls the ones it takes)
# ---------------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "fp16", "int8")  # TensorRT plan precisions (engines/trt_build.py builds them)


def add_model_arguments(parser, several_backends: bool = False,
                        default_model: str = "the installed bundle") -> None:
    """``--model``, ``--backend`` (several with ``several_backends``: ``tir bench`` compares them),
    ``--task``, ``--deploy`` and ``--threads``, as :func:`tir.engines.loading.load_model` takes
    them (``tir run``, ``tir bench``)."""
    from tir.engines.backends import BACKENDS
    from tir.engines.models import runnable

    choices = ("auto",) + tuple(BACKENDS.names())

    parser.add_argument("--model", help="bundle folder, .onnx/.pt/.engine file, or a reference network "
                                        f"({', '.join(runnable())}) (default: {default_model})")
    backends = "; ".join(f"{e.name}: {'/'.join(e.accepts)}" for e in BACKENDS)
    if several_backends:
        parser.add_argument("--backend", "--backends", dest="backend", nargs="+", default=["auto"],
                            choices=choices, metavar="BACKEND",
                            help=f"one or more of {', '.join(choices)} to compare (default auto; "
                                 f"{backends})")
    else:
        add_backend_argument(parser, f"inference backend (default auto: from the file type; {backends})",
                             choices=choices)
    parser.add_argument("--task", help="force one route of the bundle instead of automatic routing")
    parser.add_argument("--deploy", choices=("routes", "student", "auto"), default=None,
                        nargs="+" if several_backends else None,
                        help="what a bundle runs: routes (its per-task routes), student (its distilled student "
                             "with the router's scores as prompt mix) or auto (per task, the student where its "
                             "val PSNR is within the margin of the route's, else the route: the manifest's "
                             "auto_deploy table, `tir deploy`) (default: the manifest's deploy)"
                             + ("; several are timed one after the other" if several_backends else ""))
    add_threads_argument(parser)


def add_backend_argument(parser, help: str, default: str = "auto", choices=None) -> None:
    """``--backend NAME``: the engine backend (``auto``: from the file type; the names of
    ``tir.engines.backends.BACKENDS``); ``choices`` where the mode checks them in argparse."""
    parser.add_argument("--backend", default=default, choices=choices, help=help)


def thread_count(text: str) -> int:
    """argparse type of every ``--threads``: an integer >= 1 (a runtime's thread count; 0 or a
    negative number would otherwise be refused by the backend only after the run started).

    Raises argparse.ArgumentTypeError naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of threads") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give a number of threads >= 1")
    return value


def number(kind=float, low=None, high=None, low_open: bool = False, what: str = "a number"):
    """An argparse type: ``kind`` (int or float) parsed from the text, finite (no NaN or
    infinity), >= ``low`` (> ``low`` with ``low_open``) and <= ``high`` where given; ``what``
    names the quantity in the message.

    Raises argparse.ArgumentTypeError naming the value and the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        ok = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) \
            and (high is None or value <= high)
        if not ok:
            bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
                      f"<= {high:g}" if high is not None else ""]
            rule = " and ".join(b for b in bounds if b) or "(finite)"
            raise argparse.ArgumentTypeError(f"{text}: give {what} {rule}")
        return value
    parse.__name__ = what.replace(" ", "_")  # argparse names the type in its own messages
    return parse


#: the largest frame side a --size takes (px): the capture limit of edge/sources/v4l2.py; a
#: 20000x20000 bench frame was killed for memory while its batches were made, and tir export
#: --size 99999x99999 failed allocating 37 GiB
MAX_SIDE = 8192


#: the pruning options' checked types of tir train and tir learn (one definition: learn took
#: ``--group 0``, ``--prune-p 2`` and ``--prune-samples 0`` and failed only after its training)
GROUP = number(int, 1, what="a number of channels")
PRUNE_P = number(float, 0, 1, low_open=True, what="a pick-count threshold")
PRUNE_SAMPLES = number(int, 1, what="a number of frames")


def frame_size(text: str, option: str = "--size"):
    """A ``--size`` (``tir bench``, ``export``, ``calibrate``, ``build``) or a ``--roofline`` size:
    ``"WxH"`` -> (w, h) in px, each side 1..:data:`MAX_SIDE`.

    Raises:
        UsageError: not WIDTHxHEIGHT, or a side out of range (0x0 was an OpenCV assertion
            traceback, 20000x20000 a process killed for memory).
    """
    from tir.edge.uri import parse_size

    w, h = parse_size(text)
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise UsageError(f"{option} {text}: give a frame size WxH with each side 1..{MAX_SIDE} px")
    return w, h


def add_threads_argument(parser, default=None, help: str = "ONNX Runtime intra-op threads (default: one per core)"):
    """``--threads N`` (int >= 1, :func:`thread_count`): intra-op threads of the runtime the mode
    drives (``tir run/bench``: ONNX Runtime, default one per core; ``tir eval/adapt/calibrate``
    pass their own default and help)."""
    parser.add_argument("--threads", type=thread_count, default=default, help=help)


def add_bundle_argument(parser, help: str = "model bundle folder", required: bool = False) -> None:
    """``--bundle DIR``: a model bundle folder (manifest.json + routes); None when not given."""
    parser.add_argument("--bundle", required=required, default=None, help=help)


def add_source_argument(parser, help: str, default=None) -> None:
    """``--source``: where the frames come from (a source URI of ``tir.edge.sources``, or for
    ``tir calibrate`` a frame set name or folder); ``help`` says what each mode takes."""
    parser.add_argument("--source", default=default, help=help)


def folder_problem(path) -> Optional[str]:
    """Why no file can be written in the folder ``path`` (an existing folder, or one still to be
    made under its nearest existing folder), or None when it can. The nearest existing folder is
    probed with a temporary file, removed at once (root passes ``os.access`` checks even where
    nothing can be created, e.g. /proc), so nothing is left behind.

    Returns:
        None, or one phrase naming the folder and the reason (for an error line).
    """
    import os
    import tempfile
    from pathlib import Path

    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".tir-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    return None


def output_file(text: str) -> str:
    """argparse type of an output file option (``--json PATH``, ``tir eval --plot PATH``): the
    path is checked when the options are parsed, before any work, so a result that took minutes
    is not lost to an unwritable path at the end. Refused: an existing folder, a path under a
    file, a folder in which no file can be created (:func:`folder_problem`). Missing folders are
    made by :func:`write_json` when the result is written.

    Returns:
        ``text`` unchanged.

    Raises:
        argparse.ArgumentTypeError: naming the path and what to give instead.
    """
    from pathlib import Path

    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file path such as "
                                         f"{(path / 'result.json').as_posix()}")
    kind = _existing_kind(path)
    if kind is not None and not stat.S_ISREG(kind):   # /dev/stdout, a named pipe: written into as it is
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text}: not writable; give a path in a writable folder")
        return text
    problem = folder_problem(Path(os.path.realpath(path)).parent)   # a symlink: where its target is written
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}; give a path in a writable folder")
    return text


def plot_file(text: str) -> str:
    """argparse type of a picture option (``tir eval --plot PATH``): :func:`output_file`'s checks,
    and a file type matplotlib writes (``savefig`` picks the format from the suffix: an unknown one
    failed with a traceback after the whole evaluation had run, a missing one wrote ``PATH.png``
    while ``PATH`` was printed).

    Returns:
        ``text`` unchanged.

    Raises:
        argparse.ArgumentTypeError: a refused path (:func:`output_file`), no suffix, a suffix
            matplotlib does not write (listing the ones it does), or matplotlib not installed.
    """
    from pathlib import Path

    output_file(text)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise argparse.ArgumentTypeError("pictures need matplotlib: pip install matplotlib") from None
    kinds = sorted(Figure().canvas.get_supported_filetypes())
    suffix = Path(text).suffix.lower().lstrip(".")
    if suffix not in kinds:
        said = f"its suffix .{suffix} is not" if suffix else "it has no suffix, which names"
        raise argparse.ArgumentTypeError(f"{text}: {said} a picture type matplotlib writes; end it in one of "
                                         f"{', '.join('.' + k for k in kinds)} (e.g. .png)")
    return text


def _existing_kind(path) -> Optional[int]:
    """``st_mode`` of what ``path`` names after its symlinks (None where nothing does)."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def write_json(path, data, indent: int = 2, option: str = "--json") -> None:
    """Write ``data`` as JSON (UTF-8, ``indent``, a final newline) to ``path`` (an ``--json`` of
    :func:`output_file`), making its missing folders first. The text goes to a temporary file
    beside ``path`` that replaces it only when complete, so a failed write leaves no empty or
    cut file (a full disk left a 0-byte ``--json`` file and a traceback in ``tir eval``). A
    symlink is written through (its target is replaced, the link stays); a path that exists and
    is not a regular file (``/dev/stdout``, ``/dev/null``, a named pipe) is written into directly:
    a rename would replace the device itself, for every process of the machine when run as root.

    Raises:
        OutputFailed: the write failed all the same (e.g. the disk filled since the parse-time
            check); the message names ``option``, the path and the reason (exit status 3).
    """
    import json
    import tempfile
    from pathlib import Path

    from tir.edge.errors import OutputFailed

    shown = path
    text = json.dumps(data, indent=indent) + "\n"
    kind = _existing_kind(path)
    if kind is not None and not stat.S_ISREG(kind):   # a device or pipe (/dev/stdout): renaming a file over
        try:                                          # it would replace it for every process; written into
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise OutputFailed(f"{option} {shown}: not written ({exc.strerror or exc})") from exc
        return
    path = Path(os.path.realpath(path))   # a symlink is written through: its target is replaced, the link kept
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)   # mkstemp makes it 0600: a report is as readable as any file written
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputFailed(f"{option} {shown}: not written ({exc.strerror or exc})") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def add_json_argument(parser, help: str = "write the results as JSON") -> None:
    """``--json PATH``: write the mode's results as JSON there (checked at parse time,
    :func:`output_file`)."""
    parser.add_argument("--json", default=None, metavar="PATH", type=output_file, help=help)


def precision_list(text: str):
    """``"fp16,int8"`` -> ``["fp16", "int8"]`` (order kept, duplicates dropped); argparse type of
    ``--precision`` (``tir build``, ``tir bench``).

    Raises argparse.ArgumentTypeError naming the bad entry and the choices."""
    items = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if not items or bad:
        what = f"{bad[0]!r} (in {text!r})" if bad else repr(text)
        raise argparse.ArgumentTypeError(f"precision {what}: use {', '.join(PRECISIONS)} or a comma-separated "
                                         "list of them (fp16,int8)")
    return list(dict.fromkeys(items))


if __name__ == "__main__":
    sys.exit(main())
