"""The HTTP Engine API's contract as data: its bounds and its OpenAPI document.

The document is written by hand, not derived from the handlers, so that it
states exactly what ``actors/_api.py`` accepts and answers; the schema tests
(``tests/api/test_api_schema.py``) hold the two together. The bounds below
are used by both, so a change to one is a change to the other.
"""

from __future__ import annotations

from typing import Any

from ..core import ID_PATTERN, NAME_PATTERN, InstanceStatus
from ._bounds import (
    API_VERSION,
    DEFAULT_PAGE,
    MAX_BODY_BYTES,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_REASON,
    MAX_WAIT,
)
from ._schemas import (
    _ID,
    _INSTANCE_ID,
    _JSON,
    _NAME,
    _VERSION,
    _content,
    _errors,
    _ok,
    _path_param,
    _query_param,
    _ref,
    _responses,
    _schemas,
)

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
