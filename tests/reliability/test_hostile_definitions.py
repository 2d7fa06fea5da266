"""Scenario 9 of the fault-injection suite: bad and hostile workflow definitions.

What a definition can do wrong, end to end through ``Client.register``, the
raw definitions bucket and the orchestrator:

* **Cycles.** A definition is a tree, so it cannot loop by itself; but a
  child step may start its own type (directly, or A -> B -> A), and every
  level is a new instance. Depth is carried in each child's start message
  (its parent's depth + 1) and kept in its state; a child step of an
  instance at ``MAX_CHILD_DEPTH`` fails it with ``ChildDepthExceeded``, so
  the chain is ``MAX_CHILD_DEPTH + 1`` instances long and every one of them
  ends. (Before, the chain ran until ids passed 128 characters, about 64
  levels, and then the error, whose causes nest one level per child, no
  longer encoded: the instances above stayed ``running`` for good.)
* **Definitions put around the client**: data that is not a valid definition
  fails its instances ``UnknownWorkflowType``; the services go on.
* **Activities no worker serves**: the step waits, visibly, for a worker;
  with ``schedule_to_start`` it fails with ``ActivityTimeout`` instead.
* **Hostile expressions**: refused at registration when too long or too
  deep; at run time, metered, so that an expression that would explode
  (``input[].[@,@][].[@,@]...``) fails its instance with ``ExpressionError``
  within a bounded time and memory, and the orchestrator serves on.
* **Values the codec cannot carry** (an input nested as deep as a start
  allows, which is too deep once inside the state; a 65-bit integer from an
  expression) fail the instance with ``UnencodableValue`` instead of being
  retried until dead-lettered with the instance left hanging.

The engine runs in the test's process, on memory and on a nats-server of the
test's own (``engine_url``); the waits are bounded, and each test is quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import trio
import trio.testing
from records import Records
from test_codec import nested_lists

import actors
from actors.core._error_info import MAX_CAUSES
from actors.core._expressions import MAX_EVALUATION_COST, Expression
from actors.core._steps._child import MAX_CHILD_DEPTH
from actors.wire import (
    DEFINITIONS_BUCKET,
    HISTORY_STREAM,
    STATES_BUCKET,
    TASKS_STREAM,
    StartMessage,
    decode_deadletter,
    decode_history,
    decode_state,
    encode,
    encode_definition,
    encode_start,
    result_msg_id,
    start_msg_id,
    task_subject,
)
from actors.wire._names import DEADLETTER_STREAM, plain_start_subject
from transport import Transport, open_transport

#: Longest any one scenario may take to settle (seconds of the test's clock).
SETTLE: Final = 60.0


@actors.activity
async def hostile_echo(value: Any) -> Any:
    return value


#: The activity that no worker serves until a test starts one for it.
#: The instances ``hostile_late`` ran for, in one test.
LATE_RUNS: Records[list[str]] = Records("late runs", list)


late_runs = LATE_RUNS.fixture("late_runs", autouse=True)


@actors.activity(name="hostile_unserved")
async def hostile_late(value: Any) -> Any:
    LATE_RUNS.get().append(actors.activity_info().instance_id)
    return {"served": value}


@dataclass
class Engine:
    transport: Transport
    client: actors.Client
    orchestrator: actors.Orchestrator
    nursery: trio.Nursery

    async def start_worker(self, *activities: Callable[..., Any]) -> actors.Worker:
        worker = actors.Worker(
            self.transport,
            actors.collect_activities(activities),
            actors.WorkerConfig(ack_wait=5.0, concurrency=4, drain_timeout=2.0),
        )
        await self.nursery.start(worker.run)
        return worker

    async def deadletters(self) -> list[Mapping[str, Any]]:
        stored = await self.transport.read(DEADLETTER_STREAM, "deadletter.>")
        return [decode_deadletter(message.data) for message in stored]

    async def states(self) -> dict[str, Any]:
        """Every stored instance state, by id."""
        kv = await self.transport.kv(STATES_BUCKET)
        found: dict[str, Any] = {}
        for key in await kv.keys():
            entry = await kv.get(key)
            if entry is not None and not key.startswith("_"):
                found[key] = decode_state(entry.value)
        return found

    async def failure(self, instance_id: str) -> actors.ErrorInfo:
        """The error the instance failed with (it must fail within ``SETTLE``)."""
        with trio.fail_after(SETTLE), pytest.raises(actors.WorkflowFailedError) as failed:
            await self.client.result(instance_id)
        return failed.value.error


@asynccontextmanager
async def engine(
    url: str, *activities: Callable[..., Any], lease: float = 10.0
) -> AsyncIterator[Engine]:
    """An orchestrator (and a worker serving ``activities``, if any) and a client on ``url``."""
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(
            transport,
            actors.OrchestratorConfig(
                passivate_after=5.0, drain_timeout=2.0, start_wait=2.0, lease=lease
            ),
        )
        await nursery.start(orchestrator.run)
        async with actors.Client(transport) as client:
            running = Engine(transport, client, orchestrator, nursery)
            if activities:
                await running.start_worker(*activities)
            yield running
        orchestrator.shutdown()
        nursery.cancel_scope.deadline = trio.current_time() + 10
        nursery.cancel_scope.cancel()


def causes(error: actors.ErrorInfo) -> list[Mapping[str, Any]]:
    """The error's chain of causes, outermost first."""
    chain: list[Mapping[str, Any]] = []
    cause = error.cause
    while cause is not None:
        chain.append(cause)
        cause = cause.get("cause")
    return chain


# -- cycles through child workflows ----------------------------------------------------


def child_flow(workflow_type: str, child_type: str) -> dict[str, Any]:
    return {"type": workflow_type, "steps": [{"id": "c", "workflow": child_type}]}


@pytest.mark.parametrize(
    "types",
    [pytest.param(("self_loop",), id="A-A"), pytest.param(("ping", "pong"), id="A-B-A")],
)
async def test_a_workflow_that_starts_itself_stops_at_the_child_depth_limit(
    engine_url: str, types: tuple[str, ...]
) -> None:
    """A child step that starts its own type, directly or through another, makes a
    chain of exactly ``MAX_CHILD_DEPTH + 1`` instances (depths 0 to the limit); the
    deepest fails ``ChildDepthExceeded``, and the failure climbs to the top through
    every level, each ending ``failed`` with its child's error as cause. Nothing is
    dead-lettered, nothing is left running. Regression: before the limit the chain
    ran until ids were too long (64 levels) and the 36 instances above the point
    where the cause chain no longer encoded hung ``running`` for ever."""
    async with engine(engine_url) as running:
        for position, workflow_type in enumerate(types):
            await running.client.register(
                child_flow(workflow_type, types[(position + 1) % len(types)])
            )
        began = time.monotonic()
        error = await running.failure(await running.client.start(types[0], {}, id="r"))
        elapsed = time.monotonic() - began
        states = await running.states()
        letters = await running.deadletters()
    print(f"{len(states)} instances, failed in {elapsed:.2f}s")
    assert error.type == "ChildWorkflowFailed"
    chain = causes(error)
    assert len(chain) == MAX_CHILD_DEPTH
    assert [cause["type"] for cause in chain[:-1]] == ["ChildWorkflowFailed"] * (
        MAX_CHILD_DEPTH - 1
    )
    assert chain[-1]["type"] == "ChildDepthExceeded"
    assert f"the limit is {MAX_CHILD_DEPTH}" in chain[-1]["message"]
    # The chain: r, r-c, r-c-c, ... one instance per depth, types in turn.
    assert len(states) == MAX_CHILD_DEPTH + 1
    for depth in range(MAX_CHILD_DEPTH + 1):
        state = states["r" + "-c" * depth]
        assert state.depth == depth
        assert state.type == types[depth % len(types)]
        assert str(state.status) == "failed"
    deepest = states["r" + "-c" * MAX_CHILD_DEPTH]
    assert deepest.error.type == "ChildDepthExceeded"
    assert not letters


async def test_a_childs_start_claiming_a_depth_is_held_to_the_limit(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    """The depth travels in the start message, so a start published by hand is held to
    it too: a child's start at the limit fails its instance at its first child step
    (its result goes to a parent that does not exist, which is dead-lettered as such),
    and a start whose depth is not an integer >= 1 is dead-lettered as malformed."""
    async with engine(engine_url) as running:
        await running.client.register(child_flow("self_loop", "self_loop"))
        body = {
            "id": "claimed",
            "input": {},
            "parent": {"id": "nobody", "step": "c"},
            "depth": MAX_CHILD_DEPTH,
        }
        await running.transport.publish(
            plain_start_subject("self_loop"),
            json.dumps(body).encode(),
            msg_id=start_msg_id("claimed"),
        )
        error = await running.failure("claimed")
        assert error.type == "ChildDepthExceeded"
        for number, depth in enumerate([0, -1, "2", True, 1.5]):
            bad = {**body, "id": f"bad-{number}", "depth": depth}
            await running.transport.publish(
                plain_start_subject("self_loop"), json.dumps(bad).encode()
            )
        with trio.fail_after(SETTLE):
            while len(letters := await running.deadletters()) < 6:  # noqa: ASYNC110
                # The dead letters are written by the orchestrator: poll the stream.
                await trio.sleep(0.05)
        states = await running.states()
    reasons = [str(letter["reason"]) for letter in letters]
    assert sum("no instance 'nobody'" in reason for reason in reasons) == 1
    assert sum("'depth'" in reason for reason in reasons) == 5, reasons
    assert set(states) == {"claimed"}


async def test_a_cause_chain_deeper_than_the_state_can_hold_is_cut(engine_url: str) -> None:
    """A worker's failed result may carry a chain of causes as deep as a result message
    allows (about 30); stored in the state's step, that chain is two levels deeper and
    did not encode: the result was retried, dead-lettered, and the instance hung with
    its step ``scheduled``. Now an error keeps at most ``MAX_CAUSES`` causes (the
    innermost kept one says so), and the instance fails with the worker's error."""
    flow = {
        "type": "deep_cause",
        "steps": [
            {"id": "a", "activity": "hostile_unserved", "retry": {"max_attempts": 1}},
        ],
    }
    async with engine(engine_url) as running:
        await running.client.register(flow)
        instance_id = await running.client.start("deep_cause", {})
        with trio.fail_after(SETTLE):
            await running.client.wait_for(instance_id, lambda info: "a" in info.steps)
        error: dict[str, Any] = {"type": "Innermost", "message": "at the bottom"}
        for level in range(28):
            error = {"type": f"Level{level}", "message": f"level {level}", "cause": error}
        # Written as a raw worker would: ErrorInfo itself would cut the chain.
        data = encode(
            "activity.result", {"instance": instance_id, "step": "a", "attempt": 1, "error": error}
        )
        await running.transport.publish(
            f"instance.{instance_id}.failed.a",
            data,
            msg_id=result_msg_id(instance_id, "a", 1),
        )
        failed = await running.failure(instance_id)
        letters = await running.deadletters()
    assert failed.type == "Level27"
    chain = causes(failed)
    assert len(chain) == MAX_CAUSES
    assert "its causes are not kept" in chain[-1]["message"]
    assert not letters


# -- definitions put around the client ---------------------------------------------------


def _invalid_definitions() -> dict[str, bytes]:
    """Key suffix -> what is put under ``{name}.1``: data no client would register."""
    step = {"id": "s", "activity": "hostile_echo"}
    # Maps nest in fewer levels of data than parallel steps: nine of them (one more
    # than a definition may have) still fit the codec's nesting limit.
    nested: dict[str, Any] = step
    for depth in range(9):
        nested = {"id": f"m{depth}", "map": "input", "steps": [nested]}
    invalid: dict[str, Any] = {
        "duplicate_ids": {"steps": [step, step]},
        "missing_id": {"steps": [{"activity": "hostile_echo"}]},
        "no_steps": {"steps": []},
        "unknown_field": {"steps": [{**step, "retries": 3}]},
        "nested_too_deep": {"steps": [nested]},
        "too_many_steps": {"steps": [{"id": f"s{n}", "sleep": 0} for n in range(1001)]},
        "long_expression": {"steps": [{**step, "input": "input" + ".a" * 2100}]},
        "deep_expression": {"steps": [{**step, "input": "[" * 33 + "]" * 33}]},
        "two_kinds": {"steps": [{**step, "sleep": 1}]},
    }
    puts = {
        name: encode_definition({"type": f"bad_{name}", "version": 1, **data})
        for name, data in invalid.items()
    }
    # Text, not a CBOR envelope (a definition file written into the bucket by hand).
    puts["yaml_text"] = b"type: bad_yaml_text\nsteps:\n  - {id: s, activity: hostile_echo}\n"
    puts["json_text"] = json.dumps({"type": "bad_json_text", "steps": [step]}).encode()
    # A CBOR envelope of another kind, and one of no data at all.
    puts["other_kind"] = encode("workflow.start", {"type": "bad_other_kind", "steps": [step]})
    puts["empty"] = b""
    return puts


async def test_invalid_definitions_put_in_the_bucket_fail_their_instances(
    engine_url: str,
) -> None:
    """Definitions written into the bucket without the client's validation (duplicate
    or missing ids, no steps, unknown fields, nesting or expressions over the limits,
    text or other envelopes instead of a definition) are never run: ``Client.start``
    refuses them (``UnknownWorkflowTypeError``), a raw start fails its instance
    ``UnknownWorkflowType`` at once, nothing is dead-lettered, and a valid workflow
    started after them completes."""
    puts = _invalid_definitions()
    async with engine(engine_url, hostile_echo) as running:
        definitions = await running.transport.kv(DEFINITIONS_BUCKET)
        for name, data in puts.items():
            await definitions.put(f"bad_{name}.1", data)
        await running.client.register(
            {"type": "fine", "steps": [{"id": "s", "activity": "hostile_echo"}]}
        )
        began = time.monotonic()
        for name in puts:
            with pytest.raises(actors.UnknownWorkflowTypeError):
                await running.client.start(f"bad_{name}", {})
            data = encode_start(StartMessage(f"raw-{name}", {}))
            await running.transport.publish(plain_start_subject(f"bad_{name}"), data)
        for name in puts:
            error = await running.failure(f"raw-{name}")
            assert error.type == "UnknownWorkflowType", (name, error)
        fine = await running.client.start("fine", {"ok": True})
        with trio.fail_after(SETTLE):
            assert await running.client.result(fine) == {"ok": True}
        elapsed = time.monotonic() - began
        letters = await running.deadletters()
        failures = running.orchestrator.stats["instance_failures"]
    print(f"{len(puts)} invalid definitions handled in {elapsed:.2f}s")
    assert not letters
    assert failures == 0  # no failure of the engine itself (EngineError)


# -- hostile definitions refused at registration ------------------------------------------


def _billion_laughs() -> str:
    """YAML whose aliases would expand to 10**11 strings if anything walked them."""
    lines = ["type: laughs", "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 12):
        lines.append(f"x{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    lines += [
        "description: *a11",
        "steps:",
        "  - {id: s, activity: a, input: *a11, retry: {non_retryable: *a11}}",
        "  - {id: p, parallel: [{id: b, steps: *a11}]}",
    ]
    return "\n".join(lines) + "\n"


def _parallels(depth: int) -> dict[str, Any]:
    """A parallel step holding a parallel step ... ``depth`` deep, around one activity."""
    step: dict[str, Any] = {"id": "s", "activity": "a"}
    for level in range(depth):
        step = {"id": f"p{level}", "parallel": [{"id": "b", "steps": [step]}]}
    return step


HOSTILE_REGISTRATIONS: Final[dict[str, Any]] = {
    "expression over 4096 characters": {
        "type": "h",
        "steps": [{"id": "s", "activity": "a", "input": "input" + ".a" * 2100}],
    },
    "expression nested 33 deep": {
        "type": "h",
        "steps": [{"id": "s", "activity": "a", "input": "[" * 33 + "input" + "]" * 33}],
    },
    "4000 negations": {
        "type": "h",
        "steps": [{"id": "s", "activity": "a", "input": "!" * 4000 + "a"}],
    },
    "1000 steps of 4000-character expressions": {
        "type": "h",
        "steps": [
            {"id": f"s{n}", "activity": "a", "input": "input" + ".abc" * 999} for n in range(1000)
        ],
    },
    "parallel steps nested 9 deep": {"type": "h", "steps": [_parallels(9)]},
    "yaml billion laughs": _billion_laughs(),
    "yaml alias to itself": "type: h\nsteps:\n  - &x {id: a, parallel: [{id: b, steps: [*x]}]}\n",
}


@pytest.mark.parametrize("definition", HOSTILE_REGISTRATIONS.values(), ids=HOSTILE_REGISTRATIONS)
async def test_hostile_definitions_are_refused_at_registration_quickly(
    definition: Any,
) -> None:
    """Each hostile definition is refused by ``Client.register`` with a
    ``DefinitionError`` naming the field at fault (or, for one over the broker's
    largest message, ``PayloadTooLargeError``), in bounded time and memory, and
    nothing is stored in the definitions bucket."""
    async with engine("memory://") as running:
        tracemalloc.start()
        began = time.monotonic()
        try:
            with pytest.raises((actors.DefinitionError, actors.PayloadTooLargeError)) as refused:
                await running.client.register(definition)
            elapsed = time.monotonic() - began
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        kv = await running.transport.kv(DEFINITIONS_BUCKET)
        stored = await kv.keys()
    print(f"refused in {elapsed:.3f}s, peak {peak / 2**20:.1f} MiB: {str(refused.value)[:200]}")
    assert not stored
    # Generous bounds (tracemalloc slows Python down several times): the point is
    # that nothing expands the aliases or recurses without end.
    assert elapsed < 20
    assert peak < 200 * 2**20
    if isinstance(refused.value, actors.DefinitionError):
        assert all(error.path or "mapping" in error.message for error in refused.value.errors)


# -- expressions that explode at run time ------------------------------------------------

#: Pathological expressions, with the input each runs on: each would build far
#: more than the budget allows.
EXPLODING: Final[dict[str, tuple[str, Any]]] = {
    # Each "[].[@,@]" doubles the list: 2**41 elements from 2.
    "doubling projections": ("input" + "[].[@,@]" * 40 + "[]", [1, 2]),
    # Pipes share the list instead of copying it; flattening copies 2**30.
    "shared then flattened": ("[@,@]" + "|[@,@]" * 30 + "|" + "[]" * 30, 1),
    "shared then printed": ("to_string([@,@]" + "|[@,@]" * 30 + ")", 1),
    "shared then compared": ("([@,@]" + "|[@,@]" * 30 + ") == ([@,@]" + "|[@,@]" * 30 + ")", 1),
    "shared then searched": ("contains([@,@]" + "|[@,@]" * 30 + ", `1`)", 1),
    "map of maps": ("map(&map(&[@,@,@,@], [@,@,@,@]), input)" + "|[].[@,@][]" * 20, [1, 2]),
    "joined strings": ("join('', [input, input])" + "|join('', [@,@,@,@])" * 16, "x" * 1000),
    "slices of a big list": ("[" + ",".join(["input[:]"] * 400) + "]", list(range(10_000))),
}


#: MiB of address space an evaluation may add: enforced with RLIMIT_AS in the
#: interpreter that runs it (past it, allocations fail with MemoryError).
MEMORY_BOUND: Final = 100
#: Run in a fresh interpreter, with the address space capped at what it has
#: now plus ``MEMORY_BOUND`` MiB: an evaluation that needs more fails with
#: ``MemoryError`` instead of ``ExpressionError``. (tracemalloc, the other way
#: to measure, would slow the evaluation down several times.)
_MEASURE: Final = """
import json, resource, sys, time
from actors.core._expressions import Expression, ExpressionError
source, value, bound_mib = json.load(sys.stdin)
expression = Expression(source)
with open("/proc/self/statm") as statm:
    size = int(statm.read().split()[0]) * resource.getpagesize()
limit = size + bound_mib * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
began = time.perf_counter()
try:
    expression.evaluate({"input": value, "steps": {}})
    outcome = "completed"
except ExpressionError as exc:
    outcome = str(exc)
except MemoryError:
    outcome = "MemoryError"
seconds = time.perf_counter() - began
print(json.dumps({"outcome": outcome[-120:], "seconds": seconds}))
"""


@pytest.mark.parametrize(("source", "value"), EXPLODING.values(), ids=EXPLODING)
def test_an_exploding_expression_fails_within_bounds(source: str, value: Any) -> None:
    """Every pathological expression fails with ``ExpressionError`` (too expensive)
    within seconds and ``MEMORY_BOUND`` MiB, in a fresh interpreter whose address
    space is capped: evaluation is metered, one unit per interpreter step and per
    element copied, compared or printed, up to ``MAX_EVALUATION_COST``. Unmetered,
    the first would need 2**41 list elements."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        input=json.dumps([source, value, MEMORY_BOUND]),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    measured = json.loads(done.stdout)
    print(f"{len(source)} characters: {measured}")
    # Not MemoryError: it stayed within the bound.
    assert "too expensive" in measured["outcome"]
    # Generous for a loaded machine (about 0.5 s here): an evaluation blocks the
    # orchestrator's loop while it runs.
    assert measured["seconds"] < 10


def test_heavy_but_honest_expressions_fit_the_budget() -> None:
    """The budget does not get in the way of real work on the largest data an
    instance can hold: projections, filters and sorts over 50,000 items."""
    items = [{"sku": f"s{n}", "qty": n % 7, "price": n} for n in range(50_000)]
    context = {"input": {"items": items}, "steps": {}}
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("input.items[*].{sku: sku, qty: qty}", lambda value: len(value) == 50_000),
        ("input.items[?qty > `3`].sku | length(@)", lambda value: value > 20_000),
        ("sort_by(input.items, &price)[-1].sku", lambda value: value == "s49999"),
        ("sum(input.items[*].price)", lambda value: value == sum(range(50_000))),
        ("map(&sku, input.items) | sort(@) | [0]", lambda value: value == "s0"),
    ]
    for source, check in checks:
        assert check(Expression(source).evaluate(context)), source
    assert MAX_EVALUATION_COST >= 1_000_000


def test_an_expression_error_does_not_quote_a_whole_value() -> None:
    """Regression: jmespath's type errors quote the whole value they were given, so a
    failing expression over a large input made an error message (stored in the
    state, the history and the parent's result) as large as the input. The reason
    quoted is clipped."""
    with pytest.raises(actors.ExpressionError) as failed:
        Expression("join(', ', input)").evaluate({"input": {"big": "x" * 200_000}})
    assert len(str(failed.value)) < 1000


async def test_an_exploding_expression_fails_its_instance_and_the_engine_serves_on(
    engine_url: str,
) -> None:
    """End to end: a step whose input expression would build 2**22 elements (seconds
    of CPU and hundreds of MiB for the orchestrator, blocking every instance it
    serves) fails its instance with ``ExpressionError`` quickly, and a healthy
    instance started right after completes."""
    flow = {
        "type": "exploding",
        "steps": [
            {"id": "s", "activity": "hostile_echo", "input": "input" + "[].[@,@]" * 21 + "[]"}
        ],
    }
    async with engine(engine_url, hostile_echo) as running:
        await running.client.register(flow)
        await running.client.register(
            {"type": "fine", "steps": [{"id": "s", "activity": "hostile_echo"}]}
        )
        began = time.monotonic()
        error = await running.failure(await running.client.start("exploding", [1, 2]))
        elapsed = time.monotonic() - began
        fine = await running.client.start("fine", 7)
        with trio.fail_after(SETTLE):
            assert await running.client.result(fine) == 7
    print(f"failed in {elapsed:.2f}s: {error.message}")
    assert error.type == "ExpressionError"
    assert "too expensive" in error.message
    assert elapsed < 30


# -- values the codec cannot carry --------------------------------------------------------


@pytest.mark.parametrize(
    ("flow_input", "expression", "kind"),
    [
        # Accepted by the start (the codec allows it there), too deep inside the state.
        pytest.param(nested_lists(30), None, "UnencodableValue", id="input-nested-30-deep"),
        pytest.param([2**63, 2**63], "sum(input)", "UnencodableValue", id="65-bit-sum"),
        pytest.param({"a": "x", "b": 1}, "input.a < input.b", "ExpressionError", id="str-lt-int"),
        pytest.param(1e400, "ceil(input)", "ExpressionError", id="ceil-of-infinity"),
    ],
)
async def test_values_the_engine_cannot_carry_fail_the_instance(
    engine_url: str, flow_input: Any, expression: str | None, kind: str
) -> None:
    """Regression: a value the codec refuses once it is in place (an input nested as
    deep as a start allows, two levels deeper inside the state; an expression's
    integer beyond 64 bits) made the orchestrator retry the event five times and
    dead-letter it, leaving the instance running (or never created) for good. It now
    fails the instance with ``UnencodableValue``. Python errors an expression raises
    (ordering a string against a number, ``ceil`` of infinity) fail it with
    ``ExpressionError``, as a JMESPath error does, not as a bug of the engine."""
    step: dict[str, Any] = {"id": "s", "activity": "hostile_echo"}
    if expression is not None:
        step["input"] = expression
    async with engine(engine_url, hostile_echo) as running:
        await running.client.register({"type": "carry", "steps": [step]})
        error = await running.failure(await running.client.start("carry", flow_input))
        letters = await running.deadletters()
    assert error.type == kind, error
    assert not letters


# -- activities no worker serves -----------------------------------------------------------

UNSERVED: Final = {"type": "unserved", "steps": [{"id": "s", "activity": "hostile_unserved"}]}


async def test_a_step_no_worker_serves_waits_visibly_until_one_does(
    autojump_clock: trio.testing.MockClock, late_runs: list[str]
) -> None:
    """Without ``schedule_to_start``, a step whose activity no worker serves waits for
    one: after a (virtual) day the instance is ``running``, its step ``scheduled``,
    the history names the activity it waits for and the task is in
    ``ACTIVITY_TASKS``; the first worker that serves the activity runs it and the
    instance completes."""
    # One orchestrator, no other to take its partitions: a lease of an hour,
    # renewed 96 times in the day rather than 34,560 (half a minute of CPU).
    async with engine("memory://", lease=3600.0) as running:
        await running.client.register(UNSERVED)
        instance_id = await running.client.start("unserved", 5)
        await trio.sleep(86_400)  # the time under test: nothing times out in a day
        info = await running.client.status(instance_id)
        assert info is not None
        assert str(info.status) == "running"
        assert info.steps["s"]["status"] == "scheduled"
        records = await running.client.history(instance_id)
        scheduled = [r for r in records if r["kind"] == "activity.scheduled"]
        assert [r["detail"]["activity"] for r in scheduled] == ["hostile_unserved"]
        waiting = await running.transport.read(TASKS_STREAM, task_subject("hostile_unserved"))
        assert len(waiting) == 1
        await running.start_worker(hostile_late)
        with trio.fail_after(SETTLE):
            assert await running.client.result(instance_id) == {"served": 5}
    assert late_runs == [instance_id]


async def test_a_step_no_worker_serves_times_out_with_schedule_to_start(
    engine_url: str, clock: trio.testing.MockClock | None, late_runs: list[str]
) -> None:
    """With ``schedule_to_start``, each attempt of a step no worker serves fails
    with ``ActivityTimeout`` when ``schedule_to_start + start_to_close`` has passed,
    and the instance fails after its last attempt. The tasks left behind never run:
    a worker started afterwards refuses them (they waited too long) and the tasks
    stream empties."""
    flow = {
        "type": "unserved_timeout",
        "steps": [
            {
                "id": "s",
                "activity": "hostile_unserved",
                "timeout": {"schedule_to_start": "1s", "start_to_close": "1s"},
                "retry": {"max_attempts": 2, "initial_interval": "100ms"},
            }
        ],
    }
    async with engine(engine_url) as running:
        await running.client.register(flow)
        instance_id = await running.client.start("unserved_timeout", 5)
        error = await running.failure(instance_id)
        assert error.type == "ActivityTimeout"
        assert "after 2 attempt(s)" in error.message
        orphans = await running.transport.read(TASKS_STREAM, task_subject("hostile_unserved"))
        assert len(orphans) == 2
        await running.start_worker(hostile_late)
        with trio.fail_after(SETTLE):
            while await running.transport.read(TASKS_STREAM, task_subject("hostile_unserved")):  # noqa: ASYNC110
                # The worker takes and refuses the tasks on its own: poll the stream.
                await trio.sleep(0.05)
        history = await running.transport.read(HISTORY_STREAM, f"history.{instance_id}")
    assert late_runs == []
    kinds = [record["kind"] for message in history for record in decode_history(message.data)]
    assert kinds.count("activity.failed") == 2
    assert kinds[-1] == "workflow.failed"
