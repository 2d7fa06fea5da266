"""Operations on an instance's run: pause and resume, retry as a new run.

**Pause.** A paused instance dispatches nothing new: every result, timer and
signal that comes for it is *held* (kept in order in its state, with a
``instance.event_held`` record) and decided only when it is resumed, as if
it had come then. Tasks already out run to their end; their results are
held like the rest. A cancel resumes it first (its compensations need
tasks); a terminate ends it at once, dropping what was held.

**Retry.** A failed, cancelled or terminated instance runs again, as run
``run + 1`` of the same instance (same id, same history, numbered on), from
a top-level step: the one named, or the first that did not complete. The
steps before it are kept with their outputs; it and those after it start
afresh (a composite step whole). A kept step whose compensation completed
in an earlier run is not compensated again.

**Runs on the wire.** Attempt numbers restart at 1 in every run inside the
core; on the wire, attempt ``a`` of run ``r`` is ``(r - 1) * RUN_ATTEMPTS +
a`` (:func:`to_local`, :func:`to_wire`), so that a late result, timer or
withdrawal of an earlier run is told apart (and ignored), and no message
id of one run meets another's within the broker's duplicate window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._commands import CancelActivity, Command, ScheduleActivity, StartChild, StartTimer
from ._decision import Decision
from ._events import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    Event,
    HeldEvent,
    Pause,
    PauseRequested,
    ResumeRequested,
    RetryRequested,
    SignalReceived,
    SlotGranted,
    StartRequested,
    TimerFired,
)
from ._refs import UNDO, Ref, resolve
from ._state import RUN_ATTEMPTS, InstanceState, InstanceStatus, StepStatus

if TYPE_CHECKING:
    from ._definition import Definition

__all__ = [
    "RETRYABLE",
    "Decider",
    "held_start",
    "hold",
    "pause",
    "restart_step",
    "resume",
    "retry",
    "to_local",
    "to_wire",
]

#: ``decide`` without the translation of attempts: ``_decide.py``'s inner one.
Decider = Callable[
    ["Definition | None", InstanceState, Event, float], tuple[InstanceState, list[Command]]
]
#: The statuses an instance can be retried from.
RETRYABLE = frozenset({InstanceStatus.FAILED, InstanceStatus.CANCELLED, InstanceStatus.TERMINATED})


# -- runs on the wire ----------------------------------------------------------------------


def to_local(state: InstanceState, event: Event) -> Event | None:
    """``event`` with the attempt numbered within the instance's run; ``None`` if of another."""
    if state.run == 1 or not isinstance(event, ActivityCompleted | ActivityFailed | TimerFired):
        return event
    attempt = event.attempt - (state.run - 1) * RUN_ATTEMPTS
    if not 1 <= attempt <= RUN_ATTEMPTS:
        return None  # a straggler of an earlier run
    return replace(event, attempt=attempt)


def to_wire(state: InstanceState, commands: list[Command]) -> tuple[InstanceState, list[Command]]:
    """The decision's commands with their attempts as the wire numbers them (and its outbox)."""
    base = (state.run - 1) * RUN_ATTEMPTS
    if not base or not commands:
        return state, commands
    wired: list[Command] = []
    for command in commands:
        if isinstance(command, ScheduleActivity | CancelActivity | StartTimer):
            command = replace(command, attempt=base + command.attempt)
        elif isinstance(command, StartChild):
            command = replace(command, attempt=base + 1)
        wired.append(command)
    return replace(state, outbox=tuple(wired)), wired


# -- pause and resume ----------------------------------------------------------------------


def pause(
    state: InstanceState, event: PauseRequested, now: float
) -> tuple[InstanceState, list[Command]]:
    """Pause a running (or compensating) instance; already paused, nothing changes."""
    if state.paused is not None:
        return state, []
    build = Decision(state, now)
    build.state = replace(state, paused=Pause(event.by, event.reason, now, event.by_type))
    build.history("instance.paused", by=event.by, reason=event.reason, by_type=event.by_type)
    return build.finish()


def held_start(
    build: Decision, event: StartRequested, paused: Pause
) -> tuple[InstanceState, list[Command]]:
    """A start of a paused type: the instance is stored paused, its first step not begun."""
    build.state = replace(build.state, paused=paused)
    build.history("instance.paused", by=paused.by, reason=paused.reason, by_type=paused.by_type)
    if event.signal is not None:
        build.state = replace(build.state, held=(event.signal,))
        build.history("instance.event_held", **_described(event.signal))
    return build.finish()


def hold(state: InstanceState, event: HeldEvent, now: float) -> tuple[InstanceState, list[Command]]:
    """Keep ``event`` for when the paused instance is resumed (once, however often it comes)."""
    if event in state.held or (
        isinstance(event, SignalReceived) and event.seq in state.seen_signals
    ):
        return state, []
    build = Decision(state, now)
    build.state = replace(state, held=(*state.held, event))
    build.history("instance.event_held", **_described(event))
    return build.finish()


def _described(event: HeldEvent) -> dict[str, Any]:
    match event:
        case ActivityCompleted():
            return {"event": "completed", "step": event.step, "attempt": event.attempt}
        case ActivityFailed():
            return {"event": "failed", "step": event.step, "attempt": event.attempt}
        case TimerFired():
            return {"event": "timer", "step": event.step, "timer": str(event.kind)}
        case SignalReceived():
            return {"event": "signal", "signal": event.name}
        case SlotGranted():
            return {"event": "admitted", "slot": event.slot}


def resume(
    definition: Definition | None,
    state: InstanceState,
    event: ResumeRequested,
    now: float,
    decide: Decider,
    first: CancelRequested | None = None,
) -> tuple[InstanceState, list[Command]]:
    """Resume a paused instance: begin its first step if its start was held, then
    decide what was held, in the order it came.

    ``by_type`` resumes only an instance paused with its type. Not paused,
    nothing changes. With ``first`` (a cancel that came while paused), that
    cancel is decided before what was held: it takes effect at once, no
    step begins after it, and a held result of a task that was out only
    settles that task for its compensation.
    """
    paused = state.paused
    if paused is None or (event.by_type and not paused.by_type):
        return state, []
    build = Decision(state, now)
    build.state = replace(state, paused=None, held=())
    build.history("instance.resumed", by=event.by, reason=event.reason)
    runnable = definition is not None and (definition.type, definition.version) == (
        state.type,
        state.version,
    )
    if (
        definition is not None
        and runnable
        and not state.steps
        and first is None
        and state.status is not InstanceStatus.QUEUED  # it begins once admitted
    ):
        # Started while its type was paused: it begins now.
        build.begin(definition, Ref(definition.places[definition.steps[0].id], ()))
    new, commands = build.finish()
    for event_now in (first, *state.held):
        if event_now is None:
            continue
        after, more = decide(definition, new, event_now, now)
        if after is not new:
            new, commands = after, commands + more
    # A task whose result is held has reported: it is not withdrawn (an
    # event decided before its result may have given it up).
    reported = {
        (held.step, held.attempt)
        for held in state.held
        if isinstance(held, ActivityCompleted | ActivityFailed)
    }
    commands = [
        command
        for command in commands
        if not (isinstance(command, CancelActivity) and (command.step, command.attempt) in reported)
    ]
    return replace(new, outbox=tuple(commands)), commands


# -- retry ---------------------------------------------------------------------------------


def restart_step(definition: Definition, state: InstanceState) -> str:
    """The top-level step a retry starts from by default: the first that did not complete."""
    for step in definition.steps:
        current = state.steps.get(step.id)
        if current is None or current.status is not StepStatus.COMPLETED:
            return step.id
    return definition.steps[-1].id


def _top_index(definition: Definition, key: str) -> int | None:
    """The position of the top-level step that holds step ``key`` (``None``: unknown key)."""
    ref = resolve(definition, key[: -len(UNDO)] if key.endswith(UNDO) else key)
    if ref is None:
        return None
    place = ref.place
    while place.owner is not None:
        place = definition.places[place.owner]
    return place.index


def retry(
    definition: Definition | None, state: InstanceState, event: RetryRequested, now: float
) -> tuple[InstanceState, list[Command]]:
    """Run a failed, cancelled or terminated instance again, as its next run.

    Nothing changes for an instance in another status, without its
    definition, or for a ``step`` that is not a top-level step of it.
    """
    if state.status not in RETRYABLE or definition is None:
        return state, []
    if (definition.type, definition.version) != (state.type, state.version):
        return state, []
    step_id = event.step or restart_step(definition, state)
    place = definition.places.get(step_id)
    if place is None or place.owner is not None:
        return state, []
    keep = {}
    for key, current in state.steps.items():
        index = _top_index(definition, key)
        if index is None or index >= place.index:
            continue
        if key.endswith(UNDO) and current.status is not StepStatus.COMPLETED:
            continue  # not undone after all: undone again if need be
        keep[key] = current
    build = Decision(state, now)
    build.state = replace(
        state,
        status=InstanceStatus.RUNNING,
        steps=keep,
        output=None,
        error=None,
        compensations=(),
        ending=None,
        compensation=None,
        paused=None,
        held=(),
        run=state.run + 1,
    )
    build.history(
        "instance.retried",
        run=state.run + 1,
        step=step_id,
        previous=str(state.status),
        by=event.by,
        reason=event.reason,
    )
    build.begin(definition, Ref(place, ()))
    return build.finish()
