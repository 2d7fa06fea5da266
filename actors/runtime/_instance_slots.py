"""Flow control as an instance actor meets it: the slots it takes, holds back on and frees.

The slots themselves (``FLOW_SLOTS``: who holds them, who is queued, who
is granted one next) are ``_flow.py``'s :class:`WorkflowSlots`; these are
the three moments of a decision where an instance actor deals with them:

* :func:`admit`, before deciding a start (or an admission from the
  queue): take the slots of the workflow-level limits, or decide in its
  place that the instance is queued or fails;
* :func:`hold_back`, before publishing a decision: keep back the tasks of
  attempts whose step limit has no free slot (they wait in the slot's
  queue, and whoever frees one publishes them);
* :func:`free_slots`, once a decision is carried out: free what it let go.

Each is safe to repeat when an event is redelivered: taking a slot the
instance holds, or freeing one it no longer holds, changes nothing.
Broker errors propagate (the actor hands the event back).
"""

from __future__ import annotations

from collections.abc import Sequence

from transport import OutMessage

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    Command,
    Definition,
    ErrorInfo,
    Event,
    InstanceState,
    InstanceStatus,
    ScheduleActivity,
    SlotGranted,
    StartRequested,
    TimerFired,
    TimerKind,
    fail_instance,
    queue_instance,
)
from ..wire import task_msg_id
from ._flow import QueueFullError, WorkflowSlots

__all__ = ["admit", "free_slots", "hold_back"]


async def admit(
    slots: WorkflowSlots,
    instance_id: str,
    definition: Definition | None,
    state: InstanceState | None,
    event: Event,
    now: float,
    cause: int,
) -> tuple[InstanceState, list[Command]] | None:
    """Take the slots of the workflow-level limits a start (or an admission) needs.

    ``cause``: the event's stream sequence (a start's orders its queue).

    ``None``: decide the event as it is (no limits, or every slot is
    held). A decision in its place: the instance is queued, or fails (a
    key without a value, a full queue). A start is taken for one of an
    instance not stored yet, as the actor assumes: if it was a duplicate,
    of an instance that has ended, what it took is freed when it is found
    out (the actor calls :func:`free_slots`).
    """
    if definition is None or not definition.concurrency:
        return None
    if isinstance(event, StartRequested) and state is None:
        start: StartRequested | None = event
        input = event.input
        seq = cause
    elif (
        isinstance(event, SlotGranted)
        and state is not None
        and state.status is InstanceStatus.QUEUED
    ):
        start = None
        input = state.input
        seq = 0  # its start's is not kept: behind a further limit, it goes last
    else:
        return None
    try:
        admission = await slots.admit(definition, instance_id, input, seq)
    except (ValueError, QueueFullError) as exc:
        kind = "QueueFull" if isinstance(exc, QueueFullError) else "InvalidConcurrencyKey"
        error = ErrorInfo(kind, str(exc), non_retryable=True)
        return fail_instance(state, start, error, now, definition)
    if admission.behind is None:
        return None
    return queue_instance(definition, state, start, admission.behind, now)


async def hold_back(
    slots: WorkflowSlots,
    instance_id: str,
    messages: list[OutMessage],
    commands: Sequence[Command],
    definition: Definition,
) -> list[OutMessage]:
    """``messages`` without the tasks that wait for a slot of their step's limit."""
    waiting: set[str] = set()
    by_id = {message.msg_id: message for message in messages if message.msg_id}
    for command in commands:
        if not isinstance(command, ScheduleActivity):
            continue
        msg_id = task_msg_id(instance_id, command.step, command.attempt)
        task = by_id.get(msg_id)
        if task is not None and not await slots.take_attempt(
            definition, instance_id, command, task
        ):
            waiting.add(msg_id)
    return [m for m in messages if m.msg_id not in waiting] if waiting else messages


async def free_slots(
    slots: WorkflowSlots, definition: Definition | None, state: InstanceState, event: Event
) -> None:
    """Free the slots the decision just carried out let go (again, if it is redelivered).

    An instance's own when it ended; an attempt's when its result or its
    timeout came, or when the instance ended.
    """
    if definition is None:
        return
    if state.status.terminal and definition.concurrency:
        await slots.release(definition, state)
    if not definition.limited_steps:
        return
    ended: list[tuple[str, int]] = []
    timed_out = isinstance(event, TimerFired) and event.kind is TimerKind.TIMEOUT
    if isinstance(event, ActivityCompleted | ActivityFailed | TimerFired) and (
        timed_out or not isinstance(event, TimerFired)
    ):
        ended.append((event.step, event.attempt))
    if state.status.terminal:
        ended.extend((key, step.attempt) for key, step in state.steps.items())
    for key, attempt in ended:
        await slots.free_attempt(definition, state, key, attempt)
