"""Engine messages and stored records <-> CBOR envelopes.

Every body is validated on the way in, field by field, by the readers of
``_fields.py`` (see its docstring: exact types, a :class:`MessageError`
naming the field at fault, optional fields absent or null). Which fields are
optional is listed in ``docs/wire.md``.

Starts and signals may also arrive as JSON, so that any NATS client can send
them without a CBOR library: a body whose first byte is ASCII is JSON, any
other is a CBOR envelope (see :func:`is_json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    ErrorInfo,
    RecordHistory,
    ScheduleActivity,
    ScheduleRef,
    StartTimer,
    TimerFired,
    TimerKind,
    check_instance_id,
    check_name,
    check_step_key,
)
from ._codec import DEFAULT_LIMITS, encode
from ._fields import (
    _BYTES,
    _LIST,
    _MAP,
    _PAYLOAD_LIMITS,
    _STR,
    KIND_ACTIVITY_CANCEL,
    KIND_CANCEL,
    KIND_DEADLETTER,
    KIND_DEFINITION,
    KIND_HISTORY,
    KIND_HISTORY_RECORDS,
    KIND_RESULT,
    KIND_SIGNAL,
    KIND_START,
    KIND_TASK,
    KIND_TERMINATE,
    KIND_TIMER,
    MessageError,
    _body,
    _describe,
    _envelope,
    _error_from,
    _Fields,
    _json,
    _names,
    is_json,
)
from ._state import _command_fields, _schedule_from

__all__ = [
    "MessageError",
    "ActivityCancel",
    "StartMessage",
    "Task",
]

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
    #: Signal-with-start: the signal's name and payload, delivered with the
    #: start (or alone, if the instance exists). Needs an ``instance_id``.
    signal: tuple[str, Any] | None = None
    #: A child's: the attempt its result is to carry (1 but in a retried parent's later runs).
    parent_attempt: int = 1
    #: A rerun's: the instance whose type, version and input it repeats.
    rerun_of: str | None = None
    #: The schedule that sends the start, if one does.
    schedule: ScheduleRef | None = None


def encode_start(message: StartMessage) -> bytes:
    body: dict[str, Any] = {"input": message.input}
    if message.signal is not None:
        body["signal"] = {"name": message.signal[0], "payload": message.signal[1]}
    if message.rerun_of is not None:
        body["rerun_of"] = message.rerun_of
    if message.instance_id is not None:
        body["id"] = message.instance_id
    if message.version:
        body["version"] = message.version
    if message.parent is not None:
        body["parent"] = {"id": message.parent, "step": message.parent_step}
        if message.parent_attempt != 1:
            body["parent"]["attempt"] = message.parent_attempt
        body["depth"] = message.depth
    if message.schedule is not None:
        body["schedule"] = message.schedule.to_data()
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
    signal = _start_signal(fields, instance_id)
    rerun_of = fields.get("rerun_of", _STR, None)
    if rerun_of is not None:
        with _names("rerun_of: "):
            check_instance_id(rerun_of)
    scheduled = fields.maybe_fields("schedule")
    schedule = None
    if scheduled is not None:
        with _names("schedule: "):
            schedule = ScheduleRef(
                check_name("schedule id", scheduled.data.get("id")),
                scheduled.number("fire"),
                scheduled.text("kind"),
            )
    if parent is None:
        return StartMessage(
            instance_id,
            body.get("input"),
            version,
            signal=signal,
            rerun_of=rerun_of,
            schedule=schedule,
        )
    if signal is not None:
        raise MessageError("field 'signal' is set in a child's start")
    if instance_id is None:
        raise MessageError("field 'parent' is set, and a child's start needs an id")
    with _names("parent: "):
        parent_id = check_instance_id(parent.data.get("id"))
        parent_step = check_step_key(parent.data.get("step"))
    # A child's start from an engine that did not send depths is one level down.
    depth = fields.count("depth", default=1, least=1, wanted="an integer >= 1 (a child's depth)")
    attempt = parent.count("attempt", default=1, least=1, wanted="an integer >= 1")
    return StartMessage(
        instance_id,
        body.get("input"),
        version,
        parent_id,
        parent_step,
        depth,
        parent_attempt=attempt,
        rerun_of=rerun_of,
    )


def _start_signal(fields: _Fields, instance_id: str | None) -> tuple[str, Any] | None:
    """A signal-with-start's ``signal`` (``{"name", "payload"?}``), or ``None`` if absent."""
    signal = fields.maybe_fields("signal")
    if signal is None:
        return None
    if instance_id is None:
        raise MessageError("field 'signal' is set, and a signal-with-start needs an id")
    with _names("signal: "):
        name = check_name("signal name", signal.data.get("name"))
    return name, signal.data.get("payload")


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


def encode_task(instance_id: str, workflow_type: str, command: ScheduleActivity) -> bytes:
    return encode(
        KIND_TASK, {"instance": instance_id, "type": workflow_type, **_command_fields(command)}
    )


def decode_task(data: bytes) -> Task:
    """A task; its workflow ``type`` is optional (``""``). Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_TASK))
    with _names():
        instance_id = check_instance_id(fields.text("instance"))
    workflow_type: str = fields.get("type", _STR, "")
    return Task(instance_id, workflow_type, _schedule_from(fields))


@dataclass(frozen=True, slots=True)
class ActivityCancel:
    """A withdrawn task, as workers read it from ``ACTIVITY_CANCELS``."""

    instance_id: str
    step: str
    attempt: int
    reason: str


def encode_activity_cancel(instance_id: str, step: str, attempt: int, reason: str) -> bytes:
    return encode(
        KIND_ACTIVITY_CANCEL,
        {"instance": instance_id, "step": step, "attempt": attempt, "reason": reason},
    )


def decode_activity_cancel(data: bytes) -> ActivityCancel:
    """A withdrawal; its ``reason`` is optional. Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_ACTIVITY_CANCEL))
    return ActivityCancel(
        fields.text("instance"),
        fields.text("step"),
        fields.integer("attempt"),
        fields.get("reason", _STR, ""),
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
