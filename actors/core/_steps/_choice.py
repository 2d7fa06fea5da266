"""Choice steps: run the first branch whose condition holds, else the default.

Conditions are evaluated in order when the step begins; truth follows
JMESPath (``false``, ``null`` and empty strings, lists and maps are
false). With no branch taken and no default the step fails with
``NoChoiceMatched``. The first step of the branch taken receives the
choice's own input; the output is the branch's last output (an empty
branch passes the input on).

History: ``choice.taken`` (the branch's position, or ``"default"``),
``choice.completed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._error_info import ErrorInfo
from .._expressions import ExpressionError
from .._refs import Ref
from .._scope import chained, context
from .._state import StepState, StepStatus
from ._branch import Branch

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._parse import Checker

__all__ = ["FIELDS", "ChoiceStep", "begin", "inner_done", "parse"]


@dataclass(frozen=True, slots=True)
class ChoiceStep:
    """Run the first branch whose ``when`` holds, else ``default``.

    Truth follows JMESPath: ``false``, ``null`` and empty strings, lists and
    maps are false. With no branch taken and no default the step fails with
    ``NoChoiceMatched``; an empty default passes the step's input on.
    """

    id: str
    choices: tuple[Branch, ...]
    default: Branch | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "choice": [branch.to_data() for branch in self.choices],
        }
        if self.default is not None:
            data["default"] = [step.to_data() for step in self.default.steps]
        return data

    @property
    def branches(self) -> tuple[Branch, ...]:
        """The guarded branches, then the default if there is one."""
        return self.choices if self.default is None else (*self.choices, self.default)


#: The fields of a choice step (its kind: the key ``choice``, its guarded branches).
FIELDS: Final = frozenset({"id", "choice", "default"})
_BRANCH_FIELDS: Final = frozenset({"when", "steps"})
_COMPLETED: Final = "choice.completed"


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> ChoiceStep | None:
    inner = checker.nest(depth)
    if inner is None:
        return None
    choices: list[Branch] = []
    for i, branch in checker.branches(
        step.get("choice"), "choice", _BRANCH_FIELDS, "a choice branch"
    ):
        when = checker.expression(branch, "when", required="a condition")
        steps = checker.steps(branch.get("steps"), inner, empty=True)
        if when is not None:
            choices.append(Branch(str(i), tuple(steps), when))
    default = None
    if "default" in step:
        with checker.at("default"):
            if not isinstance(step["default"], list):
                checker.error("must be a list of steps (it may be empty)")
                return None
            if not checker.counted(len(step["default"])):
                return None
        default = Branch("default", tuple(checker.sequence(step["default"], "default", inner)))
    if step_id is None:
        return None
    return ChoiceStep(step_id, tuple(choices), default)


def begin(build: Decision, definition: Definition, ref: Ref, step: ChoiceStep) -> None:
    data = context(build.state, definition, ref)
    taken = -1
    for number, branch in enumerate(step.choices):
        assert branch.when is not None
        try:
            if _truthy(branch.when.evaluate(data)):
                taken = number
                break
        except ExpressionError as exc:
            error = ErrorInfo("ExpressionError", f"step {ref.key!r} choice {number}: {exc}")
            build.fail_workflow(definition, error)
            return
    if taken < 0 and step.default is None:
        error = ErrorInfo(
            "NoChoiceMatched",
            f"step {ref.key!r}: no condition held and there is no default",
            non_retryable=True,
        )
        build.fail_workflow(definition, error)
        return
    if taken < 0:
        taken = len(step.choices)
    build.set_step(ref.key, StepState(StepStatus.RUNNING, 1, build.now, branch=taken))
    build.history(
        "choice.taken", step=ref.key, branch="default" if taken == len(step.choices) else taken
    )
    steps = step.branches[taken].steps
    if not steps:
        build.step_done(definition, ref, chained(build.state, definition, ref), _COMPLETED)
        return
    build.begin(definition, Ref(definition.places[steps[0].id], ref.path))


def inner_done(
    build: Decision, definition: Definition, ref: Ref, step: ChoiceStep, last: Ref, output: Any
) -> None:
    """The branch taken finished: its output is the choice's."""
    build.step_done(definition, ref, output, _COMPLETED)


def _truthy(value: Any) -> bool:
    """JMESPath truth: false, null and empty strings, lists and maps are false."""
    return value is not None and value is not False and value != "" and value != [] and value != {}
