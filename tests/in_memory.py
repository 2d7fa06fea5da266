"""An engine inside the test's process, on a memory transport of its own.

For tests that need an orchestrator, a worker and a client and nothing else
(no NATS, no per-test options): :func:`serving`. It imports no test helper,
so a child process may use it too (put this folder on its ``sys.path``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import trio

import actors
from transport import open_transport

__all__ = ["serving"]


@asynccontextmanager
async def serving(*modules: ModuleType) -> AsyncIterator[actors.Client]:
    """A client of an orchestrator and a worker serving the activities of
    ``modules``, all on a new ``memory://`` transport. When the block ends both
    services are shut down and waited for, and the transport closed."""
    async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport)
        worker = actors.Worker(transport, actors.collect_activities(list(modules)))
        await nursery.start(orchestrator.run)
        await nursery.start(worker.run)
        async with actors.Client(transport) as client:
            yield client
        orchestrator.shutdown()
        worker.shutdown()
