"""The API's instance operations: signal-with-start (and, beside it, the operations
that act on an instance's run: pause, resume, retry, rerun, delete).

Kept apart from ``_api.py`` so that the operations' handlers and their part
of the OpenAPI document sit side by side: :class:`Operations` serves them,
:func:`operation_paths` and :func:`operation_schemas` describe them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from ..core import InvalidNameError, check_instance_id, check_name
from ..runtime import BULK_RATE, Client
from ._bounds import MAX_REASON
from ._requests import (
    _fields,
    _invalid,
    _json,
    _json_body,
    _optional,
    _payload,
    _string,
    _version,
)
from ._schemas import (
    _BODY_ERRORS,
    _ID,
    _INSTANCE_ID,
    _MISSING_ERRORS,
    _NAME,
    _NULL_IS_ABSENT,
    _REFUSED_ERRORS,
    _VERSION,
    _WORKFLOW_TYPE,
    _content,
    _ok,
    _optional_body,
    _or_null,
    _ref,
)

__all__ = ["Operations", "operation_paths", "operation_schemas"]


def _signal_id(value: Any) -> str | None:
    """An optional ``signal_id``: it becomes part of a broker message id."""
    if value is None:
        return None
    try:
        return check_instance_id(value)
    except InvalidNameError:
        _invalid("must be 1 to 128 letters, digits, '_' or '-'", "signal_id")


#: Bounds of a bulk retry's ``since`` (seconds) and ``rate`` (instances a second).
MAX_SINCE: Final = 366 * 86400.0
MIN_RATE: Final = 0.1
MAX_RATE: Final = 1000.0


@dataclass(frozen=True)
class _Who:
    """A body's ``by`` and ``reason`` (for the history), and all its fields."""

    by: str
    reason: str
    fields: dict[str, Any]


async def _who_body(request: Request, more: tuple[str, ...] = ()) -> _Who:
    """The optional body of an operation: ``by``, ``reason`` and the fields ``more``."""
    body = _fields(await _json_body(request, required=False), (), ("by", "reason", *more))
    by = _optional(body, "by")
    reason = _optional(body, "reason")
    return _Who(
        "api" if by is None else _string(by, "by", MAX_REASON),
        "" if reason is None else _string(reason, "reason", MAX_REASON),
        body,
    )


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = _optional(body, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        _invalid(f"must be a number from {low:g} to {high:g}", key)
    return float(value)


class Operations:
    """The handlers of the operations, over the API's client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def handlers(self) -> list[tuple[str, str, Callable[[Request], Any]]]:
        """``(path, method, handler)`` of each operation, for the app's routes."""
        return [
            ("/workflows/{id}/signal-with-start", "POST", self.signal_with_start),
            ("/workflows/{id}/pause", "POST", self.pause),
            ("/workflows/{id}/resume", "POST", self.resume),
            ("/workflows/{id}/retry", "POST", self.retry),
            ("/workflows/{id}/rerun", "POST", self.rerun),
            ("/types/{type}/pause", "POST", self.pause_type),
            ("/types/{type}/resume", "POST", self.resume_type),
            ("/retries", "POST", self.retry_matching),
            ("/workflows/{id}/delete", "POST", self.delete),
        ]

    async def delete(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        _fields(await _json_body(request, required=False))
        await self._client.delete(instance_id)
        return _json({"id": instance_id}, 202)

    async def pause(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        body = await _who_body(request)
        await self._client.pause(instance_id, body.reason, by=body.by)
        return _json({"id": instance_id}, 202)

    async def resume(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        body = await _who_body(request)
        await self._client.resume(instance_id, body.reason, by=body.by)
        return _json({"id": instance_id}, 202)

    async def retry(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        body = await _who_body(request, ("step",))
        step = _optional(body.fields, "step")
        if step is not None and not isinstance(step, str):
            _invalid("must be a string", "step")
        try:
            run = await self._client.retry(instance_id, step=step, reason=body.reason, by=body.by)
        except ValueError as exc:
            _invalid(str(exc), "step")
        return _json({"id": instance_id, "run": run}, 202)

    async def rerun(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        body = _fields(await _json_body(request, required=False), (), ("id",))
        wanted = _optional(body, "id")
        if wanted is not None:
            if not isinstance(wanted, str):
                _invalid("must be a string", "id")
            check_instance_id(wanted)
        new_id = await self._client.rerun(instance_id, id=wanted)
        return _json({"id": new_id}, 202, {"Location": f"/workflows/{new_id}"})

    async def pause_type(self, request: Request) -> Response:
        workflow_type = check_name("workflow type", request.path_params["type"])
        body = await _who_body(request, ("running",))
        running = _optional(body.fields, "running")
        if running is not None and not isinstance(running, bool):
            _invalid("must be a boolean", "running")
        sent = await self._client.pause_type(
            workflow_type, body.reason, by=body.by, running=bool(running)
        )
        return _json({"type": workflow_type, "instances": sent})

    async def resume_type(self, request: Request) -> Response:
        workflow_type = check_name("workflow type", request.path_params["type"])
        body = await _who_body(request)
        sent = await self._client.resume_type(workflow_type, body.reason, by=body.by)
        return _json({"type": workflow_type, "instances": sent})

    async def retry_matching(self, request: Request) -> Response:
        body = await _who_body(request, ("type", "status", "since", "step", "rate"))
        fields = body.fields
        workflow_type = _optional(fields, "type")
        if workflow_type is not None:
            if not isinstance(workflow_type, str):
                _invalid("must be a string", "type")
            check_name("workflow type", workflow_type)
        status = _optional(fields, "status") or "failed"
        if status not in ("failed", "cancelled", "terminated"):
            _invalid("must be failed, cancelled or terminated", "status")
        since = _number(fields, "since", 0.0, MAX_SINCE)
        rate = _number(fields, "rate", MIN_RATE, MAX_RATE)
        step = _optional(fields, "step")
        if step is not None and not isinstance(step, str):
            _invalid("must be a string", "step")
        retried = await self._client.retry_matching(
            workflow_type=workflow_type,
            status=status,
            since=since,
            step=step,
            reason=body.reason,
            by=body.by,
            rate=BULK_RATE if rate is None else rate,
        )
        return _json({"retried": retried, "count": len(retried)})

    async def signal_with_start(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        body = _fields(
            await _json_body(request, required=True),
            ("type", "signal"),
            ("payload", "input", "version", "signal_id"),
        )
        if not isinstance(body["type"], str):
            _invalid("must be a string", "type")
        if not isinstance(body["signal"], str):
            _invalid("must be a string", "signal")
        workflow_type = check_name("workflow type", body["type"])
        name = check_name("signal name", body["signal"])
        version = _optional(body, "version")
        version = 0 if version is None else _version(version, "version")
        payload = _payload(body.get("payload"), "payload")
        input_value = _payload(body.get("input"), "input")
        signal_id = _signal_id(_optional(body, "signal_id"))
        existed = await self._client.signal_with_start(
            workflow_type,
            instance_id,
            name,
            payload,
            input=input_value,
            version=version,
            signal_id=signal_id,
        )
        return _json({"id": instance_id, "existed": existed}, 202)


def operation_paths(operation: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The operations' paths, made with the document's ``operation`` (see ``_openapi.py``)."""
    accepted = {"202": _ok("Published.", _ref("Accepted"))}

    def post(
        operation_id: str,
        summary: str,
        answers: dict[str, Any],
        errors: tuple[str, ...],
        body: dict[str, Any],
        *,
        description: str | None = None,
        target: dict[str, Any] | None = _INSTANCE_ID,
    ) -> dict[str, Any]:
        """A POST with an optional JSON ``body`` on ``target`` (a path parameter, if any)."""
        more: dict[str, Any] = {} if description is None else {"description": description}
        if target is not None:
            more["parameters"] = [target]
        return {
            "post": operation(
                operation_id,
                summary,
                answers,
                errors=errors,
                **more,
                requestBody=_optional_body(body),
            )
        }

    return {
        "/workflows/{id}/signal-with-start": {
            "post": operation(
                "signalWithStart",
                "Signal an instance, starting it first if it does not exist",
                {"202": _ok("Published.", _ref("SignalWithStartAccepted"))},
                errors=_REFUSED_ERRORS,
                description=(
                    "One message: the orchestrator starts the instance as ``type`` with "
                    "``input`` if it is not stored, then delivers the signal; if it is "
                    "stored (as that type) it delivers the signal alone. 404 for a type "
                    "not registered; 409 if the id belongs to an instance of another type."
                ),
                parameters=[_INSTANCE_ID],
                requestBody={"required": True, "content": _content(_ref("SignalWithStart"))},
            )
        },
        "/workflows/{id}/pause": post(
            "pauseWorkflow",
            "Pause: nothing new is dispatched until it is resumed",
            accepted,
            _REFUSED_ERRORS,
            _ref("WhoRequest"),
            description=(
                "Tasks already out run to their end; their results, timers that come "
                "due and signals that arrive are kept and act on resume. 409 for a "
                "finished instance; a no-op for one already paused."
            ),
        ),
        "/workflows/{id}/resume": post(
            "resumeWorkflow",
            "Resume a paused instance (a no-op if it is not paused)",
            accepted,
            _MISSING_ERRORS,
            _ref("WhoRequest"),
        ),
        "/workflows/{id}/retry": post(
            "retryWorkflow",
            "Run a failed, cancelled or terminated instance again, as its next run",
            {"202": _ok("Published.", _ref("RetryAccepted"))},
            _REFUSED_ERRORS,
            _ref("RetryRequest"),
            description=(
                "From the top-level step ``step``, or the first that did not complete; "
                "the steps before it are kept with their outputs. 409 for an instance "
                "in another status, or whose definition is gone."
            ),
        ),
        "/workflows/{id}/rerun": post(
            "rerunWorkflow",
            "Start a new instance with the same type, version and input",
            accepted,
            _REFUSED_ERRORS,
            _ref("RerunRequest"),
        ),
        "/types/{type}/pause": post(
            "pauseType",
            "Pause a workflow type: its new starts are stored, and begin on resume",
            {"200": _ok("Paused.", _ref("TypeOperation"))},
            _MISSING_ERRORS,
            _ref("PauseTypeRequest"),
            description=(
                "With ``running``, its running instances are paused too; "
                "``instances`` is how many were sent a pause."
            ),
            target=_WORKFLOW_TYPE,
        ),
        "/types/{type}/resume": post(
            "resumeType",
            "Resume a workflow type and every instance paused with it",
            {"200": _ok("Resumed.", _ref("TypeOperation"))},
            _BODY_ERRORS,
            _ref("WhoRequest"),
            target=_WORKFLOW_TYPE,
        ),
        "/workflows/{id}/delete": post(
            "deleteWorkflow",
            "Remove a finished instance now: its state, history and index entries",
            accepted,
            _REFUSED_ERRORS,
            {"type": "object", "additionalProperties": False},
            description=(
                "What its type's retention period does later, now. 409 for an "
                "instance that has not ended."
            ),
        ),
        "/retries": post(
            "retryMatching",
            "Retry every instance that matches, paced",
            {"200": _ok("Retried.", _ref("Retried"))},
            _BODY_ERRORS,
            _ref("RetryMatching"),
            description=(
                "Instances of ``type`` (any, if left out) in ``status`` (default "
                "failed) that ended at most ``since`` seconds ago, at ``rate`` a "
                "second (default 50). Answers once every one is sent its retry."
            ),
            target=None,
        ),
    }


def operation_schemas() -> dict[str, Any]:
    """The schemas the operations' requests and answers use."""
    text = {"type": ["string", "null"], "maxLength": MAX_REASON}
    who = {
        "by": {**text, "description": "Who acts (default: api)." + _NULL_IS_ABSENT},
        "reason": {**text, "description": "Recorded in the history." + _NULL_IS_ABSENT},
    }

    def body(**more: Any) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "properties": {**who, **more}}

    step = {
        **_or_null(_NAME),
        "description": "A top-level step (default: the first not completed).",
    }
    return {
        "WhoRequest": body(),
        "RetryRequest": body(step=step),
        "PauseTypeRequest": body(
            running={"type": ["boolean", "null"], "description": "Pause its running instances too."}
        ),
        "RetryMatching": body(
            type={**_or_null(_NAME), "description": "Default: every type."},
            status={"enum": ["failed", "cancelled", "terminated", None]},
            since={"type": ["number", "null"], "minimum": 0, "maximum": MAX_SINCE},
            step=step,
            rate={"type": ["number", "null"], "minimum": MIN_RATE, "maximum": MAX_RATE},
        ),
        "RerunRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"id": {**_or_null(_ID), "description": "The new instance's id."}},
        },
        "RetryAccepted": {
            "type": "object",
            "required": ["id", "run"],
            "additionalProperties": False,
            "properties": {"id": _ID, "run": {"type": "integer", "minimum": 2}},
        },
        "TypeOperation": {
            "type": "object",
            "required": ["type", "instances"],
            "additionalProperties": False,
            "properties": {"type": _NAME, "instances": {"type": "integer", "minimum": 0}},
        },
        "Retried": {
            "type": "object",
            "required": ["retried", "count"],
            "additionalProperties": False,
            "properties": {
                "retried": {"type": "array", "items": _ID},
                "count": {"type": "integer", "minimum": 0},
            },
        },
        "SignalWithStart": {
            "type": "object",
            "required": ["type", "signal"],
            "additionalProperties": False,
            "properties": {
                "type": {**_NAME, "description": "The workflow type to start if need be."},
                "signal": {**_NAME, "description": "The signal's name."},
                "payload": {**_ref("Payload"), "description": "The signal's payload."},
                "input": {**_ref("Payload"), "description": "The input, if it is started."},
                "version": {**_or_null(_VERSION), "description": "Default: the newest."},
                "signal_id": {
                    **_or_null(_ID),
                    "description": (
                        "Makes a retried call count once (within the broker's window)."
                        + _NULL_IS_ABSENT
                    ),
                },
            },
        },
        "SignalWithStartAccepted": {
            "type": "object",
            "required": ["id", "existed"],
            "additionalProperties": False,
            "properties": {
                "id": _ID,
                "existed": {
                    "type": "boolean",
                    "description": "Whether the instance was stored when the call was made.",
                },
            },
        },
    }
