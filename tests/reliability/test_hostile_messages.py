"""Scenario 8 of the fault-injection suite: malformed input on every subject.

Hostile messages (see ``bad_messages.py``: truncated CBOR, wrong types, deep
nesting, lengths declared in the exabytes, CBOR tags, unknown kinds and
schema versions, bodies naming another instance than their subject,
subjects nothing is published on, events for instances that do not exist)
are published raw on every subject the orchestrator consumes and on
``activity.tasks.{activity}``, which the workers consume; damaged values are
written straight into ``WORKFLOW_STATES`` and ``WORKFLOW_DEFINITIONS``.
Durability rule 7 says what must come of it: each bad message goes to the
dead-letter stream once, with a reason that says what is wrong, and is
acked; no service stops; healthy workflows next to it complete correctly.

The fast tests run an engine in the test's process on both transports. The
process tests run the orchestrator and a worker as subprocesses on a
nats-server of their own, check they are still alive and serving at the
end, bound how much their memory (VmRSS) grows, over the whole flood and
during its second half, and judge the healthy workflows with
:func:`checker.check_run`. The quick one sends every kind of bad message
twice among 20 healthy workflows; the full-size one (``chaos``) floods
thousands among 100.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from bad_messages import (
    Bad,
    catalogue,
    damaged_states,
    in_process,
    letter_problems,
    read_deadletters,
    sample_state,
    wait_deadletters,
)
from checker import LEDGER_FLOW, LEDGER_TYPE, check_run, start_ledger
from processes import Services

import actors
from actors.testing import NatsServer
from actors.wire import (
    DEFINITIONS_BUCKET,
    STATES_BUCKET,
    StartMessage,
    encode_cancel,
    encode_start,
    start_msg_id,
)
from actors.wire._names import plain_start_subject
from transport import OutMessage, Transport, open_transport

#: The workflow the in-process tests run beside the bad messages.
PAIR = {
    "type": "hostile_pair",
    "steps": [
        {"id": "first", "activity": "hostile_add"},
        {"id": "second", "activity": "hostile_add"},
    ],
}


@actors.activity
async def hostile_add(value: int) -> int:
    return value + 1


@actors.activity
async def hostile_other(value: Any) -> Any:
    """Served too, so that a task naming it on ``hostile_add``'s subject is misrouted."""
    return value


def in_process_bads(tag: str) -> list[Bad]:
    return catalogue(tag, activity="hostile_add", other_activity="hostile_other")


async def publish_all(transport: Transport, bads: list[Bad], *, batch: int = 200) -> None:
    """Publish ``bads`` raw, pipelined ``batch`` at a time, without message ids."""
    for first in range(0, len(bads), batch):
        await transport.publish_many(
            [OutMessage(bad.subject, bad.data) for bad in bads[first : first + batch]]
        )


async def damage_states(transport: Transport, tag: str) -> list[Bad]:
    """Write damaged values into ``WORKFLOW_STATES``; the cancels to send them."""
    states = await transport.kv(STATES_BUCKET)
    bads: list[Bad] = []
    for key, value, bad in damaged_states(tag, sample_state()):
        await states.put(key, value)
        bads.append(bad)
    return bads


# -- in the test's process, on both transports ------------------------------------------


async def test_every_bad_message_is_dead_lettered_once_with_its_reason(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    """Every kind of bad message on every subject, and events to damaged states: each
    makes exactly one dead letter, from the service that consumes its subject, whose
    reason says what is wrong. Healthy instances started before, among and after them
    complete; no bad task ran an activity; no actor is left in memory."""
    async with in_process(engine_url, sys.modules[__name__]) as engine:
        await engine.client.register(PAIR)
        before = [await engine.client.start("hostile_pair", n) for n in range(3)]
        bads = in_process_bads("a") + await damage_states(engine.transport, "a")
        sources = {bad.source for bad in bads}
        assert sources == {"events", "tasks"}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_all, engine.transport, bads)
            among = [await engine.client.start("hostile_pair", n) for n in range(3, 6)]
        with trio.fail_after(60):
            letters = await wait_deadletters(engine.transport, len(bads))
        problems = letter_problems(bads, letters)
        assert not problems, "\n".join(problems)
        after = [await engine.client.start("hostile_pair", n) for n in range(6, 9)]
        with trio.fail_after(60):
            outputs = [await engine.client.result(i) for i in [*before, *among, *after]]
        assert outputs == [n + 2 for n in range(9)]
        # Nothing more came of them: no further letter, no activity run for them.
        assert len(await read_deadletters(engine.transport)) == len(bads)
        # A bad task that ran would have failed: its input is not a number.
        assert engine.worker.stats["failed"] == 0
        assert engine.worker.stats["completed"] >= 18
        # Dead-lettered events keep no actor alive (each would hold its instance's
        # actor for passivate_after seconds), and finished instances none either.
        orchestrator = engine.orchestrator
        with trio.fail_after(10):
            await orchestrator.wait_until(lambda: not orchestrator.active_actors)


async def test_a_task_with_nan_timeouts_is_dead_lettered_and_the_worker_serves_on(
    engine_url: str,
) -> None:
    """Regression: a task whose ``start_to_close`` or ``heartbeat`` was NaN reached
    Trio as a deadline, whose ValueError ended the whole worker (and, in a service,
    every restart of it until the task's deliveries ran out). Now it is refused as
    malformed, and the worker runs the next workflow."""
    async with in_process(engine_url, sys.modules[__name__]) as engine:
        await engine.client.register(PAIR)
        bads = [
            bad
            for bad in in_process_bads("n")
            if bad.source == "tasks" and ("NaN" in bad.what or "negative" in bad.what)
        ]
        assert len(bads) == 5
        await publish_all(engine.transport, bads)
        with trio.fail_after(60):
            letters = await wait_deadletters(engine.transport, len(bads))
            assert not letter_problems(bads, letters)
            instance = await engine.client.start("hostile_pair", 40)
            assert await engine.client.result(instance) == 42


async def test_events_for_made_up_instances_leave_no_actor_in_memory(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    """Regression: each event for an instance that does not exist kept an idle actor
    for ``passivate_after`` seconds after its dead letter; a flood of them with made-up
    ids held one per id (20,000 cancels: 20,000 actors, about 120 MB). Now the actor of
    an instance that does not exist ends with its event."""
    count = 500
    async with in_process(engine_url, sys.modules[__name__], passivate_after=300) as engine:
        bads = [
            Bad("cancel", f"instance.ghost-{i}.cancel", encode_cancel("x"), "no instance")
            for i in range(count)
        ]
        await publish_all(engine.transport, bads)
        with trio.fail_after(60):
            letters = await wait_deadletters(engine.transport, count)
        assert not letter_problems(bads, letters)
        orchestrator = engine.orchestrator
        with trio.fail_after(10):
            # The last actors end a moment after their dead letter is stored.
            await orchestrator.wait_until(lambda: not orchestrator.active_actors)


async def test_a_damaged_definition_does_not_stop_starts_of_its_type(engine_url: str) -> None:
    """Regression: garbage stored under a new version of a type (a stray write, or a
    definition of a newer engine) made every start without a version fail
    (``UnknownWorkflowType: no workflow type 'x' is registered`` from the orchestrator,
    ``UnknownWorkflowTypeError`` from a new client). A version that does not parse counts
    as missing: the newest one that does runs. Asking for the damaged version, or for a
    type whose only version is damaged, is a clear error."""
    async with in_process(engine_url, sys.modules[__name__]) as engine:
        await engine.client.register(PAIR)
        definitions = await engine.transport.kv(DEFINITIONS_BUCKET)
        await definitions.put("hostile_pair.2", b"\x00 not a definition")
        # A valid definition, of another type, under this type's key.
        other = await engine.client.register({**PAIR, "type": "hostile_other_type"})
        assert other.version == 1
        entry = await definitions.get("hostile_other_type.1")
        assert entry is not None
        await definitions.put("hostile_pair.3", entry.value)
        await definitions.put("hostile_ghost.1", b"\xa3 damaged")
        with trio.fail_after(60):
            # The orchestrator follows the bucket, and shows no sign of having
            # seen an entry: give it time to see them first.
            await trio.sleep(0.5)
            first = await engine.client.start("hostile_pair", 1)
            assert await engine.client.result(first) == 3
            async with actors.Client(engine.transport) as fresh:
                second = await fresh.start("hostile_pair", 10)
                assert (await fresh.definition("hostile_pair")).version == 1
                with pytest.raises(actors.UnknownWorkflowTypeError, match="no version 2"):
                    await fresh.start("hostile_pair", 1, version=2)
                with pytest.raises(actors.UnknownWorkflowTypeError, match="not registered"):
                    await fresh.start("hostile_ghost", 1)
            assert await engine.client.result(second) == 12
            # Past the client's check, the instance fails with a clear error.
            for instance_id, workflow_type, version in [
                ("raw-ghost", "hostile_ghost", 0),
                ("raw-damaged-version", "hostile_pair", 2),
            ]:
                data = encode_start(StartMessage(instance_id, 1, version))
                await engine.transport.publish(
                    plain_start_subject(workflow_type), data, msg_id=start_msg_id(instance_id)
                )
                with pytest.raises(actors.WorkflowFailedError) as failed:
                    await engine.client.result(instance_id)
                assert failed.value.error.type == "UnknownWorkflowType"


# -- real processes ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def wave_of_bads(copies: range, ghosts: int) -> list[Bad]:
    """For each copy: the catalogue (for the worker of ``ledger_activities``) and
    ``ghosts`` cancels of instances that do not exist. Copy 0 holds one message of
    nearly 1 MB."""
    bads: list[Bad] = []
    for copy in copies:
        bads += catalogue(
            f"p{copy}", activity="ledger_increment", other_activity="ledger_slow", big=copy == 0
        )
        bads += [
            Bad(
                "cancel of a made-up instance",
                f"instance.ghost{copy}-{i}.cancel",
                GHOST,
                "no instance",
            )
            for i in range(ghosts)
        ]
    return bads


GHOST = encode_cancel("boo")


async def hostile_run(
    server: NatsServer,
    tmp_path: Path,
    *,
    copies: int,
    ghosts: int,
    healthy: int,
    max_growth_mib: int,
    max_second_wave_mib: int,
) -> None:
    """The process scenario, in two equal waves: ``copies`` of every bad message, each
    with ``ghosts`` events for made-up instances, damaged states and definitions, and
    ``healthy`` ledger workflows started before, among and after them.

    Checks one dead letter per bad message with its reason; that both services are
    alive and serving at the end; that neither grew (VmRSS) more than
    ``max_growth_mib`` MiB over both waves, nor more than ``max_second_wave_mib``
    during the second (memory that keeps growing with the number of messages, not
    with how many are in hand at once, would show there); and ends with
    :func:`checker.check_run`.
    """
    with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
        async with open_transport(server.url) as transport, actors.Client(transport) as client:
            await client.register(LEDGER_FLOW)
            definitions = await transport.kv(DEFINITIONS_BUCKET)
            # One damaged version the orchestrator meets as it starts, one while it runs.
            await definitions.put(f"{LEDGER_TYPE}.2", b"\x00 damaged before the start")
            services.orchestrator("orchestrator", "--ack-wait", "5", "--start-wait", "2")
            services.worker("worker", "--ack-wait", "5")
            await services.wait_ready("orchestrator", "worker")
            await definitions.put(f"{LEDGER_TYPE}.3", b"\xa3 damaged while running")
            pids = {name: services.services[name].pid for name in ("orchestrator", "worker")}

            def alive() -> None:
                exited = {name: services.services[name].proc.poll() for name in pids}
                assert set(exited.values()) == {None}, f"services exited: {exited}"

            ids = await start_ledger(client, 5, prefix="warm")
            with trio.fail_after(120):
                for instance_id in ids:
                    await client.result(instance_id)
            rss = [{name: rss_kib(pid) for name, pid in pids.items()}]

            damaged = await damage_states(transport, "p")
            half = copies // 2
            waves = [
                damaged + wave_of_bads(range(half), ghosts),
                wave_of_bads(range(half, copies), ghosts),
            ]
            sent: list[Bad] = []
            for number, wave in enumerate(waves):
                began = time.monotonic()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_all, transport, wave)
                    ids |= await start_ledger(
                        client, healthy // 2, prefix=f"among{number}", pause=0.01
                    )
                sent += wave
                with trio.fail_after(300):
                    letters = await wait_deadletters(transport, len(sent), check=alive)
                rss.append({name: rss_kib(pid) for name, pid in pids.items()})
                print(
                    f"wave {number}: {len(wave)} bad messages dead-lettered in "
                    f"{time.monotonic() - began:.1f}s; RSS (KiB) {rss[0]} -> {rss[-1]}"
                )
            problems = letter_problems(sent, letters)
            assert not problems, "\n".join(problems[:40])
            # The damaged states were the test's own writes, not instances.
            states = await transport.kv(STATES_BUCKET)
            for bad in damaged:
                await states.delete(bad.subject.split(".")[1])  # instance.{key}.cancel

            # Still serving: a workflow started after the flood completes too.
            ids |= await start_ledger(client, 1, prefix="after")
            report = await check_run(transport, client, ids, services.ledger, servers=[server])
            report.assert_ok()
            assert len(await read_deadletters(transport)) == len(sent), "more dead letters"
            alive()
            for name in pids:
                growth = (rss[2][name] - rss[0][name]) / 1024
                second = (rss[2][name] - rss[1][name]) / 1024
                assert growth < max_growth_mib, f"{name} grew {growth:.0f} MiB"
                assert second < max_second_wave_mib, f"{name} grew {second:.0f} MiB in wave 2"


@pytest.mark.jetstream
async def test_hostile_messages_beside_healthy_workflows_processes(
    synced_server: NatsServer, tmp_path: Path
) -> None:
    """Every kind of bad message (twice), events for made-up instances and damaged
    states and definitions, among 20 healthy workflows, with the services as
    processes: one dead letter each, with its reason; both services alive and
    serving; every healthy workflow correct; memory grows little."""
    await hostile_run(
        synced_server,
        tmp_path,
        copies=2,
        ghosts=100,
        healthy=20,
        max_growth_mib=64,
        max_second_wave_mib=16,
    )


@pytest.mark.chaos
@pytest.mark.jetstream
async def test_hostile_flood_beside_healthy_workflows_processes(
    synced_server: NatsServer, tmp_path: Path
) -> None:
    """The full size: a flood of thousands of bad messages and ten thousand events
    for made-up instances, among 100 healthy workflows.

    The orchestrator takes up to the consumer's ``max_ack_pending`` (10,000) events
    in hand at once, an actor each, so a burst of events for distinct instances
    costs it tens of MB, which Python keeps; the bound on the whole run is generous
    for that. The second wave must not add much more: memory is bounded by the
    events in hand, not by the events seen.
    """
    await hostile_run(
        synced_server,
        tmp_path,
        copies=20,
        ghosts=500,
        healthy=100,
        max_growth_mib=128,
        max_second_wave_mib=16,
    )
