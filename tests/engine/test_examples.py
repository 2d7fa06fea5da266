"""The example order workflow (``actors/examples/order.yaml``), on both transports.

It uses parallel branches, a choice, a signal, a map and compensation; each
test plays one path through it, as the demo does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import failure_of, kinds, result_of, wait_for_step

import actors
import actors.examples.activities
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine

ACTIVITY_MODULE = actors.examples.activities
ORDER = dict(actors.examples.definitions())["order.yaml"]
SMALL = [{"sku": "apple", "quantity": 3}, {"sku": "pear", "quantity": 2}]
LARGE = [{"sku": "apple", "quantity": 60}, {"sku": "melon", "quantity": 5}]


async def _start(engine: Engine, instance: str, items: list[dict[str, Any]], card: str) -> None:
    await engine.client.register(ORDER)
    await engine.client.start(
        "order", {"order_id": instance, "items": items, "card": card}, id=instance
    )


async def _failed_and_undone(
    engine: Engine, instance: str, items: list[dict[str, Any]], card: str, error: str
) -> actors.InstanceInfo:
    """Run an order that fails with ``error``; return its final state, once its
    compensation completed, the reservation undone among it."""
    await _start(engine, instance, items, card)
    failure = await failure_of(engine, instance)
    assert failure.type == error
    with trio.fail_after(30):
        info = await engine.client.wait(instance)
    assert info.compensation == "completed"
    assert info.steps["reserve~undo"]["status"] == "completed"
    return info


async def _scheduled(engine: Engine, instance: str) -> list[str]:
    history = await engine.history(instance)
    return [r["detail"]["step"] for r in history if r["kind"] == "activity.scheduled"]


async def test_a_small_order_needs_no_approval(engine: Engine) -> None:
    await _start(engine, "o-small", SMALL, "visa")
    assert await result_of(engine, "o-small") == {
        "order": "o-small",
        "charged": 3.0,
        "approved_by": None,
        "tracking": ["TRK-O-SMALL-0", "TRK-O-SMALL-1"],
    }
    history = await kinds(engine, "o-small")
    assert history.count("parallel.completed") == 1
    assert "signal.waiting" not in history
    assert sorted(await _scheduled(engine, "o-small")) == sorted(
        ["reserve", "authorize", "charge", "ship_line@0", "ship_line@1"]
    )


async def test_a_large_order_waits_for_approval(engine: Engine) -> None:
    await _start(engine, "o-large", LARGE, "visa")
    await wait_for_step(engine, "o-large", "approval", "waiting")
    await engine.client.signal("o-large", "approved", {"by": "ann"})
    output = await result_of(engine, "o-large")
    assert (output["charged"], output["approved_by"]) == (45.0, "ann")


async def test_a_rejected_order_is_undone_latest_first(engine: Engine) -> None:
    await _start(engine, "o-no", LARGE, "visa")
    await wait_for_step(engine, "o-no", "approval", "waiting")
    await engine.client.cancel("o-no", "rejected")
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, "o-no")
    info = await engine.client.status("o-no")
    assert info is not None
    assert (info.status, info.compensation) == (InstanceStatus.CANCELLED, "completed")
    history = await engine.history("o-no")
    (started,) = [r for r in history if r["kind"] == "compensation.started"]
    # The two parallel steps completed in some order; they are undone in
    # the reverse of it.
    completed = [
        r["detail"]["step"]
        for r in history
        if r["kind"] == "activity.completed" and r["detail"]["step"] in ("reserve", "authorize")
    ]
    assert started["detail"]["steps"] == [f"{step}~undo" for step in reversed(completed)]
    assert info.steps["approval"]["status"] == "cancelled"


async def test_an_order_without_stock_fails_and_voids_the_hold(engine: Engine) -> None:
    info = await _failed_and_undone(
        engine, "o-short", [{"sku": "melon", "quantity": 50}], "visa", "OutOfStock"
    )
    # Every step whose task went out is undone (rule 11): the failed
    # reservation (its compensation tolerates "nothing to undo") and the card
    # hold, placed before the failure or still under way then (its
    # compensation waits for it to report).
    assert info.steps["authorize~undo"]["status"] == "completed"
    assert "charge" not in info.steps


async def test_an_order_without_a_card_fails_and_releases_the_stock(engine: Engine) -> None:
    """Regression: the reservation ran beside the declined authorization, but
    was abandoned and never released."""
    info = await _failed_and_undone(
        engine, "o-nocard", [{"sku": "apple", "quantity": 2}], "", "CardDeclined"
    )
    assert info.steps["reserve~undo"]["output"] == {"order": "o-nocard", "released": True}
    # Nothing was held: voiding it is a no-op.
    assert info.steps["authorize~undo"]["output"] == {"order": "o-nocard", "voided": None}


PAYOUT = dict(actors.examples.definitions())["payout.yaml"]


async def test_payouts_of_one_account_wait_for_each_other(engine: Engine) -> None:
    """The payout example: a second payout to an account is queued behind the first."""
    client = engine.client
    await client.register(PAYOUT)
    await client.start("payout", {"account": "acc-1", "amount": 5000}, id="pay-big")
    await wait_for_step(engine, "pay-big", "approval", "waiting")
    await client.start("payout", {"account": "acc-1", "amount": 10}, id="pay-small")
    await client.start("payout", {"account": "acc-2", "amount": 10}, id="pay-other")
    # Another account's payout is not held back.
    assert await result_of(engine, "pay-other") == {"account": "acc-2", "paid": 10}
    with trio.fail_after(30):
        await client.wait_for("pay-small", lambda info: info.status is InstanceStatus.QUEUED)
    (slot,) = [info for info in await client.slots() if info.value == "acc-1"]
    assert (slot.holders, slot.queue) == (("pay-big",), ("pay-small",))
    await client.signal("pay-big", "approved", {"by": "ann"})
    assert await result_of(engine, "pay-big") == {"account": "acc-1", "paid": 5000}
    assert await result_of(engine, "pay-small") == {"account": "acc-1", "paid": 10}
    history = await kinds(engine, "pay-small")
    assert history[:2] == ["flow.queued", "workflow.started"]
