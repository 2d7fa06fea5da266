"""Scenario 11 of the fault-injection suite: the broker's store fills up.

A nats-server with a small ``max_file_store`` (and ``sync_interval:
always``), an orchestrator and a worker as real subprocesses. Ledger
workflows are started; the orchestrator is frozen (SIGSTOP) while a second
batch is started, so that their start events wait for it; then the store is
filled to the brim (junk in the dead-letter stream, the stream an operator
may purge) and the orchestrator is resumed. Then:

* a start is refused with ``actors.StorageFullError`` (the transport's
  error for JetStream's "insufficient resources"); the CLI says so and
  exits 2, the HTTP API answers 503 ``StorageFull``; a refused start leaves
  nothing behind;
* the orchestrator meets the full store writing states, and the worker
  publishing results: both keep the work in hand (the orchestrator naks its
  event and gets it back, the worker keeps its task alive and publishes
  again) and neither crashes;
* once space is freed (the dead-letter stream purged, or the server
  restarted with a larger ``max_file_store``), every start that was accepted
  completes with the right output, each step applied once, new starts run,
  nothing is left in the work queues, and the services are still alive.

The memory transport has no store limit (the engine provisions no
``max_bytes``), so this scenario exists on JetStream only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio
from checker import (
    LEDGER_FLOW,
    LEDGER_TYPE,
    SLOW_LEDGER_FLOW,
    SLOW_LEDGER_TYPE,
    check_run,
    connected,
    ledger_input,
    ledger_output,
    start_ledger,
)
from ledger_activities import read_ledger
from processes import REPO_ROOT, Services

import actors
from actors.http import serve_api
from actors.testing import NatsServer
from actors.wire._names import DEADLETTER_STREAM
from transport import Transport, open_transport

pytestmark = pytest.mark.jetstream

#: The server's whole JetStream file store: a few MiB, filled in a second.
STORE: Final = 4 * 2**20
#: What each junk message adds to the dead-letter stream.
JUNK: Final = 32 * 1024
#: Seconds each step of the slow batch works (so that results are due while full).
SLOW_SECONDS: Final = 2.0
#: What the services log when the broker refuses a write for lack of space.
FULL_MARK: Final = "insufficient resources"


class StoreServices(Services):
    def __init__(self, server: NatsServer, directory: Path, ledger: Path) -> None:
        super().__init__(server.url, directory, ledger)
        self.server = server

    def alive(self) -> dict[str, bool]:
        return {name: s.proc.poll() is None for name, s in self.services.items()}


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own with a JetStream store of ``STORE`` bytes."""
    if os.environ.get("NATS_URL"):
        pytest.skip("NATS_URL is set: this test needs a server of its own")
    config = {"jetstream": {"sync_interval": "always", "max_file_store": STORE}}
    with NatsServer(tmp_path / "nats", config=config) as server:
        yield server


async def fill_store(transport: Transport) -> int:
    """Publish junk to the dead-letter stream until the broker refuses even a few
    bytes (smaller and smaller junk fills what is left); the bytes stored."""
    stored = 0
    for size in (JUNK, 1024, 16):
        while True:
            try:
                await transport.publish(
                    "deadletter.junk", os.urandom(size), msg_id=f"junk.{stored}.{size}"
                )
            except actors.StorageFullError:
                break
            stored += size
            assert stored < 2 * STORE, "the store never filled"
    return stored


async def purge_stream(transport: Transport, stream: str) -> None:
    """Purge ``stream``, as an operator does with ``nats stream purge``.

    Through the JetStream API request the transport makes for its own
    provisioning: the transport has no purge of its own (the engine never
    purges), and asyncio and nats-py stay inside it.
    """
    reply = await transport._api(f"STREAM.PURGE.{stream}")  # type: ignore[attr-defined]
    assert reply.get("success"), reply


async def log_shows(services: StoreServices, name: str, mark: str, within: float) -> bool:
    """Whether service ``name`` logs ``mark`` within ``within`` seconds."""
    with trio.move_on_after(within):
        while mark not in services.services[name].log():  # noqa: ASYNC110
            # Another process's log is all there is to wait on: poll it.
            await trio.sleep(0.1)
        return True
    return False


async def refused_by_the_cli(url: str) -> tuple[int, str]:
    """``python -m actors start`` against the full store: exit code and stderr."""
    argv = [sys.executable, "-m", "actors", "--url", url, "start", LEDGER_TYPE]
    argv += ["--input", '{"n": 9999, "count": 0}', "--id", "cli-refused"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = await trio.run_process(
        argv, cwd=REPO_ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stderr.decode(errors="replace")


async def refused_by_the_api(client: actors.Client) -> tuple[int, dict[str, Any], str]:
    """``POST /workflows/{type}`` against the full store: status, body and Retry-After."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_api, client, port=0))
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post(
                f"/workflows/{LEDGER_TYPE}",
                json={"input": ledger_input(9998), "id": "api-refused"},
            )
        nursery.cancel_scope.cancel()
    return response.status_code, response.json(), response.headers.get("Retry-After", "")


def expected_output(n: int) -> dict[str, Any]:
    # The slow batch (n < 1000) carries its seconds through every step.
    return ledger_output(n, seconds=SLOW_SECONDS) if n < 1000 else ledger_output(n)


async def _fill_and_recover(
    server: NatsServer, tmp_path: Path, recover: str, batch: int, hold: float
) -> None:
    """The scenario (see the module docstring): ``batch`` instances per batch, the
    services left ``hold`` seconds against the full store, space freed by ``recover``
    ("purge": the dead-letter stream; "grow": a restart with four times the store)."""
    ledger = tmp_path / "ledger"
    services = StoreServices(server, tmp_path / "services", ledger)
    with services:
        orchestrator = services.orchestrator("orchestrator")
        worker = services.worker("worker")
        await services.wait_ready("orchestrator", "worker")
        frozen = (orchestrator.pid, worker.pid)
        async with open_transport(server.url) as transport, actors.Client(transport) as client:
            await client.register(LEDGER_FLOW)
            await client.register(SLOW_LEDGER_FLOW)
            ids = await start_ledger(
                client, batch, prefix="slow", workflow_type=SLOW_LEDGER_TYPE, seconds=SLOW_SECONDS
            )
            with trio.fail_after(60):
                while len([e for e in read_ledger(ledger) if e.phase == "begin"]) < batch:  # noqa: ASYNC110
                    # The worker writes the ledger: poll it until every first step runs.
                    await trio.sleep(0.05)
            # Both services frozen: the worker holds the slow steps (their results
            # will meet the full store), and the orchestrator leaves the next
            # starts in the events stream (it will meet the full store storing them).
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:
                ids |= await start_ledger(client, batch, prefix="held", first=1000)
                junk = await fill_store(transport)
                print(f"store full after {junk} bytes of junk")

                with pytest.raises(actors.StorageFullError):
                    await client.start(LEDGER_TYPE, ledger_input(9997), id="client-refused")
                # A client's first wait while the store is full writes nothing (its
                # watch starts at the bucket's latest revision), so it waits like
                # any other. It used to fail, its watch unable to write a watermark
                # into the states bucket (and every later wait of that client with it).
                with trio.move_on_after(0.5) as waiting:
                    await client.wait("held-01000")
                assert waiting.cancelled_caught, "the wait ended while the instance is held"
                code, stderr = await refused_by_the_cli(server.url)
                status, body, retry_after = await refused_by_the_api(client)
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
            print(f"cli: exit {code}: {stderr.strip()}")
            print(f"api: {status} {body} Retry-After {retry_after}")
            assert code == 2
            assert "out of storage" in stderr
            assert status == 503
            assert body["error"]["type"] == "StorageFull"
            assert retry_after

            # Both services meet the full store, and keep the work in hand.
            assert await log_shows(services, "orchestrator", FULL_MARK, 60), "orchestrator"
            assert await log_shows(services, "worker", FULL_MARK, 60), "worker"
            await trio.sleep(hold)
            assert services.alive() == {"orchestrator": True, "worker": True}

            if recover == "purge":
                await purge_stream(transport, DEADLETTER_STREAM)
            else:
                # The services reconnect to the server on its old port.
                await trio.to_thread.run_sync(server.stop)
                server.config["jetstream"]["max_file_store"] = 4 * STORE
                await trio.to_thread.run_sync(server.start)
                # The client reconnects by itself within its reconnect wait;
                # a start before that fails, nothing sent, as documented.
                with trio.fail_after(30):
                    await connected(transport)
            ids |= await start_ledger(client, batch, prefix="after", first=2000)

            report = await check_run(
                transport, client, ids, ledger, servers=[server], output=expected_output
            )
            report.assert_ok()
            assert services.alive() == {"orchestrator": True, "worker": True}
            letters = await transport.read(DEADLETTER_STREAM, "deadletter.events")
            assert not letters, "an accepted event was given up"
        codes = await services.terminate_all()
        assert codes == {"orchestrator": 0, "worker": 0}, codes


@pytest.mark.parametrize("recover", ["purge", "grow"])
async def test_a_full_store_refuses_starts_and_loses_nothing(
    small_store: NatsServer, tmp_path: Path, recover: str
) -> None:
    """The quick size: 5 instances per batch (slow, held by the frozen orchestrator,
    started after recovery), 3 seconds against the full store, space freed by
    purging the dead-letter stream or by restarting the server with four times the
    store."""
    await _fill_and_recover(small_store, tmp_path, recover, batch=5, hold=3.0)


@pytest.mark.chaos
@pytest.mark.parametrize("recover", ["purge", "grow"])
async def test_a_full_store_refuses_starts_and_loses_nothing_full_size(
    small_store: NatsServer, tmp_path: Path, recover: str
) -> None:
    """The full size: 40 instances per batch, held against the full store for 40
    seconds, longer than the workers' ack wait (30 s): the tasks they hold must stay
    theirs, and those fetched ahead come back and may run twice (counted)."""
    await _fill_and_recover(small_store, tmp_path, recover, batch=40, hold=40.0)
