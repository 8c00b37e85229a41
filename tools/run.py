"""``tir run``: capture, restore and stream thermal video.

    tir run                                   # first thermal camera (else synthetic://), bundled model, http://127.0.0.1:8080
    tir run --source synthetic://?size=320x256 --model path/to/bundle --record /tmp/rec
    tir run --model route.onnx --backend onnxruntime --output http://0.0.0.0:8080 --output display://0
    tir run --camera-port auto --ffc-period 300   # Boson control: FFC every 5 min, FFC frames marked
    tir run --host 0.0.0.0 --port 8090            # the page on every interface, port 8090
    tir run --collect /data/unknown               # keep frames the router calls unknown (tir discover)
    tir run --reference /data/cam-in-focus        # judge every frame against this camera's healthy look

Camera control (FFC, FPA temperature) opens with ``--camera-port DEV|auto``; without it, a v4l2
Boson (USB 09CB:4007) whose serial port is found is controlled automatically. ``--ffc-period 0``
leaves FFC to the camera's own mode (its FFCs are still seen and marked); the page's FFC
button runs one on demand.

Camera reference: the contrast, blur and FPN gates judge each verdict against the camera's own
frames (engines/*_gate.py). By default they learn the camera from its stream; ``--reference URI``
pins them to frames of its healthy look instead (a folder or file of frames, ``--reference-frames``
at most), so a camera whose every frame is degraded (a defocused lens) is still restored rather
than taken as its own normal. The virtual camera with ``degrade=...`` pins its own clean frames.

Prints one status line a second (fps, end-to-end p50/p99, drops, route/confidence, signal,
and ``FAILED: ...`` for an output that stopped, e.g. a recording on a full disk).
SIGINT, SIGTERM and SIGHUP (systemd, ``docker stop``) stop the run cleanly, also during
start-up: outputs closed, the recording indexed and its preview finalised.

Exit status: 0 the run ended (limit, end of file, stop signal); 1 a model stage failed;
2 bad arguments, or a source or output could not be opened or failed; 3 the recording
failed (disk full, I/O error: the frames written before it are kept and readable). A run
asked to record cannot do what it was asked once its recording stopped: it stops at once
(the failure logged, on the last status line and in ``/stats.json`` until the server
closes), every output closed cleanly, and exits 3.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import List, Optional
from urllib.parse import quote, urlsplit, urlunsplit

from tir.edge.errors import EXIT_OK, InputError, OutputFailed, OutputUnavailable, TirError, UsageError
from tir.engines import loading
from tir.engines.loading import ModelNotFound, load_model, normalizer_for  # noqa: F401  (tir.tools.run.*, as before)
from tir.engines.loading import DEFAULT_REFERENCE_FRAMES, pin_reference, pin_source_reference, pinnable
from tir.edge.sources.orient import FLIP_METHODS
from tir.edge.uri import netloc

from .cli import add_model_arguments, add_source_argument

log = logging.getLogger("tir.run")

DEFAULT_OUTPUT = "http://127.0.0.1:8080"
#: ``--output none``: the run has no output of its own (no page, no port bound); ``--record`` and
#: ``--collect`` still write, and the status line still counts (benchmarking, recording only)
NO_OUTPUT = "none"
#: other words a user types for "no output" (ffmpeg's ``-f null``, GStreamer's fakesink, a flag's
#: off): each was taken as a bare path and recorded into a folder of that name, unasked
NO_OUTPUT_SPELLINGS = ("null", "nul", "nothing", "off", "no", "false", "disable", "disabled", "headless", "fakesink")
DEMO_SOURCE = "synthetic://?degrade=noise"
AGC_CHOICES = ("percentile", "plateau", "clahe")


def default_source() -> str:
    """The first thermal UVC camera, else :data:`DEMO_SOURCE` (saying which devices were seen)."""
    from tir.edge.sources.devices import describe_video_devices, find_thermal_camera

    found = find_thermal_camera()
    if found is not None:
        path, fmt = found
        print(f"tir run: thermal camera at {path} ({getattr(fmt, 'name', fmt)})", flush=True)
        return f"v4l2://{path}"
    print(f"tir run: no thermal camera found ({describe_video_devices()}); using {DEMO_SOURCE} "
          "(the virtual thermal camera with the noise degradation added, so there is something to "
          "restore; plain synthetic:// is the clean camera)", flush=True)
    return DEMO_SOURCE


def status_line(snap) -> str:
    """One line of a stats snapshot (a StatsSnapshot, or its JSON form)."""
    e2e = snap.get("latency_ms", {}).get("e2e") or {}
    drops = sum(v for v in snap.get("drops", {}).values() if isinstance(v, int))
    p50, p99 = e2e.get("p50"), e2e.get("p99")
    parts = [
        f"fps {snap.get('fps', 0.0):5.1f}",
        f"e2e p50 {float('nan') if p50 is None else p50:6.1f} ms p99 {float('nan') if p99 is None else p99:6.1f} ms",
        f"frames {snap.get('frames', 0)}",
        f"drops {drops}",
    ]
    if snap.get("corrupt_total"):
        parts.append(f"corrupt {snap['corrupt_total']}")
    task = snap.get("task")
    if task is not None:
        conf = snap.get("confidence")
        runs = (snap.get("model") or {}).get("runs")
        # what runs it when that is more than the route's name: tone+route, destripe, student+destripe
        shown = f" [{runs}]" if isinstance(runs, str) and runs not in ("route", "student", "passthrough") else ""
        parts.append(f"task {task}{shown}" + (f" {conf:.2f}" if isinstance(conf, (int, float)) else ""))
    bundle = (snap.get("model") or {}).get("bundle")
    if bundle:
        parts.append(f"bundle v{bundle.get('version')}" + (f" (swapped x{bundle['swaps']})" if bundle.get("swaps") else ""))
        if bundle.get("reload_error"):
            parts.append(f"RELOAD FAILED: {bundle['reload_error']}")
        if bundle.get("file_error"):
            parts.append(f"BUNDLE FILE FAILED: {bundle['file_error']}")
    adapt = snap.get("adapt")
    if adapt:
        parts.append(f"adapt {adapt.get('state', '-')}")
    contrast = snap.get("contrast")
    if contrast and contrast.get("demoted"):
        parts.append(f"contrast gate demoted {contrast['demoted']}")
    if contrast and contrast.get("promoted"):
        parts.append(f"contrast gate promoted {contrast['promoted']}")
    fpn = snap.get("fpn")
    if fpn and fpn.get("promoted"):
        parts.append(f"FPN gate promoted {fpn['promoted']}")
    if fpn and fpn.get("promoted_white"):
        parts.append(f"white noise promoted {fpn['promoted_white']}")
    if fpn and fpn.get("demoted_white"):
        parts.append(f"camera's own noise kept {fpn['demoted_white']}")
    if fpn and fpn.get("destriped"):
        parts.append(f"column FPN removed {fpn['destriped']}")
    if fpn and fpn.get("held"):
        parts.append(f"noise held before the camera's floor {fpn['held']}")
    blur = snap.get("blur")
    if blur and blur.get("demoted"):
        parts.append(f"blur gate demoted {blur['demoted']}")
    if blur and blur.get("changed_noisy"):
        parts.append(f"blur under noise changed {blur['changed_noisy']}")
    if blur and blur.get("held"):
        parts.append(f"blur held before the camera's reference {blur['held']}")
    camera = snap.get("camera")
    if camera:
        fpa = camera.get("fpa_temp_c")
        parts.append((f"FPA {fpa:.1f} C" if isinstance(fpa, (int, float)) else "FPA -")
                     + f" FFC {camera.get('ffc_state', '-')} x{camera.get('ffc_count', 0)}")
    collect = snap.get("collect")
    if collect and "frames" in collect:
        parts.append(f"collected {collect['frames']} (unknown {collect.get('unknown', 0)})")
        if collect.get("write_errors"):
            parts.append(f"collect write errors {collect['write_errors']} (last: {collect.get('last_error')})")
    recording = snap.get("recording")
    if recording and recording.get("segments"):  # files begun at the largest file allowed (FAT32's 4 GiB)
        parts.append(f"recording went on in {recording['segments']} new files (file size limit)")
    parts.append("connected" if snap.get("connected") else "NO SIGNAL")
    for failure in (snap.get("output_failures") or {}).values():
        parts.append(f"FAILED: {failure.split(';')[0]}")  # the whole line is printed at exit
    return " | ".join(parts)


def _uri_help(registry) -> str:
    """``scheme://`` (options) per entry of a source/output registry, for --help."""
    return "; ".join(f"{e.name}:// ({', '.join(o.name for o in e.option_list()) or 'no options'})"
                     for e in registry)


def add_arguments(parser) -> None:
    """Add ``tir run``'s options to ``parser`` (an argparse.ArgumentParser): ``--source``, the model
    options (``--model``, ``--backend``, ``--task``, ``--deploy``, ``--threads``), ``--output``
    (repeatable), ``--host`` / ``--port``, ``--record`` (repeatable), the ``--collect*`` options (MiB, frames
    per second), ``--agc``, ``--palette``, ``--frames``, ``--duration`` (s), ``--quiet``,
    ``--camera-port`` / ``--camera-protocol``, ``--adapt`` / ``--adapt-save``, ``--watch-bundle``
    (s), ``--ffc-period`` (s).
    """
    from tir.edge.camera.formats import PROTOCOLS
    from tir.edge.outputs.base import OUTPUTS
    from tir.edge.sources.base import SOURCES

    add_source_argument(parser, "source URI (default: first thermal UVC camera, else "
                                f"synthetic://?degrade=noise): {_uri_help(SOURCES)}")
    parser.add_argument("--input-flip", default="none", choices=tuple(FLIP_METHODS), metavar="METHOD",
                        help="turn the camera's frames upright at capture, for a camera mounted in portrait, upside "
                             "down or behind a mirror: " + ", ".join(FLIP_METHODS) + " (GStreamer videoflip's names; "
                             "default none). Everything after the source sees the turned frames")
    add_model_arguments(parser)
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                        help="on TensorRT: which plan `tir build` made the routes run (default: the best built); "
                             "int8 also runs the bundle student's INT8 model, on the CPU its U8S8 model from "
                             "`tir calibrate --bundle B --student --out B/int8`, only where that gate passed every "
                             "prompt (engines/backends/student.py cpu_int8_student; routes stay fp32 on ONNX Runtime)")
    parser.add_argument("--output", action="append", default=None,
                        help=f"output URI, repeatable (default {DEFAULT_OUTPUT}; {NO_OUTPUT}: no output, e.g. "
                             "to benchmark or only --record): " + _uri_help(OUTPUTS))
    parser.add_argument("--host", help="address the HTTP output listens on (default 127.0.0.1; "
                                       "0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, help="port of the HTTP output (default 8080; 0: any free port)")
    parser.add_argument("--record", metavar="PATH", action="append", default=None,
                        help="also record to this folder (a file:// recorder output); repeatable: each folder "
                             "gets a whole recording of its own (folders apart, not one inside another)")
    parser.add_argument("--collect", metavar="DIR",
                        help="keep frames the router calls unknown (raw counts + router embedding) in a "
                             "bounded ring in DIR for `tir discover` (default: nothing is collected)")
    parser.add_argument("--collect-max-frames", type=int, default=500, metavar="N",
                        help="--collect: at most N frames, the oldest are deleted first (default 500)")
    parser.add_argument("--collect-max-mb", type=float, default=256.0, metavar="MB",
                        help="--collect: at most MB megabytes of frames (default 256)")
    parser.add_argument("--collect-rate", type=float, default=2.0, metavar="FPS",
                        help="--collect: at most FPS frames kept per second (default 2)")
    parser.add_argument("--agc", default="percentile", choices=AGC_CHOICES, help="display AGC (default percentile)")
    parser.add_argument("--palette", default="white-hot", choices=("white-hot", "black-hot", "ironbow", "inferno"))
    parser.add_argument("--frames", type=int, help="stop after N frames reached the outputs")
    parser.add_argument("--duration", type=float, help="stop after S seconds")
    parser.add_argument("--quiet", action="store_true", help="no per-second status line")
    parser.add_argument("--camera-port", metavar="DEV|auto",
                        help="camera control serial port (auto: find a Boson by USB id); default: "
                             "automatic for a v4l2 Boson whose serial port is found, else none")
    parser.add_argument("--camera-protocol", default="boson", choices=PROTOCOLS.names(),
                        help="camera control protocol (default boson): " + PROTOCOLS.help_text())
    parser.add_argument("--adapt", type=int, metavar="N",
                        help="adapt the bundle's router to this camera on the first N frames (unlabeled; "
                             "see tir adapt and docs/adapt.md); the state shows on the page")
    parser.add_argument("--reference", metavar="URI",
                        help="frames of this camera's healthy look (a folder or file of frames, any source URI): "
                             "the contrast, blur and FPN gates judge every frame against them instead of the "
                             "camera's recent frames, so a camera whose every frame is degraded (a defocused lens) "
                             "is still restored (default: the virtual camera's own clean frames when it degrades "
                             f"them, else none: the gates learn the camera from its stream; '{NO_REFERENCE}': never pin)")
    parser.add_argument("--reference-frames", type=int, default=DEFAULT_REFERENCE_FRAMES, metavar="N",
                        help=f"--reference: at most N frames (default {DEFAULT_REFERENCE_FRAMES})")
    parser.add_argument("--adapt-save", metavar="DIR",
                        help="with --adapt: also write the adapted copy of the bundle to DIR")
    parser.add_argument("--watch-bundle", type=float, nargs="?", const=1.0, default=None, metavar="SECONDS",
                        help="poll the bundle's manifest.json every SECONDS (default 1) and swap in a new version "
                             "(a higher manifest version, e.g. written by tir learn) between two frames; a bundle "
                             "that fails to load is refused and the running one kept (POST /bundle/reload with the "
                             "token does the same on demand)")
    parser.add_argument("--ffc-period", type=float, default=0.0, metavar="SECONDS",
                        help="run FFC every SECONDS (default 0: the camera's own FFC mode; "
                             "FFC frames are marked either way)")


#: ``--reference none``: no pinned reference, not even the virtual camera's own
NO_REFERENCE = "none"


def pin_camera_reference(model, args, source, reference=None) -> Optional[str]:
    """Pin the model's gate references to frames of the camera's healthy look
    (engines/loading.py ``pin_reference``): the ``--reference`` source's first
    ``--reference-frames`` frames (FFC frames skipped), else the source's own
    ``reference_frames`` (the virtual camera's clean frames when it degrades its own), else
    nothing; ``--reference none`` pins nothing. ``reference``: the ``--reference`` URI already
    checked (``check_source``). Returns what was pinned, in words, or None. The frames are pinned
    one at a time as they are read (none is kept), and more than the default number first
    prints how long reading them takes (frames / the source's fps, ``collection_estimate``).

    Raises:
        UsageError: ``--reference`` on a model without a router or with ``--task``, or a
            reference source that gives no frame.
        SourceError: the ``--reference`` source cannot be opened, or gives no frame within 5 s.
    """
    import itertools

    from tir.edge.sources.base import check_source, open_source, usable_frames

    n = int(getattr(args, "reference_frames", DEFAULT_REFERENCE_FRAMES))
    uri = getattr(args, "reference", None)
    if uri == NO_REFERENCE:
        return None
    if uri is None:
        return pin_source_reference(model, source, n)
    if not pinnable(model):
        raise UsageError("--reference pins the gates of automatic routing: give a bundle with a router and no --task")
    from tir.edge.sources.orient import oriented

    from tir.engines.adapt import collection_estimate

    # the reference camera is the running one: mounted the same way
    ref = oriented(open_source(reference if reference is not None else check_source(uri)),
                   getattr(args, "input_flip", "none"))
    try:
        ref.start()
        paced = bool(getattr(ref, "live", getattr(ref, "paced", True)))
        if n > DEFAULT_REFERENCE_FRAMES:   # a live --reference-frames 100000 read for an hour without a word
            print(f"tir run: reading the camera reference: {collection_estimate(n, 1, ref.fps, paced)}", flush=True)
        frames = usable_frames(ref)
        first = next(frames, None)
        if first is None:
            raise UsageError(f"--reference {uri}: no frame could be read")
        # pinned one at a time as they are read: a list of every frame held 100000 raw frames (64 GB at 640x512)
        pinned = pin_reference(model, itertools.chain([first], itertools.islice(frames, n - 1)))
    finally:
        ref.close()
    return f"{pinned} frames of {uri}"


def outputs_asked(given: Optional[List[str]]) -> List[str]:
    """The output URIs of ``--output`` as given: the default (:data:`DEFAULT_OUTPUT`) when none
    is given, none at all for ``--output none`` (:data:`NO_OUTPUT`, any case).

    ``--output none`` recorded into a folder named ``none`` (a bare path is a ``file://``
    recorder), and there was no way to run without the HTTP output; a folder of that name is
    written ``./none``.

    Args:
        given: the ``--output`` values (None when the option is not given).

    Returns:
        The URIs to open, in order ([] for ``--output none``).

    Raises:
        UsageError: ``none`` beside another ``--output``; another word for no output
            (:data:`NO_OUTPUT_SPELLINGS`), naming ``--output none`` and ``./WORD``.
    """
    if not given:
        return [DEFAULT_OUTPUT]
    words = [text.strip() for text in given]
    for text in words:
        if text.lower() in NO_OUTPUT_SPELLINGS:
            raise UsageError(f"--output {text}: to run without an output write --output {NO_OUTPUT} (--record DIR and "
                             f"--collect DIR still write); to record into a folder named {text!r} write ./{text}")
    nothing = [text for text in words if text.lower() == NO_OUTPUT]
    if not nothing:
        return list(given)
    if len(nothing) < len(words):
        others = ", ".join(text for text in words if text.lower() != NO_OUTPUT)
        raise UsageError(f"--output {NO_OUTPUT} runs without an output, but --output {others} is given too: drop one "
                         f"(a folder named {NO_OUTPUT!r} is ./{NO_OUTPUT})")
    return []


def with_http_address(uris: List[str], host: Optional[str], port: Optional[int]) -> List[str]:
    """``uris`` with ``--host``/``--port`` applied to the one http:// output (the default one
    unless --output names another); UsageError (a ValueError) when there is none or more than one.
    An IPv6 ``--host`` (``::1``, ``::``, with or without brackets) is written in brackets.

    Raises:
        UsageError: ``port`` is outside 0..65535, ``host`` is empty, or there is no or more than
            one http:// output.
    """
    if host is None and port is None:
        return list(uris)
    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number (0..65535; 0 = any free port)")
    if host is not None and not host.strip():
        raise UsageError("--host is empty; give an address: 127.0.0.1 (this machine only, the default), "
                         "0.0.0.0 (every interface) or one of this machine's addresses")
    http = [i for i, uri in enumerate(uris) if urlsplit(uri).scheme == "http"]
    if len(http) != 1:
        raise UsageError("--host/--port set the address of the HTTP output, but "
                         + ("no http:// output is given" if not http else
                            f"there are {len(http)}; give each its address in --output http://HOST:PORT"))
    out = list(uris)
    parts = urlsplit(out[http[0]])
    host = host.strip().strip("[]") if host is not None else (parts.hostname or "127.0.0.1")  # --host [::1]
    port = port if port is not None else parts.port
    out[http[0]] = urlunsplit(parts._replace(netloc=netloc(host, port)))  # an IPv6 host in brackets
    return out


def boson_serial_port(source) -> Optional[str]:
    """The serial port of the Boson a v4l2 source captures from (same USB serial number if
    several are plugged in), or None when the source is not a Boson or no port is found."""
    from tir.edge.camera.formats import usb_ids
    from tir.edge.sources.devices import list_serial_ports

    camera = getattr(source, "camera", None)
    device = getattr(camera, "device", None)
    boson = usb_ids("boson")  # from the camera descriptors (edge/camera/formats.py)
    if device is None or (device.vid, device.pid) not in boson:
        return None
    ports = [p for p in list_serial_ports(camera.sysfs_root, camera.dev_root) if (p.vid, p.pid) in boson]
    same = [p for p in ports if device.serial and p.serial == device.serial]
    return (same or ports)[0].path if ports else None


def open_ffc(args, source):
    """(FFCController not yet started, client) for ``--camera-port``, or for a v4l2 Boson found
    by USB id; (None, None) when there is no camera control. A port that was asked for and
    does not answer raises CameraControlError; an automatic one that does not is skipped.

    Raises:
        CameraControlError: ``--ffc-period`` < 0 s, NaN or infinite (checked first, camera or
            not), or a ``--camera-port`` that was asked for does not answer.
    """
    from tir.edge.camera.ffc import CONTROL_ERRORS, UNSUPPORTED, CameraNotFound, FFCController, open_camera_control

    period = args.ffc_period
    if not (0 <= period < math.inf):  # NaN fails too
        raise CameraControlError(f"--ffc-period must be >= 0 seconds (0: the camera's own mode), got {period:g}")
    port = args.camera_port
    asked = port is not None
    if not asked:
        port = boson_serial_port(source)
        if port is None:
            if period > 0:
                print(f"tir run: --ffc-period {period:g} is not applied: no camera control in this run (no Boson "
                      "serial port found for this source); pass --camera-port DEV|auto", flush=True)
            return None, None
    client = None
    try:
        client = open_camera_control(None if port == "auto" else port, args.camera_protocol)
        try:
            fpa = client.get_fpa_temp_c()  # the camera must answer before the run relies on it
        except UNSUPPORTED:
            fpa = None  # it answered: its firmware lacks the FPA temperature query
    except (CameraNotFound, ValueError) + CONTROL_ERRORS as exc:
        if client is not None:
            client.close()
        if asked:
            raise CameraControlError(f"camera control on {port}: {exc}") from exc
        print(f"tir run: no camera control ({port} did not answer: {exc})", flush=True)
        return None, None
    fpa_text = "FPA temperature not supported" if fpa is None else f"FPA {fpa:.1f} C"
    print(f"tir run: camera control {args.camera_protocol} on {client.port_name}, {fpa_text}, FFC "
          + (f"every {period:g} s" if period > 0 else "in the camera's own mode"), flush=True)
    return FFCController(client, period_s=period if period > 0 else None), client


class CameraControlError(RuntimeError, InputError):
    """--camera-port was given and the camera cannot be controlled there (exit 2)."""


def hot_swappable(model, args):
    """``model`` made reloadable for ``--watch-bundle`` (:func:`tir.engines.loading.hot_swappable`)."""
    return loading.hot_swappable(model, getattr(args, "watch_bundle", None))


# tir run's exit codes (--help epilog): the table of edge/errors.py, one for every mode
EXIT_CODES_HELP = ("exit status: 0 the run ended (limit, end of file, SIGINT/SIGTERM/SIGHUP: clean stop); "
                   "1 a model stage failed; 2 bad arguments, a source or output failed; "
                   "3 the recording failed (disk full: the run stops at once, the frames written before are kept)")
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class StopRequested(KeyboardInterrupt):
    """SIGTERM/SIGHUP (systemd, docker stop, a closed terminal): stop as on Ctrl-C."""


def install_stop_handlers():
    """SIGINT, SIGTERM and SIGHUP raise :class:`KeyboardInterrupt` in the main thread once;
    later ones during the clean shutdown are reported and ignored (SIGKILL still ends it).
    Returns a function that restores the previous handlers."""
    import signal

    state = {"stopping": False}

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if state["stopping"]:
            print(f"tir run: {name}: already stopping (SIGKILL forces it)", file=sys.stderr, flush=True)
            return
        state["stopping"] = True
        print(f"tir run: {name}: stopping", flush=True)
        raise StopRequested(name)

    previous = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)

    def restore():
        for signum, old in previous.items():
            signal.signal(signum, old)
    return restore


def main(args) -> int:
    """Run ``tir run`` with the parsed ``args`` until a limit, the end of the source or a stop
    signal (SIGINT/SIGTERM/SIGHUP handlers are installed when called on the main thread).

    Returns:
        the exit status of the module docstring: 0 ended, 1 a model stage failed, 2 refused or a
        source/output failed, 3 the recording failed.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        return _run(args)
    restore = install_stop_handlers()
    try:
        return _run(args)
    finally:
        restore()


def _run(args) -> int:
    from tir.edge.outputs.base import check_output, check_outputs_apart, open_output
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import check_source, open_source
    from tir.edge.sources.orient import oriented
    from tir.edge.uri import parse_uri

    model = source = client = pipeline = None
    outputs: list = []
    try:
        try:
            check_arguments(args)
            source_uri = args.source or default_source()
            uris = with_http_address(outputs_asked(args.output), args.host, args.port)
            for record in args.record or []:  # repeatable: --record A --record B kept only B
                uris.append(parse_uri(record).text if "://" in record
                            else "file://" + quote(str(Path(record).resolve())))  # '#', '?', '%' kept
            if args.collect:
                uris.append(f"collect://{quote(str(Path(args.collect).expanduser().resolve()))}?max_frames="
                            f"{args.collect_max_frames}&max_mb={args.collect_max_mb:g}&rate={args.collect_rate:g}")
            # every source/output option checked before the model loads, the camera opens or a port binds
            checked_source = check_source(source_uri)
            checked_reference = check_source(args.reference) \
                if getattr(args, "reference", None) not in (None, NO_REFERENCE) else None
            checked_outputs = [check_output(uri) for uri in uris]
            check_outputs_apart(checked_outputs)
            check_not_recording_over([checked_source, checked_reference], checked_outputs)
            for uri in checked_outputs:   # created, not started: nothing is bound or written yet
                outputs.append(open_output(uri))
            for output in outputs:   # a port in use is said now, not after the models have loaded
                check_listen = getattr(output, "check_listen", None)
                if callable(check_listen):
                    check_listen()
            # the camera (or file) is opened before the models load: a missing one is named in a second,
            # not after ten seconds of loading; it is not started (no capture thread runs; a file source
            # has read its first frame to know its size) until the pipeline is
            source = oriented(open_source(checked_source), getattr(args, "input_flip", "none"))
            model, description = load_model(args.model, args.backend, args.task, args.threads,
                                            adapt=getattr(args, "adapt", None),
                                            adapt_save=getattr(args, "adapt_save", None), source_uri=source_uri,
                                            deploy=getattr(args, "deploy", None),
                                            precision=getattr(args, "precision", None))
            check = getattr(model, "check_networks", None)
            if callable(check):   # a route that cannot load or run is refused now, not when first picked
                check()
            model = hot_swappable(model, args)
            print(f"tir run: model {description}", flush=True)
            if args.collect:
                if getattr(model, "router_info", None) is None:
                    raise UsageError("--collect keeps frames the router calls unknown, but this model has no "
                                     "router (give a bundle with a router and no --task)")
                if getattr(model, "forced", False):
                    raise UsageError("--collect needs the router, and --task turns routing off; drop --task")
            pinned = pin_camera_reference(model, args, source, checked_reference)
            if pinned:
                print(f"tir run: camera reference pinned to {pinned}", flush=True)
            ffc, client = open_ffc(args, source)
            collectors = [o for o in outputs if callable(getattr(o, "collect_stats", None))]
            for output in outputs:  # the page shows the collector's thumbnails
                if collectors and hasattr(output, "collector"):
                    output.collector = collectors[0]
            pipeline = Pipeline(source, model, outputs, agc=args.agc, palette=args.palette,
                                normalizer=normalizer_for(model), frames=args.frames, duration=args.duration,
                                ffc=ffc, stop_on_output_failure=True)
            pipeline.start()
        except BaseException:
            # a pipeline that failed to start has closed the source and outputs itself
            if pipeline is None or not pipeline.started:
                for output in outputs:
                    _close_quietly(output)
                _close_quietly(source)
            pipeline = None
            _close_model(model)
            _close_quietly(client)
            raise
    except KeyboardInterrupt:
        print("tir run: stopped during start-up", flush=True)
        return EXIT_OK
    except TirError:
        raise  # tir.tools.cli prints it: tir run: error: <message>, exit 2 for what is refused at start
    except ValueError as exc:  # a library argument check with no TirError kind of its own (a bundle's --task)
        raise UsageError(str(exc)) from exc
    try:
        try:
            if not outputs:
                print(f"tir run: no output (--output {NO_OUTPUT}): frames are restored and counted, nothing is "
                      "shown or kept", flush=True)
            for output in outputs:
                where = getattr(output, "url", None)
                print(f"tir run: output {where if isinstance(where, str) else output.uri.text}", flush=True)
                for line in getattr(output, "start_lines", lambda: [])():  # HTTP: token, exposure warning
                    print(f"tir run: {line}", flush=True)
            while not pipeline.wait(1.0):
                if not args.quiet:
                    print(status_line(pipeline.snapshot()), flush=True)
        except StopRequested:
            pass   # the signal handler has said "tir run: SIGINT: stopping"
        except KeyboardInterrupt:   # not through the handler (an embedding program's own)
            print("tir run: stopping", flush=True)
        finally:
            pipeline.stop()
            _close_model(model)
            _close_quietly(client)
    except KeyboardInterrupt:  # a stop signal raced the handler's own bookkeeping; cleanup went on
        pass
    snap = pipeline.snapshot()
    if not args.quiet:
        print(status_line(snap), flush=True)
    error = None
    if pipeline.error is not None:
        error = stage_failure(pipeline.error_stage, pipeline.error)
    elif snap.get("ended"):
        print(f"tir run: source {snap['ended']}", flush=True)
    join_leftover_threads()
    failed = pipeline.failed_outputs()
    if error is None and failed:  # one line per output that stopped (a recording on a full disk): exit 3
        error = OutputFailed("\n".join(failed.values()))
    if error is not None:
        raise error
    return EXIT_OK


def stage_failure(stage: str, exc: BaseException) -> TirError:
    """The error ``tir run`` ends with when pipeline stage ``stage`` failed with ``exc``: a source
    that failed is an InputError, an output an OutputUnavailable (exit 2), anything else, the
    model included, a TirError (exit 1); the message is ``stage <stage> failed: <exc>``."""
    from tir.edge.outputs.base import OutputError
    from tir.edge.sources.base import SourceError

    kind = (InputError if isinstance(exc, SourceError) else OutputUnavailable if isinstance(exc, OutputError)
            else TirError)
    return kind(f"stage {stage} failed: {exc}")


def join_leftover_threads(timeout: float = 5.0) -> list:
    """Wait up to ``timeout`` s for every other Python thread to end; returns the names of those
    still running (logged).

    After the pipeline stopped, request handler threads of the outputs (daemon threads) may
    still be inside native code (a JPEG encode for a snapshot). Returning from ``main`` then
    lets the interpreter finalise and C++ static destructors run under them, which ended runs
    with ``terminate called without an active exception`` (SIGABRT, exit -6) when snapshot
    requests were in flight at the end (issue 10, item 3). Joining them first closes that window.
    """
    import threading

    current = threading.current_thread()
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is current or thread is threading.main_thread() or not thread.is_alive():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in threading.enumerate()
            if t is not current and t is not threading.main_thread() and t.is_alive()]
    if left:
        log.warning("threads still running at exit: %s", ", ".join(left))
    return left


def check_not_recording_over(sources, outputs) -> None:
    """Refuse a ``file://`` output (the recorder, ``--record``) whose folder is, or holds, what a
    ``file://`` source of this run reads: with ``overwrite=1`` the recorder deleted the recording
    being replayed before its first frame was read (``--source REC --record REC?overwrite=1``
    left a one-frame recording).

    Args:
        sources: checked source URIs (the source, ``--reference``; None entries are skipped).
        outputs: checked output URIs.

    Raises:
        UsageError: naming the output and the source it would write over.
    """
    from pathlib import Path

    for out in outputs:
        if out.scheme != "file" or not out.path:
            continue
        target = Path(out.path).expanduser().resolve()
        for src in sources:
            if src is None or src.scheme != "file" or not src.path:
                continue
            read = Path(src.path).expanduser().resolve()
            if read == target or target in read.parents:
                raise UsageError(f"{out.text} records into {target}, which the source {src.text} reads from; "
                                 "record to another folder")


#: (attribute, parser default, flag) of the options only ``--collect`` reads
COLLECT_ONLY_OPTIONS = (("collect_max_frames", 500, "--collect-max-frames"), ("collect_max_mb", 256.0, "--collect-max-mb"),
                        ("collect_rate", 2.0, "--collect-rate"))


def check_arguments(args) -> None:
    """Refuse limits that cannot mean anything (UsageError, a ValueError, with the option's name).

    Raises:
        UsageError: ``--frames`` < 1, ``--duration`` <= 0 s, ``--reference-frames`` < 1, a
            :data:`COLLECT_ONLY_OPTIONS` option without ``--collect``, or an ``--adapt-save``
            folder that cannot be written.
    """
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames {args.frames}: give a number of frames >= 1 (or leave it out to run "
                         "until stopped)")
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration {args.duration:g}: give seconds > 0 (or leave it out to run until "
                         "stopped)")
    if getattr(args, "reference_frames", DEFAULT_REFERENCE_FRAMES) < 1:
        raise UsageError(f"--reference-frames {args.reference_frames}: give a number of frames >= 1")
    if not getattr(args, "collect", None):  # were silently ignored: the user believed a limit applied
        given = [flag for attr, default, flag in COLLECT_ONLY_OPTIONS if getattr(args, attr, default) != default]
        if given:
            raise UsageError(f"{', '.join(given)} {'acts' if len(given) == 1 else 'act'} only with --collect DIR "
                             "(frames the router calls unknown); "
                             "this run collects nothing: add --collect DIR, or drop them")
    save = getattr(args, "adapt_save", None)
    if save is not None and not Path(save).exists():  # an existing folder: load_model says so
        from .cli import folder_problem

        problem = folder_problem(save)
        if problem:  # was a log line "not written" after the N frames, the run going on without the copy
            raise UsageError(f"--adapt-save {save}: {problem}; give a writable new folder")


def _close_model(model) -> None:
    _close_quietly(model)


def _close_quietly(thing) -> None:
    close = getattr(thing, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:
            log.warning("closing %s: %s", type(thing).__name__, exc)
