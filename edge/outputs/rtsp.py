"""RTSP / RTP output through GStreamer (``rtsp://@:8554/name``, ``rtsp://server:8554/name``,
``rtp://host:port``), where OpenCV was built with GStreamer.

The H.264 pipeline follows shared/reference/pipelines.md, recommendation 9 and the "HW
encode" row (jetson-utils' encoder settings): on a Jetson
``nvvidconv ! nvv4l2h264enc insert-sps-pps=1 idrinterval=30 maxperf-enable=1``, elsewhere
``x264enc tune=zerolatency``; then ``rtph264pay config-interval=1`` to ``udpsink
sync=false``. Three destinations:

- ``rtp://HOST:PORT``: RTP/UDP to one receiver.
- ``rtsp://SERVER:PORT/NAME``: pushed with ``rtspclientsink`` to an RTSP server (e.g. mediamtx).
- ``rtsp://@:PORT/NAME``: served from here by gst-rtsp-server (Python GObject bindings),
  which re-serves an RTP stream this output sends to a local UDP port.

The pip ``opencv-python`` wheels have no GStreamer; then :class:`RTSPOutput` refuses to
start and says how to get an OpenCV that has it (pipelines.md pain point 9).
Options: ``view`` (side|raw|restored, default side), ``fps`` (30), ``bitrate`` (kbit/s,
4000), ``encoder`` (auto|x264|nvv4l2), ``relay_port`` (local UDP port for ``@`` serving).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import cv2

from ..frame import Frame
from ..registry import option
from ..uri import URI, netloc
from .base import Output, OutputError
from .jpeg import VIEWS, view_image
from .window import NewestFrameWorker

log = logging.getLogger(__name__)

JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
DEFAULT_RTSP_PORT = 8554
RTP_CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"


def gstreamer_problem() -> Optional[str]:
    """Why OpenCV here cannot run GStreamer pipelines, or None when it can."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            if line.split(":", 1)[1].strip().upper().startswith("YES"):
                return None
            break
    return (
        f"OpenCV {cv2.__version__} here was built without GStreamer (cv2.getBuildInformation() "
        f"says 'GStreamer: NO'; the pip opencv-python wheels never include it), so it cannot "
        f"stream RTSP/RTP. On a Jetson use JetPack's system OpenCV: `pip uninstall "
        f"opencv-python` in a venv made with --system-site-packages (python3 -c 'import cv2; "
        f"print(cv2.getBuildInformation())' must show GStreamer: YES). Elsewhere build OpenCV "
        f"with -DWITH_GSTREAMER=ON. Until then, the HTTP output streams MJPEG to any browser: "
        f"`tir run --output http://127.0.0.1:8080` (the default), or --host 0.0.0.0 for other machines."
    )


def encoder_elements(encoder: str, bitrate_kbps: int) -> str:
    """GStreamer elements from BGR frames (after appsrc) to an H.264 byte stream.

    ``bitrate_kbps`` is in kbit/s (nvv4l2h264enc takes bit/s, x264enc kbit/s).

    Raises:
        OutputError: ``encoder`` is not x264 or nvv4l2.
    """
    if encoder == "nvv4l2":
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
                "video/x-raw(memory:NVMM),format=I420 ! "
                f"nvv4l2h264enc insert-sps-pps=1 idrinterval=30 maxperf-enable=1 "
                f"bitrate={bitrate_kbps * 1000} ! h264parse")
    if encoder == "x264":
        return ("videoconvert ! video/x-raw,format=I420 ! "
                f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} "
                f"key-int-max=30 ! h264parse")
    raise OutputError(f"encoder={encoder!r} is not one of auto, x264, nvv4l2")


def pick_encoder(requested: str = "auto") -> str:
    """``requested``, or for ``auto``: nvv4l2 on a Jetson (``/etc/nv_tegra_release`` exists), else x264."""
    if requested != "auto":
        return requested
    return "nvv4l2" if JETSON_RELEASE_FILE.exists() else "x264"


def serves_locally(uri: URI) -> bool:
    """``rtsp://@:8554/name`` (or no host) means: run the RTSP server here."""
    return uri.scheme == "rtsp" and uri.host in ("", "@", "0.0.0.0")


def writer_pipeline(uri: URI, encoder: str, bitrate_kbps: int, relay_port: int) -> str:
    """The cv2.VideoWriter (CAP_GSTREAMER) pipeline for ``uri``.

    Raises:
        OutputError: an rtp:// URI without HOST:PORT, a scheme other than rtsp/rtp, or an
            unknown encoder.
    """
    head = "appsrc is-live=true do-timestamp=true ! " + encoder_elements(encoder, bitrate_kbps)
    if uri.scheme == "rtp":
        if not uri.host or uri.port is None:
            raise OutputError(f"{uri.text!r}: give the receiver as rtp://HOST:PORT")
        return (f"{head} ! rtph264pay config-interval=1 pt=96 ! "
                f"udpsink host={uri.host} port={uri.port} sync=false async=false")
    if uri.scheme != "rtsp":
        raise OutputError(f"{uri.text!r} is not an rtsp:// or rtp:// address")
    if serves_locally(uri):
        return (f"{head} ! rtph264pay config-interval=1 pt=96 ! "
                f"udpsink host=127.0.0.1 port={relay_port} sync=false async=false")
    port = uri.port or DEFAULT_RTSP_PORT
    return (f"{head} ! rtspclientsink location=rtsp://{netloc(uri.host, port)}{uri.path or '/tir'} "
            f"latency=0")


class LocalRTSPServer:
    """gst-rtsp-server on ``port`` serving ``mount``, re-serving RTP from ``relay_port``.

    Raises:
        OutputError: the GStreamer RTSP server bindings are missing, or the port cannot be served.
    """

    def __init__(self, port: int, mount: str, relay_port: int):
        try:
            import gi

            gi.require_version("Gst", "1.0")
            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GLib, Gst, GstRtspServer
        except (ImportError, ValueError) as exc:
            raise OutputError(
                f"serving rtsp://@:{port}{mount} from here needs gst-rtsp-server's Python "
                f"bindings ({exc}); install them (apt install python3-gi "
                f"gir1.2-gst-rtsp-server-1.0), or push to an RTSP server with "
                f"rtsp://SERVER:8554/name (e.g. mediamtx), or send rtp://HOST:PORT") from exc
        Gst.init(None)
        self._loop = GLib.MainLoop()
        self._server = GstRtspServer.RTSPServer()
        self._server.set_service(str(port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( udpsrc port={relay_port} caps="{RTP_CAPS}" ! rtph264depay ! '
                           f"rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(True)
        self._server.get_mount_points().add_factory(mount, factory)
        if self._server.attach(None) == 0:
            raise OutputError(f"cannot serve RTSP on port {port} (in use?); pick another port")
        self._thread = threading.Thread(target=self._loop.run, name="rtsp-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the server's GLib main loop and join its thread (up to 5 s)."""
        self._loop.quit()
        self._thread.join(5)


@dataclass(frozen=True)
class RTSPOptions:
    """URI options of ``rtsp://`` and ``rtp://`` (see the module docstring)."""

    view: str = option("side", "which view to send", choices=VIEWS)
    fps: float = option(30.0, "frame rate of the stream", check=lambda v: None if v > 0 else "must be > 0")
    bitrate: int = option(4000, "H.264 bitrate in kbit/s", check=lambda v: None if v > 0 else "must be > 0")
    encoder: str = option("auto", "H.264 encoder (auto: nvv4l2 on a Jetson, else x264)",
                          choices=("auto", "x264", "nvv4l2"))
    relay_port: Optional[int] = option(None, "local UDP port between the encoder and the RTSP server "
                                             "(default: the RTSP port + 1000)",
                                       check=lambda v: None if 1 <= v <= 65535 else "must be a port 1..65535")


class RTSPOutput(Output):
    """Encodes one view to H.264 and sends it over RTSP/RTP from a worker thread (options:
    :class:`RTSPOptions`)."""

    Options = RTSPOptions

    def __init__(self, uri: URI):
        super().__init__(uri)
        o = self.options
        self.view = o.view
        self.fps = o.fps
        self.bitrate_kbps = o.bitrate
        self.encoder = pick_encoder(o.encoder)
        port = uri.port or DEFAULT_RTSP_PORT
        self.relay_port = o.relay_port if o.relay_port is not None else port + 1000
        self.pipeline = writer_pipeline(uri, self.encoder, self.bitrate_kbps, self.relay_port)
        self._server: Optional[LocalRTSPServer] = None
        self._writer: Optional[cv2.VideoWriter] = None
        self._size = None
        self.worker = NewestFrameWorker("rtsp-output", self._send, teardown=self._release)

    @property
    def url(self) -> str:
        """The URL viewers open (``rtsp://127.0.0.1:PORT/MOUNT`` when served here, else the URI)."""
        if serves_locally(self.uri):
            return f"rtsp://127.0.0.1:{self.uri.port or DEFAULT_RTSP_PORT}{self.uri.path or '/tir'}"
        return self.uri.text

    def start(self) -> "RTSPOutput":
        """Start the local RTSP server (for ``rtsp://@:PORT/name``) and the encoder thread; returns the
        output.

        Raises:
            OutputError: OpenCV lacks GStreamer, or the local RTSP server cannot start.
        """
        if self.worker.running:
            return self
        problem = gstreamer_problem()
        if problem:
            raise OutputError(f"cannot stream {self.uri.text}: {problem}")
        if serves_locally(self.uri):
            self._server = LocalRTSPServer(self.uri.port or DEFAULT_RTSP_PORT,
                                           self.uri.path or "/tir", self.relay_port)
        self.worker.start()
        return self

    def write(self, frame: Frame) -> None:
        """Offer the frame to the encoder thread (a frame not yet sent is replaced)."""
        self.worker.offer(frame)

    def close(self) -> None:
        """Stop the encoder thread (releasing the writer) and the local RTSP server."""
        self.worker.stop()
        if self._server is not None:
            self._server.close()
            self._server = None

    def stats(self) -> Dict[str, Any]:
        """sent, skipped (replaced before sending), failure (None while it works) and url."""
        failure = self.worker.failure
        return {"sent": self.worker.handled, "skipped": self.worker.skipped,
                "failure": None if failure is None else str(failure), "url": self.url}

    # -- worker thread ---------------------------------------------------------------
    def _send(self, frame: Frame) -> None:
        image = view_image(frame, self.view)
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            # The frame size is known only now; the caps of appsrc come from it.
            writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.fps, size, True)
            if not writer.isOpened():
                raise OutputError(f"GStreamer could not open the pipeline for {self.uri.text} "
                                  f"(missing plugin?): {self.pipeline}")
            log.info("streaming %s with: %s", self.url, self.pipeline)
            self._writer, self._size = writer, size
        if size != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)

    def _release(self) -> None:
        if self.worker.failure is not None:
            log.error("RTSP output stopped: %s", self.worker.failure)
        if self._writer is not None:
            self._writer.release()
            self._writer = None
