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
from typing import Dict, Optional, Set, Tuple
from urllib.parse import parse_qsl, urlsplit


@dataclass
class URI:
    scheme: str
    location: str = ""  # host[:port] for network URIs
    path: str = ""
    options: Dict[str, str] = field(default_factory=dict)
    text: str = ""
    #: option names the object built from this URI asked for (``get``): the options it knows
    asked: Set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def host(self) -> str:
        return self.location.rsplit(":", 1)[0] if ":" in self.location else self.location

    @property
    def port(self) -> Optional[int]:
        if ":" in self.location:
            return int(self.location.rsplit(":", 1)[1])
        return None

    def get(self, key: str, default=None, cast=str):
        """Option ``key`` cast with ``cast`` (``default`` when absent). Raises ValueError naming
        the option and the URI when the value does not cast."""
        self.asked.add(key)
        if key not in self.options:
            return default
        value = self.options[key]
        if cast is bool:
            return value.lower() in ("1", "true", "yes", "on")
        try:
            return cast(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"option {key}={value!r} in {self.text or self.scheme + '://'}: {exc}") from exc

    def check_options(self, kind: str = "") -> None:
        """Raise ValueError for options the object built from this URI never asked for (a typo
        such as ``degarde=noise`` must not pass silently), listing the ones it knows."""
        unknown = sorted(set(self.options) - self.asked)
        if unknown:
            known = ", ".join(sorted(self.asked)) or "none"
            raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                             f"{kind or self.scheme + '://'} ({self.text}); known: {known}")

    def __str__(self) -> str:
        return self.text


def parse_uri(text: str) -> URI:
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return URI("v4l2", path=f"/dev/video{text}", text=f"v4l2:///dev/video{text}")
    if "://" not in text:
        if text.startswith("/dev/video"):
            return URI("v4l2", path=text, text=f"v4l2://{text}")
        return URI("file", path=os.path.abspath(text), text=f"file://{os.path.abspath(text)}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    path = parts.path
    if scheme == "file" and parts.netloc and parts.netloc not in ("localhost",):
        # file://relative/path -> netloc holds the first component
        path = os.path.abspath(parts.netloc + parts.path)
    return URI(scheme, location=parts.netloc, path=path, options=options, text=text)


def parse_size(text: str) -> Tuple[int, int]:
    """``"640x512"`` -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x512")
    return int(m.group(1)), int(m.group(2))


def build_checked(uri: URI, factory, error):
    """``factory(uri)``, then :meth:`URI.check_options`: an object whose URI carries an option it
    never asked for is closed and refused as ``error`` (SourceError, OutputError, ...)."""
    obj = factory(uri)
    try:
        uri.check_options(uri.scheme + "://")
    except ValueError as exc:
        try:
            obj.close()
        finally:
            raise error(str(exc)) from None
    return obj
