"""HTTP output: MJPEG streams, snapshots, live stats and a web page (``http://HOST:PORT``).

Endpoints (the table :data:`ROUTES` at the end of this module is the one place they are
set up)::

    /                          the page (edge/outputs/web/), with this run's token in a <meta>
    /stream/<view>.mjpg        multipart/x-mixed-replace MJPEG, view = raw | restored | side
    /snapshot/<view>.jpg       one JPEG of the newest frame
    /stats.json                the stats schema's JSON form (tir.edge.pipeline.stats.StatsSnapshot):
                               pipeline stats + this output's counters + "no_signal"
    /spot.json?x=&y=&view=     counts (and temperature where known) at one pixel; view raw (default)
                               or restored, another view is 400
    /healthz                   liveness
    POST /ffc                  flat-field correction now (when the run has camera control)
    POST /bundle/reload        load the model bundle folder again and swap it in between two frames
    POST /camera/new           the camera changed (same connection, same size): the gates restart
                               their camera histories from the next frame, as on a reconnect
                               (engines/hotswap.py; the result is in /stats.json model.bundle)

The server is aiohttp (its event loop runs in a daemon thread); request parsing, header and
body limits and the listen backlog are aiohttp's. ``write`` only stores the newest frame (never
blocks the pipeline). JPEG encoding is lazy: a view is encoded only when some client asks for
it, at most once per frame and quality, on a worker thread, and the bytes are shared by every
client. Requested qualities snap to a fixed set (:data:`~.jpeg.QUALITIES`), so the encodes per
frame are bounded however many clients ask. A slow client simply skips to the newest frame;
nothing queues up. The pipeline hands the output its stats and ``actions`` (a POST path's
name -> callable, ``{"ffc": controller.request_ffc}``) through :meth:`Output.attach`.

Security (a page any web site can point a browser at must not drive the camera):

- every request's ``Host`` must be a name or address this server listens as (DNS-rebinding
  defence), else 421;
- a POST needs the run's token in the ``X-Tir-Token`` header (the page carries it; ``tir run``
  prints it), else 403; a POST whose ``Origin`` is not this server is 403 whatever it carries;
- a POST body is at most :data:`MAX_BODY` bytes (413, the body is never read), malformed
  requests get aiohttp's 400, and each view serves at most ``max_viewers`` streams (503).

URI options: ``quality`` (JPEG, default 80, snapped), ``no_signal_after`` (seconds, default 2),
``token`` (fixed token instead of a random one per run: 16 or more of A-Z a-z 0-9 - . _ ~), ``max_viewers`` (streams per view,
default 16), ``allow_host`` (extra comma-separated host names accepted in ``Host``, e.g. a
reverse proxy's name).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
from aiohttp import web

from ..frame import Frame, now
from ..pipeline.slots import LatestWinsSlot
from ..pipeline.stats import FrameInfo, HttpStats, SceneRange, StatsSnapshot
from ..registry import option
from ..uri import URI, netloc
from .base import Output, OutputError
from .jpeg import QUALITIES, VIEWS, encode_jpeg, no_signal_image, snap_quality, view_image, view_size

log = logging.getLogger("tir.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
TOKEN_PLACEHOLDER = b"{{TIR_TOKEN}}"  # in index.html, replaced by the run's token when served
TOKEN_HEADER = "X-Tir-Token"
SPOT_VIEWS = ("raw", "restored")  # the frames /spot.json reads a pixel of
BOUNDARY = "tirframe"
NO_SIGNAL_REPEAT_S = 1.0  # how often a stream repeats the NO SIGNAL card
STATS_POLL_S = 0.5  # the streams consult stats_provider() at most this often
VIEW_INTEREST_S = 2.0  # a snapshot keeps the AGC views computed this long (frame.display)
BACKLOG = 128  # listen queue: a burst of browser tabs / viewers connecting at once waits in it
MAX_BODY = 4096  # bytes; the POST actions take no body, so anything bigger is refused (413)
MAX_LINE = 8190  # request line / header line limits handed to aiohttp's parser (its defaults)
MAX_HEADERS = 64
DEFAULT_MAX_VIEWERS = 16  # open streams per view
WRITE_TIMEOUT_S = 10.0  # a client that stops reading for this long is dropped
SHUTDOWN_S = 2.0  # close(): how long in-flight requests get before they are cancelled
ENCODE_THREADS = 2
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def counts_to_celsius(counts: float, meta: Dict[str, Any]) -> Optional[float]:
    """Temperature of ``counts`` in °C when the frame's meta carries a radiometric scale.

    ``meta["temperature_k"]`` is kelvin per count (e.g. 0.01 for TLinear high gain on
    Boson/Lepton, 1/64 for InfiRay P2 Pro; see shared/reference/thermal_io.md §3.2) or a dict
    ``{"scale": k_per_count, "offset": kelvin}``; °C = counts × scale + offset − 273.15,
    rounded to 0.01 °C. None when the camera is not radiometric or the scale is not a number.
    """
    scale = meta.get("temperature_k") if meta else None
    if scale is None:
        return None
    offset = 0.0
    if isinstance(scale, dict):
        scale, offset = scale.get("scale"), scale.get("offset", 0.0)
    try:
        return round(float(counts) * float(scale) + float(offset) - 273.15, 2)
    except (TypeError, ValueError):
        return None


def scene_range(frame: Frame) -> SceneRange:
    """Robust min/max counts of the scene: the 0.1 and 99.9 percentiles of every other pixel
    of the restored frame (or raw), so a few dead or hot pixels do not set them.

    Reads ``frame.restored`` or ``frame.raw``, (H, W) uint16 counts; returns a
    :class:`SceneRange` in counts (no °C filled in).
    """
    counts = frame.restored if frame.restored is not None else frame.raw
    lo, hi = np.percentile(counts[::2, ::2], (0.1, 99.9))
    return SceneRange(min_counts=int(lo), max_counts=int(round(hi)),
                      of="restored" if frame.restored is not None else "raw")


class LatestFrame:
    """The newest frame, a generation counter, and its JPEGs encoded on demand.

    The frame is held in a :class:`~tir.edge.pipeline.slots.LatestWinsSlot` that every
    client only peeks at (nobody takes it); ``generation`` is the slot's ``puts``.
    Thread-safe: the pipeline puts from its thread, encodes run on the server's worker threads.
    """

    def __init__(self):
        self.slot: LatestWinsSlot[Frame] = LatestWinsSlot("http")
        self.t_last: Optional[float] = None
        self.encodes = 0
        self._jpegs: Dict[Tuple[str, int], Tuple[int, bytes]] = {}
        self._encode_locks: Dict[Tuple[str, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.on_put: Optional[Callable[[], None]] = None  # called after each put (any thread)

    def put(self, frame: Frame) -> None:
        """Make ``frame`` the newest (its JPEG cache is refreshed on demand) and wake the streams."""
        self.slot.put(frame)
        self.t_last = now()
        if self.on_put is not None:
            self.on_put()

    @property
    def generation(self) -> int:
        """Frames put so far: a new value means a new frame."""
        return self.slot.puts

    @property
    def frames_in(self) -> int:
        """Frames put so far (the same count as :attr:`generation`)."""
        return self.slot.puts

    def snapshot(self) -> Tuple[Optional[Frame], int]:
        """(newest frame or None, its generation)."""
        return self.slot.peek()

    def jpeg(self, view: str, quality: int) -> Tuple[int, bytes]:
        """(generation, JPEG bytes) of ``view``; encodes only if this frame has not been."""
        key = (view, quality)
        with self._locks_guard:
            lock = self._encode_locks.setdefault(key, threading.Lock())
        with lock:
            frame, generation = self.snapshot()
            cached = self._jpegs.get(key)
            if cached is not None and cached[0] == generation:
                return cached
            data = encode_jpeg(view_image(frame, view), quality)
            self._jpegs[key] = (generation, data)
            self.encodes += 1
            return generation, data


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's request-handler log (logger ``tir.http.server``) without the "Error handling
    request" traceback for requests its parser refused (bad Content-Length, over-long lines,
    too many headers, garbage): the client already got a 400, and a traceback per junk request
    would flood the console. Those are counted in the output's ``refused["malformed"]``."""

    def __init__(self, output: "HTTPOutput"):
        super().__init__(logging.getLogger("tir.http.server"), {})
        self.output = output

    def log(self, level, msg, *args, **kwargs):  # every level method of the adapter ends here
        from aiohttp.http_exceptions import HttpProcessingError

        exc = kwargs.get("exc_info")
        if isinstance(exc, tuple):
            exc = exc[1]
        if isinstance(exc, HttpProcessingError):
            self.output._refuse("malformed")
            return
        super().log(level, msg, *args, **kwargs)


def _split_host(value: str) -> Tuple[str, Optional[int]]:
    """("name", port or None) of a Host header or an Origin's netloc ("[::1]:80" -> ("::1", 80))."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(value)
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(value)
        port = rest[1:] if rest else None
    else:
        name, _, port = value.partition(":")
        port = port if _ else None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(value)
        port = int(port)
    if not name:
        raise ValueError(value)
    return name.rstrip("."), port


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ipv6_available() -> bool:
    """Whether this machine can listen on IPv6 at all: an AF_INET6 socket bound to the IPv6
    loopback ``::1`` (port 0, closed at once). False where Python was built without IPv6, the
    kernel has it off (``ipv6.disable=1``: EAFNOSUPPORT) or a container has no IPv6 loopback
    (EADDRNOTAVAIL)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def local_addresses() -> List[str]:
    """This machine's own interface addresses (IPv4 then IPv6, loopback excluded), read from the
    kernel: SIOCGIFADDR per interface and /proc/net/if_inet6 on Linux, else the addresses the
    local resolver gives this host's name. Nothing is sent on any network."""
    v4: List[str] = []
    v6: List[str] = []
    try:
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _, name in socket.if_nameindex():
                try:
                    # SIOCGIFADDR (0x8915, linux/sockios.h): struct ifreq -> sockaddr_in at offset 20
                    packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
                except OSError:
                    continue  # interface without an IPv4 address
                v4.append(socket.inet_ntoa(packed[20:24]))
    except (ImportError, OSError, AttributeError):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                raw = line.split()[0]
                v6.append(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    if not v4 and not v6:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM,
                                       flags=getattr(socket, "AI_ADDRCONFIG", 0))
            for info in infos:
                (v6 if info[0] == socket.AF_INET6 else v4).append(info[4][0])
        except OSError:
            pass
    out: List[str] = []
    for addr in v4 + v6:
        ip = ipaddress.ip_address(addr.split("%")[0])
        if not ip.is_loopback and not ip.is_unspecified and str(ip) not in out:
            out.append(str(ip))
    return out


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


#: the characters a fixed ``token=`` may hold: RFC 3986 section 2.3's unreserved characters, the
#: alphabet of secrets.token_urlsafe; they pass unchanged through a URL query, an HTTP header
#: (the page's fetch() refuses non-Latin-1 header values) and the page's ``<meta>`` attribute
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")


def _token_check(token: str) -> Optional[str]:
    if not TOKEN_CHARACTERS.fullmatch(token):
        return ("holds characters the page cannot carry in its X-Tir-Token header or its HTML; use only "
                "A-Z a-z 0-9 - . _ ~ (or leave it out for a random one per run)")
    if len(token) >= 16:
        return None
    return f"is {len(token)} characters; use at least 16 (or leave it out for a random one per run)"


@dataclass(frozen=True)
class HTTPOptions:
    """URI options of ``http://HOST:PORT`` (see the module docstring)."""

    quality: float = option(80.0, "JPEG quality 1..100, snapped to the nearest of " + ", ".join(map(str, QUALITIES)),
                            check=lambda v: None if 1 <= v <= 100 else "must be 1..100 (a JPEG quality)")
    no_signal_after: float = option(2.0, "seconds without a frame before the page shows NO SIGNAL",
                                    check=lambda v: None if v > 0 else "must be > 0")
    max_viewers: int = option(DEFAULT_MAX_VIEWERS, "open streams per view (more are refused with 503)",
                              check=lambda v: None if v >= 1 else "must be >= 1 (streams per view)")
    token: Optional[str] = option(None, "the control token (default: a random one per run)", check=_token_check)
    allow_host: str = option("", "extra Host names the server answers to, comma-separated")


class HTTPOutput(Output):
    """Serves the newest frames over HTTP (aiohttp, event loop in a daemon thread; options:
    :class:`HTTPOptions`)."""

    Options = HTTPOptions

    def __init__(self, uri: URI):
        super().__init__(uri)
        o = self.options
        # no host (http://?quality=50, http://:8080): this machine only, as with no --output at all;
        # every interface is asked for by name (0.0.0.0)
        self.host = uri.host or DEFAULT_HOST
        self.port = DEFAULT_PORT if uri.port is None else uri.port
        self.quality = snap_quality(o.quality)
        self.no_signal_after = o.no_signal_after
        self.max_viewers = o.max_viewers
        self.token = o.token if o.token is not None else secrets.token_urlsafe(24)
        self.extra_hosts = [h.strip().lower() for h in o.allow_host.split(",") if h.strip()]
        self.latest = LatestFrame()
        self.collector = None  # the collect:// output (tir run --collect): GET /collect/<id>.jpg
        self.clients = 0
        self.viewers: Dict[str, int] = {v: 0 for v in VIEWS}
        self.refused = {"host": 0, "origin": 0, "token": 0, "body": 0, "viewers": 0, "malformed": 0}
        self._view_requested_at = -VIEW_INTEREST_S  # last snapshot request (pipeline clock)
        self.frames_served = 0
        self.closing = threading.Event()
        self._counters = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._frame_event: Optional[asyncio.Event] = None
        self._pages: Dict[str, bytes] = {}
        self._allowed_hosts: Set[str] = set()
        self._no_signal_jpegs: Dict[Tuple[str, int, int, int], bytes] = {}
        self._connected_cache: Tuple[float, Optional[bool]] = (-1e9, None)
        self._frame_size = (320, 256)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "HTTPOutput":
        """Bind the port and serve on a thread of its own; returns the output (a second call does nothing).

        Raises:
            OutputError: the port is in use, the address is not this machine's or cannot be
                resolved, the port needs root, or the server fails otherwise (one line saying what
                to do).
        """
        if self._runner is not None:
            return self
        self._pages = {path: (WEB_DIR / name).read_bytes() for path, (name, _) in WEB_FILES.items()}
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="http-output", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=30)
        except BaseException as exc:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()
            raise self._listen_error(exc) from exc
        self._loop, self._thread = loop, thread
        thread.name = f"http-output:{self.port}"
        self._allowed_hosts = self._host_names()
        self.latest.on_put = self._frame_arrived
        return self

    def check_listen(self) -> None:
        """Check, binding nothing for longer than the check, that :meth:`start` can listen on the
        output's host and port: each address the host resolves to is bound and let go at once, with
        the options the server binds with (SO_REUSEADDR, as asyncio's ``create_server`` sets it on
        Unix; IPv6 only on an IPv6 socket). ``tir run`` calls it before the models load, so a port in
        use is said in a second, not after every route has loaded. Port 0 (any free port) is not
        checked.

        Raises:
            OutputError: as :meth:`start` would (:meth:`_listen_error`: the port is in use, the
                address is not this machine's or cannot be resolved, the port needs root).
        """
        if self.port == 0:
            return
        try:
            infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, address in {(i[0], i[1], i[2], i[4]) for i in infos}:
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind(address)
        except OSError as exc:
            raise self._listen_error(exc) from None

    def _listen_error(self, exc: BaseException) -> BaseException:
        """The OutputError (one line, what to do) for an exception raised while binding."""
        where = netloc(self.host, self.port)
        if not isinstance(exc, OSError):
            return OutputError(f"cannot start the HTTP server on {where}: "
                               f"{type(exc).__name__}: {exc}")
        if ":" in self.host and not ipv6_available():   # an IPv6 address: Linux booted with ipv6.disable=1,
            # a container without IPv6 (EAFNOSUPPORT, or EADDRNOTAVAIL for ::1 without an IPv6 loopback)
            return OutputError(f"cannot listen on {where}: this machine has no IPv6 ({exc.strerror or exc}); "
                               f"listen on IPv4: http://127.0.0.1:{self.port} (this machine only) or "
                               f"http://0.0.0.0:{self.port} (every interface)")
        if exc.errno == errno.EADDRINUSE:
            return OutputError(f"port {self.port} on {netloc(self.host)} is in use; pick another with --port / "
                               f"http://{netloc(self.host)}:PORT")
        if exc.errno == errno.EADDRNOTAVAIL:
            return OutputError(f"address {self.host} is not on this machine; use 127.0.0.1 (local) "
                               f"or 0.0.0.0 (all interfaces)")
        if exc.errno == errno.EACCES:
            return OutputError(f"no permission to listen on port {self.port}; ports below 1024 need "
                               f"root, pick e.g. http://{netloc(self.host)}:8080")
        if isinstance(exc, socket.gaierror):
            return OutputError(f"cannot resolve the listen address {self.host!r} ({exc.strerror}); "
                               "use an address of this machine, 127.0.0.1 or 0.0.0.0")
        return OutputError(f"cannot listen on {where}: {exc}")

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception as exc:  # shutting down must never take the process with it
                log.debug("http loop shutdown: %s", exc)

    async def _serve(self) -> None:
        self._frame_event = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="http-jpeg")
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        for method, path, handler, needs_token in ROUTES:
            bound = handler.__get__(self, type(self))
            if needs_token:
                bound = self._token_checked(bound)
            if method == "GET":
                app.router.add_get(path, bound)  # answers HEAD too
            else:
                app.router.add_route(method, path, bound)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_S,
                               logger=_ServerLog(self),
                               max_line_size=MAX_LINE, max_field_size=MAX_LINE, max_headers=MAX_HEADERS,
                               keepalive_timeout=15.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host or None, self.port, backlog=BACKLOG)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._pool.shutdown(wait=False)
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the server (127.0.0.1 for a wildcard listen address)."""
        host = "127.0.0.1" if _is_wildcard(self.host) else self.host
        return _url(host, self.port)

    @property
    def exposed(self) -> bool:
        """True when the server listens on a non-loopback address (others can reach it)."""
        return not _is_loopback(self.host)

    def reachable_urls(self) -> List[str]:
        """The URLs other machines can use: this machine's interface addresses for 0.0.0.0/::,
        else the listen address itself."""
        if not _is_wildcard(self.host):
            return [] if _is_loopback(self.host) else [_url(self.host, self.port)]
        # IPv6 link-local addresses need a %zone in a URL: not offered
        addrs = [a for a in local_addresses() if not (":" in a and ipaddress.ip_address(a).is_link_local)]
        if self.host == "0.0.0.0":
            addrs = [a for a in addrs if ":" not in a]
        return [_url(a, self.port) for a in addrs]

    def start_lines(self) -> List[str]:
        """What ``tir run`` prints once this output listens: the token and, when others can
        reach the server, a warning with the reachable URLs."""
        lines = [f"POST token ({TOKEN_HEADER} header; the page carries it): {self.token}"]
        if self.exposed:
            urls = self.reachable_urls()
            lines.append(f"warning: listening on {netloc(self.host) or 'all interfaces'}: anyone who can reach "
                         f"this machine can watch the streams and read the token from the page; use "
                         f"--host 127.0.0.1 unless that is intended")
            lines.append("reachable at " + (", ".join(urls) if urls else
                                            f"port {self.port} of this machine's addresses (none found)"))
        return lines

    def _host_names(self) -> Set[str]:
        """Names/addresses accepted in the Host header."""
        names: Set[str] = set(self.extra_hosts)
        if _is_wildcard(self.host):
            names.update(LOOPBACK_NAMES)
            names.update(local_addresses())
            try:
                names.add(socket.gethostname().lower())
            except OSError:
                pass
        else:
            names.add(self.host.lower().strip("[]"))
            if _is_loopback(self.host):
                names.update(LOOPBACK_NAMES)
        return names

    def host_allowed(self, value: str) -> bool:
        """Whether a Host header (or an Origin's host[:port]) names this server."""
        try:
            name, port = _split_host(value)
        except ValueError:
            return False
        if port is None:
            port = 80
        return port == self.port and name in self._allowed_hosts

    def write(self, frame: Frame) -> None:
        """Make ``frame`` the newest; JPEGs are encoded only when a client asks."""
        self.latest.put(frame)

    def _frame_arrived(self) -> None:
        loop = self._loop
        if loop is not None and self.clients > 0:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop has closed
                pass

    def _wake(self) -> None:
        event = self._frame_event
        if event is not None:
            self._frame_event = asyncio.Event()
            event.set()

    def close(self) -> None:
        """Stop serving: open streams end, in-flight requests get SHUTDOWN_S, the port is freed.
        Never raises (a failure here is logged)."""
        self.closing.set()
        self.latest.on_put = None
        self.latest.slot.close()
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop = self._thread = self._runner = None
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake)
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=SHUTDOWN_S + 5)
        except Exception as exc:  # noqa: BLE001 - closing must not abort the caller
            log.warning("HTTP output on port %s did not shut down cleanly: %s", self.port, exc)
        finally:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            if thread is not None:
                thread.join(timeout=5)
            if thread is None or not thread.is_alive():
                loop.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    # -- what the handlers ask --------------------------------------------------
    def pipeline_stats(self) -> StatsSnapshot:
        """The attached pipeline's snapshot (a copy); an empty one (``frames`` from this output's
        own count) before :meth:`attach`, one with ``stats_error`` when the provider failed.

        Never raises: a provider that raises or returns something else is reported in
        ``stats_error``.
        """
        if self.stats_provider is None:
            return StatsSnapshot(frames=self.latest.frames_in, time=time.time())
        try:
            snap = self.stats_provider()
            if not isinstance(snap, StatsSnapshot):
                raise TypeError(f"the stats provider returned {type(snap).__name__}, not a StatsSnapshot")
            return dataclasses.replace(snap)  # a copy: the fields set below stay this reader's
        except Exception as exc:  # a broken provider must not take the page down
            return StatsSnapshot(frames=self.latest.frames_in, time=time.time(),
                                 stats_error=f"{type(exc).__name__}: {exc}")

    def _connected(self) -> Optional[bool]:
        t, value = self._connected_cache
        if now() - t >= STATS_POLL_S:
            value = self._source_connected(self.pipeline_stats())
            self._connected_cache = (now(), value)
        return value

    def signal_lost(self, stats: Optional[StatsSnapshot] = None) -> bool:
        """True when no frame has come for ``no_signal_after`` s or the source says so."""
        t_last = self.latest.t_last
        if t_last is None or now() - t_last > self.no_signal_after:
            return True
        connected = self._source_connected(stats) if stats is not None else self._connected()
        return connected is False

    def _source_connected(self, stats: StatsSnapshot) -> Optional[bool]:
        """The pipeline's ``connected``; None (unknown) without a pipeline or its stats."""
        if self.stats_provider is None or stats.stats_error is not None:
            return None
        return stats.connected

    def no_signal_jpeg(self, view: str, quality: int) -> bytes:
        """The NO SIGNAL test card for ``view`` at the newest frame's size as JPEG bytes (cached per size and
        quality).
        """
        frame, _ = self.latest.snapshot()
        if frame is not None:
            self._frame_size = (frame.raw.shape[1], frame.raw.shape[0])
        w, h = view_size(view, self._frame_size)
        key = (view, w, h, quality)
        if key not in self._no_signal_jpegs:
            detail = "waiting for frames" if frame is None else "source lost"
            self._no_signal_jpegs[key] = encode_jpeg(no_signal_image(w, h, detail), quality)
        return self._no_signal_jpegs[key]

    def current_jpeg(self, view: str, quality: int) -> bytes:
        """JPEG bytes of ``view`` at ``quality`` (1..100): the newest frame, or the NO SIGNAL card while the
        signal is lost.
        """
        if self.signal_lost():
            return self.no_signal_jpeg(view, quality)
        return self.latest.jpeg(view, quality)[1]

    def wants_display(self) -> bool:
        """AGC views are needed while a stream is open or a snapshot was asked for lately."""
        return self.clients > 0 or now() - self._view_requested_at < VIEW_INTEREST_S

    def count_served(self, clients_delta: int = 0, frames: int = 0) -> None:
        """Add ``clients_delta`` open streams and ``frames`` sent frames to the counters (thread-safe)."""
        with self._counters:
            self.clients += clients_delta
            self.frames_served += frames

    def stats(self) -> StatsSnapshot:
        """The pipeline's snapshot plus this output's counters (``http``), the newest frame's
        facts (``frame``, ``scene``) and ``no_signal`` as this output sees it."""
        stats = self.pipeline_stats()
        frame, _ = self.latest.snapshot()
        stats.http = HttpStats(
            clients=self.clients,
            viewers=dict(self.viewers),
            max_viewers=self.max_viewers,
            frames_in=self.latest.frames_in,
            frames_served=self.frames_served,
            encodes=self.latest.encodes,
            quality=self.quality,
            actions=sorted(self.actions),
            refused=dict(self.refused),
        )
        if frame is not None:
            stats.frame = FrameInfo(seq=frame.seq, width=int(frame.raw.shape[1]), height=int(frame.raw.shape[0]),
                                    age_ms=round((now() - frame.t_capture) * 1000.0, 1))
            scene = scene_range(frame)
            lo_c = counts_to_celsius(scene.min_counts, frame.meta)
            hi_c = counts_to_celsius(scene.max_counts, frame.meta)
            if lo_c is not None:
                scene.min_c, scene.max_c = lo_c, hi_c
            stats.scene = scene
        stats.no_signal = self.signal_lost(stats)
        return stats

    def act(self, name: str) -> Tuple[int, Dict[str, Any]]:
        """Run the action ``name`` (POST /<name>): (HTTP status, JSON reply)."""
        action = self.actions.get(name)
        if action is None:
            if name in UNAVAILABLE:
                return 409, {"error": UNAVAILABLE[name]}
            return 404, {"error": f"no action {name!r}; known: {', '.join(sorted(self.actions)) or 'none'}"}
        try:
            action()
        except Exception as exc:  # the camera side reports its own failures in stats
            return 500, {"error": f"{name} failed: {type(exc).__name__}: {exc}"}
        return 202, {"ok": True, "requested": name}

    def spot(self, x: int, y: int, view: str) -> Dict[str, Any]:
        """The value of pixel (``x``, ``y``) of the newest frame's ``view`` (``restored`` or raw).

        Returns:
            ``{"x", "y", "view", "counts", "celsius"}`` (celsius None when the camera is not
            radiometric), or ``{"error": ...}`` when there is no frame yet or the pixel is outside it.
        """
        frame, _ = self.latest.snapshot()
        if frame is None:
            return {"error": "no frame yet"}
        image = frame.restored if view == "restored" and frame.restored is not None else frame.raw
        h, w = image.shape
        if not (0 <= x < w and 0 <= y < h):
            return {"error": f"pixel ({x}, {y}) is outside the {w}x{h} frame"}
        counts = int(image[y, x])
        return {"x": x, "y": y, "view": view, "counts": counts,
                "celsius": counts_to_celsius(counts, frame.meta)}

    def _refuse(self, kind: str) -> None:
        with self._counters:
            self.refused[kind] += 1

    # -- aiohttp handlers (run on the event loop thread) -------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None and not self.host_allowed(host):
            self._refuse("host")
            return _text(421, f"Host {host[:100]!r} is not a name this server listens as; open "
                              f"{self.url} (or add the name with ?allow_host=NAME)\n", close=True)
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        name, ctype = WEB_FILES[request.path]
        body = self._pages[request.path]
        if name == "index.html":
            body = body.replace(TOKEN_PLACEHOLDER, self.token.encode())
        return web.Response(body=body, content_type=ctype.split(";")[0], charset="utf-8",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                     "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"})

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats().to_dict())

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "frames_in": self.latest.frames_in})

    async def _spot(self, request: web.Request) -> web.Response:
        try:
            x, y = int(request.query["x"]), int(request.query["y"])
        except (KeyError, ValueError):
            return _json({"error": "give integer pixel coordinates: /spot.json?x=10&y=20"}, 400)
        view = request.query.get("view", "raw")
        if view not in SPOT_VIEWS:
            return _json({"error": f"unknown view {view[:50]!r}; give view={' or view='.join(SPOT_VIEWS)}"}, 400)
        return _json(self.spot(x, y, view))

    async def _not_found(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return _text(405, f"{request.method} is not served here; GET a page or POST an action\n",
                         close=request.body_exists)
        return _text(404, f"no page {request.path[:200]}; try / or /stats.json\n")

    def _token_checked(self, handler):
        """``handler`` behind the checks of a route that needs the token: same origin, the
        run's token in the X-Tir-Token header, at most MAX_BODY bytes of body."""
        async def checked(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if origin is not None and not self._same_origin(origin):
                self._refuse("origin")
                return _json({"error": f"cross-origin POST from {origin[:100]!r} refused; use the page at "
                                       f"{self.url}"}, 403, close=True)
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):
                self._refuse("token")
                return _json({"error": f"{'wrong' if given else 'missing'} {TOKEN_HEADER} header; the page "
                                       f"at {self.url} sends it, tir run prints it"}, 403, close=True)
            length = request.content_length
            if (length is not None and length > MAX_BODY) or (length is None and request.body_exists):
                self._refuse("body")
                return _json({"error": f"{request.method} {request.path[:100]} takes no body; at most "
                                       f"{MAX_BODY} bytes with a Content-Length are accepted"}, 413, close=True)
            if length:
                await request.read()  # bounded by Content-Length <= MAX_BODY (client_max_size too)
            return await handler(request)
        return checked

    async def _post(self, request: web.Request) -> web.Response:
        """POST /<name> (or a fixed path such as /bundle/reload): run the action of that name
        (behind :meth:`_token_checked`)."""
        code, reply = self.act(request.match_info.get("name") or request.path.lstrip("/"))
        return _json(reply, code)

    def _same_origin(self, origin: str) -> bool:
        scheme, sep, rest = origin.partition("://")
        return bool(sep) and scheme.lower() == "http" and "/" not in rest and self.host_allowed(rest)

    def _known_view(self, view: str) -> Optional[web.Response]:
        if view in VIEWS:
            return None
        return _text(404, f"unknown view {view[:50]!r}; known: {', '.join(VIEWS)}\n")

    async def _encode(self, view: str, quality: int) -> Tuple[int, bytes]:
        """(generation, JPEG) of the newest frame on a worker thread; the card while no signal
        (generation -1)."""
        loop = asyncio.get_running_loop()
        if self.signal_lost():
            return -1, await loop.run_in_executor(self._pool, self.no_signal_jpeg, view, quality)
        return await loop.run_in_executor(self._pool, self.latest.jpeg, view, quality)

    async def _snapshot(self, request: web.Request) -> web.Response:
        view = request.match_info["view"]
        self._view_requested_at = now()
        refusal = self._known_view(view)
        if refusal is not None:
            return refusal
        q = snap_quality(request.query.get("quality"), self.quality)
        _, data = await self._encode(view, q)
        self.count_served(frames=1)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _collected(self, request: web.Request) -> web.Response:
        """A thumbnail of one of the last frames the collector kept (ids in stats collect.thumbs)."""
        if self.collector is None:
            return _text(404, "nothing is collected in this run; start it with tir run --collect DIR\n")
        try:
            ident = int(request.match_info["ident"])
        except ValueError:
            return _text(404, "give a collected frame's id: /collect/<id>.jpg (ids in /stats.json collect.thumbs)\n")
        data = self.collector.thumbnail(ident)
        if data is None:
            return _text(404, f"collected frame {ident} is not among the last thumbnails; see /stats.json collect.thumbs\n")
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        view = request.match_info["view"]
        refusal = self._known_view(view)
        if refusal is not None:
            return refusal
        quality = snap_quality(request.query.get("quality"), self.quality)
        with self._counters:
            full = self.viewers[view] >= self.max_viewers
            if not full:
                self.viewers[view] += 1
                self.clients += 1
        if full:
            self._refuse("viewers")
            return _text(503, f"{self.max_viewers} viewers already watch the {view} stream (the limit); "
                              f"close one, or start tir run with --output 'http://HOST:PORT?max_viewers=N'\n",
                         headers={"Retry-After": "5"})
        resp = _CloseDelimitedResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store", "Connection": "close"})
        resp.force_close()
        try:
            await resp.prepare(request)
            # Each part is followed at once by the next boundary, so browsers show a frame
            # when it arrives rather than when the next one starts.
            await self._send(resp, f"--{BOUNDARY}\r\n".encode())
            sent_generation, sent_no_signal_at = -1, -1e9
            while not self.closing.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client went away
                if self.latest.generation == sent_generation or self.signal_lost():
                    await self._wait_frame(sent_generation, NO_SIGNAL_REPEAT_S / 2)
                if self.closing.is_set():
                    break
                if self.signal_lost():
                    sent_generation = self.latest.generation
                    if time.monotonic() - sent_no_signal_at >= NO_SIGNAL_REPEAT_S:
                        _, card = await self._encode(view, quality)
                        await self._part(resp, card)
                        sent_no_signal_at = time.monotonic()
                    continue
                if self.latest.generation == sent_generation:
                    continue
                generation, data = await self._encode(view, quality)
                if generation < 0:
                    continue
                sent_generation = generation
                await self._part(resp, data)
                sent_no_signal_at = -1e9
        except (ConnectionError, asyncio.TimeoutError, asyncio.CancelledError, RuntimeError):
            pass  # the client went away or stopped reading, or the server is closing
        finally:
            with self._counters:
                self.viewers[view] -= 1
                self.clients -= 1
        return resp

    async def _wait_frame(self, generation: int, timeout: float) -> None:
        event = self._frame_event
        if self.latest.generation != generation or self.closing.is_set() or event is None:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _send(self, resp: web.StreamResponse, data: bytes) -> None:
        await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)

    async def _part(self, resp: web.StreamResponse, jpeg: bytes) -> None:
        head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
        await self._send(resp, head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
        self.count_served(frames=1)


#: the actions a run may lack, with what to do to have them: a POST for one of them is 409 (the
#: action exists, this run does not offer it), any other unknown name 404
UNAVAILABLE: Dict[str, str] = {
    "ffc": "no camera control in this run; start tir run with --camera-port DEV|auto",
    "bundle/reload": "this run has no model bundle to reload; start tir run with --model BUNDLE_DIR",
    "camera/new": "this run restores nothing, so it keeps no camera history to restart",
}


# Every route the server answers, in match order: (method, path, handler, needs_token).
# needs_token: the request must pass HTTPOutput._token_checked (same origin, X-Tir-Token,
# no body). aiohttp's GET routes answer HEAD too; the last row catches everything else.
ROUTES: List[Tuple[str, str, Callable, bool]] = [
    *[("GET", path, HTTPOutput._page, False) for path in WEB_FILES],
    ("GET", "/stats.json", HTTPOutput._stats, False),
    ("GET", "/healthz", HTTPOutput._healthz, False),
    ("GET", "/spot.json", HTTPOutput._spot, False),
    ("GET", "/stream/{view}.mjpg", HTTPOutput._stream, False),
    ("GET", "/snapshot/{view}.jpg", HTTPOutput._snapshot, False),
    ("GET", "/collect/{ident}.jpg", HTTPOutput._collected, False),
    ("POST", "/bundle/reload", HTTPOutput._post, True),
    ("POST", "/camera/new", HTTPOutput._post, True),
    ("POST", "/{name}", HTTPOutput._post, True),
    ("*", "/{tail:.*}", HTTPOutput._not_found, False),
]


class _CloseDelimitedResponse(web.StreamResponse):
    """A streamed body delimited by closing the connection, not chunked: the MJPEG wire format
    every MJPEG client reads (browsers, OpenCV, ffmpeg, VLC, embedded viewers). aiohttp would
    chunk an HTTP/1.1 body of unknown length; ``_length_check = False`` is how its own
    FileResponse/WebSocketResponse opt out (aiohttp 3.x, pinned <4 in setup.py)."""

    _length_check = False


def _text(status: int, text: str, close: bool = False, headers: Optional[Dict[str, str]] = None) -> web.Response:
    resp = web.Response(status=status, text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store", **(headers or {})})
    if close:
        resp.force_close()  # the request body (if any) is never read
    return resp


def _json(data: Dict[str, Any], status: int = 200, close: bool = False) -> web.Response:
    resp = web.Response(status=status, body=json.dumps(data, default=_json_default).encode(),
                        content_type="application/json", headers={"Cache-Control": "no-store"})
    if close:
        resp.force_close()
    return resp


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
