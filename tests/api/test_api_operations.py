"""The instance operations over HTTP: signal-with-start, pause and resume, retry,
rerun and delete (each also checked against the OpenAPI document by the
``served`` fixture's conformance hook)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

if TYPE_CHECKING:
    from conftest import Served


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


async def test_signal_with_start_starts_then_signals(served: Served) -> None:
    await served.register_examples()
    body = {"type": "approval", "signal": "approved", "payload": {"by": "ann"}}
    first = await served.http.post("/workflows/a-9/signal-with-start", json=body)
    assert (first.status_code, first.json()) == (202, {"id": "a-9", "existed": False})
    result = await served.http.get("/workflows/a-9/result", params={"wait": 20})
    assert result.json() == {"status": "completed", "output": {"greeting": "hello ann"}}
    again = await served.http.post("/workflows/a-9/signal-with-start", json=body)
    assert (again.status_code, again.json()) == (202, {"id": "a-9", "existed": True})


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"type": "approval"}, 422, "ValidationError"),
        ({"type": "nope", "signal": "go"}, 404, "UnknownWorkflowType"),
        ({"type": "approval", "signal": "9bad"}, 422, "InvalidName"),
        ({"type": "approval", "signal": "go", "signal_id": "a b"}, 422, "ValidationError"),
        ({"type": "greet", "signal": "go"}, 409, "InstanceConflict"),
    ],
)
async def test_signal_with_start_refusals(
    served: Served, body: dict[str, Any], status: int, kind: str
) -> None:
    await served.register_examples()
    started = await served.http.post("/workflows/approval", json={"input": None, "id": "a-1"})
    assert started.status_code == 201
    response = await served.http.post("/workflows/a-1/signal-with-start", json=body)
    assert response.status_code == status, response.text
    assert error_of(response)["type"] == kind


async def test_pause_and_resume_an_instance_and_a_type(served: Served) -> None:
    await served.register_examples()
    started = await served.http.post("/workflows/approval", json={"input": None, "id": "a-2"})
    assert started.status_code == 201
    paused = await served.http.post("/workflows/a-2/pause", json={"reason": "wait", "by": "ann"})
    assert (paused.status_code, paused.json()) == (202, {"id": "a-2"})
    with trio.fail_after(30):
        info = await served.client.wait_for("a-2", lambda info: info.paused is not None)
    shown = (await served.http.get("/workflows/a-2")).json()
    assert shown["paused"] == {
        "by": "ann",
        "reason": "wait",
        "at": info.updated_at,
        "by_type": False,
    }
    await served.http.post("/workflows/a-2/signals/approved", json={"payload": {"by": "bob"}})
    with trio.fail_after(30):
        await served.client.wait_for("a-2", lambda info: info.held == 1)
    resumed = await served.http.post("/workflows/a-2/resume")
    assert resumed.status_code == 202
    result = await served.http.get("/workflows/a-2/result", params={"wait": 20})
    assert result.json()["output"] == {"greeting": "hello bob"}
    refused = await served.http.post("/workflows/a-2/pause")
    assert (refused.status_code, error_of(refused)["type"]) == (409, "OperationRefused")
    missing = await served.http.post("/workflows/nobody/resume")
    assert (missing.status_code, error_of(missing)["type"]) == (404, "NotFound")

    typed = await served.http.post("/types/greet/pause", json={"running": True})
    assert (typed.status_code, typed.json()) == (200, {"type": "greet", "instances": 0})
    assert set(await served.client.paused_types()) == {"greet"}
    again = await served.http.post("/types/greet/resume", json={"by": "ops"})
    assert (again.status_code, again.json()) == (200, {"type": "greet", "instances": 0})
    assert await served.client.paused_types() == {}
    unknown = await served.http.post("/types/nope/pause")
    assert unknown.status_code == 404


async def test_retry_rerun_and_bulk_retry(served: Served) -> None:
    await served.register_examples()
    started = await served.http.post("/workflows/failing", json={"input": 5, "id": "f-1"})
    assert started.status_code == 201
    failed = await served.http.get("/workflows/f-1/result", params={"wait": 20})
    assert failed.json()["status"] == "failed"
    bad_step = await served.http.post("/workflows/f-1/retry", json={"step": "nowhere"})
    assert (bad_step.status_code, error_of(bad_step)["type"]) == (422, "ValidationError")
    retried = await served.http.post("/workflows/f-1/retry", json={"reason": "again"})
    assert (retried.status_code, retried.json()) == (202, {"id": "f-1", "run": 2})
    with trio.fail_after(30):
        info = await served.client.wait_for("f-1", lambda i: i.run == 2 and i.status.terminal)
    assert (await served.http.get("/workflows/f-1")).json()["run"] == info.run == 2

    rerun = await served.http.post("/workflows/f-1/rerun", json={"id": "f-2"})
    assert (rerun.status_code, rerun.json()) == (202, {"id": "f-2"})
    with trio.fail_after(30):
        await served.client.wait_for("f-2", lambda i: i.status.terminal)
    bulk = await served.http.post("/retries", json={"type": "failing", "since": 3600, "rate": 100})
    assert bulk.status_code == 200
    assert sorted(bulk.json()["retried"]) == ["f-1", "f-2"]
    assert bulk.json()["count"] == 2
    running = await served.http.post("/workflows/approval", json={"input": None, "id": "a-3"})
    assert running.status_code == 201
    refused = await served.http.post("/workflows/a-3/retry")
    assert (refused.status_code, error_of(refused)["type"]) == (409, "OperationRefused")


async def test_delete_removes_a_finished_instance(served: Served) -> None:
    await served.register_examples()
    started = await served.http.post("/workflows/approval", json={"input": None, "id": "d-1"})
    assert started.status_code == 201
    running = await served.http.post("/workflows/d-1/delete")
    assert (running.status_code, error_of(running)["type"]) == (409, "OperationRefused")
    await served.http.post("/workflows/d-1/terminate")
    with trio.fail_after(30):
        await served.client.wait_for("d-1", lambda info: info.status.terminal)
    deleted = await served.http.post("/workflows/d-1/delete")
    assert (deleted.status_code, deleted.json()) == (202, {"id": "d-1"})
    with trio.fail_after(30):
        await served.client.wait_for_removal("d-1")
    gone = await served.http.get("/workflows/d-1")
    assert (gone.status_code, error_of(gone)["type"]) == (404, "NotFound")
