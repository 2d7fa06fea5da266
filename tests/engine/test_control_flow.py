"""Durable sleep, signals, cancel, terminate and compensation, on both transports.

On memory, sleeps and timeouts run on the autojump clock (tests that wait
request ``clock``); on NATS they are real, and kept short.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from flow import Seen, charge, failure_of, kinds, long_haul, note, release, result_of, wait_for_step

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine


# Every test: the activities note what they ran.
pytestmark = pytest.mark.usefixtures("seen")

SHARED_ACTIVITIES = (release, charge, long_haul)


@actors.activity
async def reserve(value: Any) -> dict[str, Any]:
    note("reserve", value)
    return {"reservation": f"r-{value['order']}"}


@actors.activity
async def refund(value: Any) -> str:
    note("refund", value)
    if value.get("refund_fails"):
        raise actors.ActivityError("refund refused", non_retryable=True)
    return "refunded"


@actors.activity
async def pause(value: Any) -> Any:
    await trio.sleep(float(value.get("pause", 0)))
    return value


@actors.activity
async def slow_reserve(value: Any) -> dict[str, Any]:
    await trio.sleep(value["pause"])
    note("slow_reserve", value)
    return {"reservation": f"r-{value['order']}"}


@actors.activity
async def decline_after(value: Any) -> str:
    await trio.sleep(value["pause"])
    note("decline_after", value)
    raise actors.ActivityError("card declined", type="Declined", non_retryable=True)


ORDER = {
    "type": "saga",
    "steps": [
        {
            "id": "reserve",
            "activity": "reserve",
            "input": "{order: input.order}",
            "compensate": {"activity": "release"},
        },
        {
            "id": "charge",
            "activity": "charge",
            "input": "input",
            "compensate": {
                "activity": "refund",
                "input": "{order: input.order, refund_fails: input.refund_fails}",
            },
        },
        {"id": "approval", "wait_signal": "approve", "timeout": 60},
    ],
    "output": "{approved_by: steps.approval.output.by}",
}


# -- durable sleep ---------------------------------------------------------------


@pytest.fixture
def seconds(clock: trio.testing.MockClock | None) -> float:
    """How long the sleep tests sleep: ten minutes on memory's fake clock, a
    second on NATS, whose clock is real. A test using it requests ``clock`` as
    well: the Trio runner only runs on a clock the test function itself takes."""
    return 600 if clock is not None else 1.0


async def test_sleep_waits_and_passes_its_input_on(
    engine: Engine, clock: trio.testing.MockClock | None, seconds: float
) -> None:
    await engine.client.register(
        {
            "type": "nap",
            "steps": [
                {"id": "before", "activity": "pause"},
                {"id": "nap", "sleep": seconds},
                {"id": "after", "activity": "pause"},
            ],
        }
    )
    started = trio.current_time()
    instance = await engine.client.start("nap", {"n": 1})
    assert await result_of(engine, instance, seconds + 120) == {"n": 1}
    assert trio.current_time() - started >= seconds
    history = await engine.history(instance)
    began = next(r for r in history if r["kind"] == "sleep.started")
    ended = next(r for r in history if r["kind"] == "sleep.completed")
    assert began["detail"]["until"] == pytest.approx(began["at"] + seconds)
    assert ended["at"] >= began["detail"]["until"]
    assert [r["kind"] for r in history].count("sleep.completed") == 1


async def test_sleeps_whose_keys_differ_only_in_punctuation_all_wake(
    engine: Engine, clock: trio.testing.MockClock | None, seconds: float
) -> None:
    # The map's sleeps have keys nap@0 and nap@1, beside a step nap_1: on
    # JetStream their timers once shared one schedule, and the one replaced
    # never fired, so the instance waited for ever.
    await engine.client.register(
        {
            "type": "naps",
            "steps": [
                {
                    "id": "both",
                    "parallel": [
                        {
                            "id": "mapped",
                            "steps": [
                                {
                                    "id": "each",
                                    "map": "input.items",
                                    "steps": [{"id": "nap", "sleep": seconds}],
                                }
                            ],
                        },
                        {"id": "plain", "steps": [{"id": "nap_1", "sleep": seconds}]},
                    ],
                }
            ],
        }
    )
    instance = await engine.client.start("naps", {"items": [1, 2]})
    await result_of(engine, instance, seconds + 60)
    assert (await kinds(engine, instance)).count("sleep.completed") == 3


@pytest.mark.parametrize("form", ["epoch", "iso", "past"])
async def test_sleep_until_a_time_from_an_expression(
    engine: Engine, clock: trio.testing.MockClock | None, form: str
) -> None:
    await engine.client.register(
        {"type": "alarm", "steps": [{"id": "wake", "sleep_until": "input.at"}]}
    )
    now = engine.transport.now()
    due = now - 100 if form == "past" else now + 2
    at: Any = due
    if form == "iso":
        at = datetime.datetime.fromtimestamp(due, datetime.UTC).isoformat()
    instance = await engine.client.start("alarm", {"at": at})
    await result_of(engine, instance)
    assert engine.transport.now() >= due - 0.01


async def test_sleep_until_something_that_is_not_a_time_fails(engine: Engine) -> None:
    await engine.client.register(
        {"type": "badalarm", "steps": [{"id": "wake", "sleep_until": "input.at"}]}
    )
    instance = await engine.client.start("badalarm", {"at": "tomorrow-ish"})
    assert (await failure_of(engine, instance)).type == "ExpressionError"


# -- signals -------------------------------------------------------------------


async def test_a_signal_resumes_the_instance_with_its_payload(engine: Engine) -> None:
    await engine.client.register(
        {
            "type": "gate",
            "steps": [{"id": "wait", "wait_signal": "approved"}],
            "output": "{who: steps.wait.output.by}",
        }
    )
    instance = await engine.client.start("gate", None)
    await wait_for_step(engine, instance, "wait", "waiting")
    await engine.client.signal(instance, "approved", {"by": "ann"})
    assert await result_of(engine, instance) == {"who": "ann"}


async def test_a_signal_sent_early_is_kept_until_the_instance_waits(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(
        {
            "type": "early",
            "steps": [
                {"id": "busy", "activity": "pause"},
                {"id": "wait", "wait_signal": "go"},
                {"id": "again", "wait_signal": "go"},
            ],
            "output": "[steps.wait.output, steps.again.output]",
        }
    )
    instance = await engine.client.start("early", {"pause": 2})
    await wait_for_step(engine, instance, "busy", "scheduled")
    await engine.client.signal(instance, "go", 1)
    await engine.client.signal(instance, "go", 2)
    assert await result_of(engine, instance) == [1, 2]
    assert (await kinds(engine, instance)).count("signal.taken") == 2


async def test_a_raw_signal_message(engine: Engine) -> None:
    await engine.client.register({"type": "rawgate", "steps": [{"id": "w", "wait_signal": "ok"}]})
    instance = await engine.client.start("rawgate", None)
    await wait_for_step(engine, instance, "w", "waiting")
    await engine.transport.publish(f"instance.{instance}.signal.ok", json.dumps([1, 2]).encode())
    assert await result_of(engine, instance) == [1, 2]


async def test_a_signal_that_never_comes_times_out(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(
        {"type": "impatient", "steps": [{"id": "w", "wait_signal": "ok", "timeout": 1.5}]}
    )
    instance = await engine.client.start("impatient", None)
    assert (await failure_of(engine, instance)).type == "SignalTimeout"


@pytest.mark.parametrize("orchestrator_options", [{"start_wait": 1.0}], ids=["start_wait=1s"])
async def test_a_signal_for_no_instance_goes_to_dead_letters(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    # It waits start_wait for an instance that never comes.
    await engine.client.signal("nobody-here", "ok", 1)
    [letter] = await engine.deadletters(1)
    assert letter["subject"] == "instance.nobody-here.signal.ok"
    assert "no instance" in letter["reason"]


# -- compensation, cancel, terminate ----------------------------------------------------


async def test_a_failure_runs_the_compensations_in_reverse(engine: Engine, seen: Seen) -> None:
    await engine.client.register(
        {
            **ORDER,
            "type": "saga1",
            "steps": [
                *ORDER["steps"][:1],
                {"id": "pay", "activity": "charge", "input": "input"},
            ],
        }
    )
    instance = await engine.client.start("saga1", {"order": "o1", "decline": True})
    assert (await failure_of(engine, instance)).type == "Declined"
    info = await engine.client.status(instance)
    assert info is not None
    assert (info.status, info.compensation) == (InstanceStatus.FAILED, "completed")
    # release got reserve's output (the default compensation input).
    assert seen.ran[instance] == [
        ("reserve", {"order": "o1"}),
        ("charge", {"order": "o1", "decline": True}),
        ("release", {"reservation": "r-o1"}),
    ]
    history = await kinds(engine, instance)
    assert history.index("compensation.started") < history.index("compensation.completed")
    assert history[-1] == "workflow.failed"


PARALLEL_SAGA = {
    "type": "saga_parallel",
    "steps": [
        {
            "id": "both",
            "parallel": [
                {
                    "id": "stock",
                    "steps": [
                        {
                            "id": "reserve",
                            "activity": "slow_reserve",
                            "input": "{order: input.order, pause: input.reserve_pause}",
                            "compensate": {"activity": "release"},
                        }
                    ],
                },
                {
                    "id": "money",
                    "steps": [
                        {
                            "id": "authorize",
                            "activity": "decline_after",
                            "input": "{order: input.order, pause: input.decline_pause}",
                            "compensate": {"activity": "refund"},
                        }
                    ],
                },
            ],
        }
    ],
}


@pytest.mark.parametrize("first", ["reserve-done", "decline"])
async def test_every_step_whose_task_went_out_is_compensated(
    engine: Engine, clock: trio.testing.MockClock | None, first: str, seen: Seen
) -> None:
    """Rule 11, in the order example's shape: the authorization fails beside a
    reservation that completed, or that is still running. Both steps' tasks
    went out, so both are undone, the one that ended last first; a step
    abandoned while its task runs is undone only once that task reported
    (here: its worker cancels it), from the input it was given."""
    await engine.client.register(PARALLEL_SAGA)
    pauses = (
        {"reserve_pause": 0, "decline_pause": 2}
        if first == "reserve-done"
        else {
            "reserve_pause": 60,
            "decline_pause": 0,
        }
    )
    instance = await engine.client.start("saga_parallel", {"order": "o9", **pauses})
    assert (await failure_of(engine, instance)).type == "Declined"
    info = await engine.client.status(instance)
    assert info is not None
    assert (info.status, info.compensation) == (InstanceStatus.FAILED, "completed")
    undone = [(name, value) for name, value in seen.ran[instance] if name in ("release", "refund")]
    history = await engine.history(instance)
    started = next(r for r in history if r["kind"] == "compensation.started")
    if first == "reserve-done":
        # The authorization failed last: it is undone first, from its input
        # (it has no output); then the reservation, from its output.
        assert started["detail"]["steps"] == ["authorize~undo", "reserve~undo"]
        assert undone == [
            ("refund", {"order": "o9", "pause": 2}),
            ("release", {"reservation": "r-o9"}),
        ]
    else:
        # The reservation was abandoned while it ran: its compensation waited
        # for its task to report, then undid it from what it was asked.
        assert started["detail"]["steps"] == ["reserve~undo", "authorize~undo"]
        assert undone == [
            ("release", {"order": "o9", "pause": 60}),
            ("refund", {"order": "o9", "pause": 0}),
        ]
        kinds_seen = [r["kind"] for r in history]
        assert kinds_seen.index("compensation.waiting") < kinds_seen.index("activity.settled")
        settled = next(r for r in history if r["kind"] == "activity.settled")
        assert settled["detail"] == {"step": "reserve", "attempt": 1, "outcome": "failed"}
        assert "slow_reserve" not in [name for name, _ in seen.ran[instance]]


async def _stop_at_approval(
    engine: Engine, value: Any, stop: Callable[[str], Awaitable[None]]
) -> tuple[str, actors.InstanceInfo]:
    """Start an ``ORDER`` saga on ``value``, ``stop(instance)`` once it waits for
    approval, and return the instance and its status (it must end cancelled)."""
    await engine.client.register(ORDER)
    instance = await engine.client.start("saga", value)
    await wait_for_step(engine, instance, "approval", "waiting")
    await stop(instance)
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, instance)
    info = await engine.client.status(instance)
    assert info is not None
    return instance, info


async def test_cancel_compensates_completed_steps_in_reverse(engine: Engine, seen: Seen) -> None:
    instance, info = await _stop_at_approval(
        engine, {"order": "o2"}, lambda i: engine.client.cancel(i, "customer changed their mind")
    )
    assert (info.status, info.compensation) == (InstanceStatus.CANCELLED, "completed")
    assert [name for name, _ in seen.ran[instance]] == ["reserve", "charge", "refund", "release"]
    assert seen.ran[instance][2] == ("refund", {"order": "o2", "refund_fails": None})
    history = await engine.history(instance)
    started = next(r for r in history if r["kind"] == "compensation.started")
    assert started["detail"]["reason"] == "customer changed their mind"
    assert started["detail"]["steps"] == ["charge~undo", "reserve~undo"]


async def test_a_compensation_that_fails_is_reported(engine: Engine) -> None:
    instance, info = await _stop_at_approval(
        engine, {"order": "o3", "refund_fails": True}, engine.client.cancel
    )
    assert (info.status, info.compensation) == (InstanceStatus.CANCELLED, "failed")
    assert "compensation.failed" in await kinds(engine, instance)


async def test_terminate_stops_at_once_without_compensation(engine: Engine, seen: Seen) -> None:
    instance, info = await _stop_at_approval(
        engine, {"order": "o4"}, lambda i: engine.client.terminate(i, "operator")
    )
    assert (info.status, info.compensation) == (InstanceStatus.TERMINATED, None)
    assert [name for name, _ in seen.ran[instance]] == ["reserve", "charge"]
    # Signals and cancels after the end change nothing.
    await engine.client.signal(instance, "approve", {"by": "late"})
    await engine.client.cancel(instance)
    assert (await engine.client.status(instance)) == info


async def test_the_whole_saga_completes_when_approved(engine: Engine) -> None:
    await engine.client.register(ORDER)
    instance = await engine.client.start("saga", {"order": "o5"})
    await wait_for_step(engine, instance, "approval", "waiting")
    await engine.client.signal(instance, "approve", {"by": "bo"})
    assert await result_of(engine, instance) == {"approved_by": "bo"}
    info = await engine.client.status(instance)
    assert info is not None
    assert info.compensation is None


async def test_a_task_withdrawn_before_any_worker_takes_it_never_runs(
    engine: Engine, seen: Seen
) -> None:
    """The worker that comes later refuses it and says so: the compensation need not wait."""
    await engine.client.register(
        {
            "type": "unserved",
            "steps": [
                {
                    "id": "ship",
                    "activity": "ship_later",
                    "timeout": {"start_to_close": "1h"},
                    "compensate": {"activity": "release"},
                },
            ],
        }
    )
    instance = await engine.client.start("unserved", None)
    await wait_for_step(engine, instance, "ship", "scheduled")
    await engine.client.cancel(instance, "changed my mind")
    # The task waits in its queue: no worker serves ship_later yet.
    await wait_for_step(engine, instance, "ship", "cancelled")
    shipped: list[Any] = []

    @actors.activity(name="ship_later")
    async def ship_later(value: Any) -> None:
        shipped.append(value)

    late = actors.Worker(
        engine.transport,
        actors.collect_activities([ship_later]),
        actors.WorkerConfig(ack_wait=5.0, drain_timeout=2.0),
    )
    await engine.nursery.start(late.run)
    try:
        with pytest.raises(actors.WorkflowCancelledError):
            # Without the refusal, the compensation would wait for the hour.
            await result_of(engine, instance, 30)
    finally:
        late.shutdown()
    assert shipped == []
    assert late.stats["cancelled"] == 1
    assert [name for name, _ in seen.ran[instance]] == ["release"]
    settled = [r for r in await engine.history(instance) if r["kind"] == "activity.settled"]
    assert [r["detail"] for r in settled] == [{"step": "ship", "attempt": 1, "outcome": "failed"}]


async def test_a_running_activity_learns_of_the_cancel_and_stops(
    engine: Engine, seen: Seen
) -> None:
    await engine.client.register(
        {
            "type": "haul",
            "steps": [
                {
                    "id": "first",
                    "activity": "reserve",
                    "input": "{order: 'h'}",
                    "compensate": {"activity": "release"},
                },
                {"id": "haul", "activity": "long_haul", "timeout": {"heartbeat": 5}},
            ],
        }
    )
    instance = await engine.client.start("haul", None)
    with trio.fail_after(30):
        await seen.hauling[instance].wait()
    await engine.client.cancel(instance)
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, instance, 30)
    with trio.fail_after(10):
        await seen.stopped[instance].wait()
    assert engine.worker.stats["cancelled"] >= 1
    assert [name for name, _ in seen.ran[instance]] == ["reserve", "long_haul", "release"]
