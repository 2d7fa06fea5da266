"""Events: what ``decide`` is told happened to an instance.

A client's start, signal, cancel or terminate; a worker's result; a timer
that fired. Each is a small frozen dataclass; the wire formats are in
``actors.wire``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._error_info import ErrorInfo

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "CancelRequested",
    "Event",
    "SignalReceived",
    "ScheduleRef",
    "StartRequested",
    "StepEvent",
    "TerminateRequested",
    "TimerFired",
    "TimerKind",
]


class TimerKind(enum.StrEnum):
    #: Start the next attempt of a step after its backoff.
    RETRY = "retry"
    #: The attempt has had all the time its timeouts allow.
    TIMEOUT = "timeout"
    #: A sleep step's time has come.
    SLEEP = "sleep"
    #: A signal step waited as long as it may.
    SIGNAL_TIMEOUT = "signal_timeout"


@dataclass(frozen=True, slots=True)
class ScheduleRef:
    """Which schedule started an instance, for which fire time and why (see ``_schedule.py``)."""

    id: str
    #: The fire time (seconds since the epoch), not when the start was sent.
    fire: float
    #: ``scheduled``, ``trigger`` or ``backfill``.
    kind: str

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "fire": self.fire, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class StartRequested:
    """Start an instance; a child names its ``parent`` and the parent's step key."""

    instance_id: str
    workflow_type: str
    version: int
    input: Any
    parent: str | None = None
    parent_step: str | None = None
    #: How deep the instance nests: 0 at the top, its parent's depth + 1 for a child.
    depth: int = 0
    #: The schedule that started it, if one did.
    schedule: ScheduleRef | None = None


@dataclass(frozen=True, slots=True)
class ActivityCompleted:
    step: str
    attempt: int
    output: Any


@dataclass(frozen=True, slots=True)
class ActivityFailed:
    step: str
    attempt: int
    error: ErrorInfo
    #: The attempt's task was never published (the orchestrator refused it,
    #: over a size limit): it cannot have taken effect. Never on the wire.
    unsent: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Stop the instance; the compensations of its completed steps run first."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class TerminateRequested:
    """Stop the instance at once, without compensation."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """Signal ``name`` with its payload.

    ``seq`` identifies the message (its stream sequence), so that a
    redelivered signal is applied once.
    """

    name: str
    payload: Any
    seq: int


Event: TypeAlias = (
    StartRequested
    | ActivityCompleted
    | ActivityFailed
    | TimerFired
    | CancelRequested
    | TerminateRequested
    | SignalReceived
)
#: The events about one step: its task's result, or one of its timers.
StepEvent: TypeAlias = ActivityCompleted | ActivityFailed | TimerFired
