"""The sans-io core: definitions, names and step keys, events, commands, state, ``decide``.

No I/O, no Trio, no transport: what :func:`decide` returns depends on its
arguments only, which is what lets the runtime around it stay thin.
"""

from ._builder import Steps as Steps
from ._builder import WorkflowBuilder as WorkflowBuilder
from ._decide import ActivityCompleted as ActivityCompleted
from ._decide import ActivityFailed as ActivityFailed
from ._decide import CancelChild as CancelChild
from ._decide import CancelRequested as CancelRequested
from ._decide import Command as Command
from ._decide import ErrorInfo as ErrorInfo
from ._decide import Event as Event
from ._decide import InstanceState as InstanceState
from ._decide import InstanceStatus as InstanceStatus
from ._decide import NotifyParent as NotifyParent
from ._decide import RecordHistory as RecordHistory
from ._decide import ScheduleActivity as ScheduleActivity
from ._decide import SignalReceived as SignalReceived
from ._decide import StartChild as StartChild
from ._decide import StartRequested as StartRequested
from ._decide import StartTimer as StartTimer
from ._decide import StepState as StepState
from ._decide import StepStatus as StepStatus
from ._decide import TerminateRequested as TerminateRequested
from ._decide import TimerFired as TimerFired
from ._decide import TimerKind as TimerKind
from ._decide import decide as decide
from ._decide import fail_instance as fail_instance
from ._definition import MAX_STEPS as MAX_STEPS
from ._definition import MAX_VERSION as MAX_VERSION
from ._definition import ActivityStep as ActivityStep
from ._definition import Definition as Definition
from ._definition import DefinitionError as DefinitionError
from ._definition import FieldError as FieldError
from ._definition import RetryPolicy as RetryPolicy
from ._definition import Timeouts as Timeouts
from ._definition import load_definition as load_definition
from ._definition import parse_definition as parse_definition
from ._expressions import ExpressionError as ExpressionError
from ._keys import ID_PATTERN as ID_PATTERN
from ._keys import NAME_PATTERN as NAME_PATTERN
from ._keys import InvalidNameError as InvalidNameError
from ._keys import check_instance_id as check_instance_id
from ._keys import check_name as check_name
from ._keys import check_step_key as check_step_key
from ._limits import LimitExceededError as LimitExceededError
from ._limits import Limits as Limits

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityStep",
    "CancelChild",
    "CancelRequested",
    "Command",
    "Definition",
    "DefinitionError",
    "ErrorInfo",
    "Event",
    "ExpressionError",
    "FieldError",
    "ID_PATTERN",
    "InstanceState",
    "InstanceStatus",
    "InvalidNameError",
    "LimitExceededError",
    "Limits",
    "MAX_STEPS",
    "MAX_VERSION",
    "NAME_PATTERN",
    "NotifyParent",
    "RecordHistory",
    "RetryPolicy",
    "ScheduleActivity",
    "SignalReceived",
    "StartChild",
    "StartRequested",
    "StartTimer",
    "StepState",
    "StepStatus",
    "Steps",
    "TerminateRequested",
    "Timeouts",
    "TimerFired",
    "TimerKind",
    "WorkflowBuilder",
    "check_instance_id",
    "check_name",
    "check_step_key",
    "decide",
    "fail_instance",
    "load_definition",
    "parse_definition",
]
