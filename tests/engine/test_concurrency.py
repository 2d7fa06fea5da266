"""Workflow-level concurrency limits (``concurrency:`` in a definition), on both transports.

The activities write down when they run (on the test's clock), so that the
limits are checked from what really ran, not from what the engine says.
Every test ends by checking that no slot is left held: the slots bucket is
empty once every instance has ended.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import pytest
import trio
from flow import result_of
from records import Records

import actors
from actors import InstanceStatus
from actors.runtime._flow import Pacer, WorkflowSlots
from actors.wire import (
    SLOTS_BUCKET,
    Slot,
    SlotHolder,
    decode_slot,
    encode_slot,
    workflow_slot_key,
)
from transport import ConflictError, ConnectionLostError, KeyValue, Transport

if TYPE_CHECKING:
    from conftest import Engine


@dataclass
class Ledger:
    #: Per run: (key, instance, start time, end time), in the order they ended.
    runs: list[tuple[str, str, float, float]] = field(default_factory=list)
    #: Runs per key, in the order they started.
    started: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: When each instance's span began.
    began: dict[str, float] = field(default_factory=dict)


LEDGER: Records[Ledger] = Records("ledger", Ledger)


ledger = LEDGER.fixture("ledger", autouse=True)


@actors.activity
async def serve_order(order: dict[str, Any]) -> str:
    """Run for ``order["for"]`` seconds, writing down when."""
    records = LEDGER.get()
    instance = actors.activity_info().instance_id
    began = trio.current_time()
    records.started[order["customer"]].append(instance)
    await trio.sleep(order.get("for", 0.01))
    records.runs.append((order["customer"], instance, began, trio.current_time()))
    return instance


@actors.activity
async def begin_span(order: dict[str, Any]) -> dict[str, Any]:
    """Note when an instance's span begins; pass the order on."""
    LEDGER.get().began[actors.activity_info().instance_id] = trio.current_time()
    return order


@actors.activity
async def end_span(order: dict[str, Any]) -> None:
    """Note when the span ends: the instance ran from its begin_span to here."""
    records = LEDGER.get()
    instance = actors.activity_info().instance_id
    began = records.began[instance]
    records.runs.append((order["customer"], instance, began, trio.current_time()))


#: An instance that runs a while without holding a worker (a durable sleep):
#: its span, from its first activity to its last, is when it surely ran.
SPANS = """
type: spans
concurrency: [{key: input.customer, limit: 2}]
steps:
  - {id: begin, activity: begin_span}
  - {id: pause, sleep: 50ms}
  - {id: end, activity: end_span}
"""


@actors.activity
async def fail_order(order: dict[str, Any]) -> None:
    raise actors.ActivityError("no", non_retryable=True)


def per_customer(limit: int, *, total: int | None = None, workflow: str = "order") -> str:
    limits = [f'{{key: "input.customer", limit: {limit}}}']
    if total is not None:
        limits.append(f"{{key: \"'all'\", limit: {total}}}")
    return f"""
type: {workflow}
concurrency: [{", ".join(limits)}]
steps:
  - {{id: serve, activity: serve_order}}
"""


GATED = """
type: gated
concurrency: [{key: input.customer, limit: 1}]
steps:
  - {id: gate, wait_signal: go, timeout: 1h}
  - {id: serve, activity: serve_order, input: input}
"""


def most_at_once(runs: list[tuple[float, float]]) -> int:
    """The most of ``runs`` (start, end) that overlapped at any moment."""
    edges = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same time
        now += step
        most = max(most, now)
    return most


def peaks(ledger: Ledger) -> dict[str, int]:
    """Per key, the most runs of the ledger that overlapped at any moment."""
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key, _, began, ended in ledger.runs:
        by_key[key].append((began, ended))
    return {key: most_at_once(runs) for key, runs in by_key.items()}


async def no_slots_left(engine: Engine) -> None:
    """Wait until every slot is freed (an instance's end is stored just before its free)."""
    bucket = await engine.transport.kv(SLOTS_BUCKET)
    with trio.fail_after(30):
        async with bucket.watch() as changes:
            while await bucket.keys():
                await changes.receive()


async def slots_left(engine: Engine) -> dict[str, Any]:
    bucket = await engine.transport.kv(SLOTS_BUCKET)
    left = {}
    for key in await bucket.keys():
        entry = await bucket.get(key)
        if entry is not None:
            left[key] = decode_slot(entry.value)
    return left


async def status_of(engine: Engine, instance: str) -> actors.InstanceInfo:
    info = await engine.client.status(instance)
    assert info is not None
    return info


async def test_one_per_key_in_start_order(engine: Engine, clock: Any, ledger: Ledger) -> None:
    await engine.client.register(per_customer(1))
    ids = [f"o{i}" for i in range(12)]
    for i, instance in enumerate(ids):
        customer = f"c{i % 3}"
        await engine.client.start("order", {"customer": customer, "for": 0.05}, id=instance)
    for instance in ids:
        assert await result_of(engine, instance) == instance
    assert peaks(ledger) == {"c0": 1, "c1": 1, "c2": 1}
    # The first start decided takes the slot; those queued run in the order
    # they were started (their starts' order in the events stream).
    for key, started in (("c0", ids[0::3]), ("c1", ids[1::3])):
        first = ledger.started[key][0]
        assert ledger.started[key][1:] == [i for i in started if i != first]
    await no_slots_left(engine)


async def test_several_limits_at_once(engine: Engine, clock: Any, ledger: Ledger) -> None:
    """One per customer and two in all: both hold at every moment."""
    await engine.client.register(per_customer(1, total=2))
    ids = [f"o{i}" for i in range(10)]
    for i, instance in enumerate(ids):
        await engine.client.start("order", {"customer": f"c{i % 4}", "for": 0.05}, id=instance)
    for instance in ids:
        await result_of(engine, instance)
    assert most_at_once([(began, ended) for _, _, began, ended in ledger.runs]) <= 2
    assert peaks(ledger) == {"c0": 1, "c1": 1, "c2": 1, "c3": 1}
    await no_slots_left(engine)


async def test_status_shows_the_queue_and_each_ending_frees_the_slot(
    engine: Engine, clock: Any
) -> None:
    """Completion, cancel, terminate and failure each free the slot for the next in line."""
    client = engine.client
    await client.register(GATED)
    await client.start("gated", {"customer": "ann", "for": 0}, id="g0")
    with trio.fail_after(30):
        await client.wait_for("g0", lambda info: "gate" in info.steps)
    for i in range(1, 4):
        await client.start("gated", {"customer": "ann", "for": 0}, id=f"g{i}")
    with trio.fail_after(30):
        for queued in ("g1", "g2", "g3"):
            await client.wait_for(queued, lambda info: info.status is InstanceStatus.QUEUED)
    for queued in ("g1", "g2", "g3"):
        info = await status_of(engine, queued)
        assert info.status is InstanceStatus.QUEUED
        assert info.queued == 'concurrency[0]: input.customer = "ann" (limit 1)'
        assert info.to_data()["queued"] == info.queued
    (slot,) = (await slots_left(engine)).values()
    assert [holder.id for holder in slot.holders] == ["g0"]
    assert [waiter.id for waiter in slot.queue] == ["g1", "g2", "g3"]
    # A queued instance takes signals, and keeps them for when it runs.
    await client.signal("g2", "go")

    # Cancelled while it runs: the next starts.
    await client.cancel("g0")
    with trio.fail_after(30):
        await client.wait_for("g1", lambda info: "gate" in info.steps)
    # Terminated while queued: it leaves the queue and never runs.
    await client.terminate("g3")
    with trio.fail_after(30):
        await client.wait_for("g3", lambda info: info.status.terminal)
    assert (await status_of(engine, "g3")).status is InstanceStatus.TERMINATED
    assert (await status_of(engine, "g3")).steps == {}
    # Completed: g1 goes on once signalled, then g2 runs with the signal it had.
    await client.signal("g1", "go")
    assert await result_of(engine, "g1") == "g1"
    assert await result_of(engine, "g2") == "g2"
    assert (await status_of(engine, "g0")).status is InstanceStatus.CANCELLED
    history = [record["kind"] for record in await engine.history("g2")]
    assert history[:3] == ["flow.queued", "signal.received", "workflow.started"]
    await no_slots_left(engine)


async def test_a_failure_frees_the_slot(engine: Engine, clock: Any) -> None:
    await engine.client.register(
        """
type: failing
concurrency: [{key: input.customer, limit: 1}]
steps: [{id: fail, activity: fail_order}]
"""
    )
    for i in range(3):
        await engine.client.start("failing", {"customer": "bob"}, id=f"f{i}")
    for i in range(3):
        with pytest.raises(actors.WorkflowFailedError):
            await result_of(engine, f"f{i}")
    await no_slots_left(engine)


async def test_a_key_without_a_value_fails_the_start(engine: Engine, clock: Any) -> None:
    await engine.client.register(per_customer(1))
    await engine.client.start("order", {"client": "typo"}, id="nokey")
    with pytest.raises(actors.WorkflowFailedError) as caught:
        await result_of(engine, "nokey")
    assert caught.value.error.type == "InvalidConcurrencyKey"
    assert "gave null" in caught.value.error.message
    await no_slots_left(engine)


async def test_a_duplicate_start_takes_no_slot(engine: Engine, clock: Any) -> None:
    """A start again of an instance that ended must not take (and keep) a slot."""
    await engine.client.register(per_customer(1))
    await engine.client.start("order", {"customer": "dup", "for": 0}, id="d1")
    await result_of(engine, "d1")
    # Published straight to the instance's subject, past the client's check.
    from actors.wire import StartMessage, encode_start, start_subject

    seen = engine.orchestrator.stats["events"]
    await engine.transport.publish(
        start_subject("d1", "order"), encode_start(StartMessage("d1", {"customer": "dup"}, 0))
    )
    with trio.fail_after(30):
        await engine.orchestrator.wait_until(
            lambda: (
                engine.orchestrator.stats["events"] > seen and not engine.orchestrator.active_actors
            )
        )
    await no_slots_left(engine)


async def spans_over_keys(engine: Engine, ledger: Ledger, starts: int, keys: int) -> None:
    """``starts`` instances started at once over ``keys`` customers, two at a time each."""
    await engine.client.register(SPANS)
    ids = [f"m{i}" for i in range(starts)]

    async def start(first: int) -> None:
        for i in range(first, len(ids), 25):
            await engine.client.start("spans", {"customer": f"c{i % keys}"}, id=ids[i])

    async with trio.open_nursery() as nursery:
        for first in range(25):
            nursery.start_soon(start, first)
    with trio.fail_after(240):
        for instance in ids:
            await engine.client.result(instance)
    assert len(ledger.runs) == starts
    found = peaks(ledger)
    assert len(found) == keys
    # Never a third; and the limit did bind (two at once were seen).
    assert max(found.values()) == 2
    await no_slots_left(engine)


async def test_exact_under_concurrent_starts(engine: Engine, clock: Any, ledger: Ledger) -> None:
    await spans_over_keys(engine, ledger, 200, 10)


@pytest.mark.slow
async def test_exact_under_a_thousand_concurrent_starts(
    engine: Engine, clock: Any, ledger: Ledger
) -> None:
    """1,000 starts at once over 50 customers, two at a time each: never a third."""
    await spans_over_keys(engine, ledger, 1000, 50)


class CountingBucket:
    """The slots bucket, counting the changes the broker refused (a compare-and-set conflict)."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bucket, name)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return await self._bucket.update(key, value, revision)
        except ConflictError:
            self.refused.append(f"update {key}")
            raise

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        try:
            await self._bucket.delete(key, revision=revision)
        except ConflictError:
            self.refused.append(f"delete {key}")
            raise


@pytest.fixture
def slot_buckets(monkeypatch: pytest.MonkeyPatch) -> list[CountingBucket]:
    """Every WorkflowSlots made from now on counts its refused changes (ask before ``engine``)."""
    made: list[CountingBucket] = []
    init = WorkflowSlots.__init__

    def counting(self: WorkflowSlots, transport: Transport, bucket: KeyValue) -> None:
        made.append(CountingBucket(bucket))
        init(self, transport, cast("KeyValue", made[-1]))

    monkeypatch.setattr(WorkflowSlots, "__init__", counting)
    return made


async def test_a_burst_of_starts_queues_without_racing_itself(
    slot_buckets: list[CountingBucket], engine: Engine, clock: Any, ledger: Ledger
) -> None:
    """Forty starts behind one slot at once, on one orchestrator: each queues and each
    end hands the slot on with one read and one write, none refused (but the
    first holder's delete by revision, see below). Racing each
    other by compare-and-set, they met about n²/2 conflicts, and an end freeing the
    slot waited its turn among them (the handoff's p99 of a second on NATS)."""
    await engine.client.register(per_customer(1))
    ids = [f"b{i:02}" for i in range(40)]
    for instance in ids:
        await engine.client.start("order", {"customer": "burst", "for": 0.01}, id=instance)
    for instance in ids:
        assert await result_of(engine, instance) == instance
    assert peaks(ledger) == {"burst": 1}
    await no_slots_left(engine)
    (bucket,) = slot_buckets
    # The first holder created the entry alone, and tries to free it with one
    # delete at that revision: refused by design once others have queued.
    key = workflow_slot_key("order", "input.customer", "burst")
    assert bucket.refused in ([], [f"delete {key}"])


# -- step-level limits ------------------------------------------------------------------

STEP_LIMITED = """
type: payments
steps:
  - {id: note, sleep: 0s}
  - id: pay
    activity: serve_order
    input: input
    concurrency: {key: input.customer, limit: 2}
"""


async def test_a_step_limit_holds_across_instances(
    engine: Engine, clock: Any, ledger: Ledger
) -> None:
    """At most two attempts of the step at once per customer, whatever the instances."""
    await engine.client.register(STEP_LIMITED)
    ids = [f"p{i}" for i in range(24)]
    for i, instance in enumerate(ids):
        await engine.client.start("payments", {"customer": f"c{i % 3}", "for": 0.05}, id=instance)
    for instance in ids:
        assert await result_of(engine, instance) == instance
    found = peaks(ledger)
    assert sorted(found) == ["c0", "c1", "c2"]
    assert max(found.values()) <= 2, found
    if clock is not None:
        # On the test clock the limit surely binds: two at once, each time.
        assert set(found.values()) == {2}, found
    await no_slots_left(engine)


FLAKY = """
type: flaky
steps:
  - id: pay
    activity: flaky_payment
    concurrency: {limit: 1}
    retry: {max_attempts: 2, initial_interval: 1h}
"""


@actors.activity
async def flaky_payment(value: dict[str, Any]) -> str:
    """Fail the first attempt of instance ``first``; note the others."""
    info = actors.activity_info()
    if info.instance_id == "first" and info.attempt == 1:
        raise ValueError("declined")
    LEDGER.get().started["flaky"].append(info.instance_id)
    return info.instance_id


async def test_a_step_waiting_for_its_retry_holds_no_slot(engine: Engine, clock: Any) -> None:
    """Only an attempt out holds a slot: one waiting an hour for its retry lets others run."""
    await engine.client.register(FLAKY)
    await engine.client.start("flaky", {}, id="first")
    with trio.fail_after(30):
        await engine.client.wait_for(
            "first", lambda info: info.steps.get("pay", {}).get("status") == "retry_wait"
        )
    await engine.client.start("flaky", {}, id="second")
    assert await result_of(engine, "second", limit=60) == "second"
    await engine.client.cancel("first")
    await no_slots_left(engine)


# -- rate limits ------------------------------------------------------------------------


def paced(limit: int, period: str, burst: int) -> str:
    return f"""
type: paced
steps:
  - id: call
    activity: serve_order
    input: input
    rate: {{limit: {limit}, period: {period}, burst: {burst}, key: input.customer}}
"""


def starts_within(times: list[float], window: float) -> int:
    """The most of ``times`` in any span of ``window`` seconds (end excluded)."""
    times = sorted(times)
    most = 0
    first = 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_a_rate_limit_paces_attempts(engine: Engine, clock: Any, ledger: Ledger) -> None:
    """10 a second with a burst of 3, per customer: waiting attempts are not failed."""
    await engine.client.register(paced(10, "1s", 3))
    ids = [f"r{i}" for i in range(40)]
    for i, instance in enumerate(ids):
        customer = "busy" if i < 30 else "quiet"
        await engine.client.start("paced", {"customer": customer, "for": 0}, id=instance)
    for instance in ids:
        assert await result_of(engine, instance) == instance
    busy = [began for key, _, began, _ in ledger.runs if key == "busy"]
    quiet = [began for key, _, began, _ in ledger.runs if key == "quiet"]
    # The burst, then one every 0.1 s: in any second, at most the burst and
    # the ten that the rate lets through.
    assert starts_within(busy, 1.0) <= 10 + 3, sorted(busy)
    assert starts_within(busy, 0.05) <= 3, sorted(busy)
    assert max(busy) - min(busy) >= (30 - 3) * 0.1 - 0.05
    if clock is not None:
        # On the test clock, to the letter: the burst at once, and another
        # key value not held back by the busy one.
        assert starts_within(busy, 0.05) == 3
        assert max(quiet) - min(quiet) < 1.0


@pytest.mark.slow
async def test_a_rate_of_twenty_a_second_holds_for_a_minute_over_three_workers(
    engine: Engine, clock: Any, ledger: Ledger
) -> None:
    """1,300 attempts wait for a rate of 20/s served by three workers: 1,200 start in
    the minute after the burst, within 10%."""
    await engine.client.register(paced(20, "1s", 5))
    specs = actors.collect_activities([sys.modules[__name__]])
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            worker = actors.Worker(engine.transport, specs, actors.WorkerConfig(concurrency=8))
            await nursery.start(worker.run)
        ids = [f"t{i}" for i in range(1300)]
        for instance in ids:
            await engine.client.start("paced", {"customer": "one", "for": 0}, id=instance)
        with trio.fail_after(200):
            for instance in ids:
                await engine.client.result(instance)
        nursery.cancel_scope.cancel()
    starts = sorted(began for _, _, began, _ in ledger.runs)
    first = starts[0]
    in_the_minute = [at for at in starts if first + 2 <= at < first + 62]
    assert abs(len(in_the_minute) - 1200) <= 120
    assert starts_within(starts, 1.0) <= 20 + 5


# -- the sweep --------------------------------------------------------------------------


@pytest.fixture
def orchestrator_options() -> dict[str, Any]:
    # The sweep of slots left held, every second rather than every 30.
    return {"slot_sweep": 1.0}


async def test_a_slot_left_held_is_swept(engine: Engine, clock: Any) -> None:
    """A slot held by an instance that never came to be stored (its start went to
    dead letters after it took the slot) is freed by the sweep; the next runs."""
    await engine.client.register(per_customer(1))
    bucket = await engine.transport.kv(SLOTS_BUCKET)
    key = workflow_slot_key("order", "input.customer", "lost")
    ghost = Slot("order", "input.customer", "lost", 1, holders=(SlotHolder("ghost", 0.0),))
    await bucket.create(key, encode_slot(ghost))
    await engine.client.start("order", {"customer": "lost", "for": 0}, id="after-ghost")
    assert await result_of(engine, "after-ghost") == "after-ghost"
    history = [record["kind"] for record in await engine.history("after-ghost")]
    assert history[:2] == ["flow.queued", "workflow.started"]
    await no_slots_left(engine)


async def test_a_queue_is_in_the_order_the_starts_were_stored(engine: Engine) -> None:
    """Starts decided out of order (by two orchestrators, say) queue by their sequence."""
    definition = actors.load_definition(per_customer(1))
    slots = WorkflowSlots(engine.transport, await engine.transport.kv(SLOTS_BUCKET))
    for instance, seq in (("first", 5), ("late", 9), ("early", 7), ("unknown", 0)):
        await slots.admit(definition, instance, {"customer": "x"}, seq)
    (slot,) = (await slots_left(engine)).values()
    assert [holder.id for holder in slot.holders] == ["first"]
    assert [waiter.id for waiter in slot.queue] == ["early", "late", "unknown"]


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> list[Exception]:
    """Make the async ``owner.method`` raise :class:`ConnectionLostError` on its
    first call and work from then on; the failure still to come (none once raised)."""
    failures: list[Exception] = [ConnectionLostError("injected: the broker went away")]
    real = getattr(owner, method)

    async def flaky(self: Any, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(self, *args)

    monkeypatch.setattr(owner, method, flaky)
    return failures


async def test_a_broker_error_taking_a_slot_hands_the_start_back(
    engine: Engine, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker failing as a start takes its slot is no failure of the instance:
    the start comes back and runs."""
    failures = fail_once(monkeypatch, WorkflowSlots, "admit")
    await engine.client.register(per_customer(1))
    await engine.client.start("order", {"customer": "flaky", "for": 0}, id="flaky")
    assert await result_of(engine, "flaky") == "flaky"
    assert not failures
    await no_slots_left(engine)


async def test_a_broker_error_reserving_a_rate_turn_hands_the_task_back(
    engine: Engine, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker failing a worker's rate reservation neither stops the worker nor
    fails the attempt: the task comes back and runs."""
    failures = fail_once(monkeypatch, Pacer, "reserve")
    await engine.client.register(paced(10, "1s", 1))
    await engine.client.start("paced", {"customer": "flaky", "for": 0}, id="paced-flaky")
    assert await result_of(engine, "paced-flaky") == "paced-flaky"
    assert not failures
    assert engine.worker.stats["handed_back"] == 1
