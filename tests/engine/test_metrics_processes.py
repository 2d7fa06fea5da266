"""Metrics and probes scraped from real service processes after a workload.

``python -m actors.orchestrator`` and ``python -m actors.worker`` run with
``--metrics-port 0`` against a nats-server of the test's own; the test reads
the port each logged, waits for ``/readyz``, runs ``N`` three-step workflows
and checks that what the services report is what ran.
"""

from __future__ import annotations

import re

import pytest
import trio
from metrics_samples import Samples, parse, value
from processes import Service, Services
from test_processes import run_counts

import actors
from actors.testing import http_get
from transport import open_transport

pytestmark = pytest.mark.jetstream

N = 20
_URL = re.compile(r"metrics, /healthz and /readyz on (http://\S+)")


async def probe_url(service: Service) -> str:
    """The URL the service logged for its probes (it logs it before it is ready)."""
    with trio.fail_after(60):
        while (found := _URL.search(service.log())) is None:
            # Another process's log is all there is to wait on: poll it.
            if service.proc.poll() is not None:
                raise AssertionError(f"{service.name} exited:\n{service.log()}")
            await trio.sleep(0.05)
    return found.group(1)


async def get(url: str) -> tuple[int, str]:
    status, body = await trio.to_thread.run_sync(http_get, url, 10)
    return status, body.decode()


async def scrape(url: str) -> Samples:
    status, text = await get(f"{url}/metrics")
    assert status == 200
    return parse(text)


async def test_scraped_metrics_match_the_workload(services: Services) -> None:
    orchestrator = services.orchestrator(
        "orchestrator", "--metrics-port", "0", "--metrics-host", "127.0.0.1"
    )
    worker = services.worker("worker", "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    urls = {name: await probe_url(s) for name, s in [("o", orchestrator), ("w", worker)]}
    for url in urls.values():
        assert await get(f"{url}/healthz") == (200, "ok\n")
    await services.wait_ready("orchestrator", "worker")
    for url in urls.values():
        assert await get(f"{url}/readyz") == (200, "ready\n")
        assert (await get(f"{url}/nothing"))[0] == 404

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await run_counts(client, N)

    o = await scrape(urls["o"])
    flow = {"type": "ledger_count"}
    assert value(o, "actors_workflows_started_total", **flow) == N
    assert value(o, "actors_workflows_completed_total", **flow) == N
    assert value(o, "actors_workflows_failed_total", **flow) == 0
    assert value(o, "actors_workflow_duration_seconds_count", **flow) == N
    # One decision per start and per completed step (nothing else changed an instance).
    assert value(o, "actors_decisions_total", event="start") == N
    assert value(o, "actors_decisions_total", event="activity_completed") == 3 * N
    assert value(o, "actors_decision_seconds_count") == 4 * N
    assert value(o, "actors_event_lag_seconds_count") == 4 * N
    assert value(o, "actors_activity_retries_total", activity="ledger_increment") == 0
    assert value(o, "actors_connected") == 1
    assert value(o, "actors_partitions_owned") >= 1
    # Everything is decided and acknowledged: the events' consumers are empty.
    pending = [
        v
        for (name, _), v in o.items()
        if name in ("actors_consumer_pending", "actors_consumer_unacked")
    ]
    assert pending
    assert not any(pending)
    assert (
        "actors_consumer_pending",
        frozenset({("stream", "WORKFLOW_EVENTS"), ("consumer", "intake")}),
    ) in o

    w = await scrape(urls["w"])
    step = {"activity": "ledger_increment"}
    assert value(w, "actors_activity_attempts_total", outcome="completed", **step) == 3 * N
    assert value(w, "actors_activity_attempts_total", outcome="failed", **step) == 0
    assert value(w, "actors_activity_run_seconds_count", **step) == 3 * N
    assert value(w, "actors_activity_schedule_to_start_seconds_count", **step) == 3 * N
    assert value(w, "actors_activities_running", **step) == 0
    assert value(w, "actors_dead_letters_total", source="tasks") == 0
    assert (
        value(
            w,
            "actors_consumer_pending",
            stream="ACTIVITY_TASKS",
            consumer="activity-ledger_increment",
        )
        == 0
    )
    assert value(w, "actors_connected") == 1

    # A port taken: the service says so in one line and exits 2, as for its broker.
    taken = urls["w"].rsplit(":", 1)[1]
    clash = services.orchestrator("clash", "--metrics-port", taken, "--metrics-host", "127.0.0.1")
    assert await trio.to_thread.run_sync(clash.proc.wait, 60) == 2
    assert f"orchestrator: cannot listen on 127.0.0.1:{taken} for metrics" in clash.log()
    assert "Traceback" not in clash.log()

    # Stopped, the service takes its probes along.
    assert await services.terminate("orchestrator") == 0
    with pytest.raises(OSError, match="refused"):
        await get(f"{urls['o']}/healthz")
