"""The engine end to end, in one process, on the memory transport and on NATS.

Each test's orchestrator, worker and client share one transport; the
process-level tests (killed workers and orchestrators) are in
``test_processes.py``.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from flow import failure_of, result_of
from records import Records

import actors
from actors import InstanceStatus
from actors.runtime._registry import DefinitionStore
from actors.wire import StartMessage, encode_start
from actors.wire._names import plain_start_subject
from transport import open_transport

if TYPE_CHECKING:
    from conftest import Engine

# -- activities served by this module's engine ----------------------------------


@dataclass
class Runs:
    """What this module's activities did in one test, per instance."""

    #: Attempts run, for activities that behave by attempt.
    calls: Counter[str] = field(default_factory=Counter)
    #: A ``gated`` activity has begun.
    gated: defaultdict[str, trio.Event] = field(default_factory=lambda: defaultdict(trio.Event))


RUNS = Records("runs", Runs)


runs = RUNS.fixture("runs", autouse=True)


@actors.activity
async def add_one(value: dict[str, Any]) -> dict[str, Any]:
    return {**value, "count": value.get("count", 0) + 1}


@actors.activity
def add_one_sync(value: dict[str, Any]) -> dict[str, Any]:
    actors.heartbeat()
    return {**value, "count": value.get("count", 0) + 1}


class Flaky(Exception):
    pass


@actors.activity
async def fails_twice(value: dict[str, Any]) -> dict[str, Any]:
    info = actors.activity_info()
    RUNS.get().calls[info.instance_id] += 1
    if info.attempt <= 2:
        raise Flaky(f"attempt {info.attempt} fails")
    return {"attempt": info.attempt}


class OutOfStock(Exception):
    pass


@actors.activity
async def out_of_stock(value: Any) -> None:
    raise OutOfStock("nothing left")


@actors.activity
async def refuses(value: Any) -> None:
    raise actors.ActivityError("card declined", type="Declined", non_retryable=True)


@actors.activity
async def slow_first_attempt(value: Any) -> str:
    if actors.activity_info().attempt == 1:
        await trio.sleep(60)
    return "fast enough"


@actors.activity
async def silent_first_attempt(value: Any) -> str:
    if actors.activity_info().attempt == 1:
        await trio.sleep(60)  # never heartbeats
    for _ in range(3):
        actors.heartbeat()
        await trio.sleep(0.1)
    return "kept beating"


@actors.activity
async def unencodable(value: Any) -> object:
    return {1, 2, 3}


@actors.activity
async def gated(value: dict[str, Any]) -> str:
    RUNS.get().gated[actors.activity_info().instance_id].set()
    await trio.sleep(float(value.get("sleep", 0)))
    return "done"


THREE = """
type: three
version: 1
steps:
  - {id: a, activity: add_one}
  - {id: b, activity: add_one_sync}
  - {id: c, activity: add_one, input: "{count: steps.b.output.count, tag: input.tag}"}
output: "{count: steps.c.output.count, tag: steps.c.output.tag}"
"""


def one_step(
    workflow_type: str,
    activity: str,
    *,
    retry: dict[str, Any] | None = None,
    timeout: dict[str, Any] | None = None,
    version: int = 1,
) -> dict[str, Any]:
    step: dict[str, Any] = {"id": "only", "activity": activity}
    if retry is not None:
        step["retry"] = retry
    if timeout is not None:
        step["timeout"] = timeout
    return {"type": workflow_type, "version": version, "steps": [step]}


async def start_one_step(
    engine: Engine, value: Any, workflow_type: str, activity: str, **options: Any
) -> str:
    """Register ``one_step(workflow_type, activity, **options)`` and start an
    instance of it on ``value``; return the instance's id."""
    await engine.client.register(one_step(workflow_type, activity, **options))
    return await engine.client.start(workflow_type, value)


async def run_threes(engine: Engine, count: int) -> list[str]:
    """Start ``count`` instances of ``THREE`` at once (counts 0, 1, ...), check
    each output once all have ended, and return their ids in order."""
    await engine.client.register(THREE)
    ids = [await engine.client.start("three", {"count": i}) for i in range(count)]
    results: dict[str, Any] = {}

    async def collect(instance_id: str) -> None:
        results[instance_id] = await engine.client.result(instance_id)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for instance_id in ids:
                nursery.start_soon(collect, instance_id)
    assert [results[i]["count"] for i in ids] == [i + 3 for i in range(count)]
    return ids


async def failed_after(engine: Engine, instance_id: str, attempts: int) -> actors.ErrorInfo:
    """The error the instance fails with, which says its step gave up after ``attempts``."""
    error = await failure_of(engine, instance_id)
    assert f"after {attempts} attempt(s)" in error.message
    return error


def new_id() -> str:
    return f"t{secrets.token_hex(6)}"


# -- the happy path -------------------------------------------------------------


async def test_three_steps_through_the_client(engine: Engine) -> None:
    await engine.client.register(THREE)
    instance_id = await engine.client.start("three", {"count": 10, "tag": "x"})
    assert await result_of(engine, instance_id) == {"count": 13, "tag": "x"}
    info = await engine.client.status(instance_id)
    assert info is not None
    assert info.status is InstanceStatus.COMPLETED
    assert {step: data["status"] for step, data in info.steps.items()} == {
        "a": "completed",
        "b": "completed",
        "c": "completed",
    }
    history = await engine.history(instance_id)
    kinds = [record["kind"] for record in history]
    assert kinds[0] == "workflow.started"
    assert kinds[-1] == "workflow.completed"
    assert kinds.count("activity.completed") == 3
    assert [record["seq"] for record in history] == list(range(1, len(history) + 1))


async def test_many_instances_and_listing(engine: Engine) -> None:
    ids = await run_threes(engine, 20)
    listed = await engine.client.list(workflow_type="three", status="completed")
    assert {info.id for info in listed} == set(ids)
    assert await engine.client.list(workflow_type="three", status="failed") == []


@pytest.mark.parametrize("encoding", ["cbor", "json"])
async def test_raw_start_message(engine: Engine, encoding: str) -> None:
    await engine.client.register(THREE)
    instance_id = new_id()
    body = {"id": instance_id, "input": {"count": 1, "tag": encoding}}
    if encoding == "json":
        data = json.dumps(body).encode()
    else:
        data = actors.encode("workflow.start", body)
    await engine.transport.publish("workflow.start.three", data)
    assert await result_of(engine, instance_id) == {"count": 4, "tag": encoding}


async def test_the_same_id_started_twice_is_one_instance(engine: Engine) -> None:
    await engine.client.register(THREE)
    instance_id = new_id()
    first = await engine.client.start("three", {"count": 0}, id=instance_id)
    second = await engine.client.start("three", {"count": 100}, id=instance_id)
    assert first == second == instance_id
    assert await result_of(engine, instance_id) == {"count": 3, "tag": None}
    # Once finished, starting it again still changes nothing.
    await engine.client.start("three", {"count": 100}, id=instance_id)
    history = await engine.history(instance_id)
    assert [r["kind"] for r in history].count("workflow.started") == 1
    assert await engine.client.result(instance_id) == {"count": 3, "tag": None}
    # A start past the broker's deduplication (no message id), to an actor
    # that has left: the orchestrator writes it unread, is refused because
    # the key exists, reads, and changes nothing. No other process was
    # involved, so it is not counted as a conflict.
    orchestrator = engine.orchestrator
    events = orchestrator.stats["events"]
    start = StartMessage(instance_id, {"count": 7})
    await engine.transport.publish(plain_start_subject("three"), encode_start(start))
    with trio.fail_after(10):
        await orchestrator.wait_until(
            lambda: orchestrator.stats["events"] > events and not orchestrator.active_actors
        )
    assert orchestrator.stats["conflicts"] == 0
    assert await engine.client.result(instance_id) == {"count": 3, "tag": None}
    history = await engine.client.history(instance_id)
    assert [r["kind"] for r in history].count("workflow.started") == 1


async def test_a_burst_of_starts_on_a_new_client_lists_the_versions_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each listing is a consumer on the server, which caps them: 3,000
    # versionless starts at once on a new client once hit "maximum
    # consumers limit reached". The first listing serves them all.
    await engine.client.register(THREE)
    listings = 0
    versions = DefinitionStore.versions

    async def counted(store: DefinitionStore, workflow_type: str) -> list[int]:
        nonlocal listings
        listings += 1
        return await versions(store, workflow_type)

    monkeypatch.setattr(DefinitionStore, "versions", counted)
    ids = [new_id() for _ in range(200)]
    async with actors.Client(engine.transport) as fresh, trio.open_nursery() as nursery:
        for instance_id in ids:
            nursery.start_soon(partial(fresh.start, "three", {"count": 0}, id=instance_id))
    assert listings == 1
    for instance_id in ids[:10]:
        assert await result_of(engine, instance_id) == {"count": 3, "tag": None}


# -- retries and timeouts ---------------------------------------------------------


async def test_retries_with_the_specified_backoff(
    engine: Engine, clock: trio.testing.MockClock | None, runs: Runs
) -> None:
    # Real seconds on NATS, virtual ones on memory: same numbers either way.
    retry = {"max_attempts": 3, "initial_interval": 0.5, "backoff": 3.0, "max_interval": 1.2}
    instance_id = await start_one_step(engine, {}, "flaky", "fails_twice", retry=retry)
    assert await result_of(engine, instance_id) == {"attempt": 3}
    assert runs.calls[instance_id] == 3
    history = await engine.history(instance_id)
    failed = [r for r in history if r["kind"] == "activity.failed"]
    scheduled = [r for r in history if r["kind"] == "activity.scheduled"]
    assert [r["detail"]["attempt"] for r in scheduled] == [1, 2, 3]
    assert [r["detail"]["error"]["type"] for r in failed] == ["Flaky", "Flaky"]
    # Attempt n+1 starts delay(n) after attempt n failed: 0.5 s, then 1.5
    # capped at 1.2 s. Timers never fire early; late by at most a little.
    for failure, next_try, delay in zip(failed, scheduled[1:], [0.5, 1.2], strict=True):
        waited = next_try["at"] - failure["at"]
        assert delay <= waited < delay + 0.5, (delay, waited)


async def test_retries_exhausted_fail_the_workflow(engine: Engine, runs: Runs) -> None:
    retry = {"max_attempts": 2, "initial_interval": 0.05}
    instance_id = await start_one_step(engine, {}, "flaky2", "fails_twice", retry=retry)
    error = await failed_after(engine, instance_id, 2)
    assert error.type == "Flaky"
    assert "attempt 2 fails" in error.message
    assert "Traceback" in error.traceback
    assert runs.calls[instance_id] == 2


async def test_non_retryable_by_type_name_fails_at_once(engine: Engine) -> None:
    retry = {"max_attempts": 5, "non_retryable": ["OutOfStock"]}
    instance_id = await start_one_step(engine, None, "stock", "out_of_stock", retry=retry)
    error = await failed_after(engine, instance_id, 1)
    assert error.type == "OutOfStock"


async def test_non_retryable_activity_error_fails_at_once(engine: Engine) -> None:
    instance_id = await start_one_step(
        engine, None, "declined", "refuses", retry={"max_attempts": 5}
    )
    error = await failure_of(engine, instance_id)
    assert error.type == "Declined"
    history = await engine.history(instance_id)
    assert [r["kind"] for r in history].count("activity.scheduled") == 1


#: The retry policy of the timeout tests: one more attempt, soon.
TWO_ATTEMPTS = {"max_attempts": 2, "initial_interval": 0.1}


async def _with_timeout(engine: Engine, activity: str, limits: dict[str, Any]) -> str:
    """Start a one-step workflow of ``activity`` (the type's name too) with the
    step timeouts ``limits`` and two attempts; return the instance's id."""
    return await start_one_step(
        engine, None, activity, activity, retry=TWO_ATTEMPTS, timeout=limits
    )


async def _second_try(
    engine: Engine, activity: str, limits: dict[str, Any]
) -> tuple[Any, list[str]]:
    """Run ``_with_timeout``'s workflow to its end; return its output and the
    error types of its failed attempts, in order."""
    instance_id = await _with_timeout(engine, activity, limits)
    output = await result_of(engine, instance_id)
    history = await engine.history(instance_id)
    failed = [r["detail"]["error"]["type"] for r in history if r["kind"] == "activity.failed"]
    return output, failed


@pytest.mark.parametrize(
    ("activity", "limits", "outcome"),
    [
        ("slow_first_attempt", {"start_to_close": 1.0}, ("fast enough", ["StartToCloseTimeout"])),
        (
            "silent_first_attempt",
            {"start_to_close": 30, "heartbeat": 1.0},
            ("kept beating", ["HeartbeatTimeout"]),
        ),
    ],
    ids=["start_to_close", "missed_heartbeat"],
)
async def test_a_timed_out_attempt_is_retried(
    engine: Engine,
    clock: trio.testing.MockClock | None,
    activity: str,
    limits: dict[str, Any],
    outcome: tuple[Any, list[str]],
) -> None:
    assert await _second_try(engine, activity, limits) == outcome


async def test_schedule_to_start_timeout_when_no_worker_serves(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    timeout = {"schedule_to_start": 0.5, "start_to_close": 0.5}
    instance_id = await _with_timeout(engine, "nobody_serves_this", timeout)
    error = await failed_after(engine, instance_id, 2)
    assert error.type == "ActivityTimeout"


async def test_output_that_cannot_travel_fails_the_step(engine: Engine) -> None:
    instance_id = await start_one_step(
        engine, None, "sets", "unencodable", retry={"max_attempts": 3}
    )
    await failed_after(engine, instance_id, 1)


# -- bad input ----------------------------------------------------------------------


async def test_invalid_definitions_are_refused_with_field_paths(engine: Engine) -> None:
    bad = {
        "type": "bad",
        "steps": [
            {"id": "a", "activity": "add_one", "retry": {"initial_interval": "soon"}},
            {"id": "a", "activity": "add_one", "input": "{broken"},
        ],
        "surprise": 1,
    }
    with pytest.raises(actors.DefinitionError) as caught:
        await engine.client.register(bad)
    paths = {error.path for error in caught.value.errors}
    assert {"steps[0].retry.initial_interval", "steps[1].id", "steps[1].input", "surprise"} <= (
        paths
    )
    assert await engine.client.definitions() == {}


async def test_a_version_cannot_be_changed(engine: Engine) -> None:
    await engine.client.register(one_step("fixed", "add_one"))
    await engine.client.register(one_step("fixed", "add_one"))  # the same: fine
    with pytest.raises(actors.VersionConflictError):
        await engine.client.register(one_step("fixed", "add_one_sync"))
    assert await engine.client.definitions() == {"fixed": [1]}


async def test_unknown_type_on_a_raw_start_fails_that_instance(engine: Engine) -> None:
    with pytest.raises(actors.UnknownWorkflowTypeError):
        await engine.client.start("nonesuch", {})
    instance_id = new_id()
    await engine.transport.publish(
        "workflow.start.nonesuch", json.dumps({"id": instance_id}).encode()
    )
    error = await failure_of(engine, instance_id)
    assert error.type == "UnknownWorkflowType"
    # The service goes on.
    await engine.client.register(THREE)
    assert await result_of(engine, await engine.client.start("three", {})) == {
        "count": 3,
        "tag": None,
    }


@pytest.mark.parametrize("orchestrator_options", [{"start_wait": 1.0}], ids=["start_wait=1s"])
async def test_malformed_events_go_to_dead_letters(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    # The ghost's result waits start_wait for an instance that never comes.
    bad = [
        ("workflow.start.three", b"\xa3garbage"),
        ("workflow.start.three", b'{"id": "has.dots"}'),
        ("instance.x1.completed.a", actors.encode("activity.result", [1, 2])),
        ("instance.x2.timer", actors.encode("workflow.timer", {"kind": "nope"})),
        ("workflow.unknown.thing", b""),
        ("instance.ghost.completed.a", _result("ghost", "a")),
    ]
    for subject, data in bad:
        await engine.transport.publish(subject, data)
    letters = await engine.deadletters(len(bad))
    assert sorted(letter["subject"] for letter in letters) == sorted(s for s, _ in bad)
    assert all(letter["reason"] for letter in letters)
    ghost = next(letter for letter in letters if "ghost" in letter["subject"])
    assert "no instance" in ghost["reason"]
    await engine.client.register(THREE)
    assert await result_of(engine, await engine.client.start("three", {})) == {
        "count": 3,
        "tag": None,
    }
    assert engine.orchestrator.stats["deadletters"] == len(bad)


def _result(instance_id: str, step: str) -> bytes:
    from actors.wire import encode_result

    return encode_result(instance_id, step, 1, output=1)


# -- cancel and versions ------------------------------------------------------------------


async def test_cancel_a_running_instance(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    instance_id = await start_one_step(engine, {"sleep": 5}, "long", "gated")
    await engine.client.cancel(instance_id, "changed my mind")
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, instance_id)
    history = await engine.history(instance_id)
    assert history[-1]["kind"] == "workflow.cancelled"
    assert history[-1]["detail"] == {"reason": "changed my mind"}


async def test_an_instance_runs_the_version_it_started_with(engine: Engine) -> None:
    await engine.client.register(one_step("versioned", "add_one", version=1))
    await engine.client.register(
        {
            "type": "versioned",
            "version": 2,
            "steps": [{"id": "x", "activity": "add_one"}, {"id": "y", "activity": "add_one"}],
        }
    )
    newest = await engine.client.start("versioned", {"count": 0})
    pinned = await engine.client.start("versioned", {"count": 0}, version=1)
    assert await result_of(engine, newest) == {"count": 2}
    assert await result_of(engine, pinned) == {"count": 1}
    info = await engine.client.status(pinned)
    assert info is not None
    assert info.version == 1
    with pytest.raises(actors.UnknownWorkflowTypeError):
        await engine.client.start("versioned", {}, version=3)


# -- crash recovery ------------------------------------------------------------------


async def test_an_unpublished_outbox_goes_out_when_its_event_returns(engine_url: str) -> None:
    """A crash after the state write and before the publish (and the ack)."""
    from actors.core import StartRequested, decide
    from actors.wire import STATES_BUCKET, StartMessage, encode_start, encode_state, start_subject
    from transport import open_transport

    definition = actors.load_definition(THREE)
    instance_id = new_id()
    async with open_transport(engine_url) as transport:
        await actors.Layout().provision(transport)
        ack = await transport.publish(
            start_subject(instance_id, "three"),
            encode_start(StartMessage(instance_id, {"count": 0})),
        )
        # What a crashed orchestrator left: the decision persisted, with its
        # outbox (the first task) never published and the start never acked.
        start = StartRequested(instance_id, "three", 1, {"count": 0})
        state, commands = decide(definition, None, start, transport.now())
        assert state is not None
        assert commands
        states = await transport.kv(STATES_BUCKET)
        await states.create(instance_id, encode_state(replace(state, cause=ack.seq)))

        specs = actors.collect_activities([add_one, add_one_sync])
        async with trio.open_nursery() as nursery, actors.Client(transport) as client:
            await client.register(definition)
            orchestrator = actors.Orchestrator(transport)
            worker = actors.Worker(transport, specs)
            await nursery.start(orchestrator.run)
            await nursery.start(worker.run)
            with trio.fail_after(30):
                assert await client.result(instance_id) == {"count": 3, "tag": None}
            orchestrator.shutdown()
            worker.shutdown()


async def test_a_task_that_keeps_losing_its_worker_fails_its_attempt(engine_url: str) -> None:
    from actors.wire import TASKS_STREAM

    @actors.activity(name="fatal")
    async def fatal(value: Any) -> str:
        return "never reached"

    layout = actors.Layout()
    async with open_transport(engine_url) as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport)
        await nursery.start(orchestrator.run)
        async with actors.Client(transport) as client:
            await client.register(one_step("doomed", "fatal", retry={"max_attempts": 1}))
            instance_id = await client.start("doomed", None)
            # Five workers took the task and died without a word.
            consumer = layout.activity_consumer("fatal", ack_wait=5.0)
            with trio.fail_after(30):
                async with transport.consume(TASKS_STREAM, consumer) as deliveries:
                    for _ in range(5):
                        await (await deliveries.receive()).nak()
            worker = actors.Worker(transport, actors.collect_activities([fatal]))
            await nursery.start(worker.run)
            with pytest.raises(actors.WorkflowFailedError) as caught, trio.fail_after(30):
                await client.result(instance_id)
            assert caught.value.error.type == "WorkerLost"
            worker.shutdown()
        orchestrator.shutdown()


async def test_two_orchestrators_never_lose_an_event_to_a_stale_cache(engine: Engine) -> None:
    """A second orchestrator on the same broker: instances move between them.

    Each keeps the states it has seen in memory; an event for a step that
    the other one scheduled must not be dismissed against the old copy.
    """
    second = actors.Orchestrator(engine.transport)
    await engine.nursery.start(second.run)
    await run_threes(engine, 60)
    both = engine.orchestrator.stats["events"], second.stats["events"]
    assert min(both) > 0, both
    second.shutdown()


# -- failures inside one instance, and shutdowns -----------------------------------------


async def test_a_bug_in_the_engine_fails_only_that_instance(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.runtime import _instance

    real_decide = _instance.decide

    def buggy_decide(definition: Any, state: Any, event: Any, now: float) -> Any:
        if state is not None and state.input == {"poison": True}:
            raise ZeroDivisionError("a bug")
        return real_decide(definition, state, event, now)

    monkeypatch.setattr(_instance, "decide", buggy_decide)
    await engine.client.register(THREE)
    poisoned = await engine.client.start("three", {"poison": True})
    healthy = await engine.client.start("three", {"count": 1})
    error = await failure_of(engine, poisoned)
    assert error.type == "EngineError"
    assert "ZeroDivisionError: a bug" in error.message
    assert "Traceback" in error.traceback
    assert await result_of(engine, healthy) == {"count": 4, "tag": None}


async def test_an_expression_failing_at_run_time_fails_the_instance(engine: Engine) -> None:
    await engine.client.register(
        {
            "type": "typo",
            "steps": [{"id": "a", "activity": "add_one", "input": "{count: abs(input.name)}"}],
        }
    )
    instance_id = await engine.client.start("typo", {"name": "not a number"})
    error = await failure_of(engine, instance_id)
    assert error.type == "ExpressionError"
    assert "step 'a' input" in error.message


async def test_services_stopped_mid_run_hand_their_work_to_others(
    engine_url: str, clock: trio.testing.MockClock | None, runs: Runs
) -> None:
    specs = actors.collect_activities([gated])
    fast_drain = actors.WorkerConfig(ack_wait=30.0, drain_timeout=0.2)
    async with open_transport(engine_url) as transport, trio.open_nursery() as nursery:
        first_orchestrator = actors.Orchestrator(transport)
        first_worker = actors.Worker(transport, specs, fast_drain)
        async with actors.Client(transport) as client:
            await client.register(one_step("handover", "gated"))
            instance_id = await client.start("handover", {"sleep": 1})
            with trio.fail_after(30):
                async with trio.open_nursery() as first:
                    await first.start(first_orchestrator.run)
                    await first.start(first_worker.run)
                    # Stop both once the activity runs; they return when drained.
                    await runs.gated[instance_id].wait()
                    first_worker.shutdown()
                    first_orchestrator.shutdown()
            assert first_worker.stats["handed_back"] == 1
            # Neither waited for the 30 s ack wait: the task was handed back.
            second_orchestrator = actors.Orchestrator(transport)
            second_worker = actors.Worker(transport, specs)
            await nursery.start(second_orchestrator.run)
            await nursery.start(second_worker.run)
            with trio.fail_after(20):
                assert await client.result(instance_id) == "done"
            assert second_worker.stats["completed"] == 1
            second_worker.shutdown()
            second_orchestrator.shutdown()
