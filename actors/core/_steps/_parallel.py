"""Parallel steps: run every branch at once; done when all are.

The first step of every branch receives the parallel step's own input; the
output maps each branch's id to the output of its last step. A failure in
any branch fails the instance, abandoning the other branches.

History: ``parallel.started``, ``parallel.completed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._refs import Ref, step_key
from .._state import StepState, StepStatus
from ._branch import Branch

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._parse import Checker

__all__ = ["FIELDS", "ParallelStep", "begin", "inner_done", "parse"]


@dataclass(frozen=True, slots=True)
class ParallelStep:
    """Run every branch at once; done when all are.

    The output maps each branch's id to the output of its last step. The
    first step of every branch receives the parallel step's own input.
    """

    id: str
    branches: tuple[Branch, ...]

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "parallel": [branch.to_data() for branch in self.branches]}


#: The fields of a parallel step (its kind: the key ``parallel``, its branches).
FIELDS: Final = frozenset({"id", "parallel"})
_BRANCH_FIELDS: Final = frozenset({"id", "steps"})


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> ParallelStep | None:
    inner = checker.nest(depth)
    if inner is None:
        return None
    branches: list[Branch] = []
    names: set[str] = set()
    parallel = step.get("parallel")
    for _, branch in checker.branches(parallel, "parallel", _BRANCH_FIELDS, "a parallel branch"):
        name = checker.name(branch, "id", "branch id")
        if name is not None and name in names:
            with checker.at("id"):
                checker.error(f"duplicate branch id {name!r}")
        steps = checker.steps(branch.get("steps"), inner)
        if name is not None:
            names.add(name)
            branches.append(Branch(name, tuple(steps)))
    if step_id is None:
        return None
    return ParallelStep(step_id, tuple(branches))


def begin(build: Decision, definition: Definition, ref: Ref, step: ParallelStep) -> None:
    build.set_step(ref.key, StepState(StepStatus.RUNNING, 1, build.now))
    build.history("parallel.started", step=ref.key, branches=[b.id for b in step.branches])
    for branch in step.branches:
        first = definition.places[branch.steps[0].id]
        build.begin(definition, Ref(first, ref.path))
        if build.state.steps[ref.key].status is not StepStatus.RUNNING:
            return


def inner_done(
    build: Decision, definition: Definition, ref: Ref, step: ParallelStep, last: Ref, output: Any
) -> None:
    """A branch finished: the step is done once every branch is."""
    outputs: dict[str, Any] = {}
    for branch in step.branches:
        done = build.state.steps.get(step_key(branch.steps[-1].id, ref.path))
        if done is None or done.status is not StepStatus.COMPLETED:
            return
        outputs[branch.id] = done.output
    build.step_done(definition, ref, outputs, "parallel.completed")
