"""Signal-with-start: one message that starts an instance if need be, then signals it.

On both transports (the engine fixture), through the client and as a foreign
client would send it (a JSON body on the start subject, docs/wire.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import ledger_activities
import pytest
import trio
from flow import kinds, result_of, wait_for_step

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine

#: The engine fixture's worker serves these (the workflows here run none).
ACTIVITY_MODULE = ledger_activities
#: An entity-like workflow: its input, then two signals "add" in turn.
COUNTER = {
    "type": "counter",
    "steps": [{"id": "first", "wait_signal": "add"}, {"id": "second", "wait_signal": "add"}],
    "output": "{input: input, added: [steps.first.output, steps.second.output]}",
}


async def test_it_starts_an_absent_instance_then_delivers_the_signal(engine: Engine) -> None:
    client = engine.client
    await client.register(COUNTER)
    existed = await client.signal_with_start("counter", "c-1", "add", 1, input={"n": 0})
    assert not existed
    await wait_for_step(engine, "c-1", "second", "waiting")
    # The instance exists now: the second call signals it, and its input is not used.
    assert await client.signal_with_start("counter", "c-1", "add", 2, input={"n": 99})
    assert await result_of(engine, "c-1") == {"input": {"n": 0}, "added": [1, 2]}
    records = await kinds(engine, "c-1")
    assert records.count("workflow.started") == 1
    assert records.count("signal.received") == 2


async def test_a_retried_call_with_its_signal_id_counts_once(engine: Engine) -> None:
    client = engine.client
    await client.register(COUNTER)
    for _ in range(3):
        await client.signal_with_start("counter", "c-2", "add", "x", signal_id="s-1")
    await wait_for_step(engine, "c-2", "second", "waiting")
    await client.signal_with_start("counter", "c-2", "add", "y", signal_id="s-2")
    assert await result_of(engine, "c-2") == {"input": None, "added": ["x", "y"]}


async def test_a_start_racing_a_signal_with_start_makes_one_instance(engine: Engine) -> None:
    client = engine.client
    await client.register(COUNTER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: client.start("counter", {"n": 1}, id="c-3"))
        nursery.start_soon(lambda: client.signal_with_start("counter", "c-3", "add", 5))
    await wait_for_step(engine, "c-3", "first", "completed")
    await client.signal("c-3", "add", 6)
    outcome = await result_of(engine, "c-3")
    assert outcome["added"] == [5, 6]
    assert (await kinds(engine, "c-3")).count("workflow.started") == 1


async def test_an_instance_of_another_type_is_a_conflict(engine: Engine) -> None:
    client = engine.client
    await client.register(COUNTER)
    await client.register({"type": "other", "steps": [{"id": "w", "wait_signal": "add"}]})
    await client.start("other", None, id="c-4")
    await wait_for_step(engine, "c-4", "w", "waiting")
    with pytest.raises(actors.InstanceConflictError):
        await client.signal_with_start("counter", "c-4", "add", 1)
    # The message changed nothing: the instance still waits, and the refusal is on record.
    [letter] = await engine.deadletters(1)
    assert "is of type 'other'" in letter["reason"]
    info = await client.status("c-4")
    assert info is not None
    assert info.status is InstanceStatus.RUNNING
    assert info.steps["w"]["status"] == "waiting"


async def test_a_finished_instance_takes_no_signal(engine: Engine) -> None:
    client = engine.client
    await client.register({"type": "once", "steps": [{"id": "w", "wait_signal": "go"}]})
    await client.signal_with_start("once", "c-5", "go", "a")
    assert await result_of(engine, "c-5") == "a"
    assert await client.signal_with_start("once", "c-5", "go", "b")
    info = await client.status("c-5")
    assert info is not None
    assert info.output == "a"


async def test_the_wire_form_a_foreign_client_sends(engine: Engine) -> None:
    """A JSON start with a ``signal`` field, on the instance's start subject (docs/wire.md)."""
    await engine.client.register(COUNTER)
    body = {"id": "c-6", "input": 7, "signal": {"name": "add", "payload": [1]}}
    for payload in ([1], [2]):
        body["signal"] = {"name": "add", "payload": payload}
        await engine.transport.publish(
            "instance.c-6.start.counter",
            json.dumps(body).encode(),
            msg_id=f"signalstart.c-6.{payload[0]}",
        )
    assert await result_of(engine, "c-6") == {"input": 7, "added": [[1], [2]]}


async def test_a_signal_with_start_needs_an_id(engine: Engine) -> None:
    await engine.client.register(COUNTER)
    body = {"input": 1, "signal": {"name": "add"}}
    await engine.transport.publish("workflow.start.counter", json.dumps(body).encode())
    [letter] = await engine.deadletters(1)
    assert "signal-with-start needs an id" in letter["reason"]
