"""A durable workflow engine on Trio and NATS JetStream.

Definitions (:func:`load_definition`, :class:`WorkflowBuilder`) are
registered and started through a :class:`Client`; an :class:`Orchestrator`
runs them, and :class:`Worker` s run their activities (functions marked with
:func:`activity`). Everything talks through a :mod:`transport`: NATS
JetStream, or an in-process broker for tests.

Every error the engine raises is an :class:`ActorsError`, of one of four
categories that say whose fault it is: :class:`RequestError` (the caller's),
:class:`OutcomeError` (the instance's), :class:`EngineError` and
:class:`BrokerError` (see :mod:`actors.errors`).
"""

# A full broker store refuses writes with this (a transport error): re-exported
# so that callers of Client.start can catch back-pressure without importing transport.
from transport import StorageFullError as StorageFullError

from .core import ActivityStep as ActivityStep
from .core import CronSpec as CronSpec
from .core import Definition as Definition
from .core import DefinitionError as DefinitionError
from .core import ErrorInfo as ErrorInfo
from .core import ExpressionError as ExpressionError
from .core import FieldError as FieldError
from .core import InstanceStatus as InstanceStatus
from .core import IntervalSpec as IntervalSpec
from .core import InvalidNameError as InvalidNameError
from .core import InvalidScheduleError as InvalidScheduleError
from .core import LimitExceededError as LimitExceededError
from .core import Limits as Limits
from .core import Overlap as Overlap
from .core import RetryPolicy as RetryPolicy
from .core import Schedule as Schedule
from .core import ScheduleSpec as ScheduleSpec
from .core import ScheduleState as ScheduleState
from .core import Steps as Steps
from .core import Timeouts as Timeouts
from .core import WorkflowBuilder as WorkflowBuilder
from .core import load_definition as load_definition
from .core import parse_definition as parse_definition
from .errors import ActorsError as ActorsError
from .errors import BrokerError as BrokerError
from .errors import EngineError as EngineError
from .errors import OutcomeError as OutcomeError
from .errors import RequestError as RequestError
from .errors import SizeLimitError as SizeLimitError
from .http import create_app as create_app
from .http import serve_api as serve_api
from .runtime import ActivityError as ActivityError
from .runtime import ActivityInfo as ActivityInfo
from .runtime import ActivitySpec as ActivitySpec
from .runtime import Client as Client
from .runtime import InstanceConflictError as InstanceConflictError
from .runtime import InstanceFilters as InstanceFilters
from .runtime import InstanceInfo as InstanceInfo
from .runtime import InstanceNotFoundError as InstanceNotFoundError
from .runtime import InstanceQuery as InstanceQuery
from .runtime import InstanceSummary as InstanceSummary
from .runtime import OperationRefusedError as OperationRefusedError
from .runtime import Orchestrator as Orchestrator
from .runtime import OrchestratorConfig as OrchestratorConfig
from .runtime import ScheduleDescription as ScheduleDescription
from .runtime import ScheduleExistsError as ScheduleExistsError
from .runtime import ScheduleNotFoundError as ScheduleNotFoundError
from .runtime import ScheduleRun as ScheduleRun
from .runtime import SlotInfo as SlotInfo
from .runtime import UnknownWorkflowTypeError as UnknownWorkflowTypeError
from .runtime import VersionConflictError as VersionConflictError
from .runtime import Worker as Worker
from .runtime import WorkerConfig as WorkerConfig
from .runtime import WorkerPresence as WorkerPresence
from .runtime import WorkflowCancelledError as WorkflowCancelledError
from .runtime import WorkflowError as WorkflowError
from .runtime import WorkflowFailedError as WorkflowFailedError
from .runtime import activity as activity
from .runtime import activity_info as activity_info
from .runtime import collect_activities as collect_activities
from .runtime import heartbeat as heartbeat
from .wire import CodecError as CodecError
from .wire import CodecLimits as CodecLimits
from .wire import Envelope as Envelope
from .wire import Layout as Layout
from .wire import MessageError as MessageError
from .wire import PayloadTooLargeError as PayloadTooLargeError
from .wire import decode as decode
from .wire import encode as encode

__all__ = [
    "ActivityError",
    "ActivityInfo",
    "ActivitySpec",
    "ActivityStep",
    "ActorsError",
    "BrokerError",
    "Client",
    "CodecError",
    "CodecLimits",
    "Definition",
    "DefinitionError",
    "EngineError",
    "Envelope",
    "ErrorInfo",
    "ExpressionError",
    "FieldError",
    "InstanceConflictError",
    "InstanceNotFoundError",
    "OperationRefusedError",
    "InstanceInfo",
    "InstanceStatus",
    "InstanceFilters",
    "InstanceQuery",
    "InstanceSummary",
    "InvalidNameError",
    "Layout",
    "LimitExceededError",
    "Limits",
    "MessageError",
    "Orchestrator",
    "OrchestratorConfig",
    "SlotInfo",
    "WorkerPresence",
    "OutcomeError",
    "PayloadTooLargeError",
    "RequestError",
    "RetryPolicy",
    "SizeLimitError",
    "StorageFullError",
    "Steps",
    "Timeouts",
    "UnknownWorkflowTypeError",
    "VersionConflictError",
    "Worker",
    "WorkerConfig",
    "WorkflowBuilder",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowFailedError",
    "activity",
    "activity_info",
    "collect_activities",
    "create_app",
    "decode",
    "encode",
    "heartbeat",
    "load_definition",
    "parse_definition",
    "serve_api",
    # schedules
    "CronSpec",
    "IntervalSpec",
    "InvalidScheduleError",
    "Overlap",
    "Schedule",
    "ScheduleDescription",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "ScheduleSpec",
    "ScheduleState",
]
