"""Starting instances: ids of another type, and starts no orchestrator has taken yet.

These tests run the client first with no orchestrator, as a user does who
starts workflows before the services are up, then start one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import ledger_activities
import pytest
import trio
import trio.testing

import actors
from actors import InstanceStatus, Layout
from actors.wire import StartMessage, encode_start, start_subject
from transport import Transport, open_transport

if TYPE_CHECKING:
    from conftest import Engine

#: The engine fixture's worker serves these (the workflows here run none).
ACTIVITY_MODULE = ledger_activities
#: A short duplicate window, so that a test can outlive it (on JetStream too).
LAYOUT = Layout(duplicate_window=1.0)
HELD = {"type": "held", "steps": [{"id": "w", "wait_signal": "go"}]}
OTHER = {"type": "other", "steps": [{"id": "w", "wait_signal": "go"}]}


@asynccontextmanager
async def without_orchestrator(
    url: str, layout: Layout | None = None
) -> AsyncIterator[tuple[Transport, trio.Nursery, actors.Client]]:
    """A transport, a nursery for the services a test starts later, and a client."""
    async with (
        open_transport(url) as transport,
        trio.open_nursery() as nursery,
        actors.Client(transport, layout=layout) as client,
    ):
        yield transport, nursery, client


async def test_a_start_of_an_id_another_type_has_is_a_conflict(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    async with without_orchestrator(engine_url, LAYOUT) as (transport, nursery, client):
        await client.register(HELD)
        await client.register(OTHER)
        # No orchestrator yet: the start waits in the events stream.
        assert await client.start("held", 1, id="x") == "x"
        assert await client.status("x") is None
        assert await client.start_pending("x")

        # Regression: a start of the id as another type succeeded, and
        # its caller got the first instance's result. Here the broker
        # drops it as a duplicate; the first start's type decides.
        with pytest.raises(actors.InstanceConflictError) as caught:
            await client.start("other", 2, id="x")
        assert (caught.value.existing_type, caught.value.requested_type) == ("held", "other")
        assert "'x' is a 'held' workflow" in str(caught.value)
        # The same type again is idempotent, as documented.
        assert await client.start("held", 3, id="x") == "x"
        async with actors.Client(transport, layout=LAYOUT) as stranger:
            # Pending only for the client that started it: another does not know.
            assert not await stranger.start_pending("x")

        orchestrator = actors.Orchestrator(transport, actors.OrchestratorConfig(layout=LAYOUT))
        await nursery.start(orchestrator.run)
        with trio.fail_after(30):
            info = await client.wait_for("x", lambda _: True)
        assert (info.type, info.input, info.status) == ("held", 1, InstanceStatus.RUNNING)
        assert not await client.start_pending("x")

        # Past the duplicate window (JetStream prunes its ids on a timer:
        # allow twice the window), the stored instance's type decides.
        await trio.sleep(2.5)
        with pytest.raises(actors.InstanceConflictError, match="'x' is a 'held' workflow"):
            await client.start("other", 4, id="x")
        assert await client.start("held", 5, id="x") == "x"
        await client.signal("x", "go")
        with trio.fail_after(30):
            info = await client.wait("x")
        assert (info.type, info.input, info.status) == ("held", 1, InstanceStatus.COMPLETED)
        history = [record["kind"] for record in await client.history("x")]
        assert history.count("workflow.started") == 1
        orchestrator.shutdown()


async def test_a_wait_that_runs_out_tells_pending_from_running(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    async with without_orchestrator(engine_url) as (transport, nursery, client):
        await client.register(HELD)
        instance = await client.start("held", None, id="first")
        with trio.move_on_after(1):
            await client.wait(instance)
        # Nothing stored, and nothing took the start: pending, not running.
        assert await client.status(instance) is None
        assert await client.start_pending(instance)

        orchestrator = actors.Orchestrator(transport)
        await nursery.start(orchestrator.run)
        with trio.fail_after(30):
            await client.wait_for(instance, lambda _: True)
        with trio.move_on_after(0.5):
            await client.wait(instance)
        # Taken up: stored, and waiting for its signal.
        info = await client.status(instance)
        assert info is not None
        assert info.status is InstanceStatus.RUNNING
        assert not await client.start_pending(instance)
        orchestrator.shutdown()


async def test_the_orchestrator_dead_letters_a_start_of_an_id_another_type_has(
    engine: Engine,
) -> None:
    """A start that no client checked (a program of its own, past the broker's
    duplicate window) leaves a dead letter saying whose the id is; the
    instance is unchanged."""
    client = engine.client
    await client.register(HELD)
    await client.register(OTHER)
    await client.start("held", 1, id="mine")
    with trio.fail_after(30):
        await client.wait_for("mine", lambda _: True)
    data = encode_start(StartMessage("mine", 2))
    # Another message id than the first start's: the broker keeps it.
    await engine.transport.publish(start_subject("mine", "other"), data, msg_id="raw-start")
    [letter] = await engine.deadletters(1)
    assert letter["subject"] == "instance.mine.start.other"
    assert "instance 'mine' is of type 'held'" in letter["reason"]
    info = await client.status("mine")
    assert info is not None
    assert (info.type, info.input, info.status) == ("held", 1, InstanceStatus.RUNNING)


async def test_a_client_follows_what_it_starts_under_its_watch(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance started while the client's watch runs is waited for without a read."""
    client = engine.client
    await client.register(HELD)
    reads: list[str] = []
    read_status = client.status

    async def status(instance_id: str) -> actors.InstanceInfo | None:
        reads.append(instance_id)
        return await read_status(instance_id)

    monkeypatch.setattr(client, "status", status)
    with trio.fail_after(30):
        # Started before any wait: no watch yet, so its wait reads the key.
        first = await client.start("held", None)
        await client.signal(first, "go", 1)
        assert (await client.wait(first)).status is InstanceStatus.COMPLETED
        assert reads == [first]
        # Started under the watch: every state of it reaches the watch.
        second = await client.start("held", None, id="followed")
        await client.signal(second, "go", 2)
        assert (await client.wait(second)).status is InstanceStatus.COMPLETED
        assert reads == [first]
        # Ended before this client waits for it: its end is not lost.
        third = await client.start("held", None)
        await client.signal(third, "go", 3)
        async with actors.Client(engine.transport) as other:
            await other.wait(third)
        assert (await client.wait(third)).status is InstanceStatus.COMPLETED
