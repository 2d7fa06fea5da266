"""What a client learns of instances: their state as :class:`InstanceInfo`, and their outcomes.

A workflow that failed, was cancelled or was terminated reaches the caller
of :meth:`Client.result` as a :class:`WorkflowError`; a start the engine
cannot take as asked, as :class:`UnknownWorkflowTypeError` or
:class:`InstanceConflictError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core import ErrorInfo, InstanceState, InstanceStatus
from ..errors import OutcomeError, RequestError
from ..wire import decode_state, state_to_data

__all__ = [
    "InstanceConflictError",
    "InstanceInfo",
    "UnknownWorkflowTypeError",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowFailedError",
]


class WorkflowError(OutcomeError, http_status=500, http_type="InternalError"):
    """Base of the errors a client raises about a workflow instance.

    Raised as such when the client cannot learn what became of a start or a
    wait (a watch ended, a start was dropped): nothing the caller sent is at
    fault, and the API answers 500, as for the engine. Its subclasses say
    how an instance ended (409, as ``GET /workflows/{id}/result`` answers).
    """


# A WorkflowError too (as before there were categories), for callers who catch it so;
# the request comes first: that is whose fault it is.
class UnknownWorkflowTypeError(
    RequestError, WorkflowError, exit_code=3, http_status=404, http_type="UnknownWorkflowType"
):
    """No definition of that type (at that version) is registered."""


# A WorkflowError too, as UnknownWorkflowTypeError is.
class InstanceConflictError(
    RequestError, WorkflowError, http_status=409, http_type="InstanceConflict"
):
    """A start named an id that belongs to an instance of another workflow type.

    Nothing was started. ``existing_type`` is the type of the instance that
    has the id (stored, or started first and not stored yet).
    """

    def __init__(self, instance_id: str, existing_type: str, requested_type: str) -> None:
        super().__init__(
            f"instance {instance_id!r} is a {existing_type!r} workflow: it cannot be "
            f"started as {requested_type!r} (give another id)"
        )
        self.instance_id = instance_id
        self.existing_type = existing_type
        self.requested_type = requested_type


class WorkflowFailedError(WorkflowError, http_status=409, http_type="WorkflowFailed"):
    """The instance failed; ``error`` holds the type, message and traceback."""

    def __init__(self, instance_id: str, error: ErrorInfo) -> None:
        super().__init__(f"workflow {instance_id} failed: {error.type}: {error.message}")
        self.instance_id = instance_id
        self.error = error


class WorkflowCancelledError(WorkflowError, http_status=409, http_type="WorkflowCancelled"):
    """The instance was cancelled or terminated before it finished."""


@dataclass(frozen=True)
class InstanceInfo:
    """A snapshot of one instance, as stored."""

    id: str
    type: str
    version: int
    status: InstanceStatus
    input: Any
    output: Any
    error: ErrorInfo | None
    created_at: float
    updated_at: float
    #: Per step: status, attempt, output, error, scheduled_at, finished_at.
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``"completed"`` or ``"failed"`` if compensations ran, else ``None``.
    compensation: str | None = None
    #: While queued: the concurrency limit it waits behind.
    queued: str | None = None
    #: While paused: ``by``, ``reason``, ``at`` and ``by_type`` (paused with its type).
    paused: Mapping[str, Any] | None = None
    #: What it kept while paused (results, timers, signals), to decide on resume.
    held: int = 0
    #: Its run: 1, then one more each time it is retried.
    run: int = 1

    def to_data(self) -> dict[str, Any]:
        """The snapshot as plain JSON-able data (what the CLI and the API show)."""
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "status": str(self.status),
            "input": self.input,
            "output": self.output,
            "error": None if self.error is None else self.error.to_data(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "steps": {key: dict(step) for key, step in self.steps.items()},
            "compensation": self.compensation,
            **({} if self.queued is None else {"queued": self.queued}),
            "paused": None if self.paused is None else dict(self.paused),
            "held": self.held,
            "run": self.run,
        }


def _info(data: bytes) -> InstanceInfo:
    return _info_of(decode_state(data))


def _info_of(state: InstanceState) -> InstanceInfo:
    plain = state_to_data(state)
    return InstanceInfo(
        id=state.id,
        type=state.type,
        version=state.version,
        status=state.status,
        input=state.input,
        output=state.output,
        error=state.error,
        created_at=state.created_at,
        updated_at=state.updated_at,
        steps=plain["steps"],
        compensation=state.compensation,
        queued=state.queued,
        paused=plain.get("paused"),
        held=len(state.held),
        run=state.run,
    )


def _same_type(instance_id: str, existing_type: str, requested_type: str) -> None:
    """Raise :class:`InstanceConflictError` if the instance is of another type."""
    if existing_type != requested_type:
        raise InstanceConflictError(instance_id, existing_type, requested_type)


def _unknown(workflow_type: str, version: int) -> str:
    if version:
        return f"workflow type {workflow_type!r} has no version {version} registered"
    return f"workflow type {workflow_type!r} is not registered"
