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
from ._operations import operation_paths, operation_schemas
from ._schedules import schedule_paths
from ._schemas import (
    _ID,
    _INSTANCE_ID,
    _JSON,
    _MISSING_ERRORS,
    _NAME,
    _REFUSED_ERRORS,
    _VERSION,
    _WORKFLOW_TYPE,
    _content,
    _errors,
    _ok,
    _optional_body,
    _param,
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
    location = {"Location": {"schema": {"type": "string"}, "description": "The instance's URL."}}

    def operation(
        operation_id: str,
        summary: str,
        answers: dict[str, Any],
        *,
        errors: tuple[str, ...] = (),
        **more: Any,
    ) -> dict[str, Any]:
        """An operation that needs the token if the app does.

        Its responses are ``answers``, then the shared error answers of
        ``errors`` (503 always, 401 with ``auth``); ``more`` are its other
        fields (``parameters``, ``requestBody``, ``description``).
        """
        responses = {**answers, **_errors(*errors, auth=auth)}
        return {"operationId": operation_id, "summary": summary, **more, "responses": responses}

    def open_operation(operation_id: str, summary: str, answer: dict[str, Any]) -> dict[str, Any]:
        """An operation served without a token (probes and tooling must reach it)."""
        responses = {"200": answer, **_errors(auth=False)}
        return {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": responses,
        }

    def stop(operation_id: str, summary: str) -> dict[str, Any]:
        """Cancel or terminate: the instance, an optional reason, and the same answers."""
        return operation(
            operation_id,
            summary,
            published,
            errors=_MISSING_ERRORS,
            parameters=[_INSTANCE_ID],
            requestBody=_optional_body(_ref("ReasonRequest")),
        )

    definition = {"200": _ok("The definition.", _ref("Definition"))}
    published = {"202": _ok("Published.", _ref("Accepted"))}
    paths: dict[str, Any] = {
        "/health": {
            "get": open_operation(
                "health", "Whether the API is up (no token needed)", _ok("Up.", _ref("Health"))
            )
        },
        "/openapi.json": {
            "get": open_operation(
                "openapi",
                "This document (no token needed)",
                _ok("The OpenAPI document.", {"type": "object"}),
            )
        },
        "/definitions": {
            "get": operation(
                "listDefinitions",
                "Every registered workflow type and its versions",
                {"200": _ok("Types and versions.", _ref("DefinitionIndex"))},
            ),
            "post": operation(
                "registerDefinition",
                "Register a definition (idempotent for identical content)",
                {"201": _ok("Registered (or already registered, identical).", _ref("Registered"))},
                errors=("400", "409", "413", "415", "422"),
                requestBody={
                    "required": True,
                    "content": {
                        _JSON: {"schema": _ref("Definition")},
                        "application/yaml": {"schema": {"type": "string"}},
                        "text/yaml": {"schema": {"type": "string"}},
                        "application/x-yaml": {"schema": {"type": "string"}},
                    },
                },
            ),
        },
        "/definitions/{type}": {
            "get": operation(
                "getDefinition",
                "The newest version of a workflow type, in canonical plain form",
                definition,
                errors=("404", "422"),
                parameters=[_WORKFLOW_TYPE],
            )
        },
        "/definitions/{type}/{version}": {
            "get": operation(
                "getDefinitionVersion",
                "One version of a workflow type, in canonical plain form",
                definition,
                errors=("404", "422"),
                parameters=[
                    _WORKFLOW_TYPE,
                    _param("path", "version", "The version.", _VERSION),
                ],
            )
        },
        "/workflows": {
            "get": operation(
                "listWorkflows",
                "A page of instance summaries, oldest first",
                {"200": _ok("The page, and how many match in all.", _ref("SummaryPage"))},
                errors=("422",),
                parameters=[
                    _param("query", "type", "Only instances of this workflow type.", _NAME),
                    _param(
                        "query",
                        "status",
                        "Only instances in this status.",
                        {"type": "string", "enum": [str(status) for status in InstanceStatus]},
                    ),
                    _param(
                        "query",
                        "limit",
                        "Rows in the page.",
                        {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_PAGE,
                            "default": DEFAULT_PAGE,
                        },
                    ),
                    _param(
                        "query",
                        "offset",
                        "Rows to skip.",
                        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                    ),
                ],
            )
        },
        # One template serves both: POST names a workflow type, GET an
        # instance id (OpenAPI forbids two templates differing only in names).
        "/workflows/{type_or_id}": {
            "post": operation(
                "startWorkflow",
                "Start an instance of a workflow type",
                {
                    "201": _ok("Started and stored.", _ref("Started"), headers=location),
                    "202": _ok(
                        "Start accepted, not yet stored: pending.",
                        _ref("Pending"),
                        headers=location,
                    ),
                },
                errors=_REFUSED_ERRORS,
                description=(
                    "201 once the orchestrator has stored the instance (or an instance "
                    "of that type with that id already exists); 202 (pending) if it has "
                    "not within a few seconds: the start is accepted and will be taken "
                    "once an orchestrator runs; 409 if the id belongs to an instance of "
                    "another type."
                ),
                parameters=[_param("path", "type_or_id", "The workflow type to start.", _NAME)],
                requestBody={"required": True, "content": _content(_ref("StartRequest"))},
            ),
            "get": operation(
                "getWorkflow",
                "An instance as stored: status, input, output, error, steps",
                {"200": _ok("The instance.", _ref("Instance"))},
                errors=("404", "422"),
                parameters=[_param("path", "type_or_id", "The instance's id.", _ID)],
            ),
        },
        "/workflows/{id}/result": {
            "get": operation(
                "getResult",
                "The instance's outcome, waiting up to ``wait`` seconds for it",
                {
                    "200": _ok("Completed: the output.", _ref("Completed")),
                    "202": _ok("Not finished yet.", _ref("Unfinished")),
                    "409": _ok("Failed, cancelled or terminated.", _ref("Unsuccessful")),
                },
                errors=("404", "422"),
                parameters=[
                    _INSTANCE_ID,
                    _param(
                        "query",
                        "wait",
                        "Seconds to wait for the instance to finish.",
                        {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
                    ),
                ],
            )
        },
        "/workflows/{id}/history": {
            "get": operation(
                "getHistory",
                "The instance's history records, in order",
                {"200": _ok("The records.", _ref("History"))},
                errors=("404", "422"),
                parameters=[_INSTANCE_ID],
            )
        },
        "/workflows/{id}/signals/{name}": {
            "post": operation(
                "signalWorkflow",
                "Send a signal (kept until the instance waits for it)",
                published,
                errors=_MISSING_ERRORS,
                parameters=[_INSTANCE_ID, _param("path", "name", "The signal's name.", _NAME)],
                requestBody={"required": True, "content": _content(_ref("SignalRequest"))},
            )
        },
        "/workflows/{id}/cancel": {
            "post": stop(
                "cancelWorkflow",
                "Cancel: compensations run, then it ends cancelled (no-op if finished)",
            )
        },
        "/workflows/{id}/terminate": {
            "post": stop(
                "terminateWorkflow", "Stop at once, without compensation (no-op if finished)"
            )
        },
        "/slots": {
            "get": operation(
                "listSlots",
                "The key values of concurrency limits in use: holders and queue, in order",
                {"200": _ok("The key values.", _ref("Slots"))},
            )
        },
        "/workers": {
            "get": operation(
                "listWorkers",
                "The live worker processes: the activity types each serves, when it was last seen",
                {"200": _ok("The live workers, sorted by id.", _ref("Workers"))},
            )
        },
    }
    paths.update(operation_paths(operation))
    paths.update(schedule_paths(operation))
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
            "schemas": {**_schemas(), **operation_schemas()},
            "responses": _responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if auth:
        document["security"] = [{"bearer": []}]
    return document
