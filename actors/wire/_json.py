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
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from ..errors import RequestError
from ._codec import DEFAULT_LIMITS

__all__ = [
    "MAX_NUMBER",
    "MAX_PAYLOAD_DEPTH",
    "MIN_NUMBER",
    "JsonError",
    "check_payload",
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


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        # 1e400 parses as inf: refuse it rather than take a value JSON cannot write.
        raise JsonError(f"the number {text[:40]} is out of range")
    return number


def _no_constants(name: str) -> NoReturn:
    raise JsonError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonError(f"the key {key[:80]!r} appears twice in one object")
            seen.add(key)
    return data


def loads(text: str | bytes) -> Any:
    """``text`` parsed as strict JSON; :class:`JsonError` saying why it is not.

    Bytes must be UTF-8. Refused: ``NaN``, ``Infinity`` and numbers too large
    for a float, a key repeated in one object, and nesting deeper than
    Python's recursion allows.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(
            text,
            parse_float=_finite,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
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
