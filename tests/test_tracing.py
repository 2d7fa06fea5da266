"""Traces of workflows run in this process on the memory transport.

OpenTelemetry's SDK records the spans in its in-memory exporter; the tests
check the structure docs/observability.md draws: one trace per instance,
its workflow span the child of the client's start, each decision and each
activity attempt the workflow span's children, timers and signals among the
decisions, a child workflow in a trace of its own linked to its parent's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from in_memory import serving
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_spans import by_name, one, spans

import actors
from actors.observability import tracing

__all__ = ["spans"]  # the fixture, shared with the tests across processes

PARENT = """
type: traced_parent
version: 1
steps:
  - {id: first, activity: echo}
  - {id: nap, sleep: 0.05s}
  - {id: approval, wait_signal: approved}
  - {id: kid, workflow: traced_child}
"""
CHILD = """
type: traced_child
version: 1
steps:
  - {id: only, activity: echo}
"""


@actors.activity
async def echo(value: Any) -> Any:
    return value


@pytest.fixture
async def client() -> AsyncIterator[actors.Client]:
    async with serving(sys.modules[__name__]) as client:
        await client.register(CHILD)
        await client.register(PARENT)
        yield client


async def test_one_trace_per_instance_with_its_decisions_and_attempts(
    spans: InMemorySpanExporter, client: actors.Client
) -> None:
    with trio.fail_after(30):
        instance = await client.start("traced_parent", {"x": 1}, id="traced-1")
        await client.signal(instance, "approved", {"by": "ann"})
        await client.result(instance)
    got = list(spans.get_finished_spans())

    start = one(got, "start traced_parent")
    root = one(got, "workflow traced_parent")
    assert start.context is not None
    assert root.context is not None
    trace_id = root.context.trace_id
    # The client's start is the workflow span's parent: one trace from the caller on.
    assert root.parent is not None
    assert root.parent.span_id == start.context.span_id
    assert start.context.trace_id == trace_id
    assert root.attributes is not None
    assert root.attributes["actors.instance.id"] == "traced-1"

    parent_spans = [s for s in got if s.context is not None and s.context.trace_id == trace_id]
    children_of_root = [
        s for s in parent_spans if s.parent and s.parent.span_id == root.context.span_id
    ]
    names = sorted(s.name for s in children_of_root)
    assert names == sorted(
        [
            "activity echo",  # the attempt, recorded by the worker
            "activity_completed first",
            "timer sleep nap",
            "signal approved",
            "activity_completed kid",  # the child's end, reported to the parent
        ]
    )
    # The attempt's result carries its context back: its decision links to it.
    attempt = one(parent_spans, "activity echo")
    completed = one(parent_spans, "activity_completed first")
    assert attempt.context is not None
    assert [link.context.span_id for link in completed.links] == [attempt.context.span_id]
    assert attempt.attributes is not None
    assert attempt.attributes["actors.outcome"] == "completed"

    # The child runs in a trace of its own, linked to its parent's workflow span.
    child = one(got, "workflow traced_child")
    assert child.context is not None
    assert child.context.trace_id != trace_id
    assert child.parent is None
    assert [link.context.span_id for link in child.links] == [root.context.span_id]
    child_trace = [
        s for s in got if s.context is not None and s.context.trace_id == child.context.trace_id
    ]
    assert sorted(s.name for s in child_trace) == sorted(
        ["workflow traced_child", "activity echo", "activity_completed only"]
    )
    # The child's end reaches the parent with the child's context.
    kid = one(parent_spans, "activity_completed kid")
    assert [link.context.trace_id for link in kid.links] == [child.context.trace_id]


async def test_a_raw_start_with_a_traceparent_joins_the_callers_trace(
    spans: InMemorySpanExporter, client: actors.Client
) -> None:
    tracer = trace.get_tracer("a program of its own")
    with tracer.start_as_current_span("caller") as caller:
        headers = tracing.current_headers()
    assert headers is not None
    transport = client._transport
    # A plain start (no instance in the subject), as a program in another
    # language publishes it: CBOR {"v": 1, "kind": "start", "input": ...}.
    from actors.wire import StartMessage, encode_start

    await transport.publish(
        "workflow.start.traced_child",
        encode_start(StartMessage(None, {"y": 2}, 0)),
        headers=headers,
    )
    with trio.fail_after(30):
        # The spans come from other tasks, with nothing to wait on: poll them.
        while not by_name(list(spans.get_finished_spans()), "activity_completed only"):  # noqa: ASYNC110
            await trio.sleep(0.01)
    got = list(spans.get_finished_spans())
    root = one(got, "workflow traced_child")
    assert root.parent is not None
    assert root.parent.span_id == caller.get_span_context().span_id
    assert root.context is not None
    assert root.context.trace_id == caller.get_span_context().trace_id


async def test_untraced_instances_carry_no_trace(client: actors.Client) -> None:
    """No provider set: no span, no header, nothing stored."""
    assert not tracing.tracing()
    with trio.fail_after(30):
        instance = await client.start("traced_child", 3)
        assert await client.result(instance) == 3
    entry = await client._kv().get(instance)
    assert entry is not None
    from actors.wire import decode_state

    assert decode_state(entry.value).trace is None


def test_the_engine_imports_and_runs_without_opentelemetry() -> None:
    """With the extra missing (its imports fail), a workflow still runs."""
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed: every import of it fails
sys.path.insert(0, sys.argv[1])  # this folder, for its in_memory helper
import trio, actors
from actors.observability import tracing
from in_memory import serving
assert not tracing.tracing()

@actors.activity
async def echo(value):
    return value

async def main():
    async with serving(sys.modules[__name__]) as client:
        await client.register("type: t\\nversion: 1\\nsteps: [{id: a, activity: echo}]")
        print(await client.result(await client.start("t", 5)))

trio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "5"), done.stderr
