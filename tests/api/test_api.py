"""The HTTP Engine API over real HTTP: every endpoint's answers, good and bad.

Each test runs an engine and ``serve_api`` on a free port (``conftest.py``),
on the memory transport and on NATS. Every answer is also checked against the
OpenAPI document by the HTTP client's response hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

import actors
from actors.http import create_app, serve_api
from actors.wire import PRESENCE_BUCKET
from transport import ConnectionLostError

if TYPE_CHECKING:
    from conftest import Served


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str), error
    assert error["message"], error
    return error


async def start(served: Served, workflow_type: str, body: dict[str, Any]) -> str:
    response = await served.http.post(f"/workflows/{workflow_type}", json=body)
    assert response.status_code == 201, response.text
    instance_id: str = response.json()["id"]
    assert response.headers["location"] == f"/workflows/{instance_id}"
    return instance_id


# -- open endpoints and auth ---------------------------------------------------------


async def test_health_and_openapi_need_no_token(served: Served) -> None:
    health = await served.anonymous.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    spec = await served.anonymous.get("/openapi.json")
    assert spec.status_code == 200
    document = spec.json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []


async def test_a_token_is_required_and_checked(served: Served) -> None:
    token = served.token
    assert token is not None
    missing = await served.anonymous.get("/definitions")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert error_of(missing)["type"] == "Unauthorized"

    for header in (f"Bearer {token}x", "Bearer wrong", f"Basic {token}", "Bearer", token):
        wrong = await served.anonymous.get("/definitions", headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert wrong.headers["www-authenticate"].startswith("Bearer")

    # Before routing: an unknown path does not reveal that it is unknown.
    unknown = await served.anonymous.post("/nowhere", json={})
    assert unknown.status_code == 401

    right = await served.anonymous.get("/definitions", headers={"Authorization": f"Bearer {token}"})
    assert (right.status_code, right.json()) == (200, {})
    lower = await served.anonymous.get("/definitions", headers={"Authorization": f"bearer {token}"})
    assert lower.status_code == 200


@pytest.mark.parametrize("api_token", [None])
async def test_without_a_token_everything_is_open(served: Served) -> None:
    response = await served.anonymous.get("/definitions")
    assert response.status_code == 200
    document = (await served.anonymous.get("/openapi.json")).json()
    assert "security" not in document
    assert "401" not in document["paths"]["/definitions"]["get"]["responses"]


async def test_an_empty_token_is_refused(served: Served) -> None:
    with pytest.raises(ValueError, match="empty"):
        create_app(served.client, token="")


async def test_unknown_paths_and_methods(served: Served) -> None:
    missing = await served.http.get("/nowhere")
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "NotFound"
    wrong = await served.http.delete("/definitions")
    assert wrong.status_code == 405
    assert error_of(wrong)["type"] == "MethodNotAllowed"
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


# -- definitions --------------------------------------------------------------------


async def test_register_json_and_yaml_and_read_back(served: Served) -> None:
    greet = served.definitions["greet"]
    as_json = actors.load_definition(greet).to_data()
    response = await served.http.post("/definitions", json=as_json)
    assert (response.status_code, response.json()) == (201, {"type": "greet", "version": 1})
    # The same again is fine: registering is idempotent.
    again = await served.http.post("/definitions", json=as_json)
    assert again.status_code == 201

    for media_type in ("application/yaml", "text/yaml"):
        yaml_text = greet.replace("version: 1", "version: 2")
        response = await served.http.post(
            "/definitions", content=yaml_text, headers={"Content-Type": media_type}
        )
        assert (response.status_code, response.json()) == (201, {"type": "greet", "version": 2})

    listed = await served.http.get("/definitions")
    assert listed.json() == {"greet": [1, 2]}
    newest = await served.http.get("/definitions/greet")
    assert newest.status_code == 200
    assert (
        newest.json() == actors.load_definition(greet.replace("version: 1", "version: 2")).to_data()
    )
    first = await served.http.get("/definitions/greet/1")
    assert first.json() == as_json


async def test_register_refusals(served: Served) -> None:
    await served.client.register(served.definitions["greet"])
    conflict = await served.http.post(
        "/definitions", json={"type": "greet", "version": 1, "steps": [{"id": "x", "sleep": 1}]}
    )
    assert conflict.status_code == 409
    assert error_of(conflict)["type"] == "VersionConflict"

    invalid = await served.http.post(
        "/definitions",
        json={"type": "bad", "steps": [{"id": "a", "activity": "x", "retry": {"backoff": "x"}}]},
    )
    assert invalid.status_code == 422
    error = error_of(invalid)
    assert error["type"] == "InvalidDefinition"
    assert any(detail["path"] == "steps[0].retry.backoff" for detail in error["details"])

    bad_yaml = await served.http.post(
        "/definitions", content="type: [unclosed", headers={"Content-Type": "application/yaml"}
    )
    assert bad_yaml.status_code == 422
    assert error_of(bad_yaml)["details"][0]["path"] == ""

    not_an_object = await served.http.post("/definitions", json=[1, 2])
    assert not_an_object.status_code == 422

    malformed = await served.http.post(
        "/definitions", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert error_of(malformed)["type"] == "MalformedBody"

    empty = await served.http.post("/definitions", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400

    plain = await served.http.post(
        "/definitions", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": 1e400}',
        b'{"a": 1, "a": 2}',
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' + b"9" * 5000 + b"}",
    ],
    ids=["nan", "overflow", "duplicate-key", "not-utf8", "deep", "long-int"],
)
async def test_json_that_is_not_strict_json_is_refused(served: Served, body: bytes) -> None:
    response = await served.http.post(
        "/definitions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["type"] == "MalformedBody"


async def test_yaml_that_is_not_utf8_is_refused(served: Served) -> None:
    response = await served.http.post(
        "/definitions", content=b"type: \xff", headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 400
    assert error_of(response)["type"] == "MalformedBody"


async def test_error_details_are_bounded(served: Served) -> None:
    body = {"input": 1, **{f"field{i}": i for i in range(5000)}}
    response = await served.http.post("/workflows/greet", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert len(error["details"]) == 100
    assert len(error["message"]) < 1000
    invalid = await served.http.post(
        "/definitions",
        json={"type": "t", "steps": [{"id": f"s{i}", "sleep": "x" * 500} for i in range(500)]},
    )
    assert invalid.status_code == 422
    assert len(error_of(invalid)["details"]) == 100
    assert error_of(invalid)["message"].startswith("invalid workflow definition (500 problems)")


async def test_unknown_definitions(served: Served) -> None:
    await served.client.register(served.definitions["greet"])
    for path in ("/definitions/nope", "/definitions/greet/2", "/definitions/nope/1"):
        response = await served.http.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["type"] == "UnknownWorkflowType"
    for path in ("/definitions/9bad", "/definitions/greet/0", "/definitions/greet/x"):
        response = await served.http.get(path)
        assert response.status_code == 422, path
        assert "details" not in error_of(response) or error_of(response)["details"]
    too_big = await served.http.get("/definitions/greet/1000001")
    assert too_big.status_code == 422


# -- starting and reading instances ---------------------------------------------------


async def test_a_workflow_started_over_http_completes(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "greet", {"input": {"name": "ann"}, "id": "g-1"})
    assert instance_id == "g-1"

    result = await served.http.get("/workflows/g-1/result", params={"wait": 20})
    assert result.status_code == 200, result.text
    assert result.json() == {"status": "completed", "output": {"greeting": "hello ann"}}

    info = (await served.http.get("/workflows/g-1")).json()
    assert info["status"] == "completed"
    assert info["input"] == {"name": "ann"}
    assert info["output"] == {"greeting": "hello ann"}
    assert info["error"] is None
    assert info["steps"]["hello"]["status"] == "completed"
    assert info["created_at"] <= info["updated_at"]

    history = await served.http.get("/workflows/g-1/history")
    assert history.status_code == 200
    items = history.json()["items"]
    kinds = [item["kind"] for item in items]
    assert kinds[0] == "workflow.started"
    assert "workflow.completed" in kinds
    assert [item["seq"] for item in items] == sorted(item["seq"] for item in items)

    # Starting the same id again is idempotent.
    again = await served.http.post("/workflows/greet", json={"input": None, "id": "g-1"})
    assert (again.status_code, again.json()) == (201, {"id": "g-1"})


async def test_a_start_of_an_id_another_type_has_is_a_conflict(served: Served) -> None:
    await served.register_examples()
    await start(served, "greet", {"input": {"name": "ann"}, "id": "g-2"})
    # Regression: this answered 201, as if the approval had started.
    other = await served.http.post("/workflows/approval", json={"input": None, "id": "g-2"})
    assert other.status_code == 409, other.text
    error = error_of(other)
    assert error["type"] == "InstanceConflict"
    assert "'g-2' is a 'greet' workflow" in error["message"]
    assert (await served.http.get("/workflows/g-2")).json()["type"] == "greet"


async def test_a_start_without_an_id_gets_one_and_a_version(served: Served) -> None:
    await served.register_examples()
    await served.client.register(served.definitions["greet"].replace("version: 1", "version: 2"))
    instance_id = await start(served, "greet", {"input": {"name": "bo"}, "version": 1})
    info = (await served.http.get(f"/workflows/{instance_id}")).json()
    assert info["version"] == 1
    newest = await start(served, "greet", {"input": {"name": "bo"}})
    assert (await served.http.get(f"/workflows/{newest}")).json()["version"] == 2


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/workflows/nope", {"input": 1}, 404),
        ("/workflows/greet", {"input": 1, "version": 9}, 404),
        ("/workflows/9bad", {"input": 1}, 422),
        ("/workflows/greet", {"input": 1, "id": "has space"}, 422),
        ("/workflows/greet", {"input": 1, "id": 7}, 422),
        ("/workflows/greet", {"input": 1, "version": "1"}, 422),
        ("/workflows/greet", {"input": 1, "version": True}, 422),
        ("/workflows/greet", {"input": 1, "version": 0}, 422),
        ("/workflows/greet", {"id": "x"}, 422),
        ("/workflows/greet", {"input": 1, "extra": 2}, 422),
        ("/workflows/greet", [1], 422),
        ("/workflows/greet", {"input": 2**70}, 422),
        ("/workflows/greet", {"input": json.loads("[" * 40 + "]" * 40)}, 422),
        ("/workflows/greet", {"input": "x" * 300_000}, 413),
    ],
)
async def test_start_refusals(served: Served, path: str, body: Any, status: int) -> None:
    await served.register_examples()
    response = await served.http.post(path, json=body)
    assert response.status_code == status, response.text
    error_of(response)


@pytest.mark.parametrize(
    ("payload", "path", "message"),
    [
        ({"a": [1, 2**64]}, "input.a[1]", "a number must be from -2**64 to 2**64-1"),
        ({"a": -(2**64) - 1}, "input.a", "a number must be from -2**64 to 2**64-1"),
        ({"a": 1e20}, "input.a", "a number must be from -2**64 to 2**64-1"),
        ({"a b": {"c": 2**70}}, 'input["a b"].c', "a number must be from -2**64 to 2**64-1"),
        (
            ["ok", "\ud800"],
            "input[1]",
            "the text '\\ud800' holds a lone surrogate, which is not Unicode",
        ),
        (
            json.loads("[" * 30 + "]" * 30),
            "input" + "[0]" * 29,
            "nested more than 29 lists and objects deep",
        ),
    ],
    ids=["int-65-bits", "int-below", "float-beyond", "odd-key", "surrogate", "deep"],
)
async def test_a_payload_beyond_the_engine_is_refused_by_its_path(
    served: Served, payload: Any, path: str, message: str
) -> None:
    await served.register_examples()

    def body(data: dict[str, Any]) -> dict[str, Any]:
        # ASCII JSON: a lone surrogate travels as its escape, as a client would send it.
        return {"content": json.dumps(data), "headers": {"Content-Type": "application/json"}}

    start = await served.http.post("/workflows/greet", **body({"input": payload, "id": "p-1"}))
    assert start.status_code == 422, start.text
    error = error_of(start)
    assert (error["type"], error["details"]) == (
        "InvalidPayload",
        [{"path": path, "message": message}],
    )
    assert (await served.http.get("/workflows/p-1")).status_code == 404  # nothing started
    await start_approval(served, "p-2")
    signal = await served.http.post("/workflows/p-2/signals/approved", **body({"payload": payload}))
    assert signal.status_code == 422, signal.text
    assert error_of(signal)["details"][0]["path"] == "payload" + path.removeprefix("input")


async def start_approval(served: Served, instance_id: str) -> None:
    await start(served, "approval", {"input": None, "id": instance_id})


async def test_a_payload_at_the_engines_bounds_is_taken_and_runs(served: Served) -> None:
    await served.register_examples()
    edge = {
        "name": "edge",
        "max": 2**64 - 1,
        "min": -(2**64),
        "float": -1.8e19,
        "deep": json.loads("[" * 28 + "]" * 28),  # 29 deep, in the input object
    }
    instance_id = await start(served, "greet", {"input": edge})
    result = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 20})
    assert result.json() == {"status": "completed", "output": {"greeting": "hello edge"}}
    info = (await served.http.get(f"/workflows/{instance_id}")).json()
    assert info["input"] == edge


async def test_an_instance_that_failed_before_it_ran_is_answered_as_documented(
    served: Served,
) -> None:
    """Python's client sends what a start message holds (31 deep); the state cannot keep it."""
    await served.register_examples()
    await served.client.start("greet", json.loads("[" * 31 + "]" * 31), id="v-0")
    info = await served.client.wait("v-0")
    assert (info.status, info.version) == (actors.InstanceStatus.FAILED, 0)
    # The answers below are checked against the document by the client's hook.
    assert (await served.http.get("/workflows/v-0")).json()["version"] == 0
    listed = (await served.http.get("/workflows", params={"type": "greet"})).json()
    assert [item["version"] for item in listed["items"]] == [0]


async def test_null_is_the_same_as_leaving_an_optional_field_out(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "approval", {"input": None, "id": None, "version": None})
    assert len(instance_id) == 24
    signal = await served.http.post(
        f"/workflows/{instance_id}/signals/approved",
        json={"payload": {"by": "ann"}, "signal_id": None},
    )
    assert signal.status_code == 202, signal.text
    cancel = await served.http.post(f"/workflows/{instance_id}/cancel", json={"reason": None})
    assert cancel.status_code == 202, cancel.text


async def test_empty_and_blank_bodies(served: Served) -> None:
    await served.register_examples()
    empty_yaml = await served.http.post(
        "/definitions", content=b"", headers={"Content-Type": "application/yaml"}
    )
    assert empty_yaml.status_code == 400, empty_yaml.text
    assert error_of(empty_yaml) == {"type": "MalformedBody", "message": "a YAML body is required"}
    await start_approval(served, "b-1")
    # No body is an optional body left out; a blank one is not JSON.
    blank = await served.http.post(
        "/workflows/b-1/cancel", content=b"\r\n", headers={"Content-Type": "application/json"}
    )
    assert blank.status_code == 400, blank.text
    assert error_of(blank)["type"] == "MalformedBody"


async def test_unknown_fields_are_named(served: Served) -> None:
    await served.register_examples()
    response = await served.http.post("/workflows/greet", json={"inptu": 1})
    error = error_of(response)
    assert {"path": "inptu", "message": "unknown field"} in error["details"]
    assert {"path": "input", "message": "required"} in error["details"]


# The server answers before the body is all sent, so httpx leaves its body
# iterator unfinished: the client's doing, not the server's.
@pytest.mark.filterwarnings("ignore:Async generator 'httpx:ResourceWarning")
async def test_bodies_over_the_limit_are_refused(served: Served) -> None:
    await served.register_examples()
    big = json.dumps({"input": "x" * (1024 * 1024)}).encode()
    response = await served.http.post(
        "/workflows/greet", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response)["type"] == "PayloadTooLarge"

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is counted as the body arrives.
        yield b'{"input": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    chunked = await served.http.post(
        "/workflows/greet", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    # The server is still fine afterwards.
    assert (await served.http.get("/health")).status_code == 200


async def test_unknown_instances(served: Served) -> None:
    for method, path in [
        ("GET", "/workflows/nope"),
        ("GET", "/workflows/nope/result"),
        ("GET", "/workflows/nope/history"),
        ("POST", "/workflows/nope/cancel"),
        ("POST", "/workflows/nope/terminate"),
    ]:
        response = await served.http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert error_of(response)["type"] == "NotFound"
    signal = await served.http.post("/workflows/nope/signals/go", json={"payload": 1})
    assert signal.status_code == 404
    bad = await served.http.get("/workflows/b%C3%A4d")
    assert bad.status_code == 422
    assert error_of(bad)["type"] == "InvalidName"


# -- results, signals, cancel and terminate ---------------------------------------------


async def test_result_waits_then_reports_running_and_a_signal_finishes_it(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "approval", {"input": None, "id": "a-1"})
    now = await served.http.get(f"/workflows/{instance_id}/result")
    assert (now.status_code, now.json()) == (202, {"status": "running"})
    before = trio.current_time()
    waited = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 0.3})
    assert waited.status_code == 202
    assert trio.current_time() - before >= 0.3

    sent = await served.http.post(
        f"/workflows/{instance_id}/signals/approved",
        json={"payload": {"by": "ann"}, "signal_id": "s-1"},
    )
    assert (sent.status_code, sent.json()) == (202, {"id": instance_id})
    result = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 20})
    assert result.json() == {"status": "completed", "output": {"greeting": "hello ann"}}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/workflows/a-1/signals/9bad", {"payload": 1}, 422),
        ("/workflows/a-1/signals/go", {}, 422),
        ("/workflows/a-1/signals/go", {"payload": 1, "signal_id": "a b"}, 422),
        ("/workflows/a-1/signals/go", {"payload": 1, "signal_id": 3}, 422),
        ("/workflows/a-1/signals/go", {"payload": "x" * 300_000}, 413),
        ("/workflows/a-1/cancel", {"reason": 5}, 422),
        ("/workflows/a-1/cancel", {"reason": "x" * 5000}, 422),
        ("/workflows/a-1/terminate", {"why": "x"}, 422),
        ("/workflows/a-1/terminate", [], 422),
    ],
)
async def test_signal_cancel_terminate_refusals(
    served: Served, path: str, body: Any, status: int
) -> None:
    await served.register_examples()
    await start(served, "approval", {"input": None, "id": "a-1"})
    response = await served.http.post(path, json=body)
    assert response.status_code == status, response.text
    error_of(response)


async def test_result_query_is_checked(served: Served) -> None:
    await served.register_examples()
    await start(served, "approval", {"input": None, "id": "a-1"})
    for query in ("wait=-1", "wait=61", "wait=nan", "wait=x", "wat=1", "wait=1&wait=2"):
        response = await served.http.get(f"/workflows/a-1/result?{query}")
        assert response.status_code == 422, query
        assert error_of(response)["type"] == "ValidationError"


async def test_cancel_and_terminate(served: Served) -> None:
    await served.register_examples()
    cancelled = await start(served, "approval", {"input": None})
    response = await served.http.post(f"/workflows/{cancelled}/cancel", json={"reason": "no"})
    assert (response.status_code, response.json()) == (202, {"id": cancelled})
    result = await served.http.get(f"/workflows/{cancelled}/result", params={"wait": 20})
    assert result.status_code == 409
    assert result.json()["status"] == "cancelled"
    assert result.json()["error"]["type"] == "WorkflowCancelled"

    terminated = await start(served, "approval", {"input": None})
    # No body at all is the same as {}.
    response = await served.http.post(f"/workflows/{terminated}/terminate")
    assert response.status_code == 202
    result = await served.http.get(f"/workflows/{terminated}/result", params={"wait": 20})
    assert (result.status_code, result.json()["status"]) == (409, "terminated")

    # Once finished, cancelling again is a no-op, still accepted.
    again = await served.http.post(f"/workflows/{terminated}/cancel", json={})
    assert again.status_code == 202


async def test_a_failed_workflow_result_carries_its_error(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "failing", {"input": 1})
    result = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 20})
    assert result.status_code == 409
    body = result.json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "WorkflowFailed"
    assert body["error"]["workflow_error"]["type"] == "Declined"
    assert "card declined" in body["error"]["message"]
    info = (await served.http.get(f"/workflows/{instance_id}")).json()
    assert info["error"]["type"] == "Declined"
    assert info["steps"]["refuse"]["error"]["non_retryable"] is True


async def test_values_json_lacks_are_spelled_as_strings(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "odd", {"input": None})
    result = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 20})
    assert result.json()["output"] == {"bytes": "AP8=", "nan": "NaN", "inf": "-Infinity"}
    info = await served.http.get(f"/workflows/{instance_id}")
    assert info.json()["steps"]["odd"]["output"]["bytes"] == "AP8="


# -- listing --------------------------------------------------------------------------


async def test_list_filters_and_pages(served: Served) -> None:
    await served.register_examples()
    done = [await start(served, "greet", {"input": {"name": str(i)}}) for i in range(3)]
    waiting = await start(served, "approval", {"input": None})
    for instance_id in done:
        result = await served.http.get(f"/workflows/{instance_id}/result", params={"wait": 20})
        assert result.status_code == 200

    everything = (await served.http.get("/workflows")).json()
    assert everything["total"] == 4
    assert {item["id"] for item in everything["items"]} == {*done, waiting}
    assert set(everything["items"][0]) == {
        "id", "type", "version", "status", "created_at", "updated_at"
    }  # fmt: skip

    greets = (await served.http.get("/workflows", params={"type": "greet"})).json()
    assert greets["total"] == 3
    running = (await served.http.get("/workflows", params={"status": "running"})).json()
    assert [item["id"] for item in running["items"]] == [waiting]
    page = (
        await served.http.get("/workflows", params={"type": "greet", "limit": 2, "offset": 1})
    ).json()
    assert page["total"] == 3
    assert [item["id"] for item in page["items"]] == [item["id"] for item in greets["items"][1:3]]
    none = (await served.http.get("/workflows", params={"type": "nope"})).json()
    assert none == {"items": [], "total": 0}


@pytest.mark.parametrize(
    "query",
    [
        "status=sleeping",
        "type=9bad",
        "limit=abc",
        "limit=1001",
        "limit=-1",
        "offset=1.5",
        "offset=1000000001",
        "stauts=failed",
        "limit=1&limit=2",
    ],
)
async def test_list_query_is_checked(served: Served, query: str) -> None:
    response = await served.http.get(f"/workflows?{query}")
    assert response.status_code == 422, response.text
    error_of(response)


# -- failures of the broker, and bugs ---------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionLostError("the connection is gone"),
        # As Trio's nurseries raise them: two tasks failed the same way.
        ExceptionGroup(
            "both", [ConnectionLostError("a"), ExceptionGroup("b", [ConnectionLostError("b")])]
        ),
    ],
    ids=["plain", "group"],
)
async def test_a_broker_failure_is_503(
    served: Served, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def lost(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(served.client, "definitions", lost)
    response = await served.http.get("/definitions")
    assert response.status_code == 503
    assert error_of(response)["type"] == "BrokerUnavailable"


async def test_a_bug_is_500_and_logged(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(served.client, "definitions", broken)
    with caplog.at_level(logging.ERROR, logger="actors.api"):
        response = await served.http.get("/definitions")
    assert response.status_code == 500
    assert error_of(response) == {
        "type": "InternalError",
        "message": "internal error (logged by the server)",
    }
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


async def test_head_is_get_without_a_body(served: Served) -> None:
    response = await served.http.head("/definitions")
    assert response.status_code == 200
    assert response.content == b""


async def test_websockets_are_refused_without_the_token(served: Served) -> None:
    app = create_app(served.client, token=served.token)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/workflows", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- serving ------------------------------------------------------------------------------


async def test_cancelling_serve_api_stops_it_promptly(served: Served) -> None:
    await served.register_examples()
    instance_id = await start(served, "approval", {"input": None})
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await serve_api(served.client, port=0, task_status=task_status)
            stopped.set()

        url = await nursery.start(run)
        async with (
            httpx.AsyncClient(base_url=url) as idle,
            httpx.AsyncClient(base_url=url) as waiting,
        ):
            # An idle kept-alive connection, and a request waiting for a result.
            assert (await idle.get("/health")).status_code == 200
            answered = trio.Event()
            answers: list[httpx.Response] = []

            async def long_poll() -> None:
                answers.append(await waiting.get(f"/workflows/{instance_id}/result?wait=60"))
                answered.set()

            nursery.start_soon(long_poll)
            # Time for the request to reach the server and wait there: the
            # server shows no sign of a request in hand.
            await trio.sleep(0.3)
            began = trio.current_time()
            scope.cancel()
            with trio.fail_after(2):
                await stopped.wait()
                # The waiting request was answered (still running), not cut off.
                await answered.wait()
            assert [answer.status_code for answer in answers] == [202]
            assert trio.current_time() - began < 1


async def test_a_port_in_use_raises(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="in use"):
        await serve_api(served.client, port=port)


async def test_workers_lists_the_live_workers_and_skips_a_malformed_entry(served: Served) -> None:
    [worker] = [s for s in served.running if isinstance(s, actors.Worker)]
    presence = await served.transport.kv(PRESENCE_BUCKET)
    await presence.put("garbled-1", b'{"id": "garbled-1", "activities": "greet"}')
    listed = await served.http.get("/workers")
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["id"] == worker.id
    assert item["activities"] == ["greet", "odd_values", "refuse"]
    assert (item["concurrency"], item["running"]) == (8, 0)
    # The same authentication as every other endpoint.
    assert (await served.anonymous.get("/workers")).status_code == 401


async def test_slots_list_holders_and_queues(served: Served) -> None:
    limited = served.definitions["approval"].replace(
        "type: approval", "type: limited\nconcurrency: [{key: input.name, limit: 1}]"
    )
    await served.client.register(limited)
    for instance in ("lim-1", "lim-2"):
        await served.client.start("limited", {"name": "ann"}, id=instance)
    with trio.fail_after(30):
        await served.client.wait_for(
            "lim-2", lambda info: info.status is actors.InstanceStatus.QUEUED
        )
    listed = await served.http.get("/slots")
    assert listed.status_code == 200
    (slot,) = listed.json()["items"]
    assert (slot["scope"], slot["name"], slot["key"], slot["value"], slot["limit"]) == (
        "workflow",
        "limited",
        "input.name",
        "ann",
        1,
    )
    assert (slot["holders"], slot["queue"]) == (["lim-1"], ["lim-2"])
    queued = await served.http.get("/workflows/lim-2")
    assert queued.json()["status"] == "queued"
    assert queued.json()["queued"] == 'concurrency[0]: input.name = "ann" (limit 1)'
    pending = await served.http.get("/workflows/lim-2/result")
    assert (pending.status_code, pending.json()) == (202, {"status": "queued"})
