"""The kind table: ``Step``, and one function per concern that dispatches on the kind.

Each function is a ``match`` over :data:`Step` with one ``case`` per kind,
calling into the kind's own module, and ends in ``assert_never``, so that
a kind left out of one is a type error (``mypy``). The rest of the core
never asks which kind a step is: it calls these.

A kind's functions are handed the :class:`~.._decision.Decision` under way
and make their moves through it (``build.step_done``, ``build.begin``...),
never by importing the modules that call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, assert_never, get_args

from . import _activity, _child, _choice, _map, _parallel, _signal, _sleep
from ._activity import ActivityStep
from ._child import ChildStep
from ._choice import ChoiceStep
from ._map import MapStep
from ._parallel import ParallelStep
from ._signal import SignalStep
from ._sleep import SleepStep

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .._decision import Decision
    from .._definition import Definition
    from .._events import ActivityCompleted, ActivityFailed, TimerFired
    from .._parse import Checker
    from .._refs import Ref
    from .._state import StepState
    from ._activity import Compensation

    #: Checks the fields of one kind of step: ``(checker, fields, step id or
    #: None if invalid, how many containers around it) -> step or None``.
    Parser: TypeAlias = Callable[[Checker, Mapping[str, Any], str | None, int], "Step | None"]

__all__ = [
    "STEP_KEYS",
    "Nesting",
    "Step",
    "StepKey",
    "abandoned",
    "begin",
    "compensation",
    "inner_done",
    "nesting",
    "result",
    "syntax",
    "timer",
]

#: Every kind of step.
Step: TypeAlias = (
    ActivityStep | SleepStep | SignalStep | ChildStep | ParallelStep | MapStep | ChoiceStep
)

#: The key that gives a step in a definition its kind (a step has exactly one).
StepKey: TypeAlias = Literal[
    "activity", "sleep", "sleep_until", "wait_signal", "workflow", "parallel", "map", "choice"
]
STEP_KEYS: Final[tuple[StepKey, ...]] = get_args(StepKey)


# -- the definition format -------------------------------------------------------------


def syntax(key: StepKey) -> tuple[frozenset[str], Parser]:
    """The fields a step of kind ``key`` allows, and what checks them."""
    match key:
        case "activity":
            return _activity.FIELDS, _activity.parse
        case "sleep":
            return _sleep.FIELDS, _sleep.parse
        case "sleep_until":
            return _sleep.UNTIL_FIELDS, _sleep.parse_until
        case "wait_signal":
            return _signal.FIELDS, _signal.parse
        case "workflow":
            return _child.FIELDS, _child.parse
        case "parallel":
            return _parallel.FIELDS, _parallel.parse
        case "map":
            return _map.FIELDS, _map.parse
        case "choice":
            return _choice.FIELDS, _choice.parse
        case _:
            assert_never(key)


@dataclass(frozen=True, slots=True)
class Nesting:
    """What a step holds: its sequences of steps (one per branch), in order.

    ``per_item``: they run once for each item of a list, every copy keyed
    with the item's ``@index``.
    """

    sequences: tuple[tuple[Step, ...], ...] = ()
    per_item: bool = False


_LEAF: Final = Nesting()


def nesting(step: Step) -> Nesting:
    """The steps ``step`` holds (none for a leaf)."""
    match step:
        case ActivityStep() | SleepStep() | SignalStep() | ChildStep():
            return _LEAF
        case ParallelStep() | ChoiceStep():
            return Nesting(tuple(branch.steps for branch in step.branches))
        case MapStep():
            return Nesting((step.steps,), per_item=True)
        case _:
            assert_never(step)


def compensation(step: Step) -> Compensation | None:
    """What undoes ``step`` if the instance fails or is cancelled after it ran."""
    match step:
        case ActivityStep():
            return step.compensate
        case SleepStep() | SignalStep() | ChildStep() | ParallelStep() | MapStep() | ChoiceStep():
            return None
        case _:
            assert_never(step)


# -- running steps ---------------------------------------------------------------------


def begin(build: Decision, definition: Definition, ref: Ref) -> None:
    """Start the step ``ref`` names."""
    step = ref.step
    match step:
        case ActivityStep():
            _activity.begin(build, definition, ref, step)
        case SleepStep():
            _sleep.begin(build, definition, ref, step)
        case SignalStep():
            _signal.begin(build, definition, ref, step)
        case ChildStep():
            _child.begin(build, definition, ref, step)
        case ParallelStep():
            _parallel.begin(build, definition, ref, step)
        case MapStep():
            _map.begin(build, definition, ref, step)
        case ChoiceStep():
            _choice.begin(build, definition, ref, step)
        case _:
            assert_never(step)


def result(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: ActivityCompleted | ActivityFailed,
) -> bool:
    """The result (success or failure) of the live attempt of ``ref``; ``False`` if none is due."""
    step = ref.step
    match step:
        case ActivityStep():
            return _activity.result(build, definition, ref, current, event)
        case ChildStep():
            return _child.result(build, definition, ref, current, event)
        case SleepStep() | SignalStep() | ParallelStep() | MapStep() | ChoiceStep():
            return False  # nothing was scheduled for them
        case _:
            assert_never(step)


def timer(
    build: Decision, definition: Definition, ref: Ref, current: StepState, event: TimerFired
) -> bool:
    """A timer of the current attempt of ``ref`` fired; ``False`` if it means nothing now."""
    step = ref.step
    match step:
        case ActivityStep():
            return _activity.timer(build, definition, ref, current, event)
        case SleepStep():
            return _sleep.timer(build, definition, ref, current, event)
        case SignalStep():
            return _signal.timer(build, definition, ref, current, event)
        case ChildStep() | ParallelStep() | MapStep() | ChoiceStep():
            return False  # they set no timers
        case _:
            assert_never(step)


def inner_done(build: Decision, definition: Definition, ref: Ref, last: Ref, output: Any) -> None:
    """A sequence inside the running step ``ref`` finished: its ``last`` step gave ``output``."""
    step = ref.step
    match step:
        case ParallelStep():
            _parallel.inner_done(build, definition, ref, step, last, output)
        case MapStep():
            _map.inner_done(build, definition, ref, step, last, output)
        case ChoiceStep():
            _choice.inner_done(build, definition, ref, step, last, output)
        case ActivityStep() | SleepStep() | SignalStep() | ChildStep():
            raise AssertionError(f"step {ref.key!r} holds no steps")
        case _:
            assert_never(step)


def abandoned(
    build: Decision, ref: Ref, current: StepState, *, terminate: bool, reason: str
) -> None:
    """The instance ended with ``ref`` (in state ``current``) unfinished.

    ``terminate``: it ends without compensation.
    """
    step = ref.step
    match step:
        case ChildStep():
            _child.abandoned(build, ref, terminate=terminate, reason=reason)
        case ActivityStep():
            _activity.abandoned(build, ref.key, current, reason)
        case SleepStep() | SignalStep() | ParallelStep() | MapStep() | ChoiceStep():
            pass  # nothing to stop: a late result or timer finds the step ended
        case _:
            assert_never(step)
