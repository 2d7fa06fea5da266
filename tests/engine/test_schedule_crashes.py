"""A schedule survives SIGKILLed orchestrators and a SIGKILLed nats-server, fired by several.

Real processes: ``python -m actors.orchestrator`` against a nats-server of
the test's own. A schedule fires every second (``allow_all``, a catch-up
window of a minute). Around its fires the orchestrator is SIGKILLed, then
the server is SIGKILLed and restarted on the same store, then two
orchestrators serve it at once, one of which is SIGKILLed again. In the end
every second from the first fire to the schedule's cursor has started
exactly one instance (one ``workflow.started`` record, the instance id made
from the fire time), none is missed, and the schedule counted each once.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
from natsserver import NatsServer
from processes import Services, read_history
from test_schedules import wait_schedule

import actors
from actors.core import FireKind, fire_instance_id
from actors.wire import STATES_BUCKET
from transport import open_transport

pytestmark = pytest.mark.jetstream

NAP = """
type: nap
version: 1
steps:
  - {id: nap, sleep: 0.2}
"""
WAIT = 120


async def test_a_schedule_fires_each_time_once_through_sigkills_of_orchestrators_and_server(
    fresh_nats_server: NatsServer, services: Services
) -> None:
    server = fresh_nats_server
    services.orchestrator("a", "--ack-wait", "2")
    await services.wait_ready("a")
    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(NAP)
        await client.schedules.create(
            {
                "id": "tick",
                "workflow": "nap",
                "spec": {"intervals": ["1s"]},
                "overlap": "allow_all",
                "catchup_window": "1m",
            }
        )
        with trio.fail_after(WAIT):
            await wait_schedule(transport, "tick", lambda s: s.started >= 3)
            await services.sigkill("a")
            # Fires come due while no orchestrator runs; then the server dies too.
            await trio.sleep(1.5)
            await trio.to_thread.run_sync(server.kill)
            await trio.to_thread.run_sync(server.restart)
            # Two at once: each schedule is fired by the owner of its partition.
            services.orchestrator("b", "--ack-wait", "2")
            services.orchestrator("c", "--ack-wait", "2")
            await services.wait_ready("b", "c")
            state = await client.schedules.get("tick")
            seen = state.started
            await wait_schedule(transport, "tick", lambda s: s.started >= seen + 4)
            await services.sigkill("b")
            state = await client.schedules.get("tick")
            seen = state.started
            # "c" takes the partition over once "b"'s lease ran out.
            await wait_schedule(transport, "tick", lambda s: s.started >= seen + 4)
            await client.schedules.pause("tick", "test over")
            final = await wait_schedule(transport, "tick", lambda s: not s.outbox)
        first = final.runs[0].fire.at if final.started <= len(final.runs) else None
        # Every second from the first fire up to the cursor: one instance each.
        fires = sorted(
            {round(final.cursor) - i for i in range(final.started)},
        )
        if first is not None:
            assert fires[0] == first
        assert (final.missed, final.skipped) == (0, 0)
        expected = sorted(fire_instance_id("tick", t, FireKind.SCHEDULED) for t in fires)
        # A start that a killed orchestrator had taken comes back to the other
        # after its ack wait and lease: wait for each, rather than read once.
        with trio.fail_after(WAIT):
            for instance_id in expected:
                await client.wait(instance_id)
        states = await transport.kv(STATES_BUCKET)
        ids = sorted(key for key in await states.keys() if key.startswith("tick-"))
        assert ids == expected
        with trio.fail_after(WAIT):
            records = await read_history(transport, len(ids) * 4)
        started = Counter(r["instance"] for r in records if r["kind"] == "workflow.started")
        assert started == dict.fromkeys(ids, 1)
        print(f"{len(ids)} fires, each started once, across 3 kills")
