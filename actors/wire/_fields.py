"""Reading messages: envelopes, JSON bodies and typed fields, with reasons for refusals.

Every body is validated on the way in: a message from the network is
untrusted, and a wrong shape raises :class:`MessageError`, whose reason names
the field (``field 'error.non_retryable' must be a boolean, got string
'false'``), instead of surfacing later as an ``AttributeError`` deep in an
actor or being quietly turned into something else. Types are matched exactly:
a string is never a number or a boolean, a boolean never an integer. An
optional field may be absent or null, both meaning its default; fields a
reader does not know are ignored, so that a newer writer may add some.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..core import ErrorInfo, InvalidNameError
from ..errors import EngineError
from ._codec import DEFAULT_LIMITS, CodecError, CodecLimits, decode
from ._json import decode_json

__all__ = ["MessageError"]

KIND_START: Final = "workflow.start"
KIND_CANCEL: Final = "workflow.cancel"
KIND_TERMINATE: Final = "workflow.terminate"
KIND_SIGNAL: Final = "workflow.signal"
KIND_RESULT: Final = "activity.result"
KIND_TIMER: Final = "workflow.timer"
KIND_TASK: Final = "activity.task"
KIND_ACTIVITY_CANCEL: Final = "activity.cancel"
KIND_STATE: Final = "instance.state"
KIND_HISTORY: Final = "history.record"
KIND_HISTORY_RECORDS: Final = "history.records"
KIND_DEFINITION: Final = "workflow.definition"
KIND_DEADLETTER: Final = "deadletter"

#: A JSON signal is its payload, which an envelope holds one level down, as
#: ``{"payload": value}``: the same value is accepted in either form.
_PAYLOAD_LIMITS: Final = CodecLimits(
    max_bytes=DEFAULT_LIMITS.max_bytes,
    max_depth=DEFAULT_LIMITS.max_depth - 1,
    max_items=DEFAULT_LIMITS.max_items - 1,
)
# ASCII bytes no text begins with: control characters other than JSON's whitespace.
_NOT_TEXT: Final = frozenset(range(0x20)) - frozenset(b"\t\n\r") | {0x7F}


class MessageError(EngineError, ValueError):
    """A message that cannot be understood; the reason names what is wrong."""


def is_json(data: bytes) -> bool:
    """Whether a start or signal body is to be read as JSON rather than as CBOR.

    The first byte decides, and no valid input of either form can be taken for
    the other: a JSON text (RFC 8259: UTF-8, no byte-order mark) begins with
    whitespace or the first character of a value, all ASCII (below 0x80),
    while an envelope is a CBOR map, whose first byte is 0xa0-0xbb.
    """
    return bool(data) and data[0] < 0x80


def _json(data: bytes, what: str, limits: CodecLimits) -> Any:
    """The JSON value in ``data`` (``is_json(data)`` holds). Raises :class:`MessageError`."""
    if data[0] in _NOT_TEXT:
        # Not meant as text: say what a CBOR reader would, as for any other garbage.
        raise MessageError(
            f"{what} is neither JSON nor a CBOR envelope: header byte is 0x{data[0]:02x}"
        )
    try:
        return decode_json(data, limits=limits)
    except CodecError as exc:
        raise MessageError(f"{what} is not valid JSON within limits: {exc}") from None


def _body(data: bytes, kind: str) -> Mapping[str, Any]:
    return _envelope(data, kind)[1]


def _envelope(data: bytes, *kinds: str) -> tuple[str, Mapping[str, Any]]:
    """The kind (one of ``kinds``) and the map body of an encoded message."""
    try:
        envelope = decode(data)
    except CodecError as exc:
        raise MessageError(str(exc)) from None
    if envelope.kind not in kinds:
        wanted = " or ".join(repr(kind) for kind in kinds)
        raise MessageError(f"expected a {wanted} message, got {envelope.kind!r}")
    if type(envelope.body) is not dict:
        raise MessageError(f"{envelope.kind} body must be a map")
    return envelope.kind, envelope.body


# -- typed fields ------------------------------------------------------------------

_E = TypeVar("_E", bound=enum.Enum)
_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class _Type:
    """What a field must hold: the exact Python types, and how to say it."""

    name: str
    types: tuple[type, ...]


_STR: Final = _Type("a string", (str,))
_INT: Final = _Type("an integer", (int,))
_NUMBER: Final = _Type("a number", (int, float))
_BOOL: Final = _Type("a boolean", (bool,))
_MAP: Final = _Type("a map", (dict,))
_LIST: Final = _Type("a list", (list,))
_BYTES: Final = _Type("a byte string", (bytes,))


def _describe(value: object) -> str:
    """``value`` in a reason: its wire type, and the value if it is short."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return f"integer {value}"
    if type(value) is float:
        return f"number {value!r}"
    if type(value) is str:
        more = "..." if len(value) > 60 else ""
        return f"string {value[:60]!r}{more}"
    if type(value) is bytes:
        return f"a byte string of {len(value)} bytes"
    if type(value) is list:
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if type(value) is dict:
        return "a map"
    return type(value).__name__


class _Fields:
    """Typed reads of the fields of one map of a message.

    Each read either returns a value of the type asked for or raises
    :class:`MessageError` naming the field by its path from the body
    (``error.cause.traceback``, ``steps.pay.attempt``, ``outbox[2].kind``).
    ``require`` wants the field present and not null; ``get`` takes absent and
    null alike for ``default``.
    """

    __slots__ = ("_data", "_where")

    def __init__(self, data: Mapping[str, Any], where: str = "") -> None:
        self._data = data
        self._where = where

    @property
    def data(self) -> Mapping[str, Any]:
        return self._data

    def path(self, name: str) -> str:
        return f"{self._where}{name}"

    def wrong(self, name: str, wanted: str) -> MessageError:
        """The error for field ``name``, which does not hold ``wanted``."""
        value = self._data.get(name, _ABSENT)
        if value is _ABSENT:
            return MessageError(f"field {self.path(name)!r} is missing: it must be {wanted}")
        return MessageError(f"field {self.path(name)!r} must be {wanted}, got {_describe(value)}")

    def require(self, name: str, kind: _Type) -> Any:
        value = self._data.get(name)
        if type(value) not in kind.types:
            raise self.wrong(name, kind.name)
        return value

    def get(self, name: str, kind: _Type, default: Any) -> Any:
        value = self._data.get(name)
        if value is None:
            return default
        if type(value) not in kind.types:
            raise self.wrong(name, f"{kind.name} or null")
        return value

    # The commonest reads, spelt out: they run for every field of every event.

    def text(self, name: str) -> str:
        value = self._data.get(name)
        if type(value) is not str:
            raise self.wrong(name, _STR.name)
        return value

    def integer(self, name: str) -> int:
        value = self._data.get(name)
        if type(value) is not int:
            raise self.wrong(name, _INT.name)
        return value

    def count(self, name: str, *, default: int, least: int, wanted: str) -> int:
        """An optional integer of at least ``least``; ``wanted`` says so in a refusal."""
        value = self._data.get(name)
        if value is None:
            return default
        if type(value) is not int or value < least:
            raise self.wrong(name, wanted)
        return value

    def number(self, name: str) -> float:
        return float(self.require(name, _NUMBER))

    def choice(self, name: str, kind: type[_E]) -> _E:
        """A field holding the value of a member of the string enum ``kind``."""
        value = self._data.get(name)
        if type(value) is str:
            try:
                return kind(value)
            except ValueError:
                pass
        raise self.wrong(name, "one of " + ", ".join(str(member.value) for member in kind))

    def element(self, name: str, index: int, value: object) -> _Fields:
        """Item ``index`` (``value``) of the list in field ``name``, which must be a map."""
        path = f"{self.path(name)}[{index}]"
        if type(value) is not dict:
            raise MessageError(f"field {path!r} must be a map, got {_describe(value)}")
        return _Fields(value, f"{path}.")

    def fields(self, name: str) -> _Fields:
        """The map in field ``name``, to read its own fields."""
        return _Fields(self.require(name, _MAP), f"{self.path(name)}.")

    def maybe_fields(self, name: str) -> _Fields | None:
        value = self.get(name, _MAP, None)
        return None if value is None else _Fields(value, f"{self.path(name)}.")


def _duration(fields: _Fields, name: str) -> float | None:
    """A duration: ``None``, or a finite number of seconds, not negative.

    NaN would reach Trio as a deadline and crash the worker that took the
    task (Trio refuses NaN deadlines), so it is refused here with the rest.
    """
    value = fields.get(name, _NUMBER, None)
    if value is None:
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise fields.wrong(name, "a finite number >= 0")
    return seconds


def _error_from(fields: _Fields) -> ErrorInfo:
    """An error map as ``ErrorInfo.to_data`` writes it, with its whole chain of causes.

    ``type`` is required; ``message`` and ``traceback`` default to ``""``,
    ``non_retryable`` to false and ``cause`` to none. Every error of the
    chain is checked here, so that ``ErrorInfo`` never converts a value of the
    wrong type (``"false"`` is not false, null is not ``"None"``).
    """
    links: list[dict[str, Any]] = []
    current: _Fields | None = fields
    # The chain is as long as the codec's depth limit lets it be, no longer.
    while current is not None:
        links.append(
            {
                "type": current.text("type"),
                "message": current.get("message", _STR, ""),
                "traceback": current.get("traceback", _STR, ""),
                "non_retryable": current.get("non_retryable", _BOOL, False),
            }
        )
        current = current.maybe_fields("cause")
    cause: dict[str, Any] | None = None
    for link in reversed(links[1:]):
        if cause is not None:
            link["cause"] = cause
        cause = link
    top = links[0]
    return ErrorInfo(top["type"], top["message"], top["traceback"], top["non_retryable"], cause)


@contextmanager
def _names(prefix: str = "") -> Iterator[None]:
    """Turn a refused name (``_wire``'s ``check_*``) into a MessageError."""
    try:
        yield
    except InvalidNameError as exc:
        raise MessageError(f"{prefix}{exc}") from None
