"""Events sent right after (or before) a start: they wait for their instance.

With several orchestrators sharing the events consumer, a signal or cancel
sent just after ``Client.start`` can reach a process that has no state for
the instance yet, while another still holds the start. Such an event must
wait for its instance (``OrchestratorConfig.start_wait``), not go to dead
letters: a lost signal leaves its instance waiting for ever, a lost cancel
lets it run on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing
from flow import result_of

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def pair(value: list[Any]) -> list[Any]:
    return value


#: Waits for a signal, then for a second one, and returns both payloads.
WAITER = {
    "type": "waiter",
    "steps": [
        {"id": "first", "wait_signal": "go"},
        {"id": "second", "wait_signal": "go"},
        {"id": "both", "activity": "pair", "input": "[steps.first.output, steps.second.output]"},
    ],
}


async def test_a_signal_sent_before_its_start_is_applied(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(WAITER)
    await engine.client.signal("early", "go", "one")
    await trio.sleep(1.0)  # the signal is stored, and tried, well before the start
    await engine.client.start("waiter", None, id="early")
    await engine.client.signal("early", "go", "two")
    assert await result_of(engine, "early") == ["one", "two"]
    assert engine.orchestrator.stats["deadletters"] == 0


async def test_a_cancel_sent_before_its_start_is_applied(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(WAITER)
    await engine.client.cancel("doomed", "changed my mind")
    await trio.sleep(1.0)
    await engine.client.start("waiter", None, id="doomed")
    with trio.fail_after(60):
        info = await engine.client.wait("doomed")
    assert info.status is InstanceStatus.CANCELLED
    assert engine.orchestrator.stats["deadletters"] == 0


async def test_an_event_whose_start_never_comes_goes_to_dead_letters_after_start_wait(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    wait = engine.orchestrator._config.start_wait
    assert wait is not None
    before = engine.transport.now()
    await engine.client.signal("nobody-here", "ok", 1)
    [letter] = await engine.deadletters(1)
    assert engine.transport.now() - before >= wait
    assert letter["subject"] == "workflow.signal.nobody-here.ok"
    assert "no instance 'nobody-here'" in letter["reason"]
    assert "did not come within" in letter["reason"]
    assert engine.orchestrator.stats["waits_for_start"] == 1
