"""The HTTP API under a burst of connections: each one answered, none dropped unseen.

A burst arrives faster than the server accepts. The kernel holds what the
server has not accepted yet in its listen backlog; past the backlog it
drops the connections unseen (no answer, no log line: Hypercorn's default
of 100 dropped about a hundred of 600). Accepted, a request over the
API's limit of requests in progress is answered ``503 Overloaded`` with
``Retry-After`` at once, and the log says so.

These run on the memory transport only: what they test is the HTTP side.
"""

from __future__ import annotations

import logging
import resource
import select
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing

from actors.http import serve_api

if TYPE_CHECKING:
    from conftest import Served

pytestmark = pytest.mark.parametrize("engine_url", ["memory"], indirect=True)

BURST = 600


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    """Room for a burst's two ends (client and server) in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * BURST
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def connect_burst(address: tuple[str, int], count: int, seconds: float) -> tuple[int, int]:
    """Open ``count`` connections at once without yielding; how many completed in ``seconds``.

    Called from the Trio thread, it blocks the loop the server accepts on:
    the server is busy, and only the kernel's listen backlog can hold the
    connections. Returns (connected, pending); the sockets are closed.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(address)
            sockets.append(sock)
        pending = {sock.fileno(): sock for sock in sockets}
        connected = 0
        deadline = time.monotonic() + seconds
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                sock = pending.pop(fd)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
        return connected, len(pending)
    finally:
        for sock in sockets:
            sock.close()


async def test_a_burst_of_connections_waits_in_the_backlog_while_the_server_is_busy(
    served: Served,
) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    connected, pending = connect_burst((host, int(port)), BURST, 0.5)
    # Hypercorn's default backlog held 101 of them; the rest were dropped unseen.
    assert (connected, pending) == (BURST, 0)
    # And the server is fine after they went away unasked.
    assert (await served.http.get("/health")).status_code == 200


async def burst(
    url: str, path: str, count: int, seen: Callable[[int], None] = lambda status: None
) -> Counter[int]:
    """``count`` requests at once, each on a connection of its own: the statuses.

    A client with a pool of ``count`` connections spends most of its time
    in the pool; clients of their own send the burst as it would come from
    ``count`` callers. A request that is not answered fails the test.
    ``seen`` is called with each status as it comes.
    """
    context = ssl.create_default_context()
    statuses: Counter[int] = Counter()
    go = trio.Event()

    async def one() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, verify=context) as http:
            await go.wait()
            response = await http.get(path)
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["type"] == "Overloaded"
        statuses[response.status_code] += 1
        seen(response.status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()  # every client made, then all at once
        go.set()
    return statuses


@pytest.fixture
async def limited(served: Served) -> AsyncIterator[str]:
    """A second server on the same client, serving 50 requests at a time."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[str]) -> None:
        with scope:
            await serve_api(served.client, port=0, max_in_flight=50, task_status=task_status)

    url: str = await served.nursery.start(run)
    yield url
    scope.cancel()


async def test_past_its_limit_the_api_answers_503_at_once_and_logs_it(
    served: Served, limited: str, caplog: pytest.LogCaptureFixture
) -> None:
    await served.register_examples()
    await served.client.start("approval", None, id="held")
    await served.client.wait_for("held", lambda info: True)
    refused = BURST - 50
    statuses: Counter[int] = Counter()
    all_refused = trio.Event()

    def seen(status: int) -> None:
        statuses[status] += 1
        if statuses[503] == refused:
            all_refused.set()

    with caplog.at_level(logging.WARNING, logger="actors.api"):
        async with trio.open_nursery() as nursery:
            # Waits for a result that comes only once the test sends the signal:
            # 50 are admitted and wait, the others must be answered meanwhile.
            nursery.start_soon(burst, limited, "/workflows/held/result?wait=60", BURST, seen)
            with trio.fail_after(30):
                await all_refused.wait()
            await served.client.signal("held", "approved", {"by": "ann"})
        # The answers are in; the server ends its requests (and logs) after sending them.
        await trio.testing.wait_all_tasks_blocked()
    assert statuses == Counter({200: 50, 503: refused})
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "50 requests in progress, the limit: answering 503 until one ends",
        f"back under the limit of 50 requests in progress: {refused} refused (503) meanwhile",
    ]


async def test_a_burst_under_the_limit_is_answered_in_full(served: Served) -> None:
    statuses = await burst(served.url, "/health", BURST)
    assert statuses == Counter({200: BURST})
