"""The compensation sequence: undo what was done before a failed or cancelled instance ends.

Every step whose task went out and that has a compensation is undone (rule
11: it may have taken effect, whether or not it was seen to complete), one
at a time, the latest to end first. A compensation is an activity, run as
an activity step's attempts are (``_steps/_activity.py``); its key is the
step's with ``~undo``. A step abandoned while its task may still be
running is undone only once that task reports or its time is up
(*settling*), so that nothing takes effect after its compensation.

Once the last compensation completes, or one fails for good, the instance
ends as it was going to (failed or cancelled), its record saying how the
compensation went.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._refs import UNDO, resolve
from ._state import InstanceStatus, StepState, StepStatus
from ._steps import _activity

if TYPE_CHECKING:
    from ._decision import Decision
    from ._definition import Definition
    from ._error_info import ErrorInfo
    from ._events import StepEvent
    from ._refs import Ref

__all__ = ["compensate", "compensation_failed", "next_compensation", "settle"]


def compensate(
    build: Decision,
    definition: Definition | None,
    ending: InstanceStatus,
    reason: str,
    in_flight: set[str],
) -> None:
    """End the abandoned instance as ``ending``, undoing what its steps did first.

    ``in_flight`` holds the keys of the steps whose task may still be
    running. ``reason`` is a cancel's reason, recorded in the history.
    """
    undo: list[tuple[int, int, str]] = []
    if definition is not None:
        for key, step in build.state.steps.items():
            # Rule 11: a step whose task went out may have taken effect,
            # whether or not it was seen to complete.
            if not step.dispatched or key.endswith(UNDO):
                continue
            undone = build.state.steps.get(key + UNDO)
            if undone is not None and undone.status is StepStatus.COMPLETED:
                continue  # undone in an earlier run (see ``_operations.retry``)
            ref = resolve(definition, key)
            if ref is None or not ref.place.compensable:
                continue
            undo.append((step.done, step.dispatched, key + UNDO))
            if key in in_flight:
                _activity.await_settling(build, ref, step)
    if not undo or definition is None:
        build.state = replace(build.state, status=ending)
        _record_ending(build, reason)
        return
    keys = [key for _, _, key in sorted(undo, reverse=True)]
    build.state = replace(
        build.state,
        status=InstanceStatus.COMPENSATING,
        ending=ending,
        compensations=tuple(keys),
    )
    detail: dict[str, Any] = {"steps": keys, "ending": str(ending)}
    if ending is InstanceStatus.CANCELLED:
        detail["reason"] = reason
    build.history("compensation.started", **detail)
    next_compensation(build, definition)


def next_compensation(build: Decision, definition: Definition) -> None:
    """Start the next compensation; or wait, if its step's task may still be running."""
    pending = build.state.compensations
    if not pending:
        build.state = replace(build.state, compensation="completed")
        build.history("compensation.completed")
        _finish_ending(build)
        return
    undone = build.state.steps.get(pending[0][: -len(UNDO)])
    if undone is not None and undone.in_flight:
        # Undone before it is done, the step could still take effect after
        # its compensation: wait for its result, or for its time to be up.
        build.history("compensation.waiting", step=pending[0])
        return
    build.state = replace(build.state, compensations=pending[1:])
    ref = resolve(definition, pending[0])
    assert ref is not None
    _activity.schedule(build, definition, ref, attempt=1)


def compensation_failed(build: Decision, ref: Ref, error: ErrorInfo) -> None:
    """Compensation ``ref`` failed for good: the instance ends without the others."""
    build.state = replace(build.state, compensation="failed")
    build.history("compensation.failed", step=ref.key, error=error.to_data())
    _finish_ending(build)


def settle(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: StepEvent,
) -> bool:
    """An abandoned step's running attempt reported, or ran out of time: undo it now.

    Returns ``False`` for an event that is not about that attempt.
    """
    if not _activity.settle(build, ref, current, event):
        return False
    pending = build.state.compensations
    running = any(
        key.endswith(UNDO) and step.status.active for key, step in build.state.steps.items()
    )
    if pending and pending[0] == ref.key + UNDO and not running:
        next_compensation(build, definition)
    return True


def _finish_ending(build: Decision) -> None:
    ending = build.state.ending or InstanceStatus.FAILED
    build.state = replace(build.state, status=ending, compensations=(), ending=None)
    _record_ending(build)


def _record_ending(build: Decision, reason: str = "") -> None:
    state = build.state
    detail: dict[str, Any] = {}
    if state.status is InstanceStatus.CANCELLED:
        if state.compensation is None:
            detail["reason"] = reason
        kind = "workflow.cancelled"
    else:
        detail["error"] = state.error.to_data() if state.error is not None else None
        kind = "workflow.failed"
    if state.compensation is not None:
        detail["compensation"] = state.compensation
    build.history(kind, **detail)
