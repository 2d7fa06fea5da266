"""The instance operations over HTTP: signal-with-start, pause and resume, retry,
rerun and delete (each also checked against the OpenAPI document by the
``served`` fixture's conformance hook)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

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
