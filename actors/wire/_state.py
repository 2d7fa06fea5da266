"""The instance state as ``WORKFLOW_STATES`` stores it, and back.

The state is the orchestrator's: it alone writes it (by compare-and-set) and
reads it. Its form is described in ``docs/wire.md`` ("Instance state") for
operators and tools that look at it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any, Final

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelActivity,
    CancelChild,
    Command,
    ErrorInfo,
    HeldEvent,
    InstanceState,
    InstanceStatus,
    NotifyParent,
    Pause,
    RecordHistory,
    ScheduleActivity,
    SignalReceived,
    SlotGranted,
    StartChild,
    StartTimer,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
    check_name,
    check_step_key,
)
from ._codec import encode
from ._fields import (
    _BOOL,
    _INT,
    _LIST,
    _MAP,
    _STR,
    KIND_STATE,
    MessageError,
    _body,
    _describe,
    _duration,
    _error_from,
    _Fields,
    _names,
    _Type,
)

__all__ = ["decode_state", "encode_state", "state_to_data"]


#: Each outbox command's ``op``, as the stored state names its kind.
_OPS: Final[Mapping[type[Command], str]] = {
    ScheduleActivity: "schedule",
    StartTimer: "timer",
    StartChild: "start_child",
    CancelActivity: "cancel_activity",
    CancelChild: "cancel_child",
    NotifyParent: "notify_parent",
    RecordHistory: "history",
}


def _command_fields(command: Command) -> dict[str, Any]:
    """Every field of ``command`` under its own name, in plain form.

    An enum (a timer's kind) by its value, an error as its data, a mapping
    (a history record's detail) as a dict; payloads as they are.
    """
    return {
        field.name: _plain(getattr(command, field.name))
        for field in dataclasses.fields(command)
        # A task's rate is written only when it has one (tasks before it had none).
        if not (field.name == "rate" and getattr(command, "rate", None) is None)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, ErrorInfo):
        return value.to_data()
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _schedule_from(fields: _Fields) -> ScheduleActivity:
    """A task's work as ``_command_fields`` writes it, checked. Raises :class:`MessageError`.

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
        rate=_rate_from(fields),
    )


def _rate_from(fields: _Fields) -> dict[str, Any] | None:
    """A task's ``rate`` (see ``RateLimit.pace``), checked; ``None`` if absent."""
    rate = fields.maybe_fields("rate")
    if rate is None:
        return None
    value = rate.data.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise rate.wrong("value", "a string or a number")
    with _names():
        activity = check_name("activity", rate.text("activity"))
    period = rate.number("period")
    if not 0 < period < math.inf:
        raise rate.wrong("period", "a positive number of seconds")
    return {
        "activity": activity,
        "key": rate.text("key"),
        "value": value,
        "limit": rate.count("limit", default=0, least=1, wanted="an integer >= 1"),
        "period": period,
        "burst": rate.count("burst", default=1, least=1, wanted="an integer >= 1"),
    }


def _command_data(command: Command) -> dict[str, Any]:
    return {"op": _OPS[type(command)], **_command_fields(command)}


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
            fields.count("attempt", default=1, least=1, wanted="an integer >= 1"),
        )
    if op == "cancel_activity":
        return CancelActivity(
            fields.text("step"),
            fields.integer("attempt"),
            fields.get("reason", _STR, ""),
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
            fields.count("attempt", default=1, least=1, wanted="an integer >= 1"),
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
    data = {
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
        **_operations_data(state),
    }
    if state.trace is not None:
        data["trace"] = state.trace
    if state.queued is not None:
        data["queued"] = state.queued
    return data


def _operations_data(state: InstanceState) -> dict[str, Any]:
    """The fields of the instance operations, each only when it is set."""
    data: dict[str, Any] = {}
    if state.parent_attempt != 1:
        data["parent_attempt"] = state.parent_attempt
    if state.paused is not None:
        paused = state.paused
        data["paused"] = {
            "by": paused.by,
            "reason": paused.reason,
            "at": paused.at,
            "by_type": paused.by_type,
        }
    if state.held:
        data["held"] = [_held_data(event) for event in state.held]
    if state.run != 1:
        data["run"] = state.run
    return data


def _held_data(event: HeldEvent) -> dict[str, Any]:
    match event:
        case ActivityCompleted():
            return {"event": "completed", "step": event.step, "attempt": event.attempt,
                    "output": event.output}  # fmt: skip
        case ActivityFailed():
            return {"event": "failed", "step": event.step, "attempt": event.attempt,
                    "error": event.error.to_data()}  # fmt: skip
        case TimerFired():
            return {"event": "timer", "step": event.step, "attempt": event.attempt,
                    "kind": str(event.kind)}  # fmt: skip
        case SignalReceived():
            return {"event": "signal", "name": event.name, "payload": event.payload,
                    "seq": event.seq}  # fmt: skip
        case SlotGranted():
            return {"event": "admitted", "slot": event.slot}


def _held_from(fields: _Fields) -> HeldEvent:
    """One held event, checked as ``_held_data`` writes it."""
    kind = fields.data.get("event")
    if kind == "completed":
        return ActivityCompleted(
            fields.text("step"), fields.integer("attempt"), fields.data.get("output")
        )
    if kind == "failed":
        return ActivityFailed(
            fields.text("step"), fields.integer("attempt"), _error_from(fields.fields("error"))
        )
    if kind == "timer":
        return TimerFired(
            fields.choice("kind", TimerKind), fields.text("step"), fields.integer("attempt")
        )
    if kind == "signal":
        return SignalReceived(
            fields.text("name"), fields.data.get("payload"), fields.integer("seq")
        )
    if kind == "admitted":
        return SlotGranted(fields.text("slot"))
    raise fields.wrong("event", "a held event (completed, failed, timer, signal or admitted)")


def _paused_from(fields: _Fields) -> Pause | None:
    paused = fields.maybe_fields("paused")
    if paused is None:
        return None
    return Pause(
        paused.get("by", _STR, ""),
        paused.get("reason", _STR, ""),
        paused.number("at"),
        paused.get("by_type", _BOOL, False),
    )


def encode_state(state: InstanceState) -> bytes:
    return encode(KIND_STATE, state_to_data(state))


def decode_status(data: bytes) -> InstanceStatus:
    """Only the status of a stored state, without rebuilding the rest.

    For a reader that wants whole states only once they are terminal (a
    client waiting for results sees every state of the instances it waits
    for). Raises :class:`MessageError` if the envelope or its status is damaged.
    """
    try:
        return _Fields(_body(data, KIND_STATE)).choice("status", InstanceStatus)
    except MessageError as exc:
        raise MessageError(f"damaged instance state: {exc}") from None


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
        queued=fields.get("queued", _STR, None),
        parent_attempt=fields.count("parent_attempt", default=1, least=1, wanted="an integer >= 1"),
        paused=_paused_from(fields),
        held=tuple(
            _held_from(fields.element("held", index, event))
            for index, event in enumerate(fields.get("held", _LIST, []))
        ),
        run=fields.count("run", default=1, least=1, wanted="an integer >= 1"),
        trace=fields.get("trace", _STR, None),
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
