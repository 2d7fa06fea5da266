"""Parallel branches, map, choice and child workflows, on both transports.

On memory the activities' pauses run on the autojump clock; on NATS they are
real and short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import (
    SEEN,
    Seen,
    charge,
    failure_of,
    kinds,
    long_haul,
    note,
    release,
    result_of,
    wait_for_step,
)

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine


# Every test: the activities note what they ran.
pytestmark = pytest.mark.usefixtures("seen")

SHARED_ACTIVITIES = (release, charge, long_haul)


@actors.activity
async def work(value: Any) -> Any:
    """Pause for ``value["pause"]`` seconds (if given), counting who runs at once."""
    instance = actors.activity_info().instance_id
    seen = SEEN.get()
    note("work", value)
    seen.running[instance] += 1
    seen.peak[instance] = max(seen.peak[instance], seen.running[instance])
    try:
        if isinstance(value, dict):
            await trio.sleep(float(value.get("pause", 0)))
    finally:
        seen.running[instance] -= 1
    return value


@actors.activity
async def double(value: Any) -> Any:
    note("double", value)
    if isinstance(value, dict):
        await trio.sleep(float(value.get("pause", 0)))
        value = value["n"]
    return value * 2


@actors.activity
async def reserve(value: Any) -> str:
    note("reserve", value)
    return f"r-{value}"


def _hold(reservation: str) -> dict[str, Any]:
    """A step ``hold`` that reserves ``reservation`` (an expression) and releases it
    when compensated."""
    return {
        "id": "hold",
        "activity": "reserve",
        "input": reservation,
        "compensate": {"activity": "release"},
    }


def _memory(engine: Engine) -> bool:
    return type(engine.transport).__module__.endswith("memory")


# -- parallel --------------------------------------------------------------------


async def test_parallel_branches_run_at_once_and_join(engine: Engine, seen: Seen) -> None:
    await engine.client.register(
        {
            "type": "fanout",
            "steps": [
                {
                    "id": "both",
                    "parallel": [
                        {
                            "id": "slow",
                            "steps": [{"id": "s1", "activity": "work", "input": "{pause: `1`}"}],
                        },
                        {
                            "id": "quick",
                            "steps": [
                                {"id": "q1", "activity": "double", "input": "input.n"},
                                {"id": "q2", "activity": "double"},
                            ],
                        },
                    ],
                },
                {"id": "after", "activity": "work"},
            ],
        }
    )
    instance = await engine.client.start("fanout", {"n": 5})
    assert await result_of(engine, instance) == {"slow": {"pause": 1}, "quick": 20}
    history = await kinds(engine, instance)
    # Both branches began in the decision that began the parallel step,
    # before anything completed.
    first_done = history.index("activity.completed")
    assert history[:first_done].count("activity.scheduled") == 2
    assert history.count("parallel.completed") == 1
    # The step after the join receives the branches' outputs.
    assert seen.ran[instance][-1] == ("work", {"slow": {"pause": 1}, "quick": 20})


async def test_a_failed_branch_cancels_its_siblings_and_compensates(
    engine: Engine, seen: Seen
) -> None:
    await engine.client.register(
        {
            "type": "fanfail",
            "steps": [
                {
                    "id": "both",
                    "parallel": [
                        {"id": "long", "steps": [{"id": "haul", "activity": "long_haul"}]},
                        {
                            "id": "pay",
                            "steps": [
                                _hold("input.order"),
                                {"id": "card", "activity": "charge", "input": "input"},
                            ],
                        },
                    ],
                }
            ],
        }
    )
    instance = await engine.client.start("fanfail", {"order": "o-1", "decline": True})
    failure = await failure_of(engine, instance)
    assert failure.type == "Declined"
    info = await engine.client.status(instance)
    assert info is not None
    assert info.compensation == "completed"
    assert info.steps["haul"]["status"] == "cancelled"
    # The sibling still running learned it was no longer wanted and stopped.
    with trio.fail_after(30):
        await seen.stopped[instance].wait()
    assert ("release", "r-o-1") in seen.ran[instance]
    history = await kinds(engine, instance)
    assert history.index("steps.cancelled") < history.index("compensation.started")


async def test_signals_reach_steps_waiting_in_parallel_branches(engine: Engine) -> None:
    await engine.client.register(
        {
            "type": "twokeys",
            "steps": [
                {
                    "id": "keys",
                    "parallel": [
                        {"id": "red", "steps": [{"id": "r", "wait_signal": "red"}]},
                        {"id": "blue", "steps": [{"id": "b", "wait_signal": "blue"}]},
                    ],
                }
            ],
        }
    )
    instance = await engine.client.start("twokeys", None)
    # One signal comes before its step waits; it is kept, not lost.
    await engine.client.signal(instance, "blue", "B")
    await wait_for_step(engine, instance, "r", "waiting")
    await engine.client.signal(instance, "red", "R")
    assert await result_of(engine, instance) == {"red": "R", "blue": "B"}


# -- map -------------------------------------------------------------------------


async def test_map_bounds_concurrency_and_keeps_the_items_order(engine: Engine, seen: Seen) -> None:
    await engine.client.register(
        {
            "type": "fleet",
            "steps": [
                {
                    "id": "each",
                    "map": "input.items",
                    "concurrency": 3,
                    "steps": [
                        {
                            "id": "go",
                            "activity": "work",
                            "input": "{n: item, i: index, pause: item}",
                        },
                        {"id": "twice", "activity": "double", "input": "steps.go.output.n"},
                    ],
                }
            ],
            "output": "{results: steps.each.output}",
        }
    )
    scale = 1.0 if _memory(engine) else 0.05
    # Later items finish first: the output still follows the items' order.
    items = [round((12 - i) * scale, 3) for i in range(12)]
    instance = await engine.client.start("fleet", {"items": items})
    assert await result_of(engine, instance) == {"results": [item * 2 for item in items]}
    assert seen.peak[instance] == 3
    # Items start in order: the first three to run are the first three items.
    started = [value["i"] for name, value in seen.ran[instance] if name == "work"]
    assert set(started[:3]) == {0, 1, 2}
    # Finished items leave the state: only the map's own step is kept.
    info = await engine.client.status(instance)
    assert info is not None
    assert set(info.steps) == {"each"}


@pytest.mark.parametrize(("items", "outcome"), [([], []), ("nope", "ExpressionError")])
async def test_map_over_nothing_and_over_a_non_list(
    engine: Engine, items: Any, outcome: Any
) -> None:
    await engine.client.register(
        {
            "type": "mapedge",
            "steps": [
                {
                    "id": "each",
                    "map": "input.items",
                    "steps": [{"id": "go", "activity": "work"}],
                }
            ],
        }
    )
    instance = await engine.client.start("mapedge", {"items": items})
    if isinstance(outcome, list):
        assert await result_of(engine, instance) == outcome
        return
    failure = await failure_of(engine, instance)
    assert failure.type == outcome
    assert "not a list" in failure.message


async def test_a_failed_item_compensates_every_completed_item_latest_first(
    engine: Engine,
    seen: Seen,
) -> None:
    await engine.client.register(
        {
            "type": "mapsaga",
            "steps": [
                {
                    "id": "each",
                    "map": "input.orders",
                    "concurrency": 1,
                    "steps": [
                        _hold("item.id"),
                        {"id": "card", "activity": "charge", "input": "item"},
                    ],
                }
            ],
        }
    )
    orders = [{"id": "a"}, {"id": "b"}, {"id": "c", "decline": True}, {"id": "d"}]
    instance = await engine.client.start("mapsaga", {"orders": orders})
    failure = await failure_of(engine, instance)
    assert failure.type == "Declined"
    ran = seen.ran[instance]
    assert [value for name, value in ran if name == "release"] == ["r-c", "r-b", "r-a"]
    assert all(value != "d" for name, value in ran if name == "reserve")
    info = await engine.client.status(instance)
    assert info is not None
    assert info.compensation == "completed"
    assert info.steps["hold@0~undo"]["status"] == "completed"


# -- choice ----------------------------------------------------------------------

CHOICE = {
    "type": "router",
    "steps": [
        {
            "id": "route",
            "choice": [
                {
                    "when": "input.amount > `100`",
                    "steps": [{"id": "big", "activity": "double", "input": "input.amount"}],
                },
                {"when": "input.express", "steps": [{"id": "fast", "activity": "work"}]},
            ],
            "default": [{"id": "normal", "activity": "reserve", "input": "input.amount"}],
        },
        {"id": "done", "activity": "work"},
    ],
}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"amount": 500, "express": True}, 1000),
        ({"amount": 5, "express": True}, {"amount": 5, "express": True}),
        ({"amount": 5, "express": False}, "r-5"),
    ],
)
async def test_choice_takes_the_first_branch_that_holds_else_the_default(
    engine: Engine, given: dict[str, Any], expected: Any, seen: Seen
) -> None:
    await engine.client.register(CHOICE)
    instance = await engine.client.start("router", given)
    assert await result_of(engine, instance) == expected
    assert len(seen.ran[instance]) == 2


async def test_choice_without_a_match(engine: Engine) -> None:
    await engine.client.register(
        {
            "type": "strict",
            "steps": [
                {
                    "id": "route",
                    "choice": [{"when": "input.ok", "steps": [{"id": "go", "activity": "work"}]}],
                }
            ],
        }
    )
    await engine.client.register(
        {
            "type": "lenient",
            "steps": [
                {
                    "id": "route",
                    "choice": [{"when": "input.ok", "steps": [{"id": "go", "activity": "work"}]}],
                    "default": [],
                },
                {"id": "after", "activity": "work"},
            ],
        }
    )
    strict = await engine.client.start("strict", {"ok": False})
    failure = await failure_of(engine, strict)
    assert failure.type == "NoChoiceMatched"
    # An empty default passes the step's input on.
    lenient = await engine.client.start("lenient", {"ok": False})
    assert await result_of(engine, lenient) == {"ok": False}


# -- child workflows -------------------------------------------------------------

CHILD = {
    "type": "kid",
    "steps": [{"id": "twice", "activity": "double"}],
    "output": "{doubled: steps.twice.output}",
}


async def test_a_child_workflows_result_is_its_steps_output(engine: Engine) -> None:
    await engine.client.register(CHILD)
    await engine.client.register(
        {
            "type": "parent",
            "steps": [
                {"id": "one", "workflow": "kid", "input": "input.n"},
                {
                    "id": "many",
                    "map": "input.more",
                    "concurrency": 2,
                    "steps": [{"id": "each", "workflow": "kid"}],
                },
            ],
            "output": "{one: steps.one.output, many: steps.many.output}",
        }
    )
    instance = await engine.client.start("parent", {"n": 4, "more": [1, 2, 3]})
    assert await result_of(engine, instance) == {
        "one": {"doubled": 8},
        "many": [{"doubled": 2}, {"doubled": 4}, {"doubled": 6}],
    }
    child = await engine.client.status(f"{instance}-one")
    assert child is not None
    assert (child.type, child.status) == ("kid", InstanceStatus.COMPLETED)
    assert await engine.client.result(f"{instance}-each-2") == {"doubled": 6}
    history = await engine.history(instance)
    started = [r["detail"]["child"] for r in history if r["kind"] == "child.started"]
    assert sorted(started) == sorted(
        [f"{instance}-one", f"{instance}-each-0", f"{instance}-each-1", f"{instance}-each-2"]
    )


async def test_a_child_failure_fails_the_parent_with_the_childs_error_as_cause(
    engine: Engine,
    seen: Seen,
) -> None:
    await engine.client.register(
        {"type": "payer", "steps": [{"id": "card", "activity": "charge", "input": "input"}]}
    )
    await engine.client.register(
        {
            "type": "checkout",
            "steps": [
                _hold("input.order"),
                {"id": "pay", "workflow": "payer", "input": "input"},
            ],
        }
    )
    instance = await engine.client.start("checkout", {"order": "o-9", "decline": True})
    failure = await failure_of(engine, instance)
    error = failure
    assert error.type == "ChildWorkflowFailed"
    assert error.cause is not None
    assert error.cause["type"] == "Declined"
    assert f"{instance}-pay" in error.message
    assert ("release", "r-o-9") in seen.ran[instance]


async def test_an_unknown_child_type_fails_the_parent(engine: Engine) -> None:
    await engine.client.register(
        {"type": "orphan", "steps": [{"id": "who", "workflow": "nobody-registered-this"}]}
    )
    instance = await engine.client.start("orphan", None)
    failure = await failure_of(engine, instance)
    assert failure.cause is not None
    assert failure.cause["type"] == "UnknownWorkflowType"


@pytest.mark.parametrize("how", ["cancel", "terminate"])
async def test_stopping_a_parent_stops_its_children(engine: Engine, how: str, seen: Seen) -> None:
    await engine.client.register(
        {"type": "sitter", "steps": [{"id": "hold", "activity": "long_haul"}]}
    )
    await engine.client.register(
        {"type": "guardian", "steps": [{"id": "watch", "workflow": "sitter"}]}
    )
    instance = await engine.client.start("guardian", None)
    child = f"{instance}-watch"
    with trio.fail_after(30):
        await seen.hauling[child].wait()
    if how == "cancel":
        await engine.client.cancel(instance, "enough")
    else:
        await engine.client.terminate(instance, "now")
    expected = InstanceStatus.CANCELLED if how == "cancel" else InstanceStatus.TERMINATED
    with trio.fail_after(60):
        info = await engine.client.wait(child)
        assert info.status is expected
        # The child's running activity was cancelled through its heartbeat checks.
        await seen.stopped[child].wait()
        parent = await engine.client.wait(instance)
    assert parent.status is expected
    assert parent.steps["watch"]["status"] == "cancelled"
