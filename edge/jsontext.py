"""JSON text from files tir did not necessarily write, parsed so that every malformed text is a
``ValueError`` (stdlib only).

The standard parser (``json.loads``) recurses once per level of nesting, so a text nested more
deeply than the interpreter's recursion limit (``[[[[…]]]]``: a damaged or hostile file of a few
hundred kilobytes) raises ``RecursionError``, which readers that refuse malformed JSON by
catching ``json.JSONDecodeError`` / ``ValueError`` let through as a traceback. :func:`loads`
turns it into a ``json.JSONDecodeError``, the error every other malformed text raises.
"""
from __future__ import annotations

import json
from typing import Any, Union


def loads(text: Union[str, bytes, bytearray]) -> Any:
    """The value of the JSON ``text`` (as ``json.loads``).

    Raises:
        json.JSONDecodeError: (a ``ValueError``) the text is not JSON, or nests arrays/objects
            more deeply than the parser can recurse ("nested more deeply than ...").
        UnicodeDecodeError: ``text`` is bytes that are not UTF-8/16/32 (as ``json.loads``).
    """
    try:
        return json.loads(text)
    except RecursionError:
        shown = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        raise json.JSONDecodeError("nested more deeply than the JSON parser recurses (a damaged or "
                                   "hostile file)", shown, 0) from None
