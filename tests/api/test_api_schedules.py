"""The schedule endpoints: create, list, describe, pause, unpause, trigger, backfill, delete.

Every answer is also checked against the OpenAPI document (the ``served``
fixture's HTTP client does that for every call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

import actors

if TYPE_CHECKING:
    from conftest import Served


async def test_a_schedule_over_http_from_create_to_delete(served: Served) -> None:
    await served.register_examples()
    http = served.http
    body = {
        "id": "hourly",
        "workflow": "greet",
        "input": {"name": "ann"},
        "spec": {"cron": "0 * * * *", "timezone": "Europe/Berlin"},
        "overlap": "buffer_one",
    }
    created = await http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/schedules/hourly"
    assert created.json()["spec"]["cron"] == [
        {"expression": "0 * * * *", "timezone": "Europe/Berlin"}
    ]
    again = await http.post("/schedules", json=body)
    assert (again.status_code, again.json()["error"]["type"]) == (409, "ScheduleExists")
    bad = await http.post("/schedules", json={**body, "id": "bad", "spec": {"cron": "x"}})
    assert (bad.status_code, bad.json()["error"]["type"]) == (422, "InvalidSchedule")
    listed = await http.get("/schedules")
    assert [s["id"] for s in listed.json()] == ["hourly"]

    paused = await http.post("/schedules/hourly/pause", json={"note": "maintenance"})
    assert (paused.json()["paused"], paused.json()["note"]) == (True, "maintenance")
    triggered = await http.post("/schedules/hourly/trigger")
    assert triggered.status_code == 202
    instance = triggered.json()["instance"]
    with trio.fail_after(30):
        assert await served.client.result(instance) == {"greeting": "hello ann"}
    backfill = await http.post(
        "/schedules/hourly/backfill",
        json={"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"},
    )
    assert backfill.json() == {"id": "hourly", "fires": 3}
    with trio.fail_after(30):
        info = await served.client.wait("hourly-20260101T000000Z")
    assert info.status is actors.InstanceStatus.COMPLETED
    history = await served.client.history("hourly-20260101T000000Z")
    assert history[0]["detail"]["schedule"] == {
        "id": "hourly",
        "fire": 1767225600.0,
        "kind": "backfill",
    }
    described = await http.get("/schedules/hourly")
    data = described.json()
    assert data["next_fires"] == []  # paused
    assert data["runs"][0] == {
        "instance": instance,
        "fire": data["runs"][0]["fire"],
        "kind": "trigger",
        "started_at": data["runs"][0]["started_at"],
        "status": "completed",
    }
    unpaused = await http.post("/schedules/hourly/unpause")
    assert unpaused.json()["paused"] is False
    described = await http.get("/schedules/hourly")
    assert len(described.json()["next_fires"]) == 5
    deleted = await http.delete("/schedules/hourly")
    assert deleted.status_code == 200
    gone = await http.get("/schedules/hourly")
    assert (gone.status_code, gone.json()["error"]["type"]) == (404, "NoSuchSchedule")
