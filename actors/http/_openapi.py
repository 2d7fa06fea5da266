"""The HTTP Engine API's contract as data: its bounds and its OpenAPI document.

The document is written by hand, not derived from the handlers, so that it
states exactly what ``actors/_api.py`` accepts and answers; the schema tests
(``tests/api/test_api_schema.py``) hold the two together. The bounds below
are used by both, so a change to one is a change to the other.
"""

from __future__ import annotations

from typing import Any, Final

from ..core import ID_PATTERN, MAX_STEPS, MAX_VERSION, NAME_PATTERN, InstanceStatus, StepStatus
from ..wire import DEFAULT_LIMITS, MAX_NUMBER, MAX_PAYLOAD_DEPTH, MIN_NUMBER

__all__ = [
    "API_VERSION",
    "DEFAULT_PAGE",
    "ID_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_REASON",
    "MAX_WAIT",
    "NAME_PATTERN",
    "openapi_document",
]

API_VERSION: Final = "1.0.0"
#: The largest request body read; a larger one is refused with 413.
MAX_BODY_BYTES: Final = 1024 * 1024
#: The longest ``wait`` of ``GET /workflows/{id}/result``, in seconds.
MAX_WAIT: Final = 60.0
#: ``GET /workflows``: rows per page by default, at most, and the largest offset.
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
MAX_OFFSET: Final = 1_000_000_000
#: The longest cancel or terminate reason, in characters.
MAX_REASON: Final = 4096
#: Workflow types and signal names; instance ids (also signal ids).

_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def _ok(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _content(schema), **extra}


def _errors(*codes: str, auth: bool) -> dict[str, Any]:
    """References to the shared error responses, with 401 when a token is required."""
    names = {
        "400": "BadRequest",
        "401": "Unauthorized",
        "404": "NotFound",
        "409": "Conflict",
        "413": "PayloadTooLarge",
        "415": "UnsupportedMediaType",
        "422": "Unprocessable",
        "503": "Unavailable",
    }
    wanted = sorted({*codes, "503", *(("401",) if auth else ())})
    return {code: {"$ref": f"#/components/responses/{names[code]}"} for code in wanted}


def _path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_NAME: Final = {"type": "string", "pattern": NAME_PATTERN}
_ID: Final = {"type": "string", "pattern": ID_PATTERN}
_VERSION: Final = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
#: An instance's version: 0 for one that failed before it ran a definition.
_INSTANCE_VERSION: Final = {
    **_VERSION,
    "minimum": 0,
    "description": (
        "The version it runs; 0 for an instance that failed before it could start "
        "(its error says why: a type no longer readable, an input the engine cannot keep)."
    ),
}
_INSTANCE_ID: Final = _path_param("id", "The instance's id.", _ID)
#: An optional field may also be ``null``, which means the same as leaving it out.
_NULL_IS_ABSENT: Final = " ``null`` is the same as leaving it out."


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, also allowing ``null`` (a keyword other than ``type`` ignores a null)."""
    return {**schema, "type": [schema["type"], "null"]}


def _payload_schemas() -> dict[str, Any]:
    """``Payload``: any JSON value the engine carries, as JSON Schema can say it exactly.

    Numbers from -2**64 to 2**64-1, and lists and objects at most
    MAX_PAYLOAD_DEPTH deep: JSON Schema has no depth bound, so the levels
    are spelled out, ``Payload`` holding ``Payload1`` ... down to
    ``PayloadN``, whose lists and objects hold only scalars.
    """
    scalar = [
        {"type": ["null", "boolean", "string"]},
        {"type": "number", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER},
    ]
    levels: dict[str, Any] = {}
    below: dict[str, Any] = {"anyOf": scalar}
    for level in range(MAX_PAYLOAD_DEPTH, 0, -1):
        name = "Payload" if level == 1 else f"Payload{level}"
        levels[name] = {
            "anyOf": [
                *scalar,
                {"type": "array", "items": below},
                {"type": "object", "additionalProperties": below},
            ]
        }
        below = _ref(name)
    levels["Payload"]["description"] = (
        "Any JSON value whose numbers are from -2**64 to 2**64-1 (whole or not: JSON has "
        f"one number type), nested at most {MAX_PAYLOAD_DEPTH} lists and objects deep. "
        "``Payload2`` and on are the levels below. Beyond what a schema can say: at most "
        f"{DEFAULT_LIMITS.max_items} list elements and object members in all (422), and "
        "the size limits (413)."
    )
    return dict(reversed(levels.items()))


def _schemas() -> dict[str, Any]:
    statuses = [str(status) for status in InstanceStatus]
    return {
        **_payload_schemas(),
        "Error": {
            "type": "object",
            "description": "Every error answer: what kind of error, and what went wrong.",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": _ref("FieldProblem")},
                    },
                }
            },
        },
        "FieldProblem": {
            "type": "object",
            "description": "One problem with a request: the field's path, and what is wrong.",
            "required": ["path", "message"],
            "additionalProperties": False,
            "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
        },
        "WorkflowError": {
            "type": "object",
            "description": "A failure recorded by the engine (an activity's, or the workflow's).",
            "required": ["type", "message", "traceback", "non_retryable"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "traceback": {"type": "string"},
                "non_retryable": {"type": "boolean"},
                "cause": {"type": "object", "description": "The error behind this one."},
            },
        },
        "Definition": {
            "type": "object",
            "description": (
                "A workflow definition in plain form (see docs/definitions.md for the steps). "
                "The engine validates it in full; the schema states only its outline."
            ),
            "required": ["type", "steps"],
            "additionalProperties": False,
            "properties": {
                "type": _NAME,
                "version": {**_VERSION, "default": 1},
                "description": {"type": "string"},
                "output": {"type": ["string", "null"], "description": "A JMESPath expression."},
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_STEPS,
                    "items": {"type": "object"},
                },
            },
        },
        "Registered": {
            "type": "object",
            "required": ["type", "version"],
            "additionalProperties": False,
            "properties": {"type": _NAME, "version": _VERSION},
        },
        "DefinitionIndex": {
            "type": "object",
            "description": "Every registered workflow type, with its versions in ascending order.",
            "additionalProperties": {"type": "array", "items": _VERSION},
        },
        "StartRequest": {
            "type": "object",
            "required": ["input"],
            "additionalProperties": False,
            "properties": {
                "input": {**_ref("Payload"), "description": "The workflow's input."},
                "id": {
                    **_or_null(_ID),
                    "description": (
                        "The instance id, and the idempotency key of the start; "
                        "random when left out." + _NULL_IS_ABSENT
                    ),
                },
                "version": {
                    **_or_null(_VERSION),
                    "description": "The version to run; the newest if left out." + _NULL_IS_ABSENT,
                },
            },
        },
        "Started": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {"id": _ID},
        },
        "Accepted": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {"id": _ID},
        },
        "Pending": {
            "type": "object",
            "description": "Accepted by the broker; no orchestrator has stored it yet.",
            "required": ["id", "status"],
            "additionalProperties": False,
            "properties": {"id": _ID, "status": {"const": "pending"}},
        },
        "SignalRequest": {
            "type": "object",
            "required": ["payload"],
            "additionalProperties": False,
            "properties": {
                "payload": {**_ref("Payload"), "description": "The signal's payload."},
                "signal_id": {
                    **_or_null(_ID),
                    "description": (
                        "Makes a retried send count once (within the broker's window)."
                        + _NULL_IS_ABSENT
                    ),
                },
            },
        },
        "ReasonRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "reason": {
                    **_or_null({"type": "string", "maxLength": MAX_REASON}),
                    "description": "Recorded in the history." + _NULL_IS_ABSENT,
                }
            },
        },
        "Summary": {
            "type": "object",
            "required": ["id", "type", "version", "status", "created_at", "updated_at"],
            "additionalProperties": False,
            "properties": {
                "id": _ID,
                "type": _NAME,
                "version": _INSTANCE_VERSION,
                "status": {"type": "string", "enum": statuses},
                "created_at": {"type": "number", "description": "Seconds since the epoch."},
                "updated_at": {"type": "number", "description": "Seconds since the epoch."},
            },
        },
        "SummaryPage": {
            "type": "object",
            "required": ["items", "total"],
            "additionalProperties": False,
            "properties": {
                "items": {"type": "array", "items": _ref("Summary")},
                "total": {"type": "integer", "minimum": 0, "description": "How many match in all."},
            },
        },
        "StepState": {
            "type": "object",
            "description": (
                "One running copy of a step, under its key (``ship@3``, ``charge~undo``). "
                "Fields beyond those listed may be added."
            ),
            "required": ["status", "attempt", "scheduled_at"],
            "properties": {
                "status": {"type": "string", "enum": [str(status) for status in StepStatus]},
                "attempt": {"type": "integer"},
                "scheduled_at": {"type": "number"},
                "finished_at": {"type": "number"},
                "output": {},
                "error": _ref("WorkflowError"),
                "done": {"type": "integer"},
                "branch": {"type": "integer"},
                "items": {"type": "array"},
                "next_item": {"type": "integer"},
                "finished_items": {"type": "integer"},
            },
        },
        "Instance": {
            "type": "object",
            "required": [
                "id",
                "type",
                "version",
                "status",
                "input",
                "output",
                "error",
                "created_at",
                "updated_at",
                "steps",
                "compensation",
            ],
            "additionalProperties": False,
            "properties": {
                "id": _ID,
                "type": _NAME,
                "version": _INSTANCE_VERSION,
                "status": {"type": "string", "enum": statuses},
                "input": {},
                "output": {},
                "error": {"anyOf": [_ref("WorkflowError"), {"type": "null"}]},
                "created_at": {"type": "number"},
                "updated_at": {"type": "number"},
                "steps": {"type": "object", "additionalProperties": _ref("StepState")},
                "compensation": {"enum": ["completed", "failed", None]},
            },
        },
        "Completed": {
            "type": "object",
            "required": ["status", "output"],
            "additionalProperties": False,
            "properties": {"status": {"const": "completed"}, "output": {}},
        },
        "Unfinished": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"enum": ["pending", "running", "compensating"]}},
        },
        "Unsuccessful": {
            "type": "object",
            "description": "How a finished instance that did not complete ended.",
            "required": ["status", "error"],
            "additionalProperties": False,
            "properties": {
                "status": {"enum": ["failed", "cancelled", "terminated"]},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["WorkflowFailed", "WorkflowCancelled"]},
                        "message": {"type": "string"},
                        "workflow_error": _ref("WorkflowError"),
                    },
                },
            },
        },
        "HistoryRecord": {
            "type": "object",
            "required": ["seq", "kind", "at", "detail"],
            "additionalProperties": False,
            "properties": {
                "seq": {"type": "integer"},
                "kind": {"type": "string"},
                "at": {"type": "number", "description": "Seconds since the epoch."},
                "detail": {"type": "object"},
            },
        },
        "History": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("HistoryRecord")}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ok"}},
        },
    }


def _responses() -> dict[str, Any]:
    def error(description: str, **extra: Any) -> dict[str, Any]:
        return {"description": description, "content": _content(_ref("Error")), **extra}

    return {
        "BadRequest": error("The body is not valid JSON (or YAML), or is missing."),
        "Unauthorized": error(
            "No bearer token, or the wrong one.",
            headers={"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
        ),
        "NotFound": error("No such workflow type, version or instance."),
        "Conflict": error("The request conflicts with what is stored."),
        "PayloadTooLarge": error(
            f"The body is over {MAX_BODY_BYTES} bytes, or a payload is over the engine's limit."
        ),
        "UnsupportedMediaType": error("The body's Content-Type is not one this endpoint reads."),
        "Unprocessable": error(
            "A field, parameter, name or id is not valid; ``details`` may say which."
        ),
        "Unavailable": error(
            "The broker (NATS) could not be reached, or refused (``BrokerUnavailable``, "
            "``StorageFull``); or the API is serving as many requests as it may at once "
            "(``Overloaded``). Try again after ``Retry-After`` seconds.",
            headers={"Retry-After": {"schema": {"type": "string"}, "required": True}},
        ),
    }


def openapi_document(*, auth: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API.

    ``auth``: whether the app requires a bearer token (then every operation
    but ``/health`` and ``/openapi.json`` declares it, and a 401 answer).
    """
    reason_body = {
        "required": False,
        "description": "Optional; an empty body is the same as ``{}``.",
        "content": _content(_ref("ReasonRequest")),
    }
    location = {"Location": {"schema": {"type": "string"}, "description": "The instance's URL."}}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the API is up (no token needed)",
                "security": [],
                "responses": {"200": _ok("Up.", _ref("Health")), **_errors(auth=False)},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {
                    "200": _ok("The OpenAPI document.", {"type": "object"}),
                    **_errors(auth=False),
                },
            }
        },
        "/definitions": {
            "get": {
                "operationId": "listDefinitions",
                "summary": "Every registered workflow type and its versions",
                "responses": {
                    "200": _ok("Types and versions.", _ref("DefinitionIndex")),
                    **_errors(auth=auth),
                },
            },
            "post": {
                "operationId": "registerDefinition",
                "summary": "Register a definition (idempotent for identical content)",
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": _ref("Definition")},
                        "application/yaml": {"schema": {"type": "string"}},
                        "text/yaml": {"schema": {"type": "string"}},
                        "application/x-yaml": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "201": _ok(
                        "Registered (or already registered, identical).", _ref("Registered")
                    ),
                    **_errors("400", "409", "413", "415", "422", auth=auth),
                },
            },
        },
        "/definitions/{type}": {
            "get": {
                "operationId": "getDefinition",
                "summary": "The newest version of a workflow type, in canonical plain form",
                "parameters": [_path_param("type", "The workflow type.", _NAME)],
                "responses": {
                    "200": _ok("The definition.", _ref("Definition")),
                    **_errors("404", "422", auth=auth),
                },
            }
        },
        "/definitions/{type}/{version}": {
            "get": {
                "operationId": "getDefinitionVersion",
                "summary": "One version of a workflow type, in canonical plain form",
                "parameters": [
                    _path_param("type", "The workflow type.", _NAME),
                    _path_param("version", "The version.", _VERSION),
                ],
                "responses": {
                    "200": _ok("The definition.", _ref("Definition")),
                    **_errors("404", "422", auth=auth),
                },
            }
        },
        "/workflows": {
            "get": {
                "operationId": "listWorkflows",
                "summary": "A page of instance summaries, oldest first",
                "parameters": [
                    _query_param("type", "Only instances of this workflow type.", _NAME),
                    _query_param(
                        "status",
                        "Only instances in this status.",
                        {"type": "string", "enum": [str(status) for status in InstanceStatus]},
                    ),
                    _query_param(
                        "limit",
                        "Rows in the page.",
                        {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_PAGE,
                            "default": DEFAULT_PAGE,
                        },
                    ),
                    _query_param(
                        "offset",
                        "Rows to skip.",
                        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                    ),
                ],
                "responses": {
                    "200": _ok("The page, and how many match in all.", _ref("SummaryPage")),
                    **_errors("422", auth=auth),
                },
            }
        },
        # One template serves both: POST names a workflow type, GET an
        # instance id (OpenAPI forbids two templates differing only in names).
        "/workflows/{type_or_id}": {
            "post": {
                "operationId": "startWorkflow",
                "summary": "Start an instance of a workflow type",
                "description": (
                    "201 once the orchestrator has stored the instance (or an instance "
                    "of that type with that id already exists); 202 (pending) if it has "
                    "not within a few seconds: the start is accepted and will be taken "
                    "once an orchestrator runs; 409 if the id belongs to an instance of "
                    "another type."
                ),
                "parameters": [_path_param("type_or_id", "The workflow type to start.", _NAME)],
                "requestBody": {"required": True, "content": _content(_ref("StartRequest"))},
                "responses": {
                    "201": _ok("Started and stored.", _ref("Started"), headers=location),
                    "202": _ok(
                        "Start accepted, not yet stored: pending.",
                        _ref("Pending"),
                        headers=location,
                    ),
                    **_errors("400", "404", "409", "413", "415", "422", auth=auth),
                },
            },
            "get": {
                "operationId": "getWorkflow",
                "summary": "An instance as stored: status, input, output, error, steps",
                "parameters": [_path_param("type_or_id", "The instance's id.", _ID)],
                "responses": {
                    "200": _ok("The instance.", _ref("Instance")),
                    **_errors("404", "422", auth=auth),
                },
            },
        },
        "/workflows/{id}/result": {
            "get": {
                "operationId": "getResult",
                "summary": "The instance's outcome, waiting up to ``wait`` seconds for it",
                "parameters": [
                    _INSTANCE_ID,
                    _query_param(
                        "wait",
                        "Seconds to wait for the instance to finish.",
                        {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
                    ),
                ],
                "responses": {
                    "200": _ok("Completed: the output.", _ref("Completed")),
                    "202": _ok("Not finished yet.", _ref("Unfinished")),
                    "409": _ok("Failed, cancelled or terminated.", _ref("Unsuccessful")),
                    **_errors("404", "422", auth=auth),
                },
            }
        },
        "/workflows/{id}/history": {
            "get": {
                "operationId": "getHistory",
                "summary": "The instance's history records, in order",
                "parameters": [_INSTANCE_ID],
                "responses": {
                    "200": _ok("The records.", _ref("History")),
                    **_errors("404", "422", auth=auth),
                },
            }
        },
        "/workflows/{id}/signals/{name}": {
            "post": {
                "operationId": "signalWorkflow",
                "summary": "Send a signal (kept until the instance waits for it)",
                "parameters": [_INSTANCE_ID, _path_param("name", "The signal's name.", _NAME)],
                "requestBody": {"required": True, "content": _content(_ref("SignalRequest"))},
                "responses": {
                    "202": _ok("Published.", _ref("Accepted")),
                    **_errors("400", "404", "413", "415", "422", auth=auth),
                },
            }
        },
        "/workflows/{id}/cancel": {
            "post": {
                "operationId": "cancelWorkflow",
                "summary": "Cancel: compensations run, then it ends cancelled (no-op if finished)",
                "parameters": [_INSTANCE_ID],
                "requestBody": reason_body,
                "responses": {
                    "202": _ok("Published.", _ref("Accepted")),
                    **_errors("400", "404", "413", "415", "422", auth=auth),
                },
            }
        },
        "/workflows/{id}/terminate": {
            "post": {
                "operationId": "terminateWorkflow",
                "summary": "Stop at once, without compensation (no-op if finished)",
                "parameters": [_INSTANCE_ID],
                "requestBody": reason_body,
                "responses": {
                    "202": _ok("Published.", _ref("Accepted")),
                    **_errors("400", "404", "413", "415", "422", auth=auth),
                },
            }
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "actors Engine API",
            "version": API_VERSION,
            "description": (
                "Register workflow definitions, start, inspect, signal, cancel and "
                "terminate instances. Every error answer is "
                '``{"error": {"type", "message", "details"?}}``.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if auth:
        document["security"] = [{"bearer": []}]
    return document
