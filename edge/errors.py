"""The one base of tir-edge's user-facing errors, and the ``tir`` exit codes (stdlib only).

Every error a user can cause or fix (a bad option, a missing camera, a refused bundle, a port
in use, a full disk) is a :class:`TirError`: its message is what ``tir`` prints, one
``tir <mode>: error: <line>`` per line (several lines only where several problems are listed,
e.g. each manifest violation), and its class's ``exit_code`` is the process exit status. The
``tir`` entry point (``tools/cli.py``) catches :class:`TirError` once; modes and library
code raise, they do not print and return codes. The project's error classes keep their names
and their built-in bases (``SourceError`` is still a ``RuntimeError``, ``OptionError`` still
a ``ValueError``) and take one kind below as a second base.

Exit codes, chosen once (this table; docs/architecture.md repeats it). The codes 2 and 3 are
the ones ``tir run`` has documented since its first release (README, docs/reliability.md,
tools/faults.sh, systemd units check them), so every "refused before anything ran" kind shares
2; the kinds stay separate classes so a caller can tell them apart without parsing text.

======  ===========================  =========================================================
code    kind                         raised for
======  ===========================  =========================================================
0       (success)                    the mode finished; ``tir run``: limit, end of file, a stop
                                     signal (SIGINT/SIGTERM/SIGHUP)
1       :class:`TirError` (base)     a failure while running: a model stage failed, a camera
                                     command got no reply or a bad CRC, a build failed
2       :class:`UsageError`          a bad argument or option (unknown URI option, bad value)
2       :class:`InputError`          an input is missing or unusable (source, camera, serial
                                     port, data set, calibration frames)
2       :class:`ModelError`          a model or bundle not found or refused (manifest, hashes,
                                     backend that cannot run it, TensorRT plan mismatch)
2       :class:`OutputUnavailable`   an output cannot open or failed the run (port in use,
                                     unwritable folder, no GStreamer)
3       :class:`OutputFailed`        an output stopped during the run, what it wrote is kept
                                     (a recording on a full disk, an I/O error)
3       :class:`MissingDependency`   a needed runtime is not installed (``tir build`` without
                                     TensorRT); the message says what to install
130     (interrupted)                Ctrl-C outside ``tir run``'s own clean stop
130     :class:`Interrupted`         Ctrl-C in a mode that keeps what it measured so far (``tir
                                     eval --json``: the partial results, marked so)
======  ===========================  =========================================================
"""
from __future__ import annotations

from typing import List

EXIT_OK = 0
EXIT_FAILED = 1        # a failure while running
EXIT_REFUSED = 2       # refused before anything ran: usage, input, model, output could not open
EXIT_OUTPUT_LOST = 3   # an output stopped during the run (what was written is kept); a runtime missing
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


class TirError(Exception):
    """A user-facing error: ``str(exc)`` is the message to print, ``exit_code`` the exit status.

    The base itself means "failed while running" (exit 1). Subclass a kind below (or this) for
    a new error, keep the message a sentence that names the thing and says what to do."""

    exit_code: int = EXIT_FAILED

    @property
    def message(self) -> str:
        """The user message (``str(self)``)."""
        return str(self)

    def lines(self) -> List[str]:
        """The message as printed: one entry per line (one problem each), at least one."""
        return str(self).splitlines() or [""]


class UsageError(ValueError, TirError):
    """A bad command-line argument or option value (exit 2); the message names the option.

    Also a ``ValueError``, so code that checks arguments with ``except ValueError`` keeps working."""

    exit_code = EXIT_REFUSED


class InputError(TirError):
    """An input that is missing or unusable: a source, camera, serial port, data set (exit 2)."""

    exit_code = EXIT_REFUSED


class ModelError(TirError):
    """A model or bundle that is not there or is refused (manifest, hashes, backend) (exit 2)."""

    exit_code = EXIT_REFUSED


class OutputUnavailable(TirError):
    """An output that cannot open (port in use, unwritable path) or that failed the run (exit 2)."""

    exit_code = EXIT_REFUSED


class OutputFailed(TirError):
    """An output stopped during the run; what it wrote before is kept (exit 3)."""

    exit_code = EXIT_OUTPUT_LOST


class MissingDependency(TirError):
    """A runtime the mode needs is not installed; the message says what to install (exit 3)."""

    exit_code = EXIT_OUTPUT_LOST


class Interrupted(TirError):
    """Ctrl-C (SIGINT) stopped a mode that kept what it had done so far; the message says where
    (e.g. ``tir eval --json``: the sets measured before it, written marked partial)."""

    exit_code = EXIT_INTERRUPTED


def error_line(mode: str, exc: TirError) -> str:
    """The lines ``tir`` prints for ``exc`` in ``mode``: ``tir <mode>: error: <line>`` each."""
    return "\n".join(f"tir {mode}: error: {line}" for line in exc.lines())
