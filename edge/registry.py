"""One registry pattern for every pluggable kind: sources, outputs, backends, camera descriptors,
control protocols, degradation ops, model presets and CLI modes.

After timm's ``register_model``/``create_model`` and pyserial's URL handlers: a :class:`Registry`
maps a name to an :class:`Entry` (the thing, or ``"module:attr"`` imported on first use, a
one-line help and its typed options). Options are a dataclass per entry whose fields are
declared with :func:`option` (name, type, default, help; choices where they exist);
:meth:`Entry.parse` turns raw values (URI query strings, JSON values, keyword arguments) into
an instance of it, refusing unknown options (listing the valid ones) and bad values (naming
the option), so everything is checked before anything starts::

    SOURCES = Registry("source scheme", SourceError)
    SOURCES.register("synthetic", "tir.edge.sources.synthetic:SyntheticSource", help="virtual camera")
    SOURCES.get("synthetic").parse({"fps": "abc"}, where="synthetic://?fps=abc")
    # SourceError: synthetic://?fps=abc: option fps must be a number (got 'abc')
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type

from .errors import UsageError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
KINDS = {str: "a string", int: "an integer", float: "a number", bool: "1 or 0 (true/false, yes/no, on/off)"}


class OptionError(UsageError):  # a ValueError too
    """An unknown option or a bad option value; the message names the option and the place."""


def option(default: Any = None, help: str = "", *, choices: Optional[Sequence[Any]] = None,
           parse: Optional[Callable[[Any], Any]] = None, kind: str = "",
           check: Optional[Callable[[Any], Optional[str]]] = None) -> Any:
    """A dataclass field declaring one option.

    ``default``: its value when absent (a list/dict default is copied per instance); ``help``:
    one line for ``--help`` and docs; ``choices``: the allowed values; ``parse``: converts a raw
    value (str from a URI, or a JSON value) and raises ValueError/TypeError when it cannot
    (``kind`` then says what it must be, e.g. "WIDTHxHEIGHT"); ``check``: returns None when a
    converted value is acceptable, else the reason (e.g. "must be >= 0")."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "parse": parse,
            "kind": kind, "check": check}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(hint: Any) -> Any:
    """``Optional[int]`` -> int; other hints unchanged."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return hint


@dataclass(frozen=True)
class Option:
    """One declared option: name, type, default, help, choices (see :func:`option`)."""

    name: str
    type: Any
    default: Any
    help: str
    choices: Optional[Tuple[Any, ...]] = None
    parse: Optional[Callable[[Any], Any]] = None
    kind: str = ""
    check: Optional[Callable[[Any], Optional[str]]] = None

    def what(self) -> str:
        """What a value must be, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        return self.kind or KINDS.get(self.type, getattr(self.type, "__name__", str(self.type)))

    def convert(self, value: Any) -> Any:
        """The typed value of a raw ``value`` (None stays None).

        Raises:
            ValueError: the value does not convert (a float option: NaN or infinity too) or fails
                the option's check; the message says "must be ..." without the option's name (the
                caller adds it).
        """
        if value is None:
            return None
        try:
            if self.parse is not None:
                out = self.parse(value)
            elif self.type is bool:
                out = _to_bool(value)
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                out = int(value) if not isinstance(value, str) else int(value.strip())
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                out = float(value)
                if math.isnan(out):
                    raise ValueError(value)
            elif self.type is str:
                out = str(value)
            else:
                out = value
        except (TypeError, ValueError) as exc:
            detail = f": {exc}" if self.parse is not None and str(exc) else ""
            raise ValueError(f"must be {self.what()} (got {value!r}){detail}") from None
        if self.type is float and math.isinf(out):  # fps=inf, queue-free rates: never meant, can hang
            raise ValueError(f"must be a finite number (got {value!r})")
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"must be {self.what()} (got {value!r})")
        if self.check is not None and out is not None:
            reason = self.check(out)
            if reason:
                raise ValueError(f"{reason} (got {value!r})")
        return out


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def options_of(schema: Optional[type]) -> Tuple[Option, ...]:
    """The :class:`Option` records of an options dataclass (empty for None)."""
    if schema is None:
        return ()
    cached = _OPTIONS_CACHE.get(schema)
    if cached is None:
        cached = _OPTIONS_CACHE[schema] = _options_of(schema)
    return cached


_OPTIONS_CACHE: Dict[type, Tuple[Option, ...]] = {}


def _options_of(schema: type) -> Tuple[Option, ...]:
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"{schema!r} is not an options dataclass")
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        meta = f.metadata
        out.append(Option(f.name, _base_type(hints.get(f.name, Any)), default, meta.get("help", ""),
                          meta.get("choices"), meta.get("parse"), meta.get("kind", ""), meta.get("check")))
    return tuple(out)


def parse_options(schema: Optional[type], raw: Mapping[str, Any], where: str,
                  error: Type[Exception] = OptionError) -> Any:
    """An instance of ``schema`` from ``raw`` (name -> raw value). Raises ``error`` naming
    ``where`` for an unknown option (listing the valid ones), a bad value (naming the option
    and what it must be) or a missing required one. ``schema`` None accepts no options."""
    declared = {o.name: o for o in options_of(schema)}
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise error(f"{where}: unknown option{s} {', '.join(unknown)}; valid options: "
                    f"{', '.join(declared) or 'none'}")
    values = {}
    for name, opt in declared.items():
        if name in raw:
            try:
                values[name] = opt.convert(raw[name])
            except ValueError as exc:
                raise error(f"{where}: option {name} {exc}") from None
        elif opt.default is dataclasses.MISSING:
            raise error(f"{where}: option {name} is required ({opt.help})")
    if schema is None:
        return None
    return schema(**values)


def resolve(target: str) -> Any:
    """The object named ``"module:attr.sub"`` (importing the module)."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


@dataclass
class Entry:
    """One registered thing: ``target`` (the object, or ``"module:attr"`` imported on first
    use), one line of ``help``, its options dataclass (``options``; None: the target's own
    ``Options`` attribute if it has one, else no options) and free ``meta`` (suffixes, USB ids)."""

    name: str
    target: Any
    help: str
    options: Optional[type] = None
    aliases: Tuple[str, ...] = ()
    meta: Dict[str, Any] = field(default_factory=dict)
    registry: Optional["Registry"] = field(default=None, repr=False, compare=False)

    def load(self) -> Any:
        """The target (importing its module the first time).

        Raises:
            ImportError: the ``"module:attr"`` target cannot be imported; the message names the entry.
        """
        if isinstance(self.target, str):
            try:
                self.target = resolve(self.target)
            except (ImportError, AttributeError) as exc:
                kind = self.registry.kind if self.registry else "entry"
                raise ImportError(f"{kind} {self.name!r}: cannot load {self.target}: {exc}") from exc
        return self.target

    @property
    def option_type(self) -> Optional[type]:
        """The entry's options dataclass: the declared one, else the target's ``Options`` attribute
        (loading the target), else None.

        Raises:
            ImportError: the target has to be loaded and cannot be (see :meth:`load`).
        """
        if self.options is not None:
            return self.options
        return getattr(self.load(), "Options", None)

    def option_list(self) -> Tuple[Option, ...]:
        """The entry's options (name, type, default, help) in declaration order; () without options."""
        return options_of(self.option_type)

    def parse(self, raw: Mapping[str, Any], where: str = "") -> Any:
        """The entry's options dataclass from raw values (see :func:`parse_options`)."""
        error = self.registry.option_error if self.registry else OptionError
        return parse_options(self.option_type, raw, where or self.name, error)

    def __getattr__(self, key: str) -> Any:  # meta fields read as attributes (entry.usb_id)
        meta = self.__dict__.get("meta") or {}
        if key in meta:
            return meta[key]
        raise AttributeError(key)


class Registry:
    """Name -> :class:`Entry` for one kind of thing (``kind`` names it in errors; ``error`` is
    the exception class raised for unknown names, ``option_error`` the one for bad options,
    default ``error``; ``casefold``: names match case-insensitively; ``meta``: the meta fields
    an entry may give, with their defaults; a field not listed is refused at registration)."""

    def __init__(self, kind: str, error: Type[Exception] = ValueError, casefold: bool = False,
                 option_error: Optional[Type[Exception]] = None, meta: Optional[Mapping[str, Any]] = None):
        self.kind = kind
        self.error = error
        self.option_error = option_error or error
        #: the meta fields an entry may give and their defaults (None: any, no defaults)
        self.meta_defaults = dict(meta) if meta is not None else None
        self.casefold = casefold
        self._entries: Dict[str, Entry] = {}
        self._aliases: Dict[str, str] = {}

    def _key(self, name: str) -> str:
        name = str(name).strip()
        return name.lower() if self.casefold else name

    def register(self, name: str, target: Any = None, *, help: str, options: Optional[type] = None,
                 aliases: Sequence[str] = (), replace: bool = False, **meta: Any) -> Any:
        """Register ``target`` under ``name``; without ``target``, a decorator. Raises ValueError
        for an empty help or a name already taken (unless ``replace``)."""
        if target is None:
            def decorator(obj):
                self.register(name, obj, help=help, options=options, aliases=aliases, replace=replace, **meta)
                return obj
            return decorator
        if not str(help).strip():
            raise ValueError(f"{self.kind} {name!r}: give a one-line help")
        key = self._key(name)
        if not replace and (key in self._entries or key in self._aliases):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if options is not None:
            options_of(options)  # a bad declaration fails here, not at first use
        if self.meta_defaults is not None:
            unknown = sorted(set(meta) - set(self.meta_defaults))
            if unknown:
                raise ValueError(f"{self.kind} {name!r}: unknown field{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(unknown)}; fields: {', '.join(self.meta_defaults) or 'none'}")
            meta = {**self.meta_defaults, **meta}
        entry = Entry(str(name).strip(), target, " ".join(str(help).split()), options, tuple(aliases), dict(meta),
                      self)
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[self._key(alias)] = key
        return target

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases.

        Raises:
            KeyError: ``name`` is not registered (an alias is not accepted here).
        """
        key = self._key(name)
        entry = self._entries.pop(key)
        for alias in entry.aliases:
            self._aliases.pop(self._key(alias), None)

    def get(self, name: str) -> Entry:
        """The entry for ``name`` (or an alias).

        Raises:
            Exception: the registry's ``error`` class for an unknown name, listing the known names.
        """
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return self._entries[key]

    def load(self, name: str) -> Any:
        """The target registered under ``name`` (importing its module the first time).

        Raises:
            Exception: the registry's ``error`` class for an unknown name.
            ImportError: the target's module or attribute cannot be loaded.
        """
        return self.get(name).load()

    def find(self, predicate: Callable[[Entry], bool]) -> Optional[Entry]:
        """The first entry (in registration order) for which ``predicate`` is true, else None."""
        return next((e for e in self if predicate(e)), None)

    def names(self) -> List[str]:
        """The registered names in registration order (aliases not included)."""
        return [e.name for e in self._entries.values()]

    def choices(self) -> Tuple[str, ...]:
        """Names for argparse ``choices`` (aliases included)."""
        return tuple(self.names()) + tuple(self._aliases)

    def help_text(self, sep: str = "; ") -> str:
        """``name: help`` for every entry, for ``--help`` texts."""
        return sep.join(f"{e.name}: {e.help}" for e in self)

    def __contains__(self, name: object) -> bool:
        key = self._key(str(name))
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
