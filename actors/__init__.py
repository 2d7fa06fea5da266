"""A durable workflow engine on Trio and NATS JetStream.

Definitions (:func:`load_definition`, :class:`WorkflowBuilder`) are
registered and started through a :class:`Client`; an :class:`Orchestrator`
runs them, and :class:`Worker` s run their activities (functions marked with
:func:`activity`). Everything talks through a :mod:`transport`: NATS
JetStream, or an in-process broker for tests.
"""

# A full broker store refuses writes with this (a transport error): re-exported
# so that callers of Client.start can catch back-pressure without importing transport.
from transport import StorageFullError as StorageFullError

from ._activity import ActivityError as ActivityError
from ._activity import ActivityInfo as ActivityInfo
from ._activity import ActivitySpec as ActivitySpec
from ._activity import activity as activity
from ._activity import activity_info as activity_info
from ._activity import collect_activities as collect_activities
from ._activity import heartbeat as heartbeat
from ._api import create_app as create_app
from ._api import serve_api as serve_api
from ._builder import Steps as Steps
from ._builder import WorkflowBuilder as WorkflowBuilder
from ._client import Client as Client
from ._client import InstanceConflictError as InstanceConflictError
from ._client import InstanceInfo as InstanceInfo
from ._client import UnknownWorkflowTypeError as UnknownWorkflowTypeError
from ._client import WorkflowCancelledError as WorkflowCancelledError
from ._client import WorkflowError as WorkflowError
from ._client import WorkflowFailedError as WorkflowFailedError
from ._codec import CodecError as CodecError
from ._codec import CodecLimits as CodecLimits
from ._codec import Envelope as Envelope
from ._codec import PayloadTooLargeError as PayloadTooLargeError
from ._codec import decode as decode
from ._codec import encode as encode
from ._core import ErrorInfo as ErrorInfo
from ._core import InstanceStatus as InstanceStatus
from ._definition import ActivityStep as ActivityStep
from ._definition import Definition as Definition
from ._definition import DefinitionError as DefinitionError
from ._definition import FieldError as FieldError
from ._definition import RetryPolicy as RetryPolicy
from ._definition import Timeouts as Timeouts
from ._definition import load_definition as load_definition
from ._definition import parse_definition as parse_definition
from ._expressions import ExpressionError as ExpressionError
from ._limits import LimitExceededError as LimitExceededError
from ._limits import Limits as Limits
from ._orchestrator import Orchestrator as Orchestrator
from ._orchestrator import OrchestratorConfig as OrchestratorConfig
from ._registry import VersionConflictError as VersionConflictError
from ._visibility import InstanceSummary as InstanceSummary
from ._wire import InvalidNameError as InvalidNameError
from ._wire import Layout as Layout
from ._worker import Worker as Worker
from ._worker import WorkerConfig as WorkerConfig

__all__ = [
    "ActivityError",
    "ActivityInfo",
    "ActivitySpec",
    "ActivityStep",
    "Client",
    "CodecError",
    "CodecLimits",
    "Definition",
    "DefinitionError",
    "Envelope",
    "ErrorInfo",
    "ExpressionError",
    "FieldError",
    "InstanceConflictError",
    "InstanceInfo",
    "InstanceStatus",
    "InstanceSummary",
    "InvalidNameError",
    "Layout",
    "LimitExceededError",
    "Limits",
    "Orchestrator",
    "OrchestratorConfig",
    "PayloadTooLargeError",
    "RetryPolicy",
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
]
