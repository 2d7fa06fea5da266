"""Pause and retry survive the SIGKILL of the orchestrator, the worker and the server.

Real processes against a nats-server that fsyncs every write (as the
fault suite's ``synced_server``); the ledger (``tests/engine/ledger_activities.py``)
says what ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from checker import LEDGER_FLOW, LEDGER_STEPS, LEDGER_TYPE, ledger_input, ledger_output
from ledger_activities import FIXED_SUFFIX, read_ledger
from processes import Services

import actors
from actors.testing import NatsServer
from transport import open_transport

pytestmark = pytest.mark.jetstream

ACK_WAIT = "2"
COUNT = 6
BUGGY_TYPE = "ledger_buggy_three"
BUGGY_FLOW = f"""
type: {BUGGY_TYPE}
version: 1
steps:
  - {{id: one, activity: ledger_increment}}
  - {{id: two, activity: ledger_buggy}}
  - {{id: three, activity: ledger_increment}}
"""


@pytest.fixture
def services(synced_server: NatsServer, tmp_path: Path) -> Iterable[Services]:
    with Services(synced_server.url, tmp_path / "services", tmp_path / "ledger") as running:
        yield running


@asynccontextmanager
async def client_of(url: str) -> AsyncIterator[actors.Client]:
    async with open_transport(url) as transport, actors.Client(transport) as client:
        yield client


async def until(client: actors.Client, ids: Iterable[str], check: object) -> None:
    with trio.fail_after(60):
        for instance_id in ids:
            await client.wait_for(instance_id, check)  # type: ignore[arg-type]


async def kill_everything(services: Services, server: NatsServer, *names: str) -> None:
    """SIGKILL the named services and the server; restart them all."""
    for name in names:
        await services.sigkill(name)
    await trio.to_thread.run_sync(server.kill)
    await trio.to_thread.run_sync(server.restart)
    services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT)
    services.worker("worker", "--ack-wait", ACK_WAIT)
    await services.wait_ready("orchestrator", "worker")


async def history_of(client: actors.Client, instance_id: str, last: str) -> list[dict[str, Any]]:
    """The instance's records once its record ``last`` is there.

    The orchestrator publishes a decision's records just after it stores
    the state a wait sees: a reader right after the wait may be a little
    early. The stream has no watch of one subject: read again, briefly.
    """
    delay = 0.01
    with trio.fail_after(30):
        while True:
            records = await client.history(instance_id)
            if any(record["kind"] == last for record in records):
                return records
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)


def ran(services: Services) -> Counter[tuple[str, str]]:
    """Activity runs that ended, by (instance, step)."""
    return Counter(
        (entry.instance, entry.step)
        for entry in read_ledger(services.ledger)
        if entry.phase == "end"
    )


async def test_a_pause_holds_across_sigkills_and_resumes_once(
    services: Services, synced_server: NatsServer
) -> None:
    services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT)
    await services.wait_ready("orchestrator")
    ids = [f"p-{n}" for n in range(COUNT)]
    async with client_of(services.url) as client:
        await client.register(LEDGER_FLOW)
        # No worker yet: each first task waits in its queue while the instance is paused.
        for n, instance_id in enumerate(ids):
            await client.start(LEDGER_TYPE, ledger_input(n), id=instance_id)
        await until(client, ids, lambda info: "one" in info.steps)
        for instance_id in ids:
            await client.pause(instance_id, "maintenance", by="ops")
        await until(client, ids, lambda info: info.paused is not None)
        services.worker("worker", "--ack-wait", ACK_WAIT)
        await services.wait_ready("worker")
        # The task out before the pause runs; its result is held.
        await until(client, ids, lambda info: info.held == 1)
    await kill_everything(services, synced_server, "orchestrator", "worker")
    async with client_of(services.url) as client:
        for instance_id in ids:
            await client.signal(instance_id, "poke", 1)
        # Decided after the restart (held too), and still nothing new went out.
        await until(client, ids, lambda info: info.held == 2)
        for instance_id in ids:
            info = await client.status(instance_id)
            assert info is not None
            assert info.paused is not None
            assert (info.paused["by"], info.paused["reason"]) == ("ops", "maintenance")
            assert set(info.steps) == {"one"}, info.steps
        assert set(ran(services)) == {(instance_id, "one") for instance_id in ids}

        for instance_id in ids:
            await client.resume(instance_id)
        # Killed while it resumes them.
        await services.sigkill("orchestrator")
        services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT)
        for n, instance_id in enumerate(ids):
            with trio.fail_after(60):
                assert await client.result(instance_id) == ledger_output(n)
            records = await history_of(client, instance_id, "workflow.completed")
            kinds = Counter(record["kind"] for record in records)
            assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
            assert kinds["activity.completed"] == len(LEDGER_STEPS)
            assert (kinds["instance.paused"], kinds["instance.resumed"]) == (1, 1)
            assert kinds["instance.event_held"] == 2


async def test_a_retry_survives_sigkills_and_runs_only_what_failed(
    services: Services, synced_server: NatsServer
) -> None:
    services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT)
    services.worker("worker", "--ack-wait", ACK_WAIT)
    await services.wait_ready("orchestrator", "worker")
    ids = {f"r-{n}": n for n in range(COUNT)}
    async with client_of(services.url) as client:
        await client.register(BUGGY_FLOW)
        for instance_id, n in ids.items():
            await client.start(BUGGY_TYPE, ledger_input(n), id=instance_id)
        for instance_id in ids:
            with trio.fail_after(60), pytest.raises(actors.WorkflowFailedError):
                await client.result(instance_id)
        fixed = trio.Path(str(services.ledger) + FIXED_SUFFIX)
        await fixed.touch()  # the bug is fixed
        retried = await client.retry_matching(workflow_type=BUGGY_TYPE, rate=1000)
        assert sorted(retried) == sorted(ids)
    # Killed with the retries in flight, the server too.
    await kill_everything(services, synced_server, "orchestrator", "worker")
    async with client_of(services.url) as client:
        await until(client, ids, lambda info: info.run == 2 and info.status.terminal)
        for instance_id, n in ids.items():
            output = await client.result(instance_id)
            assert output == {**ledger_output(n), "count": 3, "trail": ["one", "two", "three"]}
            records = await history_of(client, instance_id, "workflow.completed")
            kinds = Counter(record["kind"] for record in records)
            assert kinds["instance.retried"] == 1
            assert (kinds["workflow.failed"], kinds["workflow.completed"]) == (1, 1)
    runs = ran(services)
    for instance_id in ids:
        # The step before the failed one kept its output: it did not run again.
        assert runs[(instance_id, "one")] == 1
        assert runs[(instance_id, "three")] >= 1
