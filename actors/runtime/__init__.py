"""The engine at run time: orchestrators, instance actors, leases, workers, the client.

Trio services over a :mod:`transport`; what happens to an instance is the
core's decision, made by :func:`actors.core.decide`.
"""

from ._activity import ActivityError as ActivityError
from ._activity import ActivityInfo as ActivityInfo
from ._activity import ActivitySpec as ActivitySpec
from ._activity import activity as activity
from ._activity import activity_info as activity_info
from ._activity import collect_activities as collect_activities
from ._activity import heartbeat as heartbeat
from ._client import Client as Client
from ._flow import SlotInfo as SlotInfo
from ._history import HISTORY_LIMIT as HISTORY_LIMIT
from ._instances import InstanceConflictError as InstanceConflictError
from ._instances import InstanceInfo as InstanceInfo
from ._instances import UnknownWorkflowTypeError as UnknownWorkflowTypeError
from ._instances import WorkflowCancelledError as WorkflowCancelledError
from ._instances import WorkflowError as WorkflowError
from ._instances import WorkflowFailedError as WorkflowFailedError
from ._operations import BULK_RATE as BULK_RATE
from ._operations import InstanceNotFoundError as InstanceNotFoundError
from ._operations import OperationRefusedError as OperationRefusedError
from ._orchestrator import Orchestrator as Orchestrator
from ._orchestrator import OrchestratorConfig as OrchestratorConfig
from ._presence import WorkerPresence as WorkerPresence
from ._registry import VersionConflictError as VersionConflictError
from ._schedules import ScheduleDescription as ScheduleDescription
from ._schedules import ScheduleExistsError as ScheduleExistsError
from ._schedules import ScheduleNotFoundError as ScheduleNotFoundError
from ._schedules import ScheduleRun as ScheduleRun
from ._schedules import Schedules as Schedules
from ._schedules import schedule_summary as schedule_summary
from ._visibility import MAX_LIMIT as MAX_LIMIT
from ._visibility import InstanceFilters as InstanceFilters
from ._visibility import InstanceQuery as InstanceQuery
from ._visibility import InstanceSummary as InstanceSummary
from ._worker import Worker as Worker
from ._worker import WorkerConfig as WorkerConfig

__all__ = [
    "BULK_RATE",
    "ActivityError",
    "ActivityInfo",
    "ActivitySpec",
    "Client",
    "HISTORY_LIMIT",
    "InstanceConflictError",
    "InstanceInfo",
    "InstanceFilters",
    "InstanceNotFoundError",
    "OperationRefusedError",
    "InstanceQuery",
    "InstanceSummary",
    "MAX_LIMIT",
    "Orchestrator",
    "OrchestratorConfig",
    "SlotInfo",
    "ScheduleDescription",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "Schedules",
    "UnknownWorkflowTypeError",
    "VersionConflictError",
    "Worker",
    "WorkerConfig",
    "WorkerPresence",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowFailedError",
    "activity",
    "activity_info",
    "collect_activities",
    "heartbeat",
    "schedule_summary",
]
