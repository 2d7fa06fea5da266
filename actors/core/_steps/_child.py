"""Child workflow steps: start another workflow and wait for its end.

The step starts the child (``StartChild``) under an id derived from the
parent's and the step's key, so that a repeated start finds the same
child. The child's end comes back to the step as a result: its output
completes the step; its failure, cancellation or termination fails it
(never retried: the child ran its own retries). Abandoning the step
cancels (or terminates) the child.

The child's side is here too: an instance that has a parent reports its
end to it (:func:`notice`), and refuses a start that claims its id for
another parent (:func:`conflict`).

History: ``child.started``, ``child.result``, ``child.completed``,
``child.failed``, ``child.refused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._commands import CancelChild, NotifyParent, StartChild
from .._error_info import ErrorInfo
from .._events import ActivityCompleted, ActivityFailed, StartRequested
from .._expressions import ExpressionError
from .._refs import child_id
from .._scope import input_of
from .._state import InstanceState, InstanceStatus, StepState, StepStatus

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._expressions import Expression
    from .._parse import Checker
    from .._refs import Ref

__all__ = [
    "FIELDS",
    "MAX_CHILD_DEPTH",
    "ChildStep",
    "abandoned",
    "begin",
    "conflict",
    "notice",
    "parse",
    "result",
]

#: How deep child workflows may nest: a top-level instance has depth 0, its
#: children 1, theirs 2. A child step of an instance at this depth fails the
#: instance with ``ChildDepthExceeded`` (a workflow that starts itself, or
#: A -> B -> A, stops there instead of starting instances for ever).
MAX_CHILD_DEPTH: Final = 16
#: The longest instance id (a child's id is its parent's plus its step key).
_MAX_ID: Final = 128


@dataclass(frozen=True, slots=True)
class ChildStep:
    """Start workflow ``workflow`` as a child and wait for its result.

    ``version`` 0 takes the newest version when the step starts. ``input``
    ``None`` passes the previous step's output. The child's output is the
    step's output; its failure, cancellation or termination fails the step.
    """

    id: str
    workflow: str
    version: int = 0
    input: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "workflow": self.workflow}
        if self.version:
            data["version"] = self.version
        if self.input is not None:
            data["input"] = self.input.source
        return data


#: The fields of a child workflow step (its kind: the key ``workflow``).
FIELDS: Final = frozenset({"id", "workflow", "version", "input"})


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> ChildStep | None:
    workflow = checker.name(step, "workflow", "workflow type")
    version = checker.version(step, newest=True)
    if version is None:
        return None
    expression = checker.expression(step, "input")
    if step_id is None or workflow is None:
        return None
    return ChildStep(step_id, workflow, version, expression)


def begin(build: Decision, definition: Definition, ref: Ref, step: ChildStep) -> None:
    key = ref.key
    try:
        value = input_of(build.state, definition, ref, step.input)
    except ExpressionError as exc:
        error = ErrorInfo("ExpressionError", f"step {key!r} input: {exc}")
        build.fail_workflow(definition, error)
        return
    child = child_id(build.state.id, key, build.state.run)
    if len(child) > _MAX_ID:
        error = ErrorInfo(
            "ChildIdTooLong",
            f"step {key!r}: the child's id {child[:60]!r}... would be over {_MAX_ID} "
            "characters (children nest too deep)",
            non_retryable=True,
        )
        build.fail_workflow(definition, error)
        return
    if build.state.depth >= MAX_CHILD_DEPTH:
        error = ErrorInfo(
            "ChildDepthExceeded",
            f"step {key!r}: its child {step.workflow!r} would nest {build.state.depth + 1} "
            f"deep; the limit is {MAX_CHILD_DEPTH} (does a workflow start itself, "
            "directly or through others?)",
            non_retryable=True,
        )
        build.fail_workflow(definition, error)
        return
    build.set_step(key, StepState(StepStatus.SCHEDULED, 1, build.now))
    build.commands.append(StartChild(child, step.workflow, step.version, value, key))
    build.history("child.started", step=key, child=child, workflow=step.workflow)


def result(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: ActivityCompleted | ActivityFailed,
) -> bool:
    """The child ended: its output completes the step; anything else fails it.

    Anything else: the child failed, was cancelled or terminated, or its
    start was refused.
    """
    if isinstance(event, ActivityCompleted):
        build.history("child.result", step=ref.key, attempt=event.attempt)
        build.step_done(definition, ref, event.output, "child.completed")
        return True
    error = event.error
    build.history("child.failed", step=ref.key, attempt=current.attempt, error=error.to_data())
    build.last_attempt_failed(ref, current, error, unsent=event.unsent)
    build.step_failed(definition, ref, error)
    return True


def abandoned(build: Decision, ref: Ref, *, terminate: bool, reason: str) -> None:
    """The parent gave up on the step: the child is cancelled (or terminated) too."""
    build.commands.append(
        CancelChild(
            child_id(build.state.id, ref.key, build.state.run),
            terminate,
            reason or "parent ended",
        )
    )


def notice(state: InstanceState) -> NotifyParent:
    """What a child that just ended tells its parent."""
    assert state.parent is not None
    assert state.parent_step is not None
    if state.status is InstanceStatus.COMPLETED:
        return NotifyParent(
            state.parent, state.parent_step, state.output, None, state.parent_attempt
        )
    cause = state.error or ErrorInfo(
        "Cancelled" if state.status is InstanceStatus.CANCELLED else "Terminated",
        f"the child was {state.status}",
    )
    error = ErrorInfo(
        "ChildWorkflowFailed",
        f"child workflow {state.id!r} ({state.type} v{state.version}) ended {state.status}: "
        f"{cause.type}: {cause.message}",
        non_retryable=True,
        cause=cause.to_data(),
    )
    return NotifyParent(state.parent, state.parent_step, None, error, state.parent_attempt)


def conflict(build: Decision, event: StartRequested) -> bool:
    """A child's start for an id that is taken: by this very child, or by another.

    The same child's start again (a redelivery) changes nothing (``False``).
    Another's (an id a user chose, or one that two derivations share) is
    refused: the parent's step fails rather than wait for a child that is
    not its own.
    """
    state = build.state
    assert event.parent is not None
    assert event.parent_step is not None
    if (state.parent, state.parent_step) == (event.parent, event.parent_step):
        return False
    error = ErrorInfo(
        "ChildIdConflict",
        f"instance {state.id!r} already exists and is not the child of step "
        f"{event.parent_step!r} of {event.parent!r}",
        non_retryable=True,
    )
    refusal = NotifyParent(event.parent, event.parent_step, None, error, event.parent_attempt)
    if refusal in state.outbox:
        return False  # the same start again, already refused
    build.history("child.refused", parent=event.parent, step=event.parent_step)
    build.commands.append(refusal)
    return True
