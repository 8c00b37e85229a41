"""Source and output addresses, in the URI style of jetson-utils.

Examples: ``v4l2:///dev/video0``, ``file:///data/clip.tiff?loop=1``,
``synthetic://?size=640x512&fps=30&seed=1``, ``http://0.0.0.0:8080``, ``display://0``.
A bare path is read as ``file://``; ``/dev/videoN`` as ``v4l2://``; a bare integer N as
``v4l2:///dev/videoN``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import UsageError


@dataclass
class URI:
    """A parsed source or output address.

    ``scheme`` is lower case (``v4l2``, ``file``, ``synthetic``, ``http`` ...); ``location`` the
    ``host[:port]`` of network URIs; ``path`` the path (absolute for ``file``); ``options`` the
    query as str -> str; ``text`` the URI as the user wrote it (or its canonical form for a bare
    path or device number).
    """
    scheme: str
    location: str = ""  # host[:port] for network URIs
    path: str = ""
    options: Dict[str, str] = field(default_factory=dict)
    text: str = ""
    #: the typed options (the entry's options dataclass) once :meth:`bind` checked them
    values: Any = field(default=None, compare=False, repr=False)

    def _split_location(self) -> Tuple[str, Optional[str]]:
        """(host, port text or None) of :attr:`location`; an IPv6 address is written in brackets
        (RFC 3986 section 3.2.2: ``[::1]:8080``), which the host loses.

        Raises:
            UsageError: an IPv6 address without its brackets (``::1:8080`` cannot say where the
                address ends and the port begins), or a ``[`` without its ``]``.
        """
        where = self.text or self.scheme + "://"
        location = self.location
        if location.startswith("["):
            end = location.find("]")
            rest = location[end + 1:] if end > 0 else "?"
            if end < 0 or (rest and not rest.startswith(":")):
                raise UsageError(f"{where}: {location!r} is not an address: write an IPv6 address in brackets, "
                                 "then :PORT ([::1]:8080)")
            return location[1:end], (rest[1:] if rest else None)
        if location.count(":") > 1:
            raise UsageError(f"{where}: {location!r} reads as an IPv6 address without its brackets: write "
                             "[ADDRESS]:PORT, e.g. [::1]:8080 (RFC 3986)")
        host, colon, port = location.partition(":")
        return host, (port if colon else None)

    @property
    def host(self) -> str:
        """The host part of :attr:`location` (without ``:port``; an IPv6 address without its
        brackets: ``[::1]:8080`` -> ``::1``).

        Raises:
            UsageError: (a ValueError) an IPv6 address written without brackets.
        """
        return self._split_location()[0]

    @property
    def port(self) -> Optional[int]:
        """The port number in :attr:`location`, or None when it has none.

        Raises:
            UsageError: (a ValueError) the text after the host's ``:`` is not a port number
                0..65535, or an IPv6 address is written without brackets.
        """
        text = self._split_location()[1]
        if text is None:
            return None
        if not (text.isdigit() and int(text) <= 65535):  # isdigit: no sign, no spaces
            raise UsageError(f"{self.text or self.scheme + '://'}: port {text!r} is not a port number "
                             "(0..65535)")
        return int(text)

    def bind(self, schema, error=ValueError) -> Any:
        """Check :attr:`options` against ``schema`` (an options dataclass, see
        :mod:`tir.edge.registry`) once and keep the typed values in :attr:`values`. Raises
        ``error`` naming this URI for an unknown option (listing the valid ones) or a bad value
        (naming the option)."""
        if self.values is None or type(self.values) is not schema:
            from .registry import parse_options

            self.values = parse_options(schema, self.options, self.text or self.scheme + "://", error)
        return self.values

    def __str__(self) -> str:
        return self.text


LOCAL_PATH_SCHEMES = ("file", "collect")  # their path is a local path, percent-decoded


def parse_uri(text: str) -> URI:
    """Parse a source or output address into a :class:`URI` (nothing is opened or checked).

    A bare integer N becomes ``v4l2:///dev/videoN``, a bare ``/dev/video*`` path ``v4l2://``,
    any other bare path ``file://`` with the path made absolute; ``file://relative/path`` is
    read as a relative path too. A bare text that starts with a scheme and ``:`` but not
    ``://`` (``http:127.0.0.1:8080``, ``synthetic:``) and names no existing path is refused: it
    was taken for a folder of that name (a recording, with no HTTP server). The path of a URI naming a local folder or file
    (:data:`LOCAL_PATH_SCHEMES`: ``file://``, ``collect://``) is percent-decoded (RFC 8089 /
    RFC 3986 section 2.1), so a folder named ``take #2`` is ``file:///data/take%20%232``; a bare
    path is taken as written.

    Raises:
        UsageError: an option is given twice in the query; a scheme without its ``//``; an
            address urlsplit cannot read (an IPv6 ``[`` without its ``]``).
    """
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return URI("v4l2", path=f"/dev/video{text}", text=f"v4l2:///dev/video{text}")
    if "://" not in text:
        typo = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):/?/?", text)   # RFC 3986 scheme, 2+ characters
        if typo and not os.path.exists(text):  # 'http:127.0.0.1:8080' recorded into a folder of that name
            scheme, rest = typo.group(1), text[typo.end():]
            raise UsageError(f"{text!r} reads as a {scheme}: address without its '//': write {scheme}://{rest}"
                             f" (a path that starts so is given as ./{text})")
        if text.startswith("/dev/video"):
            return URI("v4l2", path=text, text=f"v4l2://{text}")
        return URI("file", path=os.path.abspath(text), text=f"file://{os.path.abspath(text)}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL": a '[' without its ']'
        raise UsageError(f"{text}: {exc}: write an IPv6 address in brackets, then :PORT ([::1]:8080)") from None
    scheme = parts.scheme.lower()
    options: Dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:  # the last one would silently win
            raise UsageError(f"{text}: option {name} is given twice ({options[name]!r} and {value!r}); give it once")
        options[name] = value
    path = parts.path
    if scheme == "file" and parts.netloc and parts.netloc not in ("localhost",):
        # file://relative/path -> netloc holds the first component
        path = os.path.abspath(parts.netloc + parts.path)
    if scheme in LOCAL_PATH_SCHEMES:
        path = unquote(path)  # '#' and '?' in a name can only be given as %23 / %3F
    return URI(scheme, location=parts.netloc, path=path, options=options, text=text)


def refuse_path(uri: Optional[URI], takes_path: bool, error: type, number: bool = False) -> None:
    """Refuse text after ``://`` for a scheme that names nothing there (``synthetic://``,
    ``display://``): ``synthetic://foo?fps=10`` would otherwise run as if ``foo`` were not written.

    Args:
        uri: the parsed URI (None: nothing to check).
        takes_path: whether the scheme names a path, device or host after ``://``.
        error: the exception class raised (the source's or output's option error).
        number: a number (digits) after ``://`` is taken: ``display://0``, the window's number
            as jetson-utils writes it (README, docs/reliability.md).

    Raises:
        error: ``takes_path`` is False and the URI has a host or a path other than ``/`` (or
            than a number, with ``number``).
    """
    if uri is None or takes_path:
        return
    extra = f"{uri.location}{uri.path}".strip("/")
    if extra and not (number and extra.isdigit()):
        raise error(f"{uri.scheme}:// names nothing after '://', got {extra!r}: write "
                    f"{uri.scheme}://?option=value (options after '?')")


def netloc(host: str, port: Optional[int] = None) -> str:
    """``host[:port]`` as a URI writes it: an IPv6 address in brackets (RFC 3986 section 3.2.2):
    ``netloc("::1", 8080)`` -> ``"[::1]:8080"``; a host already in brackets is kept."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def parse_size(text) -> Tuple[int, int]:
    """``"640x512"`` (or a (width, height) pair) -> (width, height). Raises UsageError (a ValueError)."""
    if isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(v, int) for v in text):
        return int(text[0]), int(text[1])
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m:
        raise UsageError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x512")
    return int(m.group(1)), int(m.group(2))



def check_scheme(uri, options: Dict[str, Any], registry, kind: str, error, option_error) -> URI:
    """``uri`` (str or :class:`URI`) parsed, ``options`` merged into its query (None values
    skipped) and checked against the option dataclass its scheme declares in ``registry``
    (a :class:`tir.edge.registry.Registry` of sources or outputs). Opens nothing. Raises
    ``error`` for a scheme ``registry`` does not know (listing the known ones, ``kind`` names
    them: "source"/"output") and ``option_error`` for an unknown option, a bad value or a port
    in the address that is not a number 0..65535."""
    if not isinstance(uri, URI):
        try:
            uri = parse_uri(uri)
        except UsageError as exc:  # an option given twice: the scheme's option error, as any bad option
            raise option_error(str(exc)) from None
    uri.options.update({k: str(v) for k, v in options.items() if v is not None})
    if options:
        uri.values = None  # re-check with the overrides
    if uri.scheme not in registry:
        raise error(f"unknown {kind} scheme {uri.scheme!r} in {uri.text!r}; "
                    f"known: {', '.join(s + '://' for s in registry.names())}")
    uri.bind(registry.get(uri.scheme).option_type, option_error)
    try:
        uri.port  # a network URI's port: a number 0..65535
    except UsageError as exc:
        raise option_error(str(exc)) from None
    return uri
