"""The API with no orchestrator running: starts it accepted and nothing took up yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

import actors.http._api

if TYPE_CHECKING:
    from conftest import Served


@pytest.fixture
def services() -> bool:
    """No orchestrator, no worker: each test starts them when it wants them."""
    return False


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_a_start_no_orchestrator_took_is_pending_until_one_does(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.http._api, "START_VISIBLE_WAIT", 0.3)
    await served.register_examples()
    body = {"input": {"name": "al"}, "id": "p-1"}
    started = await served.http.post("/workflows/greet", json=body)
    assert (started.status_code, started.json()) == (202, {"id": "p-1", "status": "pending"})
    assert started.headers["location"] == "/workflows/p-1"

    # Regression: a wait for it said nothing of why there was no instance.
    result = await served.http.get("/workflows/p-1/result", params={"wait": 0.3})
    assert (result.status_code, result.json()) == (202, {"status": "pending"})
    shown = await served.http.get("/workflows/p-1")
    assert shown.status_code == 404
    error = error_of(shown)
    assert error["type"] == "Pending"
    assert "no orchestrator has picked it up" in error["message"]
    # The id is taken all the same: the first start's type decides.
    other = await served.http.post("/workflows/approval", json={"input": None, "id": "p-1"})
    assert other.status_code == 409, other.text
    assert error_of(other)["type"] == "InstanceConflict"
    assert "'p-1' is a 'greet' workflow" in error_of(other)["message"]
    unknown = await served.http.get("/workflows/p-2")
    assert (unknown.status_code, error_of(unknown)["type"]) == (404, "NotFound")

    await served.start_services()
    result = await served.http.get("/workflows/p-1/result", params={"wait": 20})
    assert result.json() == {"status": "completed", "output": {"greeting": "hello al"}}
