"""The one abstract output and its URI factory (after jetson-utils' videoOutput)."""
from __future__ import annotations

from abc import ABC, abstractmethod
import errno
import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional

from ..frame import Frame
from ..errors import OutputUnavailable
from ..registry import OptionError, Registry
from ..uri import URI, check_scheme, refuse_path

if TYPE_CHECKING:
    from ..pipeline.stats import StatsSnapshot

log = logging.getLogger(__name__)


class OutputError(RuntimeError, OutputUnavailable):
    """An output that cannot be opened (port in use, unwritable path, no GStreamer)."""


class OutputOptionError(OutputError, OptionError):
    """An unknown output option or a bad value; the message names the URI and the option."""


def create_file(path, append: bool = False, exclusive: bool = False) -> io.FileIO:
    """Open a file an output writes in its own folder, never through a symbolic link: an
    unbuffered binary file, created when missing (mode 0o666 less the umask).

    An output's folder may already exist and be writable by someone else (``--record /tmp/rec``,
    made first by another user): a ``raw.u16`` there linking to another file had the recording
    appended to that file, a ``raw/000000000.png.part`` link had the file it names overwritten
    with a PNG. ``O_NOFOLLOW`` refuses a link as the last part of the path (POSIX open(2));
    ``exclusive`` (``O_EXCL``) also refuses any file already there, for a temporary name the
    caller has just removed (a link put there since is refused, not followed).

    Args:
        path: the file (str or Path).
        append: append to what is there (``O_APPEND``), else truncate it (``O_TRUNC``).
        exclusive: the file must not exist.

    Returns:
        The file, opened ``"ab"`` or ``"wb"`` with ``buffering=0``; its ``name`` is ``path``.

    Raises:
        OSError: the open failed; a link: ELOOP, with a message saying the output writes only
            inside its folder, never through a link.
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    if exclusive:
        flags |= os.O_EXCL
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exclusive and exc.errno == errno.EEXIST and os.path.islink(path)):
            raise OSError(errno.ELOOP, f"{path} is a symbolic link: an output writes its files only inside its "
                                       "folder, never through a link", str(path)) from None
        raise
    file = open(fd, "ab" if append else "wb", buffering=0)
    file.name = str(path)  # messages name the file, not its descriptor number
    return file


def refuse_links(folder: Path, names: Iterable[str], what: str) -> None:
    """Refuse an output folder where one of the names the output writes (files or subfolders) is
    a symbolic link: it would write through it, outside the folder (see :func:`create_file`).

    Args:
        folder: the output's folder.
        names: the names inside it the output writes.
        what: the output, for the message ("a recording", "the collection").

    Raises:
        OutputError: naming the link and where it points.
    """
    for name in names:
        path = Path(folder) / name
        if path.is_symlink():
            raise OutputError(f"{path} is a symbolic link (to {os.readlink(path)}): {what} writes its files only "
                              f"inside {folder}, never through a link; remove the link or pick a new folder")


class Output(ABC):
    """Receives finished frames. ``write`` must be cheap: never block the pipeline.

    The pipeline calls :meth:`attach` before :meth:`start`: ``stats_provider`` then returns
    the live :class:`~tir.edge.pipeline.stats.StatsSnapshot` for outputs that show it, and
    ``actions`` maps an action's name to what runs it (``{"ffc": ...}`` with camera control).
    ``failure`` is None while the output works, else one line saying why it
    stopped for good (a recorder whose disk is full), set through :meth:`fail`, which also calls
    ``on_failure`` (the pipeline sets it: it reports the failure everywhere at once and, when
    asked to, ends the run; ``tir run`` then exits 3).
    """

    failure: Optional[str] = None
    #: called once with the failure line when the output stops for good (set by the pipeline)
    on_failure: Optional[Callable[["Output", str], None]] = None
    #: the options dataclass of this output's URI query (see :mod:`tir.edge.registry`)
    Options: Optional[type] = None

    #: whether the URI names something after ``://`` (a path, a host); a scheme that names
    #: nothing refuses text there instead of ignoring it
    takes_path: bool = True
    #: whether a number may follow ``://`` where ``takes_path`` is False (``display://0``)
    takes_number: bool = False

    def __init__(self, uri: URI):
        refuse_path(uri, self.takes_path, OutputOptionError, number=self.takes_number)
        self.uri = uri
        #: the typed URI options (an ``Options`` instance), checked before anything opens; a
        #: wrapper without ``Options`` of its own (the grabber) keeps what its URI holds
        schema = type(self).Options
        self.options: Any = uri.bind(schema, OutputOptionError) if schema is not None and uri is not None else \
            getattr(uri, "values", None)
        self.stats_provider: Optional[Callable[[], "StatsSnapshot"]] = None
        self.actions: Dict[str, Callable[[], Any]] = {}

    def attach(self, stats: Callable[[], "StatsSnapshot"],
               actions: Optional[Mapping[str, Callable[[], Any]]] = None) -> None:
        """Give the output the pipeline's stats (``stats()`` -> a
        :class:`~tir.edge.pipeline.stats.StatsSnapshot`, callable from any thread) and the
        actions it may offer (name -> callable taking no argument). Raises TypeError when
        ``stats`` is not callable."""
        if not callable(stats):
            raise TypeError(f"attach: stats must be a callable returning a StatsSnapshot, got {stats!r}")
        self.stats_provider = stats
        self.actions = dict(actions or {})

    def fail(self, line: str) -> None:
        """Record that the output stopped for good (``failure`` = ``line``, the first line kept)
        and tell ``on_failure``; an error raised there is logged, never raised to the caller
        (the output's own thread)."""
        if self.failure is not None:
            return
        self.failure = line
        listener = self.on_failure
        if listener is not None:
            try:
                listener(self, line)
            except Exception as exc:  # the writer thread must go on closing its files
                log.warning("on_failure of %s failed: %s: %s", self, type(exc).__name__, exc)

    def start(self) -> "Output":
        """Open what the output needs (server, files, window); returns the output. The base class does
        nothing.
        """
        return self

    @abstractmethod
    def write(self, frame: Frame) -> None:
        """Hand one finished frame to the output; must return quickly (copy or queue, never block)."""
        ...

    def wants_display(self) -> bool:
        """Whether frames written next need ``frame.display`` (the AGC views). The pipeline's
        display stage skips the AGC when no output wants it; outputs that can tell nobody is
        looking (an HTTP server without viewers) say False."""
        return True

    def close(self) -> None:
        """Flush and release everything the output holds; the base class does nothing."""
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


#: scheme -> Output class ("module:Class", imported on first use); the class's ``Options``
#: dataclass declares its URI options
OUTPUTS = Registry("output scheme", OutputError, option_error=OutputOptionError)
OUTPUTS.register("http", "tir.edge.outputs.http:HTTPOutput",
                 help="MJPEG streams, snapshots, live stats and the web page over HTTP")
OUTPUTS.register("file", "tir.edge.outputs.recorder:Recorder",
                 help="record raw counts (and restored frames) to a folder, with an index and a preview")
OUTPUTS.register("display", "tir.edge.outputs.window:WindowOutput", help="a local OpenCV window")
OUTPUTS.register("rtsp", "tir.edge.outputs.rtsp:RTSPOutput", help="H.264 over RTSP (needs GStreamer)")
OUTPUTS.register("rtp", "tir.edge.outputs.rtsp:RTSPOutput", help="H.264 over RTP/UDP (needs GStreamer)")
OUTPUTS.register("collect", "tir.edge.outputs.collect:Collector",
                 help="keep frames the router calls unknown in a bounded ring, for tir discover")


def register_output(scheme: str, target: Any, help: str = "an output", **kw) -> None:
    """Add (or replace) the Output class for ``scheme`` (a class or "module:Class")."""
    OUTPUTS.register(scheme, target, help=help, replace=True, **kw)


def check_output(uri, **options) -> URI:
    """The parsed :class:`URI` with its options checked against the scheme's declaration,
    opening nothing (no port bound, no file written). Raises OutputError for an unknown scheme,
    :class:`OutputOptionError` for an unknown option (listing the valid ones) or a bad value."""
    return check_scheme(uri, options, OUTPUTS, "output", OutputError, OutputOptionError)


#: output schemes that write into a folder of their own (the recorder, the open-world collector)
FOLDER_SCHEMES = ("file", "collect")
#: HTTP's defaults when the URI names no host or port (edge/outputs/http.py DEFAULT_HOST/DEFAULT_PORT)
HTTP_DEFAULTS = ("127.0.0.1", 8080)


def _listen_addresses(host: str) -> set:
    """The addresses a listen host stands for, to compare two: ``localhost`` is the loopback
    addresses (127.0.0.1, ::1); an IP address in its one written form (``::0:1`` is ``::1``,
    ``127.000.0.1`` is not one and stays a name); any other name itself."""
    import ipaddress

    host = host.lower().rstrip(".")
    if host == "localhost":
        return {"127.0.0.1", "::1"}
    try:
        return {ipaddress.ip_address(host).compressed}
    except ValueError:
        return {host}


def check_outputs_apart(uris) -> None:
    """Refuse outputs of one run that would take the same thing, before any opens: two HTTP
    outputs on one port (0.0.0.0 and ``::`` listen on every address, so they meet any host on
    that port; ``localhost`` is 127.0.0.1 and ::1; port 0 picks a free port and meets nothing), two folder outputs (``file://``,
    ``collect://``) writing the same folder or one inside the other, or two ``display://``
    windows of one title. The second one used to fail on the first: "port 8765 on 127.0.0.1 is
    in use", "already holds a recording"; two windows of one title are one OpenCV window (a
    window is found by its title), which showed both outputs' frames in turn.

    Args:
        uris: the checked output URIs (:func:`check_output`).

    Raises:
        OutputOptionError: naming both outputs and what they share.
    """
    from pathlib import Path

    seen_ports, seen_folders, seen_titles = [], [], {}
    for uri in uris:
        if uri.scheme == "display":
            title = getattr(uri.values, "title", None)
            if title in seen_titles:
                raise OutputOptionError(f"{seen_titles[title].text} and {uri.text} both show in the window "
                                        f"titled {title!r} (OpenCV finds a window by its title: one window "
                                        "would show both in turn); give the second its own ?title=")
            seen_titles[title] = uri
        if uri.scheme == "http":
            host = uri.host or HTTP_DEFAULTS[0]
            port = HTTP_DEFAULTS[1] if uri.port is None else uri.port
            if port == 0:
                continue
            for other, other_host in seen_ports:
                if other[1] == port and (_listen_addresses(host) & _listen_addresses(other_host)
                                         or {host, other_host} & {"0.0.0.0", "::"}):
                    raise OutputOptionError(f"{other[0].text} and {uri.text} both listen on port {port}: one "
                                            "port serves one HTTP output (its page has every stream); drop one, "
                                            "or give the second another port")
            seen_ports.append(((uri, port), host))
        elif uri.scheme in FOLDER_SCHEMES and uri.path:
            folder = Path(uri.path).expanduser().resolve()
            for other, other_folder in seen_folders:
                if folder == other_folder or other_folder in folder.parents or folder in other_folder.parents:
                    where = (f"both write into {folder}" if folder == other_folder else
                             f"one writes inside the other's folder ({other_folder}, {folder})")
                    raise OutputOptionError(f"{other.text} and {uri.text}: {where}; give each output a folder "
                                            "of its own, outside the others")
            seen_folders.append((uri, folder))


def open_output(uri, **options) -> Output:
    """Create the output for ``uri`` (str or :class:`URI`); options override the URI query.

    Its options are checked first (:func:`check_output`); the output is created, not started.

    Raises:
        OutputError: unknown scheme, or the output refuses its address (e.g. an rtp:// URI
            without HOST:PORT).
        OutputOptionError: unknown option or bad value.
    """
    uri = check_output(uri, **options)
    return OUTPUTS.load(uri.scheme)(uri)
