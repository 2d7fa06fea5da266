"""Engine messages and stored records <-> CBOR envelopes.

Every body is validated on the way in: a message from the network is
untrusted, and a wrong shape raises :class:`MessageError`, whose reason names
the field (``field 'error.non_retryable' must be a boolean, got string
'false'``), instead of surfacing later as an ``AttributeError`` deep in an
actor or being quietly turned into something else. Types are matched exactly:
a string is never a number or a boolean, a boolean never an integer. An
optional field may be absent or null, both meaning its default; fields a
reader does not know are ignored, so that a newer writer may add some. Which
fields are optional is listed in ``docs/wire.md``.

Starts and signals may also arrive as JSON, so that any NATS client can send
them without a CBOR library: a body whose first byte is ASCII is JSON, any
other is a CBOR envelope (see :func:`is_json`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelChild,
    Command,
    ErrorInfo,
    InstanceState,
    InstanceStatus,
    InvalidNameError,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
    check_instance_id,
    check_name,
    check_step_key,
)
from ._codec import DEFAULT_LIMITS, CodecError, CodecLimits, decode, decode_json, encode

__all__ = [
    "MessageError",
    "StartMessage",
    "Task",
]

KIND_START: Final = "workflow.start"
KIND_CANCEL: Final = "workflow.cancel"
KIND_TERMINATE: Final = "workflow.terminate"
KIND_SIGNAL: Final = "workflow.signal"
KIND_RESULT: Final = "activity.result"
KIND_TIMER: Final = "workflow.timer"
KIND_TASK: Final = "activity.task"
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


class MessageError(ValueError):
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


# -- start ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartMessage:
    """A request to start an instance; ``version`` 0 means the newest.

    A child workflow's start names its ``parent`` instance and the parent's
    ``parent_step`` (the step key its result goes to).
    """

    instance_id: str | None
    input: Any
    version: int = 0
    parent: str | None = None
    parent_step: str | None = None
    #: A child's depth (its parent's + 1); 0 for a start without a parent.
    depth: int = 0


def encode_start(message: StartMessage) -> bytes:
    body: dict[str, Any] = {"input": message.input}
    if message.instance_id is not None:
        body["id"] = message.instance_id
    if message.version:
        body["version"] = message.version
    if message.parent is not None:
        body["parent"] = {"id": message.parent, "step": message.parent_step}
        body["depth"] = message.depth
    return encode(KIND_START, body)


def decode_start(data: bytes) -> StartMessage:
    """Parse a start: a ``workflow.start`` envelope, or a JSON object (see :func:`is_json`).

    ``id``, ``version`` (0: the newest), ``parent`` and ``depth`` (1) are
    optional; so is ``input`` (null). Raises :class:`MessageError`.
    """
    if is_json(data):
        body = _json(data, "start", DEFAULT_LIMITS)
        if type(body) is not dict:
            raise MessageError(f"a JSON start must be an object, got {_describe(body)}")
    else:
        body = _body(data, KIND_START)
    fields = _Fields(body)
    instance_id = body.get("id")
    if instance_id is not None:
        with _names():
            check_instance_id(instance_id)
    version = fields.count("version", default=0, least=0, wanted="a positive integer or 0")
    parent = fields.maybe_fields("parent")
    if parent is None:
        return StartMessage(instance_id, body.get("input"), version)
    if instance_id is None:
        raise MessageError("field 'parent' is set, and a child's start needs an id")
    with _names("parent: "):
        parent_id = check_instance_id(parent.data.get("id"))
        parent_step = check_step_key(parent.data.get("step"))
    # A child's start from an engine that did not send depths is one level down.
    depth = fields.count("depth", default=1, least=1, wanted="an integer >= 1 (a child's depth)")
    return StartMessage(instance_id, body.get("input"), version, parent_id, parent_step, depth)


def encode_cancel(reason: str, *, terminate: bool = False) -> bytes:
    return encode(KIND_TERMINATE if terminate else KIND_CANCEL, {"reason": reason})


def decode_terminate(data: bytes) -> str:
    """The reason of a ``workflow.terminate`` (optional: ``""``). Raises :class:`MessageError`."""
    reason: str = _Fields(_body(data, KIND_TERMINATE)).get("reason", _STR, "")
    return reason


def encode_signal(payload: Any) -> bytes:
    return encode(KIND_SIGNAL, {"payload": payload})


def decode_signal(data: bytes) -> Any:
    """A signal's payload: of a ``workflow.signal`` envelope, or any JSON value.

    An empty body is a signal without a payload (null), and so is an
    envelope without ``payload``. Raises :class:`MessageError`.
    """
    if not data:
        return None
    if is_json(data):
        return _json(data, "signal", _PAYLOAD_LIMITS)
    return _body(data, KIND_SIGNAL).get("payload")


def decode_cancel(data: bytes) -> str:
    """The reason of a ``workflow.cancel`` (optional: ``""``). Raises :class:`MessageError`."""
    reason: str = _Fields(_body(data, KIND_CANCEL)).get("reason", _STR, "")
    return reason


# -- activity results ----------------------------------------------------------


def encode_result(
    instance_id: str, step: str, attempt: int, *, output: Any = None, error: ErrorInfo | None = None
) -> bytes:
    body: dict[str, Any] = {"instance": instance_id, "step": step, "attempt": attempt}
    if error is None:
        body["output"] = output
    else:
        body["error"] = error.to_data()
    return encode(KIND_RESULT, body)


def decode_result(data: bytes) -> tuple[str, ActivityCompleted | ActivityFailed]:
    """The instance id and the event. Raises :class:`MessageError`.

    A result with an ``error`` (not null) is a failure, whatever else it
    holds; otherwise its ``output`` (absent: null) is the step's.
    """
    body = _body(data, KIND_RESULT)
    fields = _Fields(body)
    instance_id = fields.text("instance")
    step = fields.text("step")
    attempt = fields.integer("attempt")
    error = fields.maybe_fields("error")
    if error is not None:
        return instance_id, ActivityFailed(step, attempt, _error_from(error))
    return instance_id, ActivityCompleted(step, attempt, body.get("output"))


# -- timers ---------------------------------------------------------------------


def encode_timer(instance_id: str, timer: StartTimer) -> bytes:
    return encode(
        KIND_TIMER,
        {
            "instance": instance_id,
            "kind": str(timer.kind),
            "step": timer.step,
            "attempt": timer.attempt,
        },
    )


def decode_timer(data: bytes) -> tuple[str, TimerFired]:
    """The instance id and the event. Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_TIMER))
    try:
        kind = fields.choice("kind", TimerKind)
    except MessageError as exc:
        raise MessageError(f"unknown timer kind {fields.data.get('kind')!r:.80}: {exc}") from None
    instance_id = fields.text("instance")
    return instance_id, TimerFired(kind, fields.text("step"), fields.integer("attempt"))


# -- activity tasks -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    """One attempt of one activity, as a worker receives it: what to run, and for whom."""

    instance_id: str
    workflow_type: str
    work: ScheduleActivity


def _schedule_data(command: ScheduleActivity) -> dict[str, Any]:
    return {
        "step": command.step,
        "attempt": command.attempt,
        "activity": command.activity,
        "input": command.input,
        "scheduled_at": command.scheduled_at,
        "schedule_to_start": command.schedule_to_start,
        "start_to_close": command.start_to_close,
        "heartbeat": command.heartbeat,
    }


def encode_task(instance_id: str, workflow_type: str, command: ScheduleActivity) -> bytes:
    return encode(
        KIND_TASK, {"instance": instance_id, "type": workflow_type, **_schedule_data(command)}
    )


def decode_task(data: bytes) -> Task:
    """A task; its workflow ``type`` is optional (``""``). Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_TASK))
    with _names():
        instance_id = check_instance_id(fields.text("instance"))
    workflow_type: str = fields.get("type", _STR, "")
    return Task(instance_id, workflow_type, _schedule_from(fields))


def _schedule_from(fields: _Fields) -> ScheduleActivity:
    """The fields of ``_schedule_data``, checked. Raises :class:`MessageError`.

    ``input`` and the durations are optional: null input, no
    ``schedule_to_start`` or ``heartbeat`` limit, ``start_to_close`` 300 s.
    """
    with _names():
        step = check_step_key(fields.text("step"))
        activity = check_name("activity", fields.text("activity"))
    start_to_close = _duration(fields, "start_to_close")
    return ScheduleActivity(
        step=step,
        attempt=fields.integer("attempt"),
        activity=activity,
        input=fields.data.get("input"),
        scheduled_at=fields.number("scheduled_at"),
        schedule_to_start=_duration(fields, "schedule_to_start"),
        start_to_close=300.0 if start_to_close is None else start_to_close,
        heartbeat=_duration(fields, "heartbeat"),
    )


# -- history --------------------------------------------------------------------


def _record_data(record: RecordHistory) -> dict[str, Any]:
    return {"seq": record.seq, "kind": record.kind, "at": record.at, "detail": dict(record.detail)}


def encode_history(instance_id: str, record: RecordHistory) -> bytes:
    """One record in its own ``history.record`` message."""
    return encode(KIND_HISTORY, {"instance": instance_id, **_record_data(record)})


def encode_history_records(instance_id: str, records: Sequence[RecordHistory]) -> bytes:
    """Records of one decision, in order, in one ``history.records`` message."""
    return encode(
        KIND_HISTORY_RECORDS,
        {"instance": instance_id, "records": [_record_data(record) for record in records]},
    )


def decode_history(data: bytes) -> list[dict[str, Any]]:
    """The records in a history message of either kind, each with its ``instance``.

    Each record has ``seq`` (an integer), ``kind`` (a string), ``at`` (a
    number) and ``detail`` (a map; absent or null gives ``{}``); the message's
    ``instance`` is optional (a string). Raises :class:`MessageError` if the
    message, or any record in it, is malformed.
    """
    kind, body = _envelope(data, KIND_HISTORY, KIND_HISTORY_RECORDS)
    fields = _Fields(body)
    instance: str | None = fields.get("instance", _STR, None)
    found: list[_Fields] = [fields]
    if kind == KIND_HISTORY_RECORDS:
        items: list[Any] = fields.require("records", _LIST)
        found = [fields.element("records", index, item) for index, item in enumerate(items)]
    records: list[dict[str, Any]] = []
    for record in found:
        record.integer("seq")
        record.text("kind")
        record.number("at")
        plain = dict(record.data)
        plain["detail"] = record.get("detail", _MAP, {})
        if instance is not None:
            plain.setdefault("instance", instance)
        records.append(plain)
    return records


# -- instance state -------------------------------------------------------------


def _command_data(command: Command) -> dict[str, Any]:
    if isinstance(command, ScheduleActivity):
        return {"op": "schedule", **_schedule_data(command)}
    if isinstance(command, StartTimer):
        return {
            "op": "timer",
            "kind": str(command.kind),
            "step": command.step,
            "attempt": command.attempt,
            "fire_at": command.fire_at,
        }
    if isinstance(command, StartChild):
        return {
            "op": "start_child",
            "child": command.child,
            "workflow": command.workflow,
            "version": command.version,
            "input": command.input,
            "step": command.step,
        }
    if isinstance(command, CancelChild):
        return {
            "op": "cancel_child",
            "child": command.child,
            "terminate": command.terminate,
            "reason": command.reason,
        }
    if isinstance(command, NotifyParent):
        return {
            "op": "notify_parent",
            "parent": command.parent,
            "step": command.step,
            "output": command.output,
            "error": None if command.error is None else command.error.to_data(),
        }
    return {
        "op": "history",
        "seq": command.seq,
        "kind": command.kind,
        "at": command.at,
        "detail": dict(command.detail),
    }


def _command_from(fields: _Fields) -> Command:
    """One outbox command, checked as ``_command_data`` writes it."""
    op = fields.data.get("op")
    if op == "schedule":
        return _schedule_from(fields)
    if op == "timer":
        return StartTimer(
            fields.choice("kind", TimerKind),
            fields.text("step"),
            fields.integer("attempt"),
            fields.number("fire_at"),
        )
    if op == "history":
        return RecordHistory(
            fields.integer("seq"),
            fields.text("kind"),
            fields.number("at"),
            fields.get("detail", _MAP, {}),
        )
    if op == "start_child":
        return StartChild(
            fields.text("child"),
            fields.text("workflow"),
            fields.integer("version"),
            fields.data.get("input"),
            fields.text("step"),
        )
    if op == "cancel_child":
        return CancelChild(
            fields.text("child"),
            fields.require("terminate", _BOOL),
            fields.get("reason", _STR, ""),
        )
    if op == "notify_parent":
        error = fields.maybe_fields("error")
        return NotifyParent(
            fields.text("parent"),
            fields.text("step"),
            fields.data.get("output"),
            None if error is None else _error_from(error),
        )
    raise fields.wrong("op", "an outbox command (schedule, timer, history, start_child, ...)")


def _step_data(step: StepState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": str(step.status),
        "attempt": step.attempt,
        "scheduled_at": step.scheduled_at,
    }
    if step.output is not None:
        data["output"] = step.output
    if step.error is not None:
        data["error"] = step.error.to_data()
    if step.finished_at is not None:
        data["finished_at"] = step.finished_at
    if step.done:
        data["done"] = step.done
    if step.branch >= 0:
        data["branch"] = step.branch
    if step.items is not None:
        data["items"] = list(step.items)
        data["next_item"] = step.next_item
        data["finished_items"] = step.finished_items
    if step.dispatched:
        data["dispatched"] = step.dispatched
    if step.in_flight:
        data["in_flight"] = True
    return data


def state_to_data(state: InstanceState) -> dict[str, Any]:
    """The plain form stored in ``WORKFLOW_STATES`` (also what clients read)."""
    return {
        "id": state.id,
        "type": state.type,
        "version": state.version,
        "status": str(state.status),
        "input": state.input,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "steps": {step_id: _step_data(step) for step_id, step in state.steps.items()},
        "output": state.output,
        "error": None if state.error is None else state.error.to_data(),
        "seq": state.seq,
        "outbox": [_command_data(command) for command in state.outbox],
        "cause": state.cause,
        "signals": {name: list(payloads) for name, payloads in state.signals.items()},
        "seen_signals": list(state.seen_signals),
        "compensations": list(state.compensations),
        "ending": None if state.ending is None else str(state.ending),
        "compensation": state.compensation,
        "parent": state.parent,
        "parent_step": state.parent_step,
        "depth": state.depth,
    }


def encode_state(state: InstanceState) -> bytes:
    return encode(KIND_STATE, state_to_data(state))


def decode_state(data: bytes) -> InstanceState:
    """Rebuild a stored state. Raises :class:`MessageError` if it is damaged.

    Every field is checked as :func:`state_to_data` writes it; those it
    leaves out when they hold their default (and those added since states
    were first stored: ``depth``, ``cause``) may be absent or null.
    """
    body = _body(data, KIND_STATE)
    try:
        return _state_from(_Fields(body))
    except MessageError as exc:
        raise MessageError(f"damaged instance state: {exc}") from None


def _state_from(fields: _Fields) -> InstanceState:
    steps = fields.fields("steps")
    signals = fields.maybe_fields("signals") or _Fields({})
    error = fields.maybe_fields("error")
    ending = fields.data.get("ending")
    return InstanceState(
        id=fields.text("id"),
        type=fields.text("type"),
        version=fields.integer("version"),
        input=fields.data.get("input"),
        status=fields.choice("status", InstanceStatus),
        created_at=fields.number("created_at"),
        updated_at=fields.number("updated_at"),
        steps={key: _step_from(steps.fields(key)) for key in steps.data},
        output=fields.data.get("output"),
        error=None if error is None else _error_from(error),
        seq=fields.integer("seq"),
        outbox=tuple(
            _command_from(fields.element("outbox", index, command))
            for index, command in enumerate(fields.get("outbox", _LIST, []))
        ),
        cause=fields.count("cause", default=0, least=0, wanted="an integer >= 0"),
        signals={name: tuple(signals.require(name, _LIST)) for name in signals.data},
        seen_signals=tuple(_all(fields, "seen_signals", _INT)),
        compensations=tuple(_all(fields, "compensations", _STR)),
        ending=None if ending is None else fields.choice("ending", InstanceStatus),
        compensation=fields.get("compensation", _STR, None),
        parent=fields.get("parent", _STR, None),
        parent_step=fields.get("parent_step", _STR, None),
        depth=fields.count("depth", default=0, least=0, wanted="an integer >= 0"),
    )


def _step_from(fields: _Fields) -> StepState:
    """A step state as ``_step_data`` writes it: fields left out hold their default."""
    error = fields.maybe_fields("error")
    items = fields.get("items", _LIST, None)
    return StepState(
        fields.choice("status", StepStatus),
        fields.integer("attempt"),
        fields.number("scheduled_at"),
        fields.data.get("output"),
        None if error is None else _error_from(error),
        None if fields.data.get("finished_at") is None else fields.number("finished_at"),
        fields.get("done", _INT, 0),
        fields.get("branch", _INT, -1),
        None if items is None else tuple(items),
        fields.get("next_item", _INT, 0),
        fields.get("finished_items", _INT, 0),
        fields.get("dispatched", _INT, 0),
        fields.get("in_flight", _BOOL, False),
    )


def _all(fields: _Fields, name: str, kind: _Type) -> list[Any]:
    """The list in field ``name`` (absent or null: empty), each item of ``kind``."""
    items: list[Any] = fields.get(name, _LIST, [])
    for index, item in enumerate(items):
        if type(item) not in kind.types:
            path = f"{fields.path(name)}[{index}]"
            raise MessageError(f"field {path!r} must be {kind.name}, got {_describe(item)}")
    return items


# -- definitions and dead letters ---------------------------------------------------


def encode_definition(data: Mapping[str, Any]) -> bytes:
    return encode(KIND_DEFINITION, dict(data))


def decode_definition(data: bytes) -> Mapping[str, Any]:
    """A definition's map; its fields are checked by ``parse_definition``, not here."""
    return _body(data, KIND_DEFINITION)


def encode_deadletter(subject: str, reason: str, data: bytes, num_delivered: int) -> bytes:
    return encode(
        KIND_DEADLETTER,
        {"subject": subject, "reason": reason, "data": data, "num_delivered": num_delivered},
    )


def decode_deadletter(data: bytes) -> Mapping[str, Any]:
    """A dead letter: ``subject``, ``reason`` (strings), ``data`` (bytes), ``num_delivered``.

    Raises :class:`MessageError` if one of them is missing or of another type.
    """
    body = _body(data, KIND_DEADLETTER)
    fields = _Fields(body)
    fields.text("subject")
    fields.text("reason")
    fields.require("data", _BYTES)
    fields.integer("num_delivered")
    return body
