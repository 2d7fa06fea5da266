"""The state of an instance and of each running copy of its steps.

States are frozen and never changed in place: a decision builds new ones
(see ``_decision.py``), so the state a caller passed in stays as it was.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ._commands import Command
from ._error_info import ErrorInfo
from ._events import HeldEvent, Pause

__all__ = ["RUN_ATTEMPTS", "InstanceState", "InstanceStatus", "StepState", "StepStatus"]

#: The attempt numbers of one run: on the wire, attempt ``a`` of run ``r`` is
#: ``(r - 1) * RUN_ATTEMPTS + a`` (no step has more than 10,000 attempts),
#: so that a task, result, timer or withdrawal of one run is never taken
#: for another's, and their message ids never meet.
RUN_ATTEMPTS: Final = 10_000


class InstanceStatus(enum.StrEnum):
    #: Started, and waiting for a slot of a workflow-level concurrency limit.
    QUEUED = "queued"
    RUNNING = "running"
    #: Failed or cancelled; the compensations of completed steps are running.
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped at once on request, without compensation.
    TERMINATED = "terminated"

    @property
    def terminal(self) -> bool:
        return self not in (
            InstanceStatus.QUEUED,
            InstanceStatus.RUNNING,
            InstanceStatus.COMPENSATING,
        )


class StepStatus(enum.StrEnum):
    #: A task for the current attempt is published; waiting for its result.
    SCHEDULED = "scheduled"
    #: The current attempt failed; a timer will schedule the next one.
    RETRY_WAIT = "retry_wait"
    #: Sleeping, or waiting for a signal.
    WAITING = "waiting"
    #: A parallel, map or choice step whose inner steps are under way.
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    #: Abandoned unfinished because the instance ended (a sibling failed,
    #: or a cancel); a late result for it is ignored.
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in _ACTIVE


_ACTIVE: Final = frozenset(
    {StepStatus.SCHEDULED, StepStatus.RETRY_WAIT, StepStatus.WAITING, StepStatus.RUNNING}
)


@dataclass(frozen=True, slots=True)
class StepState:
    """One running copy of a step.

    ``done`` orders the ends of steps (the instance's ``seq`` when it
    completed, failed or was abandoned), the reverse of the order
    compensations run in; ``dispatched`` is the ``seq`` at which its first
    task went out (0: none did, so there is nothing to undo); ``in_flight``
    marks an abandoned step whose task may still be running, whose
    compensation waits until it reports or its time is up. A choice keeps
    the ``branch`` it took; a map keeps its ``items``, how many it has
    started (``next_item``) and finished, and collects the items' outputs
    in ``output`` while it runs.
    """

    status: StepStatus
    attempt: int
    scheduled_at: float
    output: Any = None
    error: ErrorInfo | None = None
    finished_at: float | None = None
    done: int = 0
    branch: int = -1
    items: tuple[Any, ...] | None = None
    next_item: int = 0
    finished_items: int = 0
    dispatched: int = 0
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One instance: what it runs, where it is, and what it last decided.

    ``steps`` maps each step that has started to its state and is never
    mutated in place: a decision builds a new mapping.
    """

    id: str
    type: str
    version: int
    input: Any
    status: InstanceStatus
    created_at: float
    updated_at: float
    steps: Mapping[str, StepState] = field(default_factory=dict)
    output: Any = None
    error: ErrorInfo | None = None
    #: Number of history records written so far.
    seq: int = 0
    #: The commands of the latest decision (published, or to be re-published).
    outbox: tuple[Command, ...] = ()
    #: Signals received and not yet taken by a ``wait_signal`` step, by name.
    signals: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: Sequence numbers of the latest signals applied (a bounded memory).
    seen_signals: tuple[int, ...] = ()
    #: While compensating: the steps still to undo, next first; and the
    #: status the instance ends in (failed or cancelled).
    compensations: tuple[str, ...] = ()
    ending: InstanceStatus | None = None
    #: ``"completed"`` or ``"failed"`` once compensation has run.
    compensation: str | None = None
    #: Which event made that decision (the transport's sequence number of the
    #: delivery; 0 if unknown). Set by the orchestrator, not by ``decide``:
    #: if that same event comes back, its ack may have been lost with the
    #: outbox unpublished, so the outbox is published again.
    cause: int = 0
    #: For a child workflow: the parent instance and the key of its step.
    parent: str | None = None
    parent_step: str | None = None
    #: How deep the instance nests (0 at the top; see ``MAX_CHILD_DEPTH``).
    depth: int = 0
    #: While queued: the limit it waits behind (``concurrency[0]: input.customer
    #: = "c-1" (limit 1)``).
    queued: str | None = None
    #: For a child: the attempt its result carries to the parent's step.
    parent_attempt: int = 1
    #: Who paused it, when and why; ``None`` while it is not paused.
    paused: Pause | None = None
    #: What came while it was paused (results, timers, signals), in order:
    #: decided when it is resumed.
    held: tuple[HeldEvent, ...] = ()
    #: Its run: 1, then one more each time it is retried (see ``RUN_ATTEMPTS``).
    run: int = 1
    #: The W3C ``traceparent`` of the instance's workflow span, when it is
    #: traced. Set by the orchestrator, not by ``decide``, which keeps it.
    trace: str | None = None
