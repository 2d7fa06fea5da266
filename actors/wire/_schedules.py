"""Schedules as stored in ``WORKFLOW_SCHEDULES``: a ``workflow.schedule`` envelope per key.

The body holds the schedule as its owner defined it (``schedule``, in the
plain form of ``actors.core.schedule_to_data``) and where its firing stands
(cursor, requests, buffered fires, recent runs, outbox, counts).
``docs/wire.md`` lists the fields.
"""

from __future__ import annotations

from typing import Any, Final

from ..core import (
    Backfill,
    CancelRun,
    Fire,
    FireKind,
    InvalidScheduleError,
    Run,
    ScheduleEffect,
    ScheduleState,
    StartRun,
    TerminateRun,
    check_instance_id,
    schedule_from_data,
    schedule_to_data,
)
from ._codec import encode
from ._fields import _BOOL, _LIST, _MAP, _NUMBER, _STR, MessageError, _body, _Fields, _names

__all__ = ["KIND_SCHEDULE", "decode_schedule", "encode_schedule"]

KIND_SCHEDULE: Final = "workflow.schedule"


def _fire(fire: Fire) -> dict[str, Any]:
    return {"at": fire.at, "kind": fire.kind.value}


def _effect(effect: ScheduleEffect) -> dict[str, Any]:
    match effect:
        case StartRun():
            return {"op": "start", "instance": effect.instance_id, **_fire(effect.fire)}
        case CancelRun():
            return {"op": "cancel", "instance": effect.instance_id, "reason": effect.reason}
        case TerminateRun():
            return {"op": "terminate", "instance": effect.instance_id, "reason": effect.reason}


def encode_schedule(state: ScheduleState) -> bytes:
    body: dict[str, Any] = {
        "schedule": schedule_to_data(state.schedule),
        "cursor": state.cursor,
        "created_at": state.created_at,
        "paused": state.paused,
        "note": state.note,
        "buffered": [_fire(fire) for fire in state.buffered],
        "triggers": list(state.triggers),
        "backfills": [
            {"start": b.start, "end": b.end, "cursor": b.cursor} for b in state.backfills
        ],
        "runs": [
            {"instance": run.instance_id, "started_at": run.started_at, **_fire(run.fire)}
            for run in state.runs
        ],
        "outbox": [_effect(effect) for effect in state.outbox],
        "started": state.started,
        "skipped": state.skipped,
        "missed": state.missed,
    }
    return encode(KIND_SCHEDULE, body)


def _read_fire(fields: _Fields) -> Fire:
    return Fire(fields.number("at"), fields.choice("kind", FireKind))


def _items(fields: _Fields, name: str) -> list[_Fields]:
    return [fields.element(name, i, item) for i, item in enumerate(fields.get(name, _LIST, []))]


def _read_effect(fields: _Fields) -> ScheduleEffect:
    op = fields.text("op")
    with _names(f"{fields.path('instance')}: "):
        instance_id = check_instance_id(fields.data.get("instance"))
    if op == "start":
        return StartRun(instance_id, _read_fire(fields))
    reason: str = fields.get("reason", _STR, "")
    if op == "cancel":
        return CancelRun(instance_id, reason)
    if op == "terminate":
        return TerminateRun(instance_id, reason)
    raise fields.wrong("op", "one of start, cancel, terminate")


def decode_schedule(data: bytes) -> ScheduleState:
    """A stored schedule. Raises :class:`MessageError` naming the field at fault."""
    fields = _Fields(_body(data, KIND_SCHEDULE))
    try:
        schedule = schedule_from_data(fields.require("schedule", _MAP))
    except InvalidScheduleError as exc:
        raise MessageError(f"field 'schedule': {exc}") from None
    triggers = fields.get("triggers", _LIST, [])
    for i, at in enumerate(triggers):
        if type(at) not in _NUMBER.types:
            raise MessageError(f"field 'triggers[{i}]' must be a number")
    return ScheduleState(
        schedule=schedule,
        cursor=fields.number("cursor"),
        created_at=fields.number("created_at"),
        paused=fields.get("paused", _BOOL, False),
        note=fields.get("note", _STR, ""),
        buffered=tuple(_read_fire(item) for item in _items(fields, "buffered")),
        triggers=tuple(float(at) for at in triggers),
        backfills=tuple(
            Backfill(item.number("start"), item.number("end"), item.number("cursor"))
            for item in _items(fields, "backfills")
        ),
        runs=tuple(
            Run(item.text("instance"), _read_fire(item), item.number("started_at"))
            for item in _items(fields, "runs")
        ),
        outbox=tuple(_read_effect(item) for item in _items(fields, "outbox")),
        started=fields.count("started", default=0, least=0, wanted="a count"),
        skipped=fields.count("skipped", default=0, least=0, wanted="a count"),
        missed=fields.count("missed", default=0, least=0, wanted="a count"),
    )
