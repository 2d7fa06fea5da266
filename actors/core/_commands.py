"""Commands: what a decision asks the runtime to do, as data.

Publish a task (or withdraw one), start a timer, record history, start or cancel a child,
report to a parent. The instance's state keeps the latest decision's
commands (its outbox) until they are published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._error_info import ErrorInfo
from ._events import TimerKind

__all__ = [
    "CancelActivity",
    "CancelChild",
    "Command",
    "NotifyParent",
    "RecordHistory",
    "ScheduleActivity",
    "StartChild",
    "StartTimer",
]


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    """Publish a task for ``attempt`` of ``step`` to the activity's queue."""

    step: str
    attempt: int
    activity: str
    input: Any
    scheduled_at: float
    schedule_to_start: float | None
    start_to_close: float
    heartbeat: float | None
    #: The step's rate limit, for the worker that paces the attempt (see
    #: ``_flow.RateLimit.pace``): ``activity``, ``key``, ``value``, ``limit``,
    #: ``period``, ``burst``. ``None``: no rate limit.
    rate: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CancelActivity:
    """Tell the workers that attempt ``attempt`` of ``step``'s task is no longer wanted.

    The task may be running, queued or lost: a worker running it cancels it
    (its result, if any, is ignored), and a worker that takes it later
    refuses it.
    """

    step: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Deliver ``TimerFired(kind, step, attempt)`` to the instance at ``fire_at``."""

    kind: TimerKind
    step: str
    attempt: int
    fire_at: float


@dataclass(frozen=True, slots=True)
class RecordHistory:
    """Append record number ``seq`` to the instance's history."""

    seq: int
    kind: str
    at: float
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start instance ``child`` of ``workflow`` (``version`` 0: the newest) for step ``step``."""

    child: str
    workflow: str
    version: int
    input: Any
    step: str
    #: The attempt the child's result must carry (that of the parent's run).
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class CancelChild:
    """Cancel (or, with ``terminate``, terminate) child instance ``child``."""

    child: str
    terminate: bool
    reason: str


@dataclass(frozen=True, slots=True)
class NotifyParent:
    """Report this child's end to step ``step`` of instance ``parent`` as its result."""

    parent: str
    step: str
    output: Any
    error: ErrorInfo | None
    #: The attempt of the parent's step it reports (see ``StartChild.attempt``).
    attempt: int = 1


Command: TypeAlias = (
    ScheduleActivity
    | CancelActivity
    | StartTimer
    | RecordHistory
    | StartChild
    | CancelChild
    | NotifyParent
)
