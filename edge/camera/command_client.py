"""What the Boson and Tau2 clients share: the serial port, its lifecycle, commands by name.

Each protocol module keeps its own framing, checks and retry policy (``transact``); this base
only owns the port (a path opened with pyserial, or any open serial-like object: a pty, a
``loop://`` port) and turns a command name plus arguments into ``transact`` through the
protocol's command table of struct formats.
"""
from __future__ import annotations

import os
import struct
import threading
from typing import Callable, Dict, Union


class CommandClient:
    """Base of :class:`~tir.edge.camera.boson.BosonClient` and :class:`~tir.edge.camera.tau.TauClient`.

    Subclasses set ``product`` and ``commands`` (name -> command with ``arg`` and ``reply``
    struct formats) and implement ``transact`` and ``_function_of(command)``. ``timeout`` is the
    reply timeout per attempt in seconds, ``retries`` the extra attempts, ``baudrate`` in bit/s,
    ``poll_s`` the longest single serial read in seconds.

    Raises:
        ValueError: ``timeout`` <= 0 or ``retries`` < 0.
        BosonPortError, TauPortError: (from ``open_port``) the port path cannot be opened.
    """

    product = "camera"
    commands: Dict[str, object] = {}

    def __init__(self, port_or_serial: Union[str, os.PathLike, object], timeout: float, retries: int,
                 baudrate: int, poll_s: float, open_port: Callable[..., object]):
        if timeout <= 0 or retries < 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0, got {timeout}, {retries}")
        self.timeout = float(timeout)
        self.retries = int(retries)
        # reads must return often enough for the command deadlines to be checked
        read_timeout = min(poll_s, timeout)
        if isinstance(port_or_serial, (str, os.PathLike)):
            self.port_name = os.fspath(port_or_serial)
            self._port = open_port(self.port_name, baudrate, timeout=read_timeout)
            self._owns_port = True
        else:
            self._port = port_or_serial
            self.port_name = str(getattr(port_or_serial, "port", None) or port_or_serial)
            self._owns_port = False
            if hasattr(self._port, "timeout"):
                self._port.timeout = read_timeout
        self._lock = threading.Lock()  # one command at a time

    # -- lifecycle
    def close(self) -> None:
        """Close the serial port if this client opened it (a port passed in stays open)."""
        if self._owns_port:
            self._port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
