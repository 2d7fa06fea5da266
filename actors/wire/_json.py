"""JSON as the front ends read and write it: strict on the way in, plain on the way out.

The HTTP API and the command line take payloads (a start's input, a
signal's payload) as JSON and show stored values as JSON. Both read the same
strict JSON (:func:`loads`: UTF-8, no ``NaN`` or ``Infinity``, no repeated
keys), check a payload against what the engine can carry with the path of
the first fault (:func:`check_payload`), and write stored values the same
way (:func:`plain`, :func:`dumps`): bytes as base64 strings, non-finite
floats as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, so
that what they print is always standard JSON.

A payload is what JSON Schema can state exactly (the OpenAPI document does,
in ``actors/_openapi.py``): every number from ``-2**64`` to ``2**64 - 1``
(the integers of CBOR's two integer types; JSON has one number type, so a
float beyond them is refused too) and at most :data:`MAX_PAYLOAD_DEPTH`
lists and objects deep.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from ..errors import RequestError
from ._codec import (
    DEFAULT_LIMITS,
    INT_MAX,
    INT_MIN,
    CodecError,
    CodecLimits,
    PayloadTooLargeError,
    check_body,
)

__all__ = [
    "MAX_NUMBER",
    "MAX_PAYLOAD_DEPTH",
    "MIN_NUMBER",
    "JsonError",
    "check_payload",
    "decode_json",
    "dumps",
    "loads",
    "plain",
]

#: The smallest and largest number a payload may hold.
MIN_NUMBER: Final = -(2**64)
MAX_NUMBER: Final = 2**64 - 1
#: Lists and objects a payload may nest. The codec bounds the nesting of a
#: whole message, and an instance keeps payloads three levels down in its
#: state (an activity's input in ``outbox[i].input``, a signal in
#: ``signals[name][i]``, a step's output in ``steps[key].output``): deeper,
#: the start or signal would be taken, and the instance then fail.
MAX_PAYLOAD_DEPTH: Final = DEFAULT_LIMITS.max_depth - 3

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class JsonError(RequestError, ValueError, http_type="InvalidPayload"):
    """Text that is not strict JSON, or a value that is not a payload.

    ``path`` names the value at fault (``input.items[2]``; empty for text
    that does not parse), ``reason`` says what is wrong with it; the
    message is both.
    """

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


# -- in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _StrictJson:
    """:func:`json.loads` refusing what RFC 8259 does not allow, with ``fault(reason)``.

    Refused: ``NaN``, ``Infinity`` and ``-Infinity``, a number too large for
    a float (``1e400`` parses as infinity: refused rather than taken as a
    value JSON cannot write), and a name repeated in one object (JSON leaves
    its meaning open; Python would keep the last). Both readers of JSON use
    it: :func:`loads` (the front ends) and :func:`decode_json` (bodies from
    other programs), each with its own error class.
    """

    fault: Callable[[str], Exception]

    def parse(self, text: str, **hooks: Any) -> Any:
        """``text`` parsed; ``hooks`` are more of :func:`json.loads`' (``parse_int``)."""
        return json.loads(
            text,
            parse_float=self._number,
            parse_constant=self._constant,
            object_pairs_hook=self._object,
            **hooks,
        )

    def _number(self, text: str) -> float:
        number = float(text)
        if math.isinf(number):
            raise self.fault(f"the number {text[:40]} is too large for a 64-bit float")
        return number

    def _constant(self, name: str) -> NoReturn:
        raise self.fault(f"{name} is not JSON")

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) != len(pairs):
            seen: set[str] = set()
            for name, _ in pairs:
                if name in seen:
                    raise self.fault(f"an object has the name {name[:80]!r} more than once")
                seen.add(name)
        return data


_FRONT_END_JSON: Final = _StrictJson(JsonError)


def loads(text: str | bytes) -> Any:
    """``text`` parsed as strict JSON; :class:`JsonError` saying why it is not.

    Bytes must be UTF-8. Refused: ``NaN``, ``Infinity`` and numbers too large
    for a float, a key repeated in one object, and nesting deeper than
    Python's recursion allows.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return _FRONT_END_JSON.parse(text)
    except UnicodeDecodeError:
        raise JsonError("not UTF-8") from None
    except RecursionError:
        raise JsonError("nested too deeply") from None
    except JsonError:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints of over 4300 digits
        raise JsonError(f"not valid JSON: {exc}") from None


def _step(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key[:80], ensure_ascii=False)}]"


def check_payload(value: Any, path: str) -> None:
    """Raise :class:`JsonError` unless ``value`` is a payload (see the module's docstring).

    A payload is JSON's data (objects with string keys, lists, strings of
    Unicode text, numbers, booleans, ``null``) with every number within
    :data:`MIN_NUMBER`..:data:`MAX_NUMBER`, finite, and at most
    :data:`MAX_PAYLOAD_DEPTH` lists and objects deep. ``path`` names
    ``value`` in the error (``input``); the error names the part at fault.
    """
    # Depth first, with an explicit stack: a deep value is refused at its
    # limit, not by Python's recursion limit.
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
            continue
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int | float):
            if isinstance(item, float) and not math.isfinite(item):
                raise JsonError(f"{item} is not a JSON number", where)
            if not MIN_NUMBER <= item <= MAX_NUMBER:
                raise JsonError("a number must be from -2**64 to 2**64-1", where)
            continue
        if isinstance(item, list | dict):
            if depth == MAX_PAYLOAD_DEPTH:
                raise JsonError(
                    f"nested more than {MAX_PAYLOAD_DEPTH} lists and objects deep", where
                )
            if isinstance(item, list):
                children = [(child, _step(where, n), depth + 1) for n, child in enumerate(item)]
            else:
                children = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JsonError(f"the key {key!r} is not a string", where)
                    _check_text(key, where)
                    children.append((child, _step(where, key), depth + 1))
            stack.extend(reversed(children))
            continue
        raise JsonError(f"a value of type {type(item).__name__} is not JSON", where)


def _check_text(text: str, where: str) -> None:
    # JSON's \ud800 escape makes a lone surrogate, which UTF-8 (and so CBOR) cannot hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonError(
            f"the text {text[:40]!r} holds a lone surrogate, which is not Unicode", where
        ) from None


# -- out --------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as something :func:`json.dumps` writes as standard JSON.

    Values of the engine's data model that JSON lacks are spelled as
    strings, so that no stored payload can make an answer fail or print
    invalid JSON: bytes as base64, non-finite floats as ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``, keys as strings, enums by value,
    anything else by ``str``.
    """
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return plain(value.value)
    return str(value)


def dumps(value: Any, *, indent: int | None = None, compact: bool = False) -> str:
    """``value`` (see :func:`plain`) as standard JSON text, non-ASCII kept as it is."""
    separators = (",", ":") if compact else None
    return json.dumps(
        plain(value), ensure_ascii=False, allow_nan=False, indent=indent, separators=separators
    )


# -- bodies from other programs ------------------------------------------------------
#
# A start or a signal may arrive as JSON from any NATS client; it is read as
# strictly as a CBOR envelope is (the codec's limits and data model), and a
# refusal is a CodecError like any malformed message.


def decode_json(
    data: bytes | bytearray | memoryview, *, limits: CodecLimits = DEFAULT_LIMITS
) -> Any:
    """Parse one JSON value (RFC 8259) that occupies all of ``data``, within ``limits``.

    Any JSON value is accepted (object, array, string, number, ``true``,
    ``false``, ``null``) with any JSON whitespace around it, and comes back as
    a value of the data model: ``dict``, ``list``, ``str``, ``int`` (a number
    written without fraction or exponent), ``float``, ``bool`` or ``None``.
    The text must be UTF-8 without a byte-order mark. The limits mean what they
    mean for :func:`decode`, with the value in the place of an envelope's body:
    ``max_bytes`` bounds the text, ``max_depth`` and ``max_items`` the value.
    Like :func:`decode` it refuses the input the CBOR data model cannot hold,
    rather than changing it.

    Raises:
        PayloadTooLargeError: if ``data`` is longer than ``limits.max_bytes``;
            checked before anything else.
        CodecError: for anything else wrong with ``data``: not UTF-8, not
            one JSON value, ``NaN`` or ``Infinity``, an integer outside the
            64-bit CBOR range, a number too large for a 64-bit float, an object
            with a name twice, a string with a lone surrogate (``\\ud800``),
            nesting deeper than ``max_depth`` or more than ``max_items``
            container items (counted before the value is built).
        TypeError: if ``data`` is not bytes-like (a caller bug, not bad input).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_json() needs bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > limits.max_bytes:
        raise PayloadTooLargeError(f"payload is {size} bytes, limit is {limits.max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"JSON text is not valid UTF-8: {exc}") from exc
    _check_json_items(text, limits.max_items)
    try:
        value = _BODY_JSON.parse(text, parse_int=_json_int)
    except (CodecError, MemoryError):
        raise
    except RecursionError:
        # json's scanner recurses per level; far past max_depth anyway.
        raise CodecError(f"body nests deeper than max_depth={limits.max_depth}") from None
    except ValueError as exc:
        raise CodecError(f"malformed JSON: {exc}") from exc
    check_body(value, limits)
    if _SURROGATE_ESCAPE.search(text) is not None:
        _check_surrogates(value)
    return value


# A JSON string, escapes and all; on valid JSON, the first quote outside a
# string always opens one. A string left open runs to the end of the text, so
# that every match from a quote succeeds, and the possessive quantifier never
# gives back: the scan is linear however the quotes and backslashes are laid
# out (a failed match retried from each later quote would be quadratic).
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_WHITESPACE: Final = str.maketrans("", "", " \t\n\r")
# An escape of a UTF-16 surrogate; json pairs a high and a low one into one
# code point, but leaves a lone one in the str, which UTF-8 cannot encode.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
# The decimal form of the 64-bit CBOR range's ints is at most this long
# (-18446744073709551616); longer digit strings are refused before int() runs.
_JSON_INT_CHARS: Final = 21
_BODY_JSON: Final = _StrictJson(CodecError)


def _check_json_items(text: str, max_items: int) -> None:
    """Refuse ``text`` if its value would have more than ``max_items`` container items.

    Counted on the text, so that a small text of many tiny items (``[[],[],...]``,
    a few bytes each) is refused before json builds an object for each. Outside
    strings, every comma separates two items of a container and every
    non-empty container has one item more than commas, so the items number the
    commas plus the non-empty containers. Exact for valid JSON; invalid JSON
    that passes is refused by the parser.
    """
    # Cheap upper bound first: most texts need no closer look.
    if text.count(",") + text.count("[") + text.count("{") <= max_items:
        return
    # Strings become a placeholder item; whitespace outside them means nothing.
    bare = _JSON_STRING.sub("0", text).translate(_JSON_WHITESPACE)
    opened = bare.count("[") + bare.count("{") - bare.count("[]") - bare.count("{}")
    if bare.count(",") + opened > max_items:
        raise CodecError(f"body has more than max_items={max_items} container items")


def _json_int(text: str) -> int:
    if len(text) > _JSON_INT_CHARS:
        raise CodecError(
            f"JSON integer of {len(text.lstrip('-'))} digits is outside the 64-bit CBOR range"
        )
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise CodecError(f"JSON integer {text} is outside the 64-bit CBOR range")
    return value


def _check_surrogates(value: Any) -> None:
    """Raise CodecError if a str in ``value`` (a key too) is not encodable as UTF-8.

    Iterative; ``value`` has passed :func:`check_body`, so it is bounded.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise CodecError(
                    f"JSON string {item!r:.80} holds a lone surrogate, which is not Unicode text"
                ) from None
