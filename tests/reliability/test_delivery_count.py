"""What ``ActivityInfo.delivery`` counts across a server crash (docs/wire.md, "Delivery count").

A task whose worker and server are SIGKILLed while it runs is delivered again
after the restart, as the same attempt. On a server that fsyncs every write
(``sync_interval: always``) the delivery that was in flight is not counted:
the next one may carry the same number again, never a smaller one. So
``delivery`` is not a uniqueness token; an activity's idempotency key is the
instance, the step key and the attempt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from checker import SLOW_LEDGER_FLOW, SLOW_LEDGER_TYPE, ledger_output, start_ledger
from ledger_activities import read_ledger
from natsserver import NatsServer
from processes import Services

import actors
from transport import ConnectionState, open_transport

pytestmark = pytest.mark.jetstream


async def test_a_task_in_hand_when_the_server_dies_runs_again_as_the_same_attempt(
    synced_server: NatsServer, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Services(synced_server.url, tmp_path / "services", ledger) as services:
        services.orchestrator("orchestrator")
        services.worker("worker-a", "--ack-wait", "2")
        await services.wait_ready("orchestrator", "worker-a")
        async with (
            open_transport(synced_server.url) as transport,
            actors.Client(transport) as client,
        ):
            await client.register(SLOW_LEDGER_FLOW)
            ids = await start_ledger(client, 1, workflow_type=SLOW_LEDGER_TYPE, seconds=2)
            [instance] = ids
            with trio.fail_after(60):
                while not any(e.instance == instance for e in read_ledger(ledger)):  # noqa: ASYNC110
                    # The ledger is another process's file: nothing to wait on but it.
                    await trio.sleep(0.05)
            events = transport.connection_events()
            await services.sigkill("worker-a")
            # A start waits for the server to be healthy: not on the event loop.
            await trio.to_thread.run_sync(synced_server.kill)
            await trio.to_thread.run_sync(synced_server.start)
            services.worker("worker-b", "--ack-wait", "2")
            with trio.fail_after(120):
                while (await events.receive()).state is not ConnectionState.CONNECTED:
                    pass
                assert await client.result(instance) == ledger_output(0, seconds=2)
    begins = [e for e in read_ledger(ledger) if e.phase == "begin" and e.step == "one"]
    print("deliveries of attempt 1:", [e.delivery for e in begins])
    assert len(begins) >= 2, begins
    first, again = begins[0], begins[1]
    assert (first.attempt, again.attempt) == (1, 1)
    assert first.pid != again.pid
    assert again.delivery >= first.delivery >= 1
