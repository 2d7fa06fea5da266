"""The sans-io core: ``decide(definition, state, event, now) -> (state, commands)``.

Pure: no I/O, no Trio, no transport, no clock but the ``now`` it is given.
Given the same arguments it returns equal results, which is what lets the
actors be thin and the engine be tested exhaustively.

Contracts the actors rely on:

* ``decide`` never raises for anything a user or the network can cause: a bad
  expression, an unknown step, a duplicate, stale or out-of-order event. Such
  events either become state (a failed step, a failed instance) or are
  ignored, in which case the very same ``state`` object comes back with no
  commands (``new is state`` means "nothing to persist").
* Applying an event twice is a no-op (durability rule 4): each step records
  its attempt and outcome, and only the events that match are applied.
* A terminal instance stays terminal; nothing changes it again.
* The returned state's ``outbox`` holds exactly the commands returned, so a
  crash between persisting and publishing loses nothing (rule 5).
* Every change appends one or more history records, numbered by ``seq``.

This module dispatches on the event; what happens to a step is decided by
its kind (``_steps/``), and how the instance ends in ``_ending.py`` and
``_compensation.py``. Steps are named by key (see ``_refs.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, assert_never

from . import _operations, _steps
from ._commands import Command
from ._compensation import settle
from ._decision import Decision
from ._definition import Definition
from ._ending import abandon, end
from ._error_info import ErrorInfo
from ._events import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    Event,
    PauseRequested,
    ResumeRequested,
    RetryRequested,
    SignalReceived,
    SlotGranted,
    StartRequested,
    StepEvent,
    TerminateRequested,
    TimerFired,
)
from ._refs import Ref, resolve
from ._state import InstanceState, InstanceStatus, StepState, StepStatus
from ._steps import _child, _signal

__all__ = ["admit_instance", "decide", "fail_instance", "queue_instance"]


def decide(
    definition: Definition | None,
    state: InstanceState | None,
    event: Event,
    now: float,
) -> tuple[InstanceState | None, list[Command]]:
    """Apply ``event`` to ``state`` at time ``now``; return the new state and commands.

    ``definition`` is the one the instance runs (for a start: the one it
    asked for), or ``None`` if no such type or version is registered, which
    fails the instance. ``state`` is ``None`` for an instance that does not
    exist yet; only a start creates one. An event that changes nothing
    returns ``state`` itself and no commands.

    Attempts are numbered as the wire numbers them, run by run (see
    ``_operations.py``): an event's are read, and the commands' written, so.
    """
    if state is None:
        if not isinstance(event, StartRequested):
            return None, []
        return _start(definition, event, now)
    local = _operations.to_local(state, event)
    if local is None:
        return state, []
    new, commands = _decide(definition, state, local, now)
    if new is state:
        return state, commands
    return _operations.to_wire(new, commands)


def _decide(
    definition: Definition | None,
    state: InstanceState,
    event: Event,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """``decide`` for an instance that exists, with attempts numbered within its run."""
    if isinstance(event, StartRequested):
        if event.parent is not None:
            build = Decision(state, now)
            return build.finish() if _child.conflict(build, event) else (state, [])
        if event.signal is None or event.workflow_type != state.type:
            return state, []
        # Signal-with-start of an instance that exists (as that type): the signal alone.
        event = event.signal
    if isinstance(event, RetryRequested):
        return _operations.retry(definition, state, event, now)
    if state.status.terminal:
        return state, []
    if isinstance(event, TerminateRequested):
        build = Decision(state, now)
        abandon(build, definition, terminate=True, reason=event.reason)
        build.state = replace(
            build.state,
            status=InstanceStatus.TERMINATED,
            compensations=(),
            paused=None,
            held=(),
        )
        build.history("workflow.terminated", reason=event.reason)
        return build.finish()
    if isinstance(event, PauseRequested):
        return _operations.pause(state, event, now)
    if isinstance(event, ResumeRequested):
        return _operations.resume(definition, state, event, now, _decide)
    if state.paused is not None:
        if not isinstance(event, CancelRequested):
            return _operations.hold(state, event, now)
        # A cancel's compensations need tasks: it resumes the instance, and
        # takes effect before what was held is decided.
        return _operations.resume(
            definition, state, ResumeRequested(reason="cancelled"), now, _decide, first=event
        )
    runnable = definition is not None and (definition.type, definition.version) == (
        state.type,
        state.version,
    )
    if isinstance(event, CancelRequested):
        if state.status is InstanceStatus.COMPENSATING:
            return state, []
        build = Decision(state, now)
        # Without its definition an instance cannot compensate; it still stops.
        end(build, definition if runnable else None, InstanceStatus.CANCELLED, None, event.reason)
        return build.finish()
    if definition is None or not runnable:
        # The definition an instance started with is gone (deleted from the
        # bucket, or unreadable by this engine): it cannot go on.
        error = ErrorInfo(
            "DefinitionMissing",
            f"workflow type {state.type!r} version {state.version} is no longer registered",
            non_retryable=True,
        )
        return fail_instance(state, None, error, now)
    if isinstance(event, SlotGranted):
        return admit_instance(definition, state, now)
    if isinstance(event, SignalReceived):
        build = Decision(state, now)
        return build.finish() if _signal.received(build, definition, event) else (state, [])
    return _step_event(definition, state, event, now)


def _step_event(
    definition: Definition,
    state: InstanceState,
    event: StepEvent,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """A result or a timer for the step ``event.step`` names: its kind decides what it means."""
    ref = resolve(definition, event.step)
    current = state.steps.get(event.step)
    if ref is None or current is None:
        return state, []
    build = Decision(state, now)
    if current.in_flight and not ref.undo:
        applied = settle(build, definition, ref, current, event)
    # While compensating, only the compensations still count.
    elif (state.status is InstanceStatus.COMPENSATING) != ref.undo:
        applied = False
    else:
        applied = _for_live_attempt(build, definition, ref, current, event)
    return build.finish() if applied else (state, [])


def _for_live_attempt(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: StepEvent,
) -> bool:
    """Hand ``event`` to the step's kind if it is about the step's live attempt."""
    match event:
        case ActivityCompleted():
            # A late success of an earlier attempt still counts: the work is done.
            if current.status not in (StepStatus.SCHEDULED, StepStatus.RETRY_WAIT):
                return False
            if not 1 <= event.attempt <= current.attempt:
                return False
            return _steps.result(build, definition, ref, current, event)
        case ActivityFailed():
            if current.status is not StepStatus.SCHEDULED or event.attempt != current.attempt:
                return False
            return _steps.result(build, definition, ref, current, event)
        case TimerFired():
            if event.attempt != current.attempt:
                return False
            return _steps.timer(build, definition, ref, current, event)
        case _:
            assert_never(event)


def fail_instance(
    state: InstanceState | None,
    start: StartRequested | None,
    error: ErrorInfo,
    now: float,
    definition: Definition | None = None,
) -> tuple[InstanceState, list[Command]]:
    """Fail an instance outright (a bug, an oversized state, an unknown type).

    No compensation runs: the engine, not the workflow, is at fault.
    ``state`` is the instance as last persisted, or ``None`` with the
    ``start`` that would have created it. A terminal instance is returned as
    is. With its ``definition``, the instance's running children are
    cancelled too.
    """
    if state is None:
        if start is None:
            raise ValueError("fail_instance needs a state or a start")
        state = _new_state(start, start.workflow_type, start.version, None, now)
    if state.status.terminal:
        return state, []
    build = Decision(state, now)
    abandon(build, definition, terminate=False, reason=error.message)
    build.state = replace(
        build.state,
        status=InstanceStatus.FAILED,
        error=error,
        compensations=(),
        paused=None,
        held=(),
    )
    build.history("workflow.failed", error=error.to_data())
    return _operations.to_wire(*build.finish())


def _start(
    definition: Definition | None, event: StartRequested, now: float
) -> tuple[InstanceState, list[Command]]:
    if definition is None:
        error = ErrorInfo(
            "UnknownWorkflowType",
            f"no workflow type {event.workflow_type!r} at version {event.version} is registered"
            if event.version
            else f"no workflow type {event.workflow_type!r} is registered",
            non_retryable=True,
        )
        return fail_instance(None, event, error, now)
    state = _new_state(event, definition.type, definition.version, event.input, now)
    return _begin(definition, Decision(state, now), event)


def _begin(
    definition: Definition, build: Decision, start: StartRequested | None = None
) -> tuple[InstanceState, list[Command]]:
    """Record the start of ``build``'s instance and begin its first step.

    ``start``: the event that created it, when it begins as it is stored (a
    queued instance begins later, admitted, with what its start carried
    already applied by :func:`queue_instance`).
    """
    state = build.state
    detail: dict[str, Any] = {"type": definition.type, "version": definition.version}
    if state.parent is not None:
        detail["parent"] = state.parent
    if start is not None and start.rerun_of is not None:
        detail["rerun_of"] = start.rerun_of
    if start is not None and start.schedule is not None:
        detail["schedule"] = start.schedule.to_data()
    build.history("workflow.started", **detail)
    if start is not None and start.pause is not None:
        # Its type is paused: stored, and begun when the type is resumed.
        return _operations.held_start(build, start, start.pause)
    build.begin(definition, Ref(definition.places[definition.steps[0].id], ()))
    if start is not None and start.signal is not None:
        # Signal-with-start: the signal comes once the first steps have begun,
        # as it would have had it been sent right after the start.
        build.run_later()
        _signal.received(build, definition, start.signal)
    return build.finish()


def queue_instance(
    definition: Definition,
    state: InstanceState | None,
    start: StartRequested | None,
    behind: str,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """An instance that waits behind a workflow-level concurrency limit.

    ``state`` is the queued instance as stored, or ``None`` with the
    ``start`` that creates it queued; ``behind`` describes the limit it
    waits for. What it is queued behind is recorded in its history each
    time it changes; the same limit again changes nothing (``state`` is
    returned as it is, with no commands).
    """
    created = state is None
    if state is None:
        if start is None:
            raise ValueError("queue_instance needs a state or a start")
        state = _new_state(start, definition.type, definition.version, start.input, now)
        state = replace(state, status=InstanceStatus.QUEUED)
    elif state.status is not InstanceStatus.QUEUED or state.queued == behind:
        return state, []
    build = Decision(replace(state, queued=behind), now)
    build.history("flow.queued", behind=behind)
    if created and start is not None:
        # What the start carried holds while it waits: a paused type keeps it
        # paused (its admission is then held until it is resumed), and a
        # signal-with-start's signal is kept for when it runs.
        if start.pause is not None:
            return _operations.held_start(build, start, start.pause)
        if start.signal is not None:
            _signal.received(build, definition, start.signal)
    return build.finish()


def admit_instance(
    definition: Definition | None, state: InstanceState, now: float
) -> tuple[InstanceState, list[Command]]:
    """Start a queued instance: every slot it needs is held now.

    An instance that is not queued (started already, or ended while it
    waited) is returned as it is, with no commands.
    """
    if state.status is not InstanceStatus.QUEUED:
        return state, []
    if definition is None or (definition.type, definition.version) != (state.type, state.version):
        error = ErrorInfo(
            "DefinitionMissing",
            f"workflow type {state.type!r} version {state.version} is no longer registered",
            non_retryable=True,
        )
        return fail_instance(state, None, error, now)
    build = Decision(replace(state, status=InstanceStatus.RUNNING, queued=None), now)
    return _begin(definition, build)


def _new_state(
    start: StartRequested, workflow_type: str, version: int, input: Any, now: float
) -> InstanceState:
    return InstanceState(
        id=start.instance_id,
        type=workflow_type,
        version=version,
        input=input,
        status=InstanceStatus.RUNNING,
        created_at=now,
        updated_at=now,
        parent=start.parent,
        parent_step=start.parent_step,
        depth=start.depth,
        parent_attempt=start.parent_attempt,
    )
