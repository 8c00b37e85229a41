"""HTTP output: MJPEG streams, snapshots, live stats and a web page (``http://HOST:PORT``).

Endpoints::

    /                          the page (edge/outputs/web/)
    /stream/<view>.mjpg        multipart/x-mixed-replace MJPEG, view = raw | restored | side
    /snapshot/<view>.jpg       one JPEG of the newest frame
    /stats.json                pipeline stats + this output's counters + "no_signal"
    /spot.json?x=&y=&view=     counts (and temperature where known) at one pixel
    /healthz                   liveness
    POST /ffc                  flat-field correction now (when the run has camera control)

``write`` only stores the newest frame (never blocks the pipeline). JPEG encoding is
lazy: a view is encoded only when some client asks for it, at most once per frame and
quality, and the bytes are shared by every client. A slow client simply skips to the
newest frame; nothing queues up. ``actions`` maps a POST path's name to a callable the
pipeline provides (``{"ffc": controller.request_ffc}``), like ``stats_provider``. Options: ``quality`` (JPEG, default 80),
``no_signal_after`` (seconds, default 2).
"""
from __future__ import annotations

import errno
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..frame import Frame, now
from ..uri import URI
from .base import Output, OutputError
from .jpeg import VIEWS, clamp_quality, encode_jpeg, no_signal_image, view_image, view_size

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
BOUNDARY = "tirframe"
NO_SIGNAL_REPEAT_S = 1.0  # how often a stream repeats the NO SIGNAL card
STATS_POLL_S = 0.5  # the streams consult stats_provider() at most this often
VIEW_INTEREST_S = 2.0  # a snapshot keeps the AGC views computed this long (frame.display)


def counts_to_celsius(counts: float, meta: Dict[str, Any]) -> Optional[float]:
    """Temperature of ``counts`` when the frame's meta carries a radiometric scale.

    ``meta["temperature_k"]`` is kelvin per count (e.g. 0.01 for TLinear high gain on
    Boson/Lepton, 1/64 for InfiRay P2 Pro; see shared/reference/thermal_io.md) or a dict
    ``{"scale": k_per_count, "offset": kelvin}``. None when the camera is not radiometric.
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


def scene_range(frame: Frame) -> Dict[str, Any]:
    """Robust min/max counts of the scene: the 0.1 and 99.9 percentiles of every other
    pixel of the restored frame (or raw), so a few dead or hot pixels do not set them."""
    counts = frame.restored if frame.restored is not None else frame.raw
    lo, hi = np.percentile(counts[::2, ::2], (0.1, 99.9))
    return {"min_counts": int(lo), "max_counts": int(round(hi)),
            "of": "restored" if frame.restored is not None else "raw"}


class LatestFrame:
    """The newest frame, a generation counter, and its JPEGs encoded on demand."""

    def __init__(self):
        self.changed = threading.Condition()
        self.frame: Optional[Frame] = None
        self.generation = 0
        self.t_last: Optional[float] = None
        self.frames_in = 0
        self.encodes = 0
        self._jpegs: Dict[Tuple[str, int], Tuple[int, bytes]] = {}
        self._encode_locks: Dict[Tuple[str, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def put(self, frame: Frame) -> None:
        with self.changed:
            self.frame = frame
            self.generation += 1
            self.frames_in += 1
            self.t_last = now()
            self.changed.notify_all()

    def snapshot(self) -> Tuple[Optional[Frame], int]:
        with self.changed:
            return self.frame, self.generation

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


class HTTPOutput(Output):
    """Serves the newest frames over HTTP from a daemon thread."""

    def __init__(self, uri: URI):
        super().__init__(uri)
        self.host = uri.host or DEFAULT_HOST
        self.port = DEFAULT_PORT if uri.port is None else uri.port
        self.quality = clamp_quality(uri.get("quality", 80))
        self.no_signal_after = uri.get("no_signal_after", 2.0, float)
        self.latest = LatestFrame()
        self.actions: Dict[str, Callable[[], Any]] = {}  # POST /<name> -> callable, set by the pipeline
        self.clients = 0
        self._view_requested_at = -VIEW_INTEREST_S  # last snapshot request (pipeline clock)
        self.frames_served = 0
        self.closing = threading.Event()
        self._counters = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._no_signal_jpegs: Dict[Tuple[str, int, int, int], bytes] = {}
        self._connected_cache: Tuple[float, Optional[bool]] = (-1e9, None)
        self._frame_size = (320, 256)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "HTTPOutput":
        if self._server is not None:
            return self
        handler = type("BoundHandler", (_Handler,), {"output": self})
        try:
            server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OutputError(
                    f"port {self.port} on {self.host} is in use; pick another with --port / "
                    f"http://{self.host}:PORT"
                ) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise OutputError(
                    f"address {self.host} is not on this machine; use 127.0.0.1 (local) "
                    f"or 0.0.0.0 (all interfaces)"
                ) from exc
            if exc.errno == errno.EACCES:
                raise OutputError(
                    f"no permission to listen on port {self.port}; ports below 1024 need "
                    f"root, pick e.g. http://{self.host}:8080"
                ) from exc
            raise OutputError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name=f"http-output:{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def write(self, frame: Frame) -> None:
        self.latest.put(frame)

    def close(self) -> None:
        self.closing.set()
        with self.latest.changed:
            self.latest.changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- what the handlers ask --------------------------------------------------
    def pipeline_stats(self) -> Dict[str, Any]:
        if self.stats_provider is None:
            return {}
        try:
            return dict(self.stats_provider() or {})
        except Exception as exc:  # a broken provider must not take the page down
            return {"stats_error": f"{type(exc).__name__}: {exc}"}

    def _connected(self) -> Optional[bool]:
        t, value = self._connected_cache
        if now() - t >= STATS_POLL_S:
            value = self.pipeline_stats().get("connected")
            self._connected_cache = (now(), value)
        return value

    def signal_lost(self, stats: Optional[Dict[str, Any]] = None) -> bool:
        """True when no frame has come for ``no_signal_after`` s or the source says so."""
        t_last = self.latest.t_last
        if t_last is None or now() - t_last > self.no_signal_after:
            return True
        connected = stats.get("connected") if stats is not None else self._connected()
        return connected is False

    def no_signal_jpeg(self, view: str, quality: int) -> bytes:
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
        if self.signal_lost():
            return self.no_signal_jpeg(view, quality)
        return self.latest.jpeg(view, quality)[1]

    def wants_display(self) -> bool:
        """AGC views are needed while a stream is open or a snapshot was asked for lately."""
        return self.clients > 0 or now() - self._view_requested_at < VIEW_INTEREST_S

    def count_served(self, clients_delta: int = 0, frames: int = 0) -> None:
        with self._counters:
            self.clients += clients_delta
            self.frames_served += frames

    def stats(self) -> Dict[str, Any]:
        """stats_provider() plus this output's counters, the newest frame's facts, no_signal."""
        stats = self.pipeline_stats()
        frame, _ = self.latest.snapshot()
        stats["http"] = {
            "clients": self.clients,
            "frames_in": self.latest.frames_in,
            "frames_served": self.frames_served,
            "encodes": self.latest.encodes,
            "quality": self.quality,
            "actions": sorted(self.actions),
        }
        stats.setdefault("frames", self.latest.frames_in)
        if frame is not None:
            stats["frame"] = {
                "seq": frame.seq,
                "width": int(frame.raw.shape[1]),
                "height": int(frame.raw.shape[0]),
                "age_ms": round((now() - frame.t_capture) * 1000.0, 1),
            }
            scene = scene_range(frame)
            lo, hi = scene["min_counts"], scene["max_counts"]
            lo_c, hi_c = counts_to_celsius(lo, frame.meta), counts_to_celsius(hi, frame.meta)
            if lo_c is not None:
                scene.update(min_c=lo_c, max_c=hi_c)
            stats["scene"] = scene
        stats["no_signal"] = self.signal_lost(stats)
        return stats

    def act(self, name: str) -> Tuple[int, Dict[str, Any]]:
        """Run the action ``name`` (POST /<name>): (HTTP status, JSON reply)."""
        action = self.actions.get(name)
        if action is None:
            if name == "ffc":
                return 409, {"error": "no camera control in this run; start tir run with --camera-port DEV|auto"}
            return 404, {"error": f"no action {name!r}; known: {', '.join(sorted(self.actions)) or 'none'}"}
        try:
            action()
        except Exception as exc:  # the camera side reports its own failures in stats
            return 500, {"error": f"{name} failed: {type(exc).__name__}: {exc}"}
        return 202, {"ok": True, "requested": name}

    def spot(self, x: int, y: int, view: str) -> Dict[str, Any]:
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


class _Handler(BaseHTTPRequestHandler):
    output: HTTPOutput  # set on the bound subclass
    server_version = "tir-edge"
    timeout = 10  # a client that stops reading for this long is dropped

    def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        try:
            if path in WEB_FILES:
                name, ctype = WEB_FILES[path]
                self._send(200, (WEB_DIR / name).read_bytes(), ctype)
            elif path == "/stats.json":
                self._send_json(self.output.stats())
            elif path == "/healthz":
                self._send_json({"ok": True, "frames_in": self.output.latest.frames_in})
            elif path == "/spot.json":
                self._spot(query)
            elif path.startswith("/stream/") and path.endswith(".mjpg"):
                view = path[len("/stream/"):-len(".mjpg")]
                if self._known_view(view):
                    self._stream(view, clamp_quality(query.get("quality"), self.output.quality))
            elif path.startswith("/snapshot/") and path.endswith(".jpg"):
                view = path[len("/snapshot/"):-len(".jpg")]
                self.output._view_requested_at = now()
                if self._known_view(view):
                    q = clamp_quality(query.get("quality"), self.output.quality)
                    self._send(200, self.output.current_jpeg(view, q), "image/jpeg")
                    self.output.count_served(frames=1)
            else:
                self._send(404, f"no page {path}; try / or /stats.json\n".encode(), "text/plain")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))  # the actions take no body
        name = urlsplit(self.path).path.strip("/")
        try:
            code, reply = self.output.act(name)
            self._send_json(reply, code)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _known_view(self, view: str) -> bool:
        if view in VIEWS:
            return True
        self._send(404, f"unknown view {view!r}; known: {', '.join(VIEWS)}\n".encode(),
                   "text/plain")
        return False

    def _spot(self, query: Dict[str, str]) -> None:
        try:
            x, y = int(query["x"]), int(query["y"])
        except (KeyError, ValueError):
            self._send_json({"error": "give integer pixel coordinates: /spot.json?x=10&y=20"}, 400)
            return
        self._send_json(self.output.spot(x, y, query.get("view", "raw")))

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, data: Dict[str, Any], code: int = 200) -> None:
        body = json.dumps(data, default=_json_default).encode()
        self._send(code, body, "application/json")

    def _stream(self, view: str, quality: int) -> None:
        out = self.output
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        # Each part is followed at once by the next boundary, so browsers show a frame
        # when it arrives rather than when the next one starts.
        self.wfile.write(f"--{BOUNDARY}\r\n".encode())
        out.count_served(clients_delta=1)
        try:
            sent_generation, sent_no_signal_at = -1, -1e9
            while not out.closing.is_set():
                with out.latest.changed:
                    out.latest.changed.wait_for(
                        lambda: out.closing.is_set() or out.latest.generation != sent_generation,
                        timeout=NO_SIGNAL_REPEAT_S / 2)
                if out.closing.is_set():
                    break
                if out.signal_lost():
                    sent_generation = out.latest.generation
                    if time.monotonic() - sent_no_signal_at >= NO_SIGNAL_REPEAT_S:
                        self._part(out.no_signal_jpeg(view, quality))
                        sent_no_signal_at = time.monotonic()
                    continue
                if out.latest.generation == sent_generation:
                    continue
                sent_generation, data = out.latest.jpeg(view, quality)
                self._part(data)
                sent_no_signal_at = -1e9
        finally:
            out.count_served(clients_delta=-1)
        self.close_connection = True

    def _part(self, jpeg: bytes) -> None:
        head = (f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n").encode()
        self.wfile.write(head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
        self.wfile.flush()
        self.output.count_served(frames=1)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
