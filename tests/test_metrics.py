"""The metrics of an orchestrator and a worker in one process, on the memory transport.

Failures, retries, timeouts, cancellations, dead letters and the API's
requests, each counted where it happened; two services' metrics kept apart
in one process; the probes' answers; the label cap.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from metrics_samples import Samples, parse, value
from prometheus_client import generate_latest

import actors
from actors.observability import MAX_SERIES, Metrics, Readiness, serve_probes
from transport import Transport, open_transport

_tries: dict[str, int] = {}


@actors.activity
async def flaky(request: dict[str, Any]) -> str:
    """Fails the first ``fail`` times for each ``key``."""
    key = request["key"]
    _tries[key] = _tries.get(key, 0) + 1
    if _tries[key] <= request["fail"]:
        raise actors.ActivityError("not yet", type="NotYet")
    return "done"


@actors.activity
async def stuck(request: Any) -> None:
    await trio.sleep_forever()


FLAKY = """
type: flaky_flow
version: 1
steps:
  - {id: go, activity: flaky, retry: {max_attempts: 3, initial_interval: 0.1s}}
"""
STUCK = """
type: stuck_flow
version: 1
steps:
  - {id: wait, activity: stuck, timeout: {start_to_close: 1s}, retry: {max_attempts: 1}}
"""
WAITS = """
type: waits_flow
version: 1
steps:
  - {id: approval, wait_signal: approved}
"""


def samples(metrics: Metrics) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


@dataclass
class Running:
    transport: Transport
    client: actors.Client
    orchestrator: actors.Orchestrator
    worker: actors.Worker
    metrics: Metrics


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    metrics = Metrics()
    async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport, metrics=metrics)
        worker = actors.Worker(
            transport,
            actors.collect_activities([sys.modules[__name__]]),
            actors.WorkerConfig(ack_wait=5.0),
            metrics=metrics,
        )
        await nursery.start(orchestrator.run)
        await nursery.start(worker.run)
        async with actors.Client(transport) as client:
            for text in (FLAKY, STUCK, WAITS):
                await client.register(text)
            yield Running(transport, client, orchestrator, worker, metrics)
        orchestrator.shutdown()
        worker.shutdown()


async def test_outcomes_retries_and_timeouts_are_counted(running: Running) -> None:
    client = running.client
    with trio.fail_after(60):
        ok = await client.start("flaky_flow", {"key": "a", "fail": 1})
        bad = await client.start("flaky_flow", {"key": "b", "fail": 5})
        late = await client.start("stuck_flow", None)
        waiting = await client.start("waits_flow", None)
        gone = await client.start("waits_flow", None)
        assert await client.result(ok) == "done"
        for failing in (bad, late):
            with pytest.raises(actors.WorkflowFailedError):
                await client.result(failing)
        await client.cancel(waiting)
        await client.terminate(gone)
        for stopped in (waiting, gone):
            with pytest.raises(actors.WorkflowError):
                await client.result(stopped)
    found = samples(running.metrics)
    assert value(found, "actors_workflows_started_total", type="flaky_flow") == 2
    assert value(found, "actors_workflows_completed_total", type="flaky_flow") == 1
    assert value(found, "actors_workflows_failed_total", type="flaky_flow") == 1
    assert value(found, "actors_workflows_failed_total", type="stuck_flow") == 1
    assert value(found, "actors_workflows_cancelled_total", type="waits_flow") == 1
    assert value(found, "actors_workflows_terminated_total", type="waits_flow") == 1
    assert value(found, "actors_workflow_duration_seconds_count", type="waits_flow") == 2
    # ok: 2 attempts; bad: 3; one retry for ok, two for bad.
    assert value(found, "actors_activity_attempts_total", activity="flaky", outcome="failed") == 4
    assert (
        value(found, "actors_activity_attempts_total", activity="flaky", outcome="completed") == 1
    )
    assert value(found, "actors_activity_retries_total", activity="flaky") == 3
    assert value(found, "actors_activity_run_seconds_count", activity="flaky") == 5
    # The stuck attempt is cancelled by the worker at its start-to-close limit.
    assert (
        value(found, "actors_activity_attempts_total", activity="stuck", outcome="timed_out") == 1
    )
    assert value(found, "actors_timeouts_total", kind="start_to_close") == 1
    assert value(found, "actors_decisions_total", event="cancel") == 1
    assert value(found, "actors_decisions_total", event="terminate") == 1
    assert value(found, "actors_connected") == 1


async def test_dead_letters_and_gauges(running: Running) -> None:
    await running.transport.publish("workflow.start.flaky_flow", b"not cbor")
    with trio.fail_after(30):
        await running.orchestrator.wait_until(lambda: running.orchestrator.stats["deadletters"])
    await running.metrics.refresh()
    found = samples(running.metrics)
    assert value(found, "actors_dead_letters_total", source="events") == 1
    assert value(found, "actors_partitions_owned") == len(running.orchestrator.partitions)
    assert value(found, "actors_activities_running", activity="flaky") == 0
    # The consumers' counts are polled from the broker at scrape time.
    assert ("actors_consumer_pending", frozenset(
        {("stream", "WORKFLOW_EVENTS"), ("consumer", "intake")}
    )) in found  # fmt: skip
    assert (
        value(found, "actors_consumer_pending", stream="ACTIVITY_TASKS", consumer="activity-flaky")
        == 0
    )


def test_two_services_in_one_process_keep_their_own_registries() -> None:
    first, second = Metrics(), Metrics()
    first.dead_letter("events")
    assert value(samples(first), "actors_dead_letters_total", source="events") == 1
    assert value(samples(second), "actors_dead_letters_total", source="events") == 0


def test_labels_past_the_cap_count_together() -> None:
    metrics = Metrics()
    for n in range(MAX_SERIES + 5):
        metrics.reported(f"activity{n}", None)
        metrics.ran(f"activity{n}", 0.01)
    found = samples(metrics)
    assert value(found, "actors_activity_attempts_total", activity="_other", outcome="_other") == 5
    assert value(found, "actors_activity_run_seconds_count", activity="_other") == 5
    series = {labels for name, labels in found if name == "actors_activity_attempts_total"}
    assert len(series) == MAX_SERIES + 1


async def test_the_probes_answer_and_say_why_not_ready() -> None:
    metrics, readiness = Metrics(), Readiness()
    waiting = ["the broker is away"]
    readiness.add(lambda: waiting[0] if waiting else None)
    metrics.dead_letter("tasks")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_probes, metrics, readiness)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).text == "ok\n"
            answer = await http.get("/readyz")
            assert (answer.status_code, answer.text) == (503, "the broker is away\n")
            waiting.clear()
            assert (await http.get("/readyz")).status_code == 200
            scraped = await http.get("/metrics")
            assert scraped.headers["content-type"].startswith("text/plain; version=")
            assert 'actors_dead_letters_total{source="tasks"} 1.0' in scraped.text
            assert (await http.post("/metrics")).status_code == 405
            assert (await http.get("/metrics/x")).status_code == 404
            head = await http.head("/healthz")
            assert (head.status_code, head.content) == (200, b"")
        # A request that never ends its headers is cut at the size limit.
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 3000)
            reply = b"".join([chunk async for chunk in _chunks(stream)])
        assert reply.startswith(b"HTTP/1.1 400 ")
        nursery.cancel_scope.cancel()


async def _chunks(stream: trio.SocketStream) -> AsyncIterator[bytes]:
    while chunk := await stream.receive_some():
        yield chunk


async def test_the_api_counts_requests_by_route_never_by_id(running: Running) -> None:
    from actors.http import serve_api

    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve_api(
                running.client, port=0, metrics=running.metrics, task_status=task_status
            )
        )
        async with httpx.AsyncClient(base_url=url) as http:
            for n in itertools.islice(itertools.count(), 3):
                assert (await http.get(f"/workflows/nobody-{n}")).status_code == 404
            assert (await http.get("/no/such/path")).status_code == 404
        nursery.cancel_scope.cancel()
    found = samples(running.metrics)
    route = {"method": "GET", "route": "/workflows/{type_or_id}", "status": "404"}
    assert value(found, "actors_api_requests_total", **route) == 3
    unmatched = {"method": "GET", "route": "_unmatched", "status": "404"}
    assert value(found, "actors_api_requests_total", **unmatched) == 1
    assert not [labels for name, labels in found if "nobody-0" in str(labels)]


def test_the_docs_and_the_dashboard_name_every_metric_and_no_other() -> None:
    """docs/observability.md lists each family; the Grafana dashboard uses only real ones."""
    root = Path(__file__).resolve().parents[1]
    # prometheus-client names a counter family without its _total.
    exported = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in Metrics().collect()
    }
    listed = set(
        re.findall(r"^\| `(actors_[a-z_]+)`", (root / "docs/observability.md").read_text(), re.M)
    )
    assert listed == exported
    dashboard = json.loads((root / "docs/grafana/actors.json").read_text())
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"actors_[a-z_]+", target["expr"])
    }
    assert used <= exported
    assert {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"} == {
        "Throughput", "Latency", "Failures", "Consumer lag", "Actors"
    }  # fmt: skip
