"""The size limits an orchestrator holds instances to, checked around ``decide``.

Nothing over a limit is ever written or published: an event over one is
replaced before deciding (:func:`within_limits`), a decision's messages and
state are measured before the state is written (:func:`checked`,
:func:`encoded`), and an instance that does not fit is failed small
(:func:`slim`). See ``docs/engine.md``, "Size limits".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

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
    LimitExceededError,
    Limits,
    ScheduleActivity,
    SignalReceived,
    StartChild,
    StartRequested,
    decide,
    fail_instance,
)
from ..wire import DEFAULT_LIMITS, PayloadTooLargeError, encode, encode_state
from ._outbox import assembled, command_messages

__all__ = ["checked", "encoded", "output_size", "slim", "within_limits"]

#: Steps one decision may fail for an input over the limit (each failure is
#: a further decision, and compensations may be oversized too).
_MAX_REFUSALS: Final = 100
#: What the envelope of an ``output`` record adds to its body's encoding
#: (``None`` is one byte).
_OUTPUT_ENVELOPE: Final = len(encode("output", None)) - 1


def within_limits(
    limits: Limits, state: InstanceState | None, event: Event, size: int, now: float
) -> Event | tuple[InstanceState | None, list[Command]]:
    """``event``, or what replaces it because its message is over a limit.

    A start over ``max_input`` fails the instance; a result whose output
    is over ``max_output`` (measured as the workflow's output is, see
    :func:`output_size`) fails the step's attempt, without retry. A signal over
    ``max_input`` raises :class:`LimitExceededError` (it goes to dead
    letters: the instance never asked for it). ``size`` is the event's message's.
    """
    if isinstance(event, StartRequested) and size > limits.max_input:
        if state is not None:
            return state, []
        exc = LimitExceededError("the start message", size, limits.max_input, "InputTooLarge")
        error = ErrorInfo("InputTooLarge", str(exc), non_retryable=True)
        return fail_instance(None, event, error, now)
    if isinstance(event, ActivityCompleted):
        measured = output_size(event.output)
        if measured > limits.max_output:
            exc = LimitExceededError(
                f"the output in the result of step {event.step!r}",
                measured,
                limits.max_output,
                "OutputTooLarge",
            )
            error = ErrorInfo("OutputTooLarge", str(exc), non_retryable=True)
            return ActivityFailed(event.step, event.attempt, error)
    if isinstance(event, SignalReceived) and size > limits.max_input:
        raise LimitExceededError(f"signal {event.name!r}", size, limits.max_input, "InputTooLarge")
    return event


def checked(
    limits: Limits,
    instance_id: str,
    definition: Definition | None,
    new: InstanceState,
    commands: list[Command],
    now: float,
) -> tuple[InstanceState, list[Command], list[OutMessage]]:
    """The decision, with each step whose input is over the limit failed; and its messages.

    A task or a child's start over ``max_input`` is never published: its
    step fails (``InputTooLarge``, no retry) in a further decision made
    on top, which compensates like any failure. Raises
    :class:`LimitExceededError` for a workflow output over ``max_output``.
    """
    for _ in range(_MAX_REFUSALS):
        pairs = command_messages(instance_id, new, commands, now)
        oversized = [
            (command, len(message.data))
            for command, message in pairs
            if isinstance(command, ScheduleActivity | StartChild)
            and len(message.data) > limits.max_input
        ]
        if not oversized:
            messages = assembled(instance_id, pairs, commands)
            break
        command, size = oversized[0]
        refused = LimitExceededError(
            f"the input of step {command.step!r}", size, limits.max_input, "InputTooLarge"
        )
        # A child's start carries the attempt its step's result will have.
        attempt = command.attempt
        failure = ActivityFailed(
            command.step,
            attempt,
            ErrorInfo("InputTooLarge", str(refused), non_retryable=True),
            unsent=True,
        )
        after, more = decide(definition, new, failure, now)
        if after is None or after is new:
            raise refused
        commands = [c for c in commands if c is not command] + more
        new = replace(after, outbox=tuple(commands))
    else:
        raise LimitExceededError(
            "the inputs refused in one decision", _MAX_REFUSALS, _MAX_REFUSALS, "InputTooLarge"
        )
    if new.status is InstanceStatus.COMPLETED and new.output is not None:
        size = output_size(new.output)
        if size > limits.max_output:
            raise LimitExceededError(
                "the workflow's output", size, limits.max_output, "OutputTooLarge"
            )
    return new, commands, messages


def encoded(limit: int, new: InstanceState, cause: int) -> bytes:
    """``new`` as stored (made by event ``cause``); raises if over ``limit`` (``max_state``)."""
    try:
        data = encode_state(replace(new, cause=cause))
    except PayloadTooLargeError:
        # Over the codec's own ceiling (the broker's largest message):
        # surely over max_state too, so fail the same way, not retry.
        raise LimitExceededError("the instance state", limit + 1, limit, "StateTooLarge") from None
    if len(data) > limit and not new.status.terminal:
        raise LimitExceededError("the instance state", len(data), limit, "StateTooLarge")
    return data


def output_size(value: object) -> int:
    """The size of ``value`` encoded: what ``max_output`` bounds, for a step and a workflow.

    The value's own CBOR encoding, without the message around it, so that one
    output measures the same as a step's result and as the workflow's output.
    Past the codec's ceiling it is over any output limit: one byte more is said.
    """
    try:
        return len(encode("output", value)) - _OUTPUT_ENVELOPE
    except PayloadTooLargeError:
        return DEFAULT_LIMITS.max_bytes + 1


def slim(state: InstanceState | None) -> InstanceState | None:
    """``state`` without its payloads (input, outputs), for recording a failure."""
    if state is None:
        return None
    steps = {key: replace(step, output=None) for key, step in state.steps.items()}
    return replace(state, input=None, output=None, steps=steps)
