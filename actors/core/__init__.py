"""The sans-io core: definitions, names and step keys, events, commands, state, ``decide``.

No I/O, no Trio, no transport: what :func:`decide` returns depends on its
arguments only, which is what lets the runtime around it stay thin.

The modules, from the bottom up (each imports, when it runs, only modules
listed before it; type annotations aside):

* ``_keys.py``, ``_expressions.py``, ``_limits.py``: names and step keys
  as the wire checks them, JMESPath expressions, size limits.
* ``_error_info.py``, ``_events.py``, ``_commands.py``, ``_state.py``: the
  data ``decide`` takes and gives.
* ``_refs.py`` (what a step key names), ``_scope.py`` (what a step's
  expressions see, what flows into it).
* ``_steps/``: the kinds of steps, one module each (``_activity.py``,
  ``_sleep.py``, ``_signal.py``, ``_child.py``, ``_parallel.py``,
  ``_map.py``, ``_choice.py``), and ``_dispatch.py``, the kind table:
  ``Step``, the union of the step classes, and one function per concern
  that dispatches on the kind.
* ``_flow.py``: workflow-level concurrency limits (``concurrency:``) and
  the keys they give.
* ``_places.py`` (where each step sits), ``_definition.py`` (the
  ``Definition`` and its errors), ``_parse.py`` (validation of plain data),
  ``_builder.py`` (definitions written in Python).
* ``_schedule_spec.py`` (when a schedule fires: cron in a time zone,
  intervals, jitter), ``_schedule.py`` (what its fires do: the firing
  rule, overlap policies, catch-up, backfills).
* ``_compensation.py`` (undoing what was done), ``_ending.py`` (how an
  instance ends), ``_decision.py`` (one decision under construction, and
  the moves the kinds make with it), ``_decide.py`` (``decide`` and
  ``fail_instance``: the dispatch on the event).

Adding a kind of step
---------------------

1. A module ``_steps/_<kind>.py`` with everything about the kind: its frozen
   dataclass (with ``to_data``, its plain form), ``FIELDS`` and ``parse``
   (the fields it allows beside the key that names it, and how they are
   checked), ``begin``, and whatever of ``result``, ``timer``,
   ``inner_done`` and ``abandoned`` it reacts to; the names of its history
   records are written there too.
2. In ``_steps/_dispatch.py``: the class in the ``Step`` union, its key in
   ``StepKey``, and one ``case`` in each dispatch function (``syntax``,
   ``nesting``, ``compensation``, ``begin``, ``result``, ``timer``,
   ``inner_done``, ``abandoned``); ``mypy`` reports each one left out
   (every one ends in ``assert_never``). The class is re-exported by
   ``_steps/__init__.py`` for the tests.
3. A method on ``Steps`` in ``_builder.py``, so that definitions written in
   Python can use it.
4. Tests: its smallest form in ``tests/test_core_kinds.py`` (which fails
   until every key has one), its behaviour in ``tests/test_core.py`` and
   its shapes in the tree state machine (``tests/test_core_tree_properties.py``).
5. Docs: its section in ``docs/definitions.md``, its history records in
   ``docs/wire.md``.

Only a kind that needs a new event or command (most do not) goes further:
the dataclass in ``_events.py`` or ``_commands.py``, its wire form in
``actors.wire`` and its handling in ``actors.runtime``.
"""

from ._builder import Steps as Steps
from ._builder import WorkflowBuilder as WorkflowBuilder
from ._commands import CancelActivity as CancelActivity
from ._commands import CancelChild as CancelChild
from ._commands import Command as Command
from ._commands import NotifyParent as NotifyParent
from ._commands import RecordHistory as RecordHistory
from ._commands import ScheduleActivity as ScheduleActivity
from ._commands import StartChild as StartChild
from ._commands import StartTimer as StartTimer
from ._decide import admit_instance as admit_instance
from ._decide import decide as decide
from ._decide import fail_instance as fail_instance
from ._decide import queue_instance as queue_instance
from ._definition import MAX_STEPS as MAX_STEPS
from ._definition import MAX_VERSION as MAX_VERSION
from ._definition import Definition as Definition
from ._definition import DefinitionError as DefinitionError
from ._definition import FieldError as FieldError
from ._error_info import ErrorInfo as ErrorInfo
from ._events import ActivityCompleted as ActivityCompleted
from ._events import ActivityFailed as ActivityFailed
from ._events import CancelRequested as CancelRequested
from ._events import Event as Event
from ._events import HeldEvent as HeldEvent
from ._events import Pause as Pause
from ._events import PauseRequested as PauseRequested
from ._events import ResumeRequested as ResumeRequested
from ._events import RetryRequested as RetryRequested
from ._events import ScheduleRef as ScheduleRef
from ._events import SignalReceived as SignalReceived
from ._events import SlotGranted as SlotGranted
from ._events import StartRequested as StartRequested
from ._events import TerminateRequested as TerminateRequested
from ._events import TimerFired as TimerFired
from ._events import TimerKind as TimerKind
from ._expressions import ExpressionError as ExpressionError
from ._flow import ConcurrencyLimit as ConcurrencyLimit
from ._flow import StepLimit as StepLimit
from ._flow import attempt_key_value as attempt_key_value
from ._flow import key_values as key_values
from ._flow import step_key_value as step_key_value
from ._flow import step_limit as step_limit
from ._keys import ID_PATTERN as ID_PATTERN
from ._keys import NAME_PATTERN as NAME_PATTERN
from ._keys import InvalidNameError as InvalidNameError
from ._keys import check_instance_id as check_instance_id
from ._keys import check_name as check_name
from ._keys import check_step_key as check_step_key
from ._limits import LimitExceededError as LimitExceededError
from ._limits import Limits as Limits
from ._operations import RETRYABLE as RETRYABLE
from ._operations import restart_step as restart_step
from ._parse import load_definition as load_definition
from ._parse import parse_definition as parse_definition
from ._parse import parse_duration as parse_duration
from ._schedule import MAX_BACKFILL_FIRES as MAX_BACKFILL_FIRES
from ._schedule import RECENT_RUNS as RECENT_RUNS
from ._schedule import Backfill as Backfill
from ._schedule import CancelRun as CancelRun
from ._schedule import Fire as Fire
from ._schedule import FireKind as FireKind
from ._schedule import Overlap as Overlap
from ._schedule import Run as Run
from ._schedule import Schedule as Schedule
from ._schedule import ScheduleEffect as ScheduleEffect
from ._schedule import ScheduleState as ScheduleState
from ._schedule import StartRun as StartRun
from ._schedule import TerminateRun as TerminateRun
from ._schedule import advance as advance
from ._schedule import fire_instance_id as fire_instance_id
from ._schedule import parse_time as parse_time
from ._schedule import request_backfill as request_backfill
from ._schedule import request_trigger as request_trigger
from ._schedule import schedule_from_data as schedule_from_data
from ._schedule import schedule_to_data as schedule_to_data
from ._schedule_spec import CronSpec as CronSpec
from ._schedule_spec import IntervalSpec as IntervalSpec
from ._schedule_spec import InvalidScheduleError as InvalidScheduleError
from ._schedule_spec import ScheduleSpec as ScheduleSpec
from ._state import RUN_ATTEMPTS as RUN_ATTEMPTS
from ._state import InstanceState as InstanceState
from ._state import InstanceStatus as InstanceStatus
from ._state import StepState as StepState
from ._state import StepStatus as StepStatus
from ._steps import ActivityStep as ActivityStep
from ._steps import RetryPolicy as RetryPolicy
from ._steps import Timeouts as Timeouts

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityStep",
    "CancelActivity",
    "CancelChild",
    "CancelRequested",
    "Command",
    "ConcurrencyLimit",
    "Definition",
    "DefinitionError",
    "ErrorInfo",
    "Event",
    "ExpressionError",
    "HeldEvent",
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
    "Pause",
    "PauseRequested",
    "RETRYABLE",
    "RUN_ATTEMPTS",
    "RecordHistory",
    "ResumeRequested",
    "RetryRequested",
    "RetryPolicy",
    "ScheduleActivity",
    "SignalReceived",
    "SlotGranted",
    "StartChild",
    "StartRequested",
    "StartTimer",
    "StepState",
    "StepLimit",
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
    "admit_instance",
    "attempt_key_value",
    "decide",
    "fail_instance",
    "key_values",
    "load_definition",
    "parse_definition",
    "queue_instance",
    "step_key_value",
    "step_limit",
    "parse_duration",
    "restart_step",
    # schedules
    "Backfill",
    "CancelRun",
    "CronSpec",
    "Fire",
    "FireKind",
    "IntervalSpec",
    "InvalidScheduleError",
    "MAX_BACKFILL_FIRES",
    "Overlap",
    "RECENT_RUNS",
    "Run",
    "Schedule",
    "ScheduleEffect",
    "ScheduleRef",
    "ScheduleSpec",
    "ScheduleState",
    "StartRun",
    "TerminateRun",
    "advance",
    "fire_instance_id",
    "parse_time",
    "request_backfill",
    "request_trigger",
    "schedule_from_data",
    "schedule_to_data",
]
