"""Helpers the end-to-end control-flow tests share (waiting, history)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio
from records import Records

import actors
from actors.wire import HISTORY_STREAM, decode_history
from transport import ConsumerSpec, Transport

if TYPE_CHECKING:
    from conftest import Engine


@dataclass
class Seen:
    """What the control flow tests' activities did in one test, per instance
    (the ``seen`` fixture makes them)."""

    #: What ran: (activity, input).
    ran: defaultdict[str, list[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: Activities running now, and the most that ever ran at once.
    running: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: A long activity began, and it was told to stop.
    hauling: defaultdict[str, trio.Event] = field(default_factory=lambda: defaultdict(trio.Event))
    stopped: defaultdict[str, trio.Event] = field(default_factory=lambda: defaultdict(trio.Event))


SEEN = Records("seen", Seen)


def note(name: str, value: Any) -> None:
    """Record, from inside an activity, that ``name`` ran with ``value``."""
    SEEN.get().ran[actors.activity_info().instance_id].append((name, value))


# -- activities several modules serve (imported there, so the engine serves them) -------


@actors.activity
async def release(value: Any) -> str:
    note("release", value)
    return "released"


@actors.activity
async def charge(value: Any) -> str:
    """Charged, or a non-retryable ``Declined`` failure when the input has ``decline``."""
    note("charge", value)
    if isinstance(value, dict) and value.get("decline"):
        raise actors.ActivityError("card declined", type="Declined", non_retryable=True)
    return "charged"


@actors.activity
async def long_haul(value: Any) -> str:
    """Heartbeat for a minute unless cancelled (which it records in ``stopped``;
    ``hauling`` says it began)."""
    instance = actors.activity_info().instance_id
    seen = SEEN.get()
    note("long_haul", value)
    seen.hauling[instance].set()
    try:
        for _ in range(600):
            actors.heartbeat()
            await trio.sleep(0.1)
    except trio.Cancelled:
        seen.stopped[instance].set()
        raise
    return "finished"


def in_sequence(workflow_type: str, steps: Mapping[str, str]) -> dict[str, Any]:
    """A workflow definition of ``workflow_type`` running ``steps`` (step id ->
    activity) one after the other, each on the one before's output."""
    return {
        "type": workflow_type,
        "version": 1,
        "steps": [{"id": step, "activity": activity} for step, activity in steps.items()],
    }


def instance_id() -> str:
    return f"c{trio.current_time():.0f}{id(object()) % 100000}"


async def result_of(engine: Engine, instance: str, limit: float = 120) -> Any:
    with trio.fail_after(limit):
        return await engine.client.result(instance)


async def kinds(engine: Engine, instance: str) -> list[str]:
    return [record["kind"] for record in await engine.history(instance)]


async def wait_for_step(engine: Engine, instance: str, step: str, status: str) -> None:
    with trio.fail_after(60):
        await engine.client.wait_for(
            instance, lambda info: info.steps.get(step, {}).get("status") == status
        )


async def failure_of(engine: Engine, instance: str) -> actors.ErrorInfo:
    """The error of an instance that fails (the test fails if it does not)."""
    with pytest.raises(actors.WorkflowFailedError) as caught:
        await result_of(engine, instance)
    return caught.value.error


async def terminate_and_retry(engine: Engine, instance: str) -> None:
    """Terminate ``instance``, see its run end cancelled, retry it, and return
    once the second run has begun."""
    client = engine.client
    await client.terminate(instance)
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, instance)
    await client.retry(instance)
    with trio.fail_after(60):
        await client.wait_for(instance, lambda info: info.run == 2)


async def wait_until(
    orchestrators: Sequence[actors.Orchestrator], condition: Callable[[], bool]
) -> None:
    """Return once ``condition()`` holds, checked again on each change of any of
    the orchestrators (``Orchestrator.wait_until`` for several). Bound it."""
    async with trio.open_nursery() as nursery:

        async def until(orchestrator: actors.Orchestrator) -> None:
            await orchestrator.wait_until(condition)
            nursery.cancel_scope.cancel()

        for orchestrator in orchestrators:
            nursery.start_soon(until, orchestrator)


async def history_to_the_end(
    transport: Transport, instance_id: str, reader: str
) -> list[dict[str, Any]]:
    """The instance's history records, in order, once its terminal one is stored.

    Read from the start through a durable consumer named after ``reader``
    (one per call: it wakes as each record is stored, no polling). Bound it.
    """
    records: list[dict[str, Any]] = []
    spec = ConsumerSpec(
        durable=f"{reader}-{instance_id}"[:64], filter_subjects=(f"history.{instance_id}",)
    )
    async with transport.consume(HISTORY_STREAM, spec) as deliveries:
        async for delivery in deliveries:
            await delivery.ack()
            found = decode_history(delivery.data)
            records.extend(found)
            if any(
                record["kind"].startswith("workflow.") and record["kind"] != "workflow.started"
                for record in found
            ):
                break
    return records
