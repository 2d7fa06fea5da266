"""The schedule endpoints of the HTTP API (``/schedules...``) and their OpenAPI paths.

Each is one call of ``Client.schedules``; the errors map by class as the
other endpoints' do (``InvalidSchedule`` 422, ``NoSuchSchedule`` 404,
``ScheduleExists`` 409).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from ..core import check_name, parse_time, schedule_from_data
from ..runtime import Client, schedule_summary
from ._bounds import MAX_REASON
from ._requests import _fields, _json, _json_body, _optional, _string
from ._schemas import _JSON, _MISSING_ERRORS, _NAME, _REFUSED_ERRORS, _content, _ok, _param

__all__ = ["ScheduleEndpoints", "schedule_paths"]

Handler = Callable[[Request], Awaitable[Response]]


def _note(body: dict[str, Any]) -> str:
    note = _optional(body, "note")
    return "" if note is None else _string(note, "note", MAX_REASON)


class ScheduleEndpoints:
    """The handlers, over the API's client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def routes(self) -> list[tuple[str, dict[str, Handler]]]:
        """``(path, {method: handler})`` for each path."""
        return [
            ("/schedules", {"GET": self.list, "POST": self.create}),
            ("/schedules/{id}", {"GET": self.describe, "DELETE": self.delete}),
            ("/schedules/{id}/pause", {"POST": self.pause}),
            ("/schedules/{id}/unpause", {"POST": self.unpause}),
            ("/schedules/{id}/trigger", {"POST": self.trigger}),
            ("/schedules/{id}/backfill", {"POST": self.backfill}),
        ]

    @staticmethod
    def _id(request: Request) -> str:
        return check_name("schedule id", request.path_params["id"])

    async def create(self, request: Request) -> Response:
        data = await _json_body(request, required=True)
        schedule = await trio.to_thread.run_sync(schedule_from_data, data)
        state = await self._client.schedules.create(schedule)
        headers = {"Location": f"/schedules/{schedule.id}"}
        return _json(schedule_summary(state), 201, headers)

    async def list(self, request: Request) -> Response:
        return _json([schedule_summary(s) for s in await self._client.schedules.list()])

    async def describe(self, request: Request) -> Response:
        description = await self._client.schedules.describe(self._id(request))
        return _json(description.to_data())

    async def delete(self, request: Request) -> Response:
        schedule_id = self._id(request)
        await self._client.schedules.delete(schedule_id)
        return _json({"id": schedule_id})

    async def pause(self, request: Request) -> Response:
        return await self._pausing(request, paused=True)

    async def unpause(self, request: Request) -> Response:
        return await self._pausing(request, paused=False)

    async def _pausing(self, request: Request, *, paused: bool) -> Response:
        schedule_id = self._id(request)
        body = _fields(await _json_body(request, required=False), (), ("note",))
        schedules = self._client.schedules
        change = schedules.pause if paused else schedules.unpause
        return _json(schedule_summary(await change(schedule_id, _note(body))))

    async def trigger(self, request: Request) -> Response:
        schedule_id = self._id(request)
        instance_id = await self._client.schedules.trigger(schedule_id)
        return _json({"id": schedule_id, "instance": instance_id}, 202)

    async def backfill(self, request: Request) -> Response:
        schedule_id = self._id(request)
        body = _fields(await _json_body(request, required=True), ("start", "end"), ())
        start = parse_time(body["start"], "start")
        end = parse_time(body["end"], "end")
        count = await self._client.schedules.backfill(schedule_id, start, end)
        return _json({"id": schedule_id, "fires": count}, 202)


_TIME = {
    "oneOf": [
        {"type": "number", "minimum": 0, "maximum": 253402214400},
        {"type": "string", "format": "date-time"},
    ],
    "description": "Seconds since the epoch, or an ISO 8601 time (UTC if it names no zone).",
}
_SCHEDULE = {
    "type": "object",
    "description": (
        "A schedule with where it stands: its definition (as created), paused and note, "
        "next_fire, and the counts started, skipped (overlap policy) and missed (catch-up)."
    ),
    "required": ["id", "workflow", "spec", "overlap", "paused", "started", "skipped", "missed"],
}
_DESCRIPTION = {
    "type": "object",
    "description": (
        "A schedule (as in the list) with next_fires, buffered fires, pending triggers and "
        "backfills, and its recent runs: instance, fire, kind, started_at, status."
    ),
    "required": ["id", "next_fires", "runs"],
}
_NEW_SCHEDULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "workflow", "spec"],
    "properties": {
        "id": _NAME,
        "workflow": _NAME,
        "version": {"type": "integer", "minimum": 0},
        "input": {},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cron": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                "timezone": {"type": "string"},
                "intervals": {"type": "array"},
                "jitter": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                "start_at": _TIME,
                "end_at": _TIME,
            },
        },
        "overlap": {
            "enum": [
                "skip",
                "buffer_one",
                "buffer_all",
                "cancel_other",
                "terminate_other",
                "allow_all",
            ]
        },
        "catchup_window": {"oneOf": [{"type": "number"}, {"type": "string"}]},
    },
}


def schedule_paths(operation: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI paths of the schedule endpoints (``operation`` as the document's)."""
    schedule_id = _param("path", "id", "The schedule's id.", _NAME)
    note_body = {
        "required": False,
        "content": _content(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"note": {"type": "string", "maxLength": MAX_REASON}},
            }
        ),
    }
    one = _ok("The schedule.", _SCHEDULE)

    def on_schedule(
        operation_id: str,
        summary: str,
        answers: dict[str, Any],
        errors: tuple[str, ...] = ("404", "422"),
        **more: Any,
    ) -> dict[str, Any]:
        """An operation on the schedule of the path's id (``more``: its other fields)."""
        return operation(
            operation_id, summary, answers, errors=errors, parameters=[schedule_id], **more
        )

    def pausing(operation_id: str, summary: str) -> dict[str, Any]:
        return on_schedule(
            operation_id, summary, {"200": one}, _MISSING_ERRORS, requestBody=note_body
        )

    return {
        "/schedules": {
            "get": operation(
                "listSchedules",
                "Every schedule",
                {"200": _ok("The schedules, by id.", {"type": "array", "items": _SCHEDULE})},
            ),
            "post": operation(
                "createSchedule",
                "Create a schedule (it fires from now on)",
                {"201": _ok("Created.", _SCHEDULE)},
                errors=_REFUSED_ERRORS,
                requestBody={"required": True, "content": {_JSON: {"schema": _NEW_SCHEDULE}}},
            ),
        },
        "/schedules/{id}": {
            "get": on_schedule(
                "describeSchedule",
                "A schedule, its next fire times and its recent runs with their status",
                {"200": _ok("The schedule.", _DESCRIPTION)},
            ),
            "delete": on_schedule(
                "deleteSchedule",
                "Delete a schedule (the runs it started go on)",
                {"200": _ok("Deleted.", {"type": "object"})},
            ),
        },
        "/schedules/{id}/pause": {
            "post": pausing(
                "pauseSchedule", "Stop its fires until unpaused (triggers and backfills still run)"
            )
        },
        "/schedules/{id}/unpause": {
            "post": pausing(
                "unpauseSchedule", "Fire again from now on (fires in the pause are not run)"
            )
        },
        "/schedules/{id}/trigger": {
            "post": on_schedule(
                "triggerSchedule",
                "Run it now, under its overlap policy",
                {"202": _ok("Asked for; the instance it starts.", {"type": "object"})},
            )
        },
        "/schedules/{id}/backfill": {
            "post": on_schedule(
                "backfillSchedule",
                "Run every fire of its spec in a time range",
                {"202": _ok("Asked for; how many fires.", {"type": "object"})},
                _MISSING_ERRORS,
                requestBody={
                    "required": True,
                    "content": _content(
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["start", "end"],
                            "properties": {"start": _TIME, "end": _TIME},
                        }
                    ),
                },
            )
        },
    }
