"""The kinds of steps: one module each, and the table that dispatches on the kind.

Each kind's module (``_activity.py``, ``_sleep.py``, ``_signal.py``,
``_child.py``, ``_parallel.py``, ``_map.py``, ``_choice.py``) holds all of
that kind's rules: its dataclass and plain form, the fields it allows and
how they are checked, how it begins, what it does with a result, a failure
or a timer, what the end of a sequence inside it means, what abandoning it
stops, and the names of its history records. ``_dispatch.py`` is the
table: the ``Step`` union and one function per concern, each a ``match``
over the kinds.
"""

from ._activity import ActivityStep as ActivityStep
from ._activity import Compensation as Compensation
from ._activity import RetryPolicy as RetryPolicy
from ._activity import Timeouts as Timeouts
from ._branch import Branch as Branch
from ._child import ChildStep as ChildStep
from ._choice import ChoiceStep as ChoiceStep
from ._dispatch import STEP_KEYS as STEP_KEYS
from ._dispatch import Nesting as Nesting
from ._dispatch import Step as Step
from ._dispatch import StepKey as StepKey
from ._dispatch import abandoned as abandoned
from ._dispatch import begin as begin
from ._dispatch import compensation as compensation
from ._dispatch import inner_done as inner_done
from ._dispatch import nesting as nesting
from ._dispatch import result as result
from ._dispatch import syntax as syntax
from ._dispatch import timer as timer
from ._map import MapStep as MapStep
from ._parallel import ParallelStep as ParallelStep
from ._signal import SignalStep as SignalStep
from ._sleep import SleepStep as SleepStep

__all__ = [
    "STEP_KEYS",
    "ActivityStep",
    "Branch",
    "ChildStep",
    "ChoiceStep",
    "Compensation",
    "MapStep",
    "Nesting",
    "ParallelStep",
    "RetryPolicy",
    "SignalStep",
    "SleepStep",
    "Step",
    "StepKey",
    "Timeouts",
    "abandoned",
    "begin",
    "compensation",
    "inner_done",
    "nesting",
    "result",
    "syntax",
    "timer",
]
