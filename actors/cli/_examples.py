"""The example workflows that ``demo`` and ``dev`` run: orders, refunds and counts.

The definitions and the activities are the package's (:mod:`actors.examples`),
so an installed copy runs them from any folder. :func:`run_examples` plays
each order and refund along its path (the manager's decision is a signal, or
a cancel) and starts ``count`` workflows at once, printing one line for each
outcome.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import trio
import yaml

from ..core import InstanceStatus
from ..examples import definitions, schedules
from ..runtime import MAX_LIMIT, Client, InstanceInfo, ScheduleExistsError
from ._options import BoundedNumber
from ._settings import Bounds

__all__ = [
    "COUNT",
    "DEFAULT_COUNT",
    "ROOT",
    "register_examples",
    "run_examples",
]

#: The folder the ``actors`` package is in (the checkout, or site-packages).
ROOT: Final = Path(__file__).resolve().parents[2]
#: How many ``count`` workflows the examples run at once, and the most (as ``start --count``).
DEFAULT_COUNT: Final = 200
COUNT: Final = BoundedNumber(Bounds("int", 0, high=MAX_LIMIT))

_SMALL: Final = [{"sku": "apple", "quantity": 3}, {"sku": "pear", "quantity": 2}]
_LARGE: Final = [{"sku": "apple", "quantity": 60}, {"sku": "melon", "quantity": 5}]
#: The orders: name, input, and what the "manager" does when asked.
_ORDERS: Final[list[tuple[str, dict[str, Any], str]]] = [
    ("small", {"items": _SMALL, "card": "visa-1"}, ""),
    ("large", {"items": _LARGE, "card": "visa-2"}, "approve"),
    ("rejected", {"items": _LARGE, "card": "visa-3"}, "reject"),
    ("short", {"items": [{"sku": "melon", "quantity": 50}], "card": "visa-4"}, ""),
    ("nocard", {"items": _SMALL, "card": ""}, ""),
]


async def register_examples(client: Client) -> None:
    """Register every example definition, printing a line for each."""
    for name, text in definitions():
        definition = await client.register(text)
        print(f"registered    {definition.type} v{definition.version}  ({name})", flush=True)
    for name, text in schedules():
        data = yaml.safe_load(text)
        try:
            state = await client.schedules.create(data)
        except ScheduleExistsError:
            print(f"schedule      {data['id']} (exists already)", flush=True)
            continue
        print(f"schedule      {state.schedule.id}  ({name})", flush=True)


async def run_examples(client: Client, count: int) -> None:
    """Register the examples and run them: the orders, the refunds, ``count`` counts."""
    await register_examples(client)
    tag = time.strftime("%H%M%S")
    for name, order, decision in _ORDERS:
        await _play(client, "order", f"order-{tag}-{name}", order, decision)
    # One refund approved by a signal, one rejected (cancelled, then compensated).
    refund = {"items": [{"sku": "pear", "quantity": 4}]}
    for name, decision in (("approved", "approve"), ("rejected", "reject")):
        await _play(client, "refund", f"refund-{tag}-{name}", refund, decision)
    started = time.perf_counter()
    ids = [await client.start("count", {"count": 0}) for _ in range(count)]
    results: list[Any] = []

    async def collect(instance_id: str) -> None:
        results.append(await client.result(instance_id))

    async with trio.open_nursery() as nursery:
        for instance_id in ids:
            nursery.start_soon(collect, instance_id)
    elapsed = time.perf_counter() - started
    right = sum(result == {"count": 3} for result in results)
    print(
        f"count x{count:<14} {right} of {count} returned {{'count': 3}} in {elapsed:.2f} s "
        f"({count / elapsed:.0f} workflows/s, 3 activities each)"
    )
    counts: dict[str, int] = {}
    for status in InstanceStatus:
        _, counts[str(status)] = await client.count_and_list(status=status, limit=0)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
    print(f"stored        {sum(counts.values())} instances over all runs ({summary})")


def _waiting_for_approval(info: InstanceInfo) -> bool:
    # An instance that ended without asking will never ask.
    return info.status.terminal or info.steps.get("approval", {}).get("status") == "waiting"


async def _play(
    client: Client, workflow_type: str, instance_id: str, data: dict[str, Any], decision: str
) -> None:
    """Run one example instance to its end, printing its outcome.

    ``decision`` (``approve``, ``reject`` or ``""`` for none) is what a person
    decides once the instance asks for an approval: a signal, or a cancel.
    """
    started = time.perf_counter()
    await client.start(workflow_type, {"order_id": instance_id, **data}, id=instance_id)
    if decision:
        # The examples play the manager: the decision comes once asked for.
        await client.wait_for(instance_id, _waiting_for_approval)
        if decision == "approve":
            await client.signal(instance_id, "approved", {"by": "manager"})
        else:
            await client.cancel(instance_id, "rejected by the manager")
    info = await client.wait(instance_id)
    _print_outcome(instance_id, info, time.perf_counter() - started)


def _print_outcome(instance_id: str, info: InstanceInfo, elapsed: float) -> None:
    if info.output is not None:
        outcome = json.dumps(info.output)
    elif info.error is not None:
        outcome = f"{info.error.type}: {info.error.message}"
    else:
        outcome = ""
    if info.compensation:
        outcome = f"compensation {info.compensation}; {outcome}".rstrip("; ")
    print(f"{instance_id:<24} {info.status:<10} {elapsed * 1000:6.0f} ms  {outcome}")
