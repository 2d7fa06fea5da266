"""Engine messages and stored records <-> CBOR envelopes.

Every body is validated on the way in: a message from the network is
untrusted, and a wrong shape raises :class:`MessageError` (which names the
field) instead of surfacing later as an ``AttributeError`` deep in an actor.

A start may also arrive as a JSON object (first byte ``{``), so that any NATS
client can start a workflow without a CBOR library; see ``docs/wire.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._codec import DEFAULT_LIMITS, CodecError, decode, encode
from ._core import (
    ActivityCompleted,
    ActivityFailed,
    CancelChild,
    Command,
    ErrorInfo,
    InstanceState,
    InstanceStatus,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
)
from ._wire import InvalidNameError, check_instance_id, check_name, check_step_key

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


class MessageError(ValueError):
    """A message that cannot be understood; the reason names what is wrong."""


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
    if not isinstance(envelope.body, Mapping):
        raise MessageError(f"{envelope.kind} body must be a map")
    return envelope.kind, envelope.body


def _field(body: Mapping[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise MessageError(f"field {name!r} is missing or has the wrong type")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _opt_float(body: Mapping[str, Any], name: str) -> float | None:
    """A duration: ``None``, or a finite number of seconds, not negative.

    NaN would reach Trio as a deadline and crash the worker that took the
    task (Trio refuses NaN deadlines), so it is refused here with the rest.
    """
    value = body.get(name)
    if value is None:
        return None
    seconds = float(_field(body, name, (int, float)))
    if not math.isfinite(seconds) or seconds < 0:
        raise MessageError(f"field {name!r} must be a finite number >= 0, got {seconds!r}")
    return seconds


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
    """Parse a start (CBOR envelope or JSON object). Raises :class:`MessageError`."""
    if data[:1] == b"{":
        if len(data) > DEFAULT_LIMITS.max_bytes:
            raise MessageError(f"start of {len(data)} bytes is over the size limit")
        try:
            body = json.loads(data)
            # Round-trip through the codec so that JSON input meets the same
            # depth and size limits as CBOR input.
            decode(encode(KIND_START, body))
        except (ValueError, RecursionError, CodecError) as exc:
            raise MessageError(f"start is not valid JSON within limits: {exc}") from None
        if not isinstance(body, dict):
            raise MessageError("start body must be a JSON object")
    else:
        body = _body(data, KIND_START)
    instance_id = body.get("id")
    if instance_id is not None:
        try:
            check_instance_id(instance_id)
        except InvalidNameError as exc:
            raise MessageError(str(exc)) from None
    version = body.get("version", 0) or 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise MessageError("field 'version' must be a positive integer")
    parent = body.get("parent")
    if parent is None:
        return StartMessage(instance_id, body.get("input"), version)
    if not isinstance(parent, Mapping) or instance_id is None:
        raise MessageError("field 'parent' must be a map, and a child start needs an id")
    try:
        parent_id = check_instance_id(parent.get("id"))
        parent_step = check_step_key(parent.get("step"))
    except InvalidNameError as exc:
        raise MessageError(f"parent: {exc}") from None
    # A child's start from an engine that did not send depths is one level down.
    depth = body.get("depth", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise MessageError("field 'depth' of a child's start must be an integer >= 1")
    return StartMessage(instance_id, body.get("input"), version, parent_id, parent_step, depth)


def encode_cancel(reason: str, *, terminate: bool = False) -> bytes:
    return encode(KIND_TERMINATE if terminate else KIND_CANCEL, {"reason": reason})


def decode_terminate(data: bytes) -> str:
    body = _body(data, KIND_TERMINATE)
    reason = body.get("reason", "")
    return reason if isinstance(reason, str) else ""


def encode_signal(payload: Any) -> bytes:
    return encode(KIND_SIGNAL, {"payload": payload})


def decode_signal(data: bytes) -> Any:
    """A signal's payload: a ``workflow.signal`` envelope, or any JSON value."""
    if data[:1] in (b"{", b"[", b'"') or data[:1].isdigit() or data in (b"true", b"false", b"null"):
        if len(data) > DEFAULT_LIMITS.max_bytes:
            raise MessageError(f"signal of {len(data)} bytes is over the size limit")
        try:
            payload = json.loads(data)
            decode(encode(KIND_SIGNAL, {"payload": payload}))
        except (ValueError, RecursionError, CodecError) as exc:
            raise MessageError(f"signal is not valid JSON within limits: {exc}") from None
        return payload
    if not data:
        return None
    return _body(data, KIND_SIGNAL).get("payload")


def decode_cancel(data: bytes) -> str:
    body = _body(data, KIND_CANCEL)
    reason = body.get("reason", "")
    return reason if isinstance(reason, str) else ""


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
    """The instance id and the event. Raises :class:`MessageError`."""
    body = _body(data, KIND_RESULT)
    instance_id = _field(body, "instance", str)
    step = _field(body, "step", str)
    attempt = _field(body, "attempt", int)
    if "error" in body:
        error = _field(body, "error", dict)
        return instance_id, ActivityFailed(step, attempt, ErrorInfo.from_data(error))
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
    body = _body(data, KIND_TIMER)
    try:
        kind = TimerKind(_field(body, "kind", str))
    except ValueError:
        raise MessageError(f"unknown timer kind {body.get('kind')!r}") from None
    return _field(body, "instance", str), TimerFired(
        kind, _field(body, "step", str), _field(body, "attempt", int)
    )


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
    body = _body(data, KIND_TASK)
    try:
        instance_id = check_instance_id(_field(body, "instance", str))
    except InvalidNameError as exc:
        raise MessageError(str(exc)) from None
    return Task(instance_id, str(body.get("type", "")), _schedule_from(body))


def _schedule_from(body: Mapping[str, Any]) -> ScheduleActivity:
    """The fields of ``_schedule_data``, checked. Raises :class:`MessageError`."""
    try:
        step = check_step_key(_field(body, "step", str))
        activity = check_name("activity", _field(body, "activity", str))
    except InvalidNameError as exc:
        raise MessageError(str(exc)) from None
    start_to_close = _opt_float(body, "start_to_close")
    return ScheduleActivity(
        step=step,
        attempt=_field(body, "attempt", int),
        activity=activity,
        input=body.get("input"),
        scheduled_at=float(_field(body, "scheduled_at", (int, float))),
        schedule_to_start=_opt_float(body, "schedule_to_start"),
        start_to_close=300.0 if start_to_close is None else start_to_close,
        heartbeat=_opt_float(body, "heartbeat"),
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

    Raises :class:`MessageError` if the message, or any record in it, is malformed.
    """
    kind, body = _envelope(data, KIND_HISTORY, KIND_HISTORY_RECORDS)
    found: list[Any] = [body] if kind == KIND_HISTORY else _field(body, "records", list)
    records: list[dict[str, Any]] = []
    for item in found:
        if not isinstance(item, Mapping):
            raise MessageError("a history record must be a map")
        _field(item, "seq", int)
        _field(item, "kind", str)
        record = dict(item)
        if "instance" in body:
            record.setdefault("instance", body["instance"])
        records.append(record)
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


def _command_from(data: Mapping[str, Any]) -> Command:
    op = data.get("op")
    if op == "schedule":
        return _schedule_from(data)
    if op == "timer":
        return StartTimer(TimerKind(data["kind"]), data["step"], data["attempt"], data["fire_at"])
    if op == "history":
        return RecordHistory(data["seq"], data["kind"], data["at"], data.get("detail") or {})
    if op == "start_child":
        return StartChild(
            data["child"], data["workflow"], data["version"], data.get("input"), data["step"]
        )
    if op == "cancel_child":
        return CancelChild(data["child"], bool(data["terminate"]), str(data.get("reason", "")))
    if op == "notify_parent":
        error = data.get("error")
        return NotifyParent(
            data["parent"],
            data["step"],
            data.get("output"),
            None if error is None else ErrorInfo.from_data(error),
        )
    raise MessageError(f"unknown outbox command {op!r}")


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
    """Rebuild a stored state. Raises :class:`MessageError` if it is damaged."""
    body = _body(data, KIND_STATE)
    try:
        steps = {
            step_id: StepState(
                StepStatus(step["status"]),
                step["attempt"],
                step["scheduled_at"],
                step.get("output"),
                None if step.get("error") is None else ErrorInfo.from_data(step["error"]),
                step.get("finished_at"),
                step.get("done", 0),
                step.get("branch", -1),
                None if step.get("items") is None else tuple(step["items"]),
                step.get("next_item", 0),
                step.get("finished_items", 0),
            )
            for step_id, step in body["steps"].items()
        }
        error = body.get("error")
        return InstanceState(
            id=body["id"],
            type=body["type"],
            version=body["version"],
            input=body.get("input"),
            status=InstanceStatus(body["status"]),
            created_at=body["created_at"],
            updated_at=body["updated_at"],
            steps=steps,
            output=body.get("output"),
            error=None if error is None else ErrorInfo.from_data(error),
            seq=body["seq"],
            outbox=tuple(_command_from(command) for command in body.get("outbox", ())),
            cause=int(body.get("cause", 0)),
            signals={
                name: tuple(payloads) for name, payloads in (body.get("signals") or {}).items()
            },
            seen_signals=tuple(body.get("seen_signals") or ()),
            compensations=tuple(body.get("compensations") or ()),
            ending=None if body.get("ending") is None else InstanceStatus(body["ending"]),
            compensation=body.get("compensation"),
            parent=body.get("parent"),
            parent_step=body.get("parent_step"),
            depth=int(body.get("depth", 0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MessageError(f"damaged instance state: {exc!r}") from None


# -- definitions and dead letters ---------------------------------------------------


def encode_definition(data: Mapping[str, Any]) -> bytes:
    return encode(KIND_DEFINITION, dict(data))


def decode_definition(data: bytes) -> Mapping[str, Any]:
    return _body(data, KIND_DEFINITION)


def encode_deadletter(subject: str, reason: str, data: bytes, num_delivered: int) -> bytes:
    return encode(
        KIND_DEADLETTER,
        {"subject": subject, "reason": reason, "data": data, "num_delivered": num_delivered},
    )


def decode_deadletter(data: bytes) -> Mapping[str, Any]:
    return _body(data, KIND_DEADLETTER)
