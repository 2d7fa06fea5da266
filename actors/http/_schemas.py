"""The schemas of the OpenAPI document: what every request and answer of the API holds."""

from __future__ import annotations

from typing import Any, Final, Literal

from ..core import ID_PATTERN, MAX_STEPS, MAX_VERSION, NAME_PATTERN, InstanceStatus, StepStatus
from ..wire import DEFAULT_LIMITS, MAX_NUMBER, MAX_PAYLOAD_DEPTH, MIN_NUMBER
from ._bounds import MAX_BODY_BYTES, MAX_REASON

_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def _optional_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional JSON body of ``schema``: no body at all is the same as ``{}``."""
    return {
        "required": False,
        "description": "Optional; an empty body is the same as ``{}``.",
        "content": _content(schema),
    }


def _ok(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _content(schema), **extra}


#: The error answers of an operation with a JSON body (bad JSON, too large,
#: not JSON, invalid); with 404 for one on something that may not exist;
#: with 409 too for one that may be refused in its state.
_BODY_ERRORS: Final = ("400", "413", "415", "422")
_MISSING_ERRORS: Final = ("400", "404", "413", "415", "422")
_REFUSED_ERRORS: Final = ("400", "404", "409", "413", "415", "422")


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


def _param(
    place: Literal["path", "query"], name: str, description: str, schema: dict[str, Any]
) -> dict[str, Any]:
    """A parameter in the path (required) or in the query (optional: left out, it has a default)."""
    return {
        "name": name,
        "in": place,
        "required": place == "path",
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
_INSTANCE_ID: Final = _param("path", "id", "The instance's id.", _ID)
_WORKFLOW_TYPE: Final = _param("path", "type", "The workflow type.", _NAME)
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
                "queued": {"type": "string"},
                "paused": {
                    "description": "While paused: who paused it, when and why.",
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["by", "reason", "at", "by_type"],
                            "properties": {
                                "by": {"type": "string"},
                                "reason": {"type": "string"},
                                "at": {"type": "number"},
                                "by_type": {"type": "boolean"},
                            },
                        },
                        {"type": "null"},
                    ],
                },
                "held": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Results, timers and signals kept while paused.",
                },
                "run": {"type": "integer", "minimum": 1, "description": "1, +1 per retry."},
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
            "properties": {"status": {"enum": ["pending", "queued", "running", "compensating"]}},
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
        "Slots": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("Slot")}},
        },
        "Slot": {
            "type": "object",
            "required": ["slot", "scope", "name", "key", "value", "limit", "holders", "queue"],
            "additionalProperties": False,
            "properties": {
                "slot": {"type": "string"},
                "scope": {"enum": ["workflow", "activity"]},
                "name": _NAME,
                "key": {"type": "string"},
                "value": {"type": ["string", "number"]},
                "limit": {"type": "integer", "minimum": 1},
                "holders": {"type": "array", "items": {"type": "string"}},
                "queue": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Workers": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("Worker")}},
        },
        "Worker": {
            "type": "object",
            "description": "A worker's entry in WORKER_PRESENCE (docs/wire.md).",
            "required": [
                "id",
                "host",
                "pid",
                "started_at",
                "activities",
                "concurrency",
                "running",
                "version",
                "seen",
                "ttl",
            ],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "host": {"type": "string"},
                "pid": {"type": "integer", "minimum": 0},
                "started_at": {"type": "number", "description": "Seconds since the epoch."},
                "activities": {"type": "array", "items": _NAME},
                "concurrency": {"type": "integer", "minimum": 1},
                "running": {"type": "integer", "minimum": 0},
                "version": {"type": "string"},
                "seen": {
                    "type": "number",
                    "description": "Its last write, in seconds since the epoch (its clock).",
                },
                "ttl": {
                    "type": "number",
                    "description": "Seconds after seen it is taken for dead.",
                },
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
