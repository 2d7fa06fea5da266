"""How an instance ends: completed, failed, cancelled or terminated.

Failing and cancelling abandon the steps still running and then hand over
to the compensation sequence (``_compensation.py``), which ends the
instance once the completed steps are undone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import _compensation, _steps
from ._error_info import ErrorInfo
from ._expressions import ExpressionError
from ._refs import UNDO, resolve
from ._scope import context
from ._state import InstanceStatus, StepStatus
from ._steps import _activity

if TYPE_CHECKING:
    from ._decision import Decision
    from ._definition import Definition

__all__ = ["abandon", "complete_workflow", "end", "fail_workflow"]


def complete_workflow(build: Decision, definition: Definition) -> None:
    """Every step is done: the instance completes with its output."""
    try:
        if definition.output is not None:
            output = definition.output.evaluate(context(build.state, definition, None))
        else:
            last = build.state.steps.get(definition.steps[-1].id)
            output = None if last is None else last.output
    except ExpressionError as exc:
        fail_workflow(build, definition, ErrorInfo("ExpressionError", f"workflow output: {exc}"))
        return
    build.state = replace(build.state, status=InstanceStatus.COMPLETED, output=output)
    build.history("workflow.completed")


def fail_workflow(build: Decision, definition: Definition | None, error: ErrorInfo) -> None:
    end(build, definition, InstanceStatus.FAILED, error)


def end(
    build: Decision,
    definition: Definition | None,
    ending: InstanceStatus,
    error: ErrorInfo | None,
    reason: str = "",
) -> None:
    """End the instance as ``ending``, compensating its completed steps first.

    ``reason`` is a cancel's reason, recorded in the history. Without the
    definition nothing can be compensated: the instance ends at once.
    """
    build.state = replace(build.state, error=error)
    in_flight = {
        key
        for key, step in build.state.steps.items()
        if step.status is StepStatus.SCHEDULED and not key.endswith(UNDO)
    }
    abandon(build, definition, terminate=False, reason=reason or (error.message if error else ""))
    _compensation.compensate(build, definition, ending, reason, in_flight)


def abandon(
    build: Decision, definition: Definition | None, *, terminate: bool, reason: str
) -> None:
    """Mark every unfinished step cancelled, and tell each kind its steps were abandoned.

    The tasks of abandoned activities are withdrawn (the workers cancel
    them); children are cancelled (or, with ``terminate``, terminated).
    Without the definition, children cannot be told apart and are left to
    finish (their result is ignored). Compensations keep their state (the
    compensation sequence decides what follows), but a termination
    withdraws those running too: nothing follows it.
    """
    abandoned: list[str] = []
    steps = dict(build.state.steps)
    for key, current in build.state.steps.items():
        if key.endswith(UNDO):
            if terminate:
                _activity.abandoned(build, key, current, reason or "the instance was terminated")
            continue
        if not current.status.active:
            continue
        # They end with the steps.cancelled record written below.
        steps[key] = replace(
            current, status=StepStatus.CANCELLED, finished_at=build.now, done=build.state.seq + 1
        )
        abandoned.append(key)
        ref = None if definition is None else resolve(definition, key)
        if ref is not None:
            _steps.abandoned(build, ref, current, terminate=terminate, reason=reason)
    if abandoned:
        build.state = replace(build.state, steps=steps)
        build.history("steps.cancelled", steps=abandoned)
