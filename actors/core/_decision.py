"""A decision under construction, and the moves that advance an instance.

``decide`` makes one :class:`Decision` per event it applies. The step kinds
(``_steps/``) are handed the decision and work through it: they change
step states and record history on it, and make their moves with it (begin
a step, finish one, fail one, fail the workflow). The moves go through
the kind table (``_steps.begin``, ``_steps.inner_done``), which calls the
kinds back; the kinds reach the moves through the decision they were
given, not by importing this module, so that no module imports one that
imports it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import _compensation, _ending, _steps
from ._commands import Command, RecordHistory
from ._state import InstanceState, InstanceStatus, StepState, StepStatus
from ._steps import _child

if TYPE_CHECKING:
    from ._definition import Definition
    from ._error_info import ErrorInfo
    from ._refs import Ref

__all__ = ["Decision"]


class Decision:
    """Accumulates one decision's changes and commands.

    ``later`` holds what a finished step sets going next (the step after it,
    or the end of its sequence). Running those from a queue, not by calling
    down, keeps the stack flat however many steps finish in one decision (a
    long run of zero sleeps, a map of ten thousand empty choices).
    """

    __slots__ = ("commands", "later", "now", "state", "was_terminal")

    def __init__(self, state: InstanceState, now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []
        self.was_terminal = state.status.terminal
        self.later: deque[Callable[[], None]] = deque()

    # -- changes -----------------------------------------------------------------------

    def history(self, kind: str, **detail: Any) -> None:
        """Append a history record of ``kind`` (numbered next) with ``detail``."""
        self.commands.append(RecordHistory(self.state.seq + 1, kind, self.now, detail))
        self.state = replace(self.state, seq=self.state.seq + 1)

    def set_step(self, step_id: str, step: StepState) -> None:
        steps = dict(self.state.steps)
        steps[step_id] = step
        self.state = replace(self.state, steps=steps)

    def drop_steps(self, keys: list[str]) -> None:
        steps = dict(self.state.steps)
        for key in keys:
            del steps[key]
        self.state = replace(self.state, steps=steps)

    def run_later(self) -> None:
        """Run what finished steps set going (see ``later``), until nothing is left."""
        while self.later:
            self.later.popleft()()

    def finish(self) -> tuple[InstanceState, list[Command]]:
        """Run what is left to run; the new state (its outbox set) and the commands."""
        self.run_later()
        state = self.state
        if state.status.terminal and not self.was_terminal and state.parent is not None:
            self.commands.append(_child.notice(state))
        if state.queued is not None and state.status is not InstanceStatus.QUEUED:
            # It no longer waits (admitted, or ended while it waited: cancelled,
            # terminated, failed): status must not show a limit it waits behind.
            state = replace(state, queued=None)
        commands = tuple(self.commands)
        return replace(state, updated_at=self.now, outbox=commands), list(commands)

    # -- moves ---------------------------------------------------------------------------

    def begin(self, definition: Definition, ref: Ref) -> None:
        """Start the step ``ref`` names (unless the instance is no longer running)."""
        if self.state.status is not InstanceStatus.RUNNING:
            return
        _steps.begin(self, definition, ref)

    def step_done(
        self, definition: Definition, ref: Ref, output: Any, record: str | None = None
    ) -> None:
        """The step ``ref`` finished with ``output``: record it (as ``record``) and go on."""
        current = self.state.steps[ref.key]
        self.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.COMPLETED,
                output=output,
                error=None,
                finished_at=self.now,
                done=self.state.seq,
                # The items stay while a compensation inside may still need one.
                items=current.items if ref.place.undoable else None,
            ),
        )
        if record is not None:
            self.history(record, step=ref.key)
        self.later.append(lambda: self._advance(definition, ref, output))

    def last_attempt_failed(
        self, ref: Ref, current: StepState, error: ErrorInfo, *, unsent: bool
    ) -> None:
        """The last attempt of ``ref`` failed with ``error``: mark the step failed.

        ``unsent``: that attempt's task never went out; if it was the first,
        the step has nothing to compensate.
        """
        dispatched = 0 if unsent and current.attempt == 1 else current.dispatched
        self._mark_failed(ref, replace(current, dispatched=dispatched), error)

    def step_failed(self, definition: Definition, ref: Ref, error: ErrorInfo) -> None:
        """A step (or compensation) failed for good; ``error`` is the workflow's."""
        current = self.state.steps.get(ref.key)
        if current is not None and current.status is not StepStatus.FAILED:
            self._mark_failed(ref, current, error)
        if ref.undo:
            _compensation.compensation_failed(self, ref, error)
            return
        # No step catches a failure: it ends the instance, whose other running
        # steps (a parallel step's siblings, a map's other items) are abandoned.
        _ending.fail_workflow(self, definition, error)

    def _mark_failed(self, ref: Ref, current: StepState, error: ErrorInfo) -> None:
        self.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.FAILED,
                error=error,
                finished_at=self.now,
                done=self.state.seq,
            ),
        )

    def fail_workflow(self, definition: Definition, error: ErrorInfo) -> None:
        """Fail the instance with ``error``, compensating first."""
        _ending.fail_workflow(self, definition, error)

    def next_compensation(self, definition: Definition) -> None:
        """A compensation completed: start the next one, or end the instance."""
        _compensation.next_compensation(self, definition)

    def _advance(self, definition: Definition, ref: Ref, output: Any) -> None:
        """Go on after ``ref`` finished with ``output`` (unless the instance ended meanwhile)."""
        if self.state.status is not InstanceStatus.RUNNING:
            return
        if ref.place.index + 1 < len(ref.place.sequence):
            self.begin(definition, ref.sibling(definition, ref.place.index + 1))
        else:
            self._sequence_done(definition, ref, output)

    def _sequence_done(self, definition: Definition, last: Ref, output: Any) -> None:
        """The sequence whose last step is ``last`` finished with ``output``."""
        owner = last.owner(definition)
        if owner is None:
            _ending.complete_workflow(self, definition)
            return
        current = self.state.steps.get(owner.key)
        if current is None or current.status is not StepStatus.RUNNING:
            return
        _steps.inner_done(self, definition, owner, last, output)
