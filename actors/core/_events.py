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
    "Pause",
    "PauseRequested",
    "ResumeRequested",
    "RetryRequested",
    "SignalReceived",
    "SlotGranted",
    "ScheduleRef",
    "StartRequested",
    "HeldEvent",
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
class Pause:
    """Who paused an instance, when and why.

    ``by_type``: it was paused with its whole workflow type (and is resumed
    with it), not on its own.
    """

    by: str
    reason: str
    at: float
    by_type: bool = False


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
    """Start an instance; a child names its ``parent`` and the parent's step key.

    With a ``signal`` (signal-with-start), the signal is delivered too: right
    after the start if the instance did not exist, or on its own if it did
    (as the same type).
    """

    instance_id: str
    workflow_type: str
    version: int
    input: Any
    parent: str | None = None
    parent_step: str | None = None
    #: How deep the instance nests: 0 at the top, its parent's depth + 1 for a child.
    depth: int = 0
    signal: SignalReceived | None = None
    #: For a child: the attempt number its result must carry (its parent's run's).
    parent_attempt: int = 1
    #: For a rerun: the instance whose type, version and input it repeats.
    rerun_of: str | None = None
    #: Its workflow type is paused: the instance is stored paused, its first
    #: step not begun. Set by the orchestrator; never on the wire.
    pause: Pause | None = None
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


@dataclass(frozen=True, slots=True)
class SlotGranted:
    """A queued instance was given a slot of ``slot`` (a key of the slots bucket).

    The runtime decides it only once the instance holds a slot of every
    concurrency limit it has; ``decide`` then starts the instance.
    """

    slot: str


@dataclass(frozen=True, slots=True)
class PauseRequested:
    """Pause the instance: nothing new is dispatched until it is resumed.

    ``by_type``: its workflow type was paused (with its running instances).
    """

    by: str = ""
    reason: str = ""
    by_type: bool = False


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """Resume a paused instance; ``by_type`` resumes only one paused with its type."""

    by: str = ""
    reason: str = ""
    by_type: bool = False


@dataclass(frozen=True, slots=True)
class RetryRequested:
    """Run a failed, cancelled or terminated instance again, as a new run.

    From the top-level step ``step`` (``None``: the first one that did not
    complete); the steps before it, and their outputs, are kept.
    """

    step: str | None = None
    by: str = ""
    reason: str = ""


Event: TypeAlias = (
    StartRequested
    | ActivityCompleted
    | ActivityFailed
    | TimerFired
    | CancelRequested
    | TerminateRequested
    | SignalReceived
    | SlotGranted
    | PauseRequested
    | ResumeRequested
    | RetryRequested
)
#: The events a paused instance keeps until it is resumed.
#: A queued instance's admission is among them: a paused instance begins no step.
HeldEvent: TypeAlias = (
    ActivityCompleted | ActivityFailed | TimerFired | SignalReceived | SlotGranted
)
#: The events about one step: its task's result, or one of its timers.
StepEvent: TypeAlias = ActivityCompleted | ActivityFailed | TimerFired
