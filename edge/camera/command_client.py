"""What the Boson and Tau2 clients share: the serial port, the request-reply loop, commands by name.

Each protocol module keeps its own framing, reply checks and error classes; this base owns the
port (a path opened with pyserial, or any open serial-like object: a pty, a ``loop://`` port),
the bounded retry loop (:meth:`CommandClient._run`), one request-reply exchange with its timeout
(:meth:`CommandClient._exchange`), the link counters, and turns a command name plus arguments
into ``transact`` through the protocol's command table of struct formats. Enum settings
(FFC mode, gain mode) are read and written by :func:`enum_accessors`.
"""
from __future__ import annotations

import enum
import os
import struct
import threading
import time
from typing import Callable, Dict, Optional, Tuple, Type, Union

try:  # pyserial's POSIX port flushes and configures with termios, whose error is no OSError
    import termios
    PORT_FAILURES: Tuple[Type[BaseException], ...] = (OSError, termios.error)
except ImportError:  # Windows: pyserial raises SerialException (an OSError) only
    PORT_FAILURES = (OSError,)


def parse_enum(cls: Type[enum.IntEnum], value) -> enum.IntEnum:
    """``value`` as a member of ``cls``: a member, its int, or its name (any case, '-' for '_').

    Raises:
        ValueError: no member matches; the message lists the choices with their values.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        text = value.strip().upper().replace("-", "_")
        if text in cls.__members__:
            return cls[text]
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, int):
        try:
            return cls(value)
        except ValueError:
            pass
    choices = ", ".join(f"{m.name.lower()} ({m.value})" for m in cls)
    raise ValueError(f"{value!r} is not a {cls.__name__}; choose one of: {choices}")


def decode_enum(cls: Type[enum.IntEnum], value: int):
    """A camera-reported enum value: the member when known, else the plain int."""
    try:
        return cls(value)
    except ValueError:
        return value


class CommandClient:
    """Base of :class:`~tir.edge.camera.boson.BosonClient` and :class:`~tir.edge.camera.tau.TauClient`.

    Subclasses set ``product`` and ``commands`` (name -> command with ``arg`` and ``reply``
    struct formats), their error classes (``error``, ``port_error``, ``timeout_error``,
    ``truncated_error``, ``retryable``, ``backoff``, ``counted``) and a ``_reader`` (bytes in,
    received frames out, with ``reset()`` and ``pending_bytes``), and implement ``transact``
    (usually :meth:`_run` over :meth:`_exchange`) and ``_function_of(command)``. ``timeout`` is the
    reply timeout per attempt in seconds, ``retries`` the extra attempts, ``baudrate`` in bit/s,
    ``poll_s`` the longest single serial read in seconds.

    Raises:
        ValueError: ``timeout`` <= 0 or ``retries`` < 0.
        BosonPortError, TauPortError: (from ``open_port``) the port path cannot be opened.
    """

    product = "camera"
    commands: Dict[str, object] = {}
    #: the protocol's base error; every error of this class is counted and may be retried
    error: Type[Exception] = Exception
    port_error: Type[Exception] = OSError
    timeout_error: Type[Exception] = TimeoutError
    truncated_error: Type[Exception] = TimeoutError
    #: the timeout message's words when a reply started but never completed ({n}: bytes received)
    truncated_text = "reply incomplete ({n} bytes)"
    #: errors retried with a fresh attempt (link errors, transient statuses)
    retryable: Tuple[Type[Exception], ...] = ()
    #: retryable errors after which the next attempt waits ``timeout / 4`` (busy, not ready)
    backoff: Tuple[Type[Exception], ...] = ()
    #: (error class, counter name) pairs: each error counts once in every counter whose class it is
    counted: Tuple[Tuple[Type[Exception], str], ...] = ()

    def __init__(self, port_or_serial: Union[str, os.PathLike, object], timeout: float, retries: int,
                 baudrate: int, poll_s: float, open_port: Callable[..., object]):
        if timeout <= 0 or retries < 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0, got {timeout}, {retries}")
        self.timeout = float(timeout)
        self.retries = int(retries)
        # reads must return often enough for the command deadlines to be checked
        read_timeout = min(poll_s, timeout)
        self._open_port = lambda: open_port(self.port_name, baudrate, timeout=read_timeout)
        if isinstance(port_or_serial, (str, os.PathLike)):
            self.port_name = os.fspath(port_or_serial)
            self._port = self._open_port()
            self._owns_port = True
        else:
            self._port = port_or_serial
            self.port_name = str(getattr(port_or_serial, "port", None) or port_or_serial)
            self._owns_port = False
            if hasattr(self._port, "timeout"):
                self._port.timeout = read_timeout
        self._lock = threading.Lock()  # one command at a time
        self.counters = {"commands": 0, "retries": 0, "reopened": 0, **{key: 0 for _, key in self.counted}}

    # -- lifecycle
    def close(self) -> None:
        """Close the serial port if this client opened it (a port passed in stays open)."""
        if self._owns_port and self._port is not None:
            self._port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one command: bounded retries over request-reply exchanges
    def _run(self, attempt: Callable[[float], bytes]) -> bytes:
        """``attempt(deadline)`` up to ``retries + 1`` times, one command at a time.

        Each attempt gets ``timeout`` seconds (``deadline``: a :func:`time.monotonic` time) and
        the command never takes longer than ``timeout * (retries + 1)`` s. Errors of class
        ``error`` are counted (:attr:`counted`); those in ``retryable`` are tried again while
        attempts and time are left, after ``timeout / 4`` s for those in ``backoff``.

        Returns:
            What the successful attempt returned (the reply data bytes).

        Raises:
            error: the last attempt's error, or the first that is not retryable.
        """
        with self._lock:
            self.counters["commands"] += 1
            end = time.monotonic() + self.timeout * (self.retries + 1)
            for attempt_no in range(self.retries + 1):
                if attempt_no:
                    self.counters["retries"] += 1
                deadline = min(time.monotonic() + self.timeout, end)
                try:
                    return attempt(deadline)
                except self.error as exc:
                    for cls, key in self.counted:
                        if isinstance(exc, cls):
                            self.counters[key] += 1
                    remaining = end - time.monotonic()
                    if not isinstance(exc, self.retryable) or attempt_no == self.retries or remaining <= 0:
                        raise
                    if isinstance(exc, self.backoff):
                        time.sleep(min(self.timeout / 4, remaining))
        raise AssertionError("unreachable")

    def _exchange(self, request: bytes, name: str, deadline: float,
                  check: Callable[[object], Optional[bytes]]) -> bytes:
        """Write ``request`` and read until ``check(received)`` returns the reply data.

        ``check`` gets each frame ``_reader`` cuts from the bytes read and returns the reply
        data, None to keep reading (not this request's reply), or raises. Input left over from
        an earlier command is dropped first.

        A port this client opened from a path is closed when it fails (a USB adapter unplugged:
        ``serial.SerialException``, or ``termios.error`` EIO from the flush) and opened again at
        the next exchange (``counters["reopened"]``), so control resumes when the adapter comes
        back at that path.

        Raises:
            port_error: the port failed (an ``OSError``, e.g. ``serial.SerialException``, or a
                ``termios.error``), or could not be opened again after failing.
            truncated_error: ``deadline`` passed with a reply started but not complete.
            timeout_error: ``deadline`` passed with no reply; when bytes came back that formed no
                packet (the reader's ``garbage_bytes``, and a started span that cannot be a frame:
                ``pending_frame_bytes`` 0), "no <product> frame …: N bytes came back that are no
                <product> packet (garbage: another device on this port, or another baud rate?)".
        """
        self._reader.reset()
        garbage_before = getattr(self._reader, "garbage_bytes", 0)
        if self._port is None:  # the port failed before: the adapter may be back at its path
            self._port = self._open_port()   # port_error (one line) while it is not
            self.counters["reopened"] += 1
        try:
            self._port.reset_input_buffer()
            self._port.write(request)
            while time.monotonic() < deadline:
                waiting = getattr(self._port, "in_waiting", 0) or 1
                for received in self._reader.feed(self._port.read(waiting)):
                    reply = check(received)
                    if reply is not None:
                        return reply
        except PORT_FAILURES as exc:  # serial.SerialException (an OSError); termios.error from a flush
            if self._owns_port:     # a vanished device (unplugged): closed here, opened again by the next command
                try:
                    self._port.close()
                except PORT_FAILURES:
                    pass
                self._port = None
            raise self.port_error(f"{name}: serial port {self.port_name} failed: {exc}") from exc
        where = f"within {self.timeout:g} s on {self.port_name}"
        garbage = getattr(self._reader, "garbage_bytes", 0) - garbage_before
        why = (f"{garbage} bytes came back that are no {self.product} packet (garbage: another device on this "
               "port, or another baud rate?)")
        # a started span that cannot be one of the protocol's frames is garbage too (fslp.FrameReader)
        pending = getattr(self._reader, "pending_frame_bytes", self._reader.pending_bytes)
        if pending:
            raise self.truncated_error(f"{name}: {self.truncated_text.format(n=pending)} {where}"
                                       + (f" ({why})" if garbage else ""))
        if garbage or self._reader.pending_bytes:  # bytes came, none formed a packet: another device, another baud rate
            garbage += self._reader.pending_bytes
            raise self.timeout_error(f"{name}: no {self.product} frame {where}: {garbage} bytes came back that are "
                                     f"no {self.product} packet (garbage: another device on this port, or another "
                                     "baud rate?)")
        raise self.timeout_error(f"{name}: no reply {where}")

    # -- commands by name
    def _function_of(self, command) -> int:
        raise TypeError(f"{type(self).__name__} must say how a command names its function code")

    def transact(self, function: int, data: bytes, reply_size: int, name: str = "") -> bytes:
        """Send one request and return the reply data; implemented by each protocol.

        Raises:
            TypeError: always, in the base class.
        """
        raise TypeError(f"{type(self).__name__} must implement its protocol's transact")

    def call(self, name: str, *args):
        """Run command ``name`` from ``commands`` with ``args`` packed by its ``arg`` struct format.

        Returns:
            The reply unpacked by its ``reply`` format: one value, a tuple, or None for no reply data.

        Raises:
            ValueError: unknown command (the message lists them), arguments to a command that takes
                none, or arguments that do not fit its format.
            BosonError, TauError: from the protocol's :meth:`transact`.
        """
        if name not in self.commands:
            raise ValueError(f"unknown {self.product} command {name!r}; known: {', '.join(sorted(self.commands))}")
        cmd = self.commands[name]
        if not cmd.arg and args:
            raise ValueError(f"{name} takes no arguments, got {args!r}")
        try:
            data = struct.pack(cmd.arg, *args) if cmd.arg else b""
        except struct.error as exc:
            raise ValueError(f"{name}: bad arguments {args!r} for format {cmd.arg!r}: {exc}") from exc
        reply = self.transact(self._function_of(cmd), data, struct.calcsize(cmd.reply) if cmd.reply else 0, name)
        if not cmd.reply:
            return None
        values = struct.unpack(cmd.reply, reply)
        return values[0] if len(values) == 1 else values


def enum_accessors(what: str, cls: Type[enum.IntEnum], get: Tuple[str, str], set_: Tuple[str, str],
                   raises: str):
    """The ``get_X`` / ``set_X`` method pair of one enum setting (FFC mode, gain mode).

    Args:
        what: the setting in words, e.g. "FFC mode".
        cls: its enum; the getter returns a member (the plain int for a value it lacks), the
            setter takes a member, its value or its name (:func:`parse_enum`).
        get, set_: (command name in ``commands``, the protocol's name and code for the docstring).
        raises: the ``Raises`` line of the protocol's error, for both docstrings.

    Returns:
        (getter, setter) functions, to be bound as methods of a :class:`CommandClient` subclass.
    """
    def getter(self):
        return decode_enum(cls, self.call(get[0]))

    def setter(self, mode) -> None:
        self.call(set_[0], int(parse_enum(cls, mode)))

    getter.__name__ = getter.__qualname__ = get[0]
    getter.__doc__ = (f"The {what} ({get[1]}): a member of :class:`{cls.__name__}`, or the int when unknown."
                      f"\n\n        Raises:\n            {raises}\n        ")
    setter.__name__ = setter.__qualname__ = set_[0]
    setter.__doc__ = (f"Set the {what} ({set_[1]}); ``mode``: a member of :class:`{cls.__name__}`, its value or "
                      f"name.\n\n        Raises:\n            ValueError: ``mode`` is not a member, value or name "
                      f"of the enum.\n            {raises}\n        ")
    return getter, setter
