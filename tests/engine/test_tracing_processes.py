"""A trace across processes: the client here, the orchestrator and the worker as processes.

The services run with ``--trace-file`` (each writes its spans to a file as
JSON lines); this process records its own in memory. One workflow of three
steps: its spans, gathered from the three processes, form one trace whose
root is the client's start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from processes import Services
from test_processes import COUNT, count_output
from tracing_spans import one, spans

import actors
from transport import open_transport

__all__ = ["spans"]  # the fixture

pytestmark = pytest.mark.jetstream


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_one_trace_from_the_client_through_the_orchestrator_to_the_worker(
    services: Services, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    files = {name: tmp_path / f"{name}.spans" for name in ("orchestrator", "worker")}
    services.orchestrator("orchestrator", "--trace-file", str(files["orchestrator"]))
    services.worker("worker", "--trace-file", str(files["worker"]))
    await services.wait_ready("orchestrator", "worker")
    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(COUNT)
        instance = await client.start("ledger_count", {"n": 7, "count": 0}, id="traced-7")
        with trio.fail_after(60):
            assert await client.result(instance) == count_output(7)
    # The files are written as each span ends; the services end theirs before they
    # answer: stop them so that nothing is still on its way.
    assert await services.terminate_all() == {"orchestrator": 0, "worker": 0}

    start = one(spans.get_finished_spans(), "start ledger_count")
    assert start.context is not None
    trace_id = f"0x{start.context.trace_id:032x}"
    orchestrated = read_spans(files["orchestrator"])
    worked = read_spans(files["worker"])
    assert {s["context"]["trace_id"] for s in orchestrated + worked} == {trace_id}

    (root,) = [s for s in orchestrated if s["name"] == "workflow ledger_count"]
    assert root["parent_id"] == f"0x{start.context.span_id:016x}"
    assert root["resource"]["attributes"]["service.name"] == "actors-orchestrator"
    root_id = root["context"]["span_id"]
    decisions = sorted(s["name"] for s in orchestrated if s is not root)
    assert decisions == [f"activity_completed {step}" for step in ("first", "second", "third")]
    assert all(s["parent_id"] == root_id for s in orchestrated if s is not root)
    # Each attempt ran in the worker as a child of the workflow span ...
    assert sorted(s["attributes"]["actors.step"] for s in worked) == ["first", "second", "third"]
    assert {s["name"] for s in worked} == {"activity ledger_increment"}
    assert all(s["parent_id"] == root_id for s in worked)
    assert {s["resource"]["attributes"]["service.name"] for s in worked} == {"actors-worker"}
    # ... and its result brought its context back to the decision it made.
    attempts = {s["attributes"]["actors.step"]: s["context"]["span_id"] for s in worked}
    for decision in orchestrated:
        if decision is not root:
            step = decision["attributes"]["actors.step"]
            assert [link["context"]["span_id"] for link in decision["links"]] == [attempts[step]]
