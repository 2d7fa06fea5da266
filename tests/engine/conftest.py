"""Fixtures of the engine tests: an engine (orchestrator, worker, client) per test.

``engine_url`` runs each test on the memory transport and on a NATS server of
its own: the engine's stream and bucket names are fixed, so tests must not
share a broker. On memory, tests that request ``clock`` (the suite's
conftest) run on Trio's autojump clock, so retries, backoff and timeouts
cost no real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from flow import SEEN, history_to_the_end
from natsserver import NatsServer
from processes import Services

import actors
from actors.wire import decode_deadletter
from actors.wire._names import DEADLETTER_STREAM
from transport import ConsumerSpec, Transport, open_transport


@dataclass
class Engine:
    """An orchestrator and a worker in this process, and a client."""

    transport: Transport
    client: actors.Client
    orchestrator: actors.Orchestrator
    worker: actors.Worker
    nursery: trio.Nursery
    _readers: int = 0

    async def history(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history records, in order, up to its terminal one.

        Each call reads the history from its start (through a consumer of its own).
        """
        self._readers += 1
        with trio.fail_after(30):
            return await history_to_the_end(self.transport, instance_id, f"h{self._readers}")

    async def deadletters(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` dead letters (waits for them)."""
        letters: list[dict[str, Any]] = []
        spec = ConsumerSpec(durable="deadletter-reader")
        with trio.fail_after(30):
            async with self.transport.consume(DEADLETTER_STREAM, spec) as deliveries:
                async for delivery in deliveries:
                    await delivery.ack()
                    letters.append(dict(decode_deadletter(delivery.data)))
                    if len(letters) == count:
                        break
        return letters


#: Fresh records of what the activities of ``flow``'s ``note`` did (modules
#: whose activities note use it for every test: ``usefixtures("seen")``).
seen = SEEN.fixture("seen")


@pytest.fixture
def services(fresh_nats_server: NatsServer, tmp_path: Path) -> Iterator[Services]:
    """The engine's services as subprocesses against a nats-server of the test's own
    (none runs until the test spawns it). Leftovers are killed, and their logs
    printed, when the test ends."""
    with Services(fresh_nats_server.url, tmp_path / "services", tmp_path / "ledger") as running:
        yield running


def worker_config(**options: Any) -> actors.WorkerConfig:
    defaults = {"ack_wait": 5.0, "concurrency": 8}
    return actors.WorkerConfig(**{**defaults, **options})


@pytest.fixture
def orchestrator_options() -> dict[str, Any]:
    """Options for the engine's orchestrator; a module overrides this to change them."""
    return {}


@pytest.fixture
async def engine(
    engine_url: str, request: pytest.FixtureRequest, orchestrator_options: dict[str, Any]
) -> AsyncIterator[Engine]:
    """A running engine serving the activities of the test's module.

    A module that defines ``ACTIVITY_MODULE`` serves that module's instead; one
    that defines ``SHARED_ACTIVITIES`` (activities defined elsewhere, in ``flow``
    say) serves those as well.
    """
    module = request.module
    specs = actors.collect_activities(
        [getattr(module, "ACTIVITY_MODULE", module), *getattr(module, "SHARED_ACTIVITIES", ())]
    )
    # An event for an instance that never comes waits 3 s, not the default 120.
    options = {
        "passivate_after": 5.0,
        "drain_timeout": 2.0,
        "start_wait": 3.0,
        **orchestrator_options,
    }
    async with open_transport(engine_url) as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport, actors.OrchestratorConfig(**options))
        await nursery.start(orchestrator.run)
        worker = actors.Worker(transport, specs, worker_config(drain_timeout=2.0))
        await nursery.start(worker.run)
        async with actors.Client(transport) as client:
            yield Engine(transport, client, orchestrator, worker, nursery)
        orchestrator.shutdown()
        worker.shutdown()
        # Whatever a test started in this nursery and left running (after a
        # failure, say) must not hang the teardown.
        nursery.cancel_scope.deadline = trio.current_time() + 10
