"""The API's instance operations: signal-with-start (and, beside it, the operations
that act on an instance's run: pause, resume, retry, rerun, delete).

Kept apart from ``_api.py`` so that the operations' handlers and their part
of the OpenAPI document sit side by side: :class:`Operations` serves them,
:func:`operation_paths` and :func:`operation_schemas` describe them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..core import InvalidNameError, check_instance_id, check_name
from ..runtime import Client
from ._requests import _fields, _invalid, _json, _json_body, _optional, _payload, _version
from ._schemas import (
    _ID,
    _INSTANCE_ID,
    _NAME,
    _NULL_IS_ABSENT,
    _VERSION,
    _content,
    _ok,
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


class Operations:
    """The handlers of the operations, over the API's client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def handlers(self) -> list[tuple[str, str, Callable[[Request], Any]]]:
        """``(path, method, handler)`` of each operation, for the app's routes."""
        return [("/workflows/{id}/signal-with-start", "POST", self.signal_with_start)]

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
    return {
        "/workflows/{id}/signal-with-start": {
            "post": operation(
                "signalWithStart",
                "Signal an instance, starting it first if it does not exist",
                {"202": _ok("Published.", _ref("SignalWithStartAccepted"))},
                errors=("400", "404", "409", "413", "415", "422"),
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
    }


def operation_schemas() -> dict[str, Any]:
    """The schemas the operations' requests and answers use."""
    return {
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
