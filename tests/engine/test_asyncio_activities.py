"""Activities written for asyncio (``@actors.activity(loop="asyncio")``), end to end.

The activities call a real aiohttp server with aiohttp's client. The server
runs on a stock asyncio loop in a thread of its own (not on the worker's
trio-asyncio loop), so that what it sees (a request held, a connection
closed under it) is what any server would see. No fake clock: the calls are
real network I/O.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import trio
from aiohttp import web
from flow import failure_of, result_of
from records import Records

import actors
from actors import worker
from actors.runtime import _asyncio_activities
from transport import KVSpec, open_transport

if TYPE_CHECKING:
    from conftest import Engine


@dataclass
class Calls:
    """What this module's activities saw in one test."""

    #: The asyncio side of a call saw ``asyncio.CancelledError``.
    cancelled: trio.Event = field(default_factory=trio.Event)
    #: Heartbeats sent from asyncio code.
    beats: int = 0
    #: A call that ignored its cancellation has ended after all.
    stubborn_ended: trio.Event = field(default_factory=trio.Event)


CALLS = Records("calls", Calls)
calls = CALLS.fixture("calls", autouse=True)


class LookupFailed(Exception):
    pass


@actors.activity(loop="asyncio")
async def fetch(value: dict[str, Any]) -> dict[str, Any]:
    """GET ``value["url"]`` with aiohttp; the body, and what the activity knew."""
    info = actors.activity_info()
    async with (
        aiohttp.ClientSession() as session,
        session.get(value["url"]) as response,
    ):
        body = await response.text()
    return {
        "body": body,
        "status": response.status,
        "instance": info.instance_id,
        "step": info.step,
        "attempt": info.attempt,
        "in_asyncio_task": asyncio.current_task() is not None,
    }


@actors.activity(loop="asyncio")
async def fetch_held(value: dict[str, Any]) -> str:
    """GET a URL the server never answers; note the cancellation that ends it."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(value["url"]) as response,
        ):
            return await response.text()
    except asyncio.CancelledError:
        CALLS.get().cancelled.set()
        raise


@actors.activity(loop="asyncio")
async def beating(value: dict[str, Any]) -> int:
    """Work ``value["seconds"]`` on asyncio, heartbeating every tenth of a second
    unless ``value["beat"]`` is false."""
    loop = asyncio.get_running_loop()
    end = loop.time() + value["seconds"]
    try:
        while loop.time() < end:
            if value["beat"]:
                actors.heartbeat()
                CALLS.get().beats += 1
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        CALLS.get().cancelled.set()
        raise
    return CALLS.get().beats


@actors.activity(loop="asyncio")
async def stubborn(value: Any) -> str:
    """Catch the cancellation and go on for another second."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        CALLS.get().cancelled.set()
        await asyncio.sleep(1.0)
    CALLS.get().stubborn_ended.set()
    return "ignored the cancellation"


@actors.activity(loop="asyncio")
async def lookup(value: Any) -> None:
    await asyncio.sleep(0)
    raise LookupFailed(f"no row for {value['key']!r}")


@actors.activity
async def undeclared(value: Any) -> None:
    """Asyncio code without ``loop="asyncio"``: it runs on Trio, and cannot."""
    await asyncio.sleep(0.01)


class Server:
    """An aiohttp server on 127.0.0.1 (a free port), on its own asyncio loop in a thread.

    ``/hello`` answers ``hello from aiohttp``; ``/held`` never answers: it
    sets ``held`` when a request comes, and ``closed`` when the client goes
    away (aiohttp cancels the handler then).
    """

    def __init__(self) -> None:
        self.url = ""
        self.held = trio.Event()
        self.closed = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = trio.Event()

        def run() -> None:
            # A stock loop: asyncio.run() would give a trio-asyncio one in a
            # process that imported trio-asyncio.
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                runner.run(self._main(started))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, run)
            with trio.fail_after(10):
                await started.wait()
            task_status.started()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _main(self, started: trio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/hello", self._hello)
        app.router.add_get("/held", self._held)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._token.run_sync_soon(started.set)
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello from aiohttp")

    async def _held(self, request: web.Request) -> web.Response:
        self._token.run_sync_soon(self.held.set)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._token.run_sync_soon(self.closed.set)
            raise
        raise AssertionError("unreachable")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        server.stop()


def one_step(workflow_type: str, activity: str, **step: Any) -> dict[str, Any]:
    return {
        "type": workflow_type,
        "version": 1,
        "steps": [{"id": "call", "activity": activity, "retry": {"max_attempts": 1}, **step}],
    }


async def failed_types(engine: Engine, instance_id: str) -> list[str]:
    history = await engine.history(instance_id)
    return [r["detail"]["error"]["type"] for r in history if r["kind"] == "activity.failed"]


async def test_an_aiohttp_call_returns_the_body(engine: Engine, server: Server) -> None:
    await engine.client.register(one_step("fetch", "fetch"))
    instance_id = await engine.client.start("fetch", {"url": f"{server.url}/hello"})
    output = await result_of(engine, instance_id, 30)
    assert output == {
        "body": "hello from aiohttp",
        "status": 200,
        "instance": instance_id,
        "step": "call",
        "attempt": 1,
        "in_asyncio_task": True,
    }


async def test_start_to_close_cancels_the_call_mid_request(
    engine: Engine, server: Server, calls: Calls
) -> None:
    await engine.client.register(one_step("held", "fetch_held", timeout={"start_to_close": 1.0}))
    instance_id = await engine.client.start("held", {"url": f"{server.url}/held"})
    with trio.fail_after(30):
        await server.held.wait()
    await failure_of(engine, instance_id)
    assert await failed_types(engine, instance_id) == ["StartToCloseTimeout"]
    with trio.fail_after(10):
        await calls.cancelled.wait()
        await server.closed.wait()


async def test_a_workflow_cancel_cancels_the_call_mid_request(
    engine: Engine, server: Server, calls: Calls
) -> None:
    await engine.client.register(one_step("held", "fetch_held"))
    instance_id = await engine.client.start("held", {"url": f"{server.url}/held"})
    with trio.fail_after(30):
        await server.held.wait()
    await engine.client.cancel(instance_id)
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, instance_id, 30)
    with trio.fail_after(10):
        await calls.cancelled.wait()
        await server.closed.wait()
        # The withdrawn attempt was reported, as a Trio activity's is.
        await engine.worker.wait_until(lambda: engine.worker.stats["failed"] >= 1)
    assert engine.worker.stats["cancelled"] == 1


async def test_heartbeats_from_asyncio_keep_a_long_call_alive(engine: Engine, calls: Calls) -> None:
    await engine.client.register(
        one_step("beats", "beating", timeout={"start_to_close": 20, "heartbeat": 0.5})
    )
    # Three heartbeat timeouts long: alive only through its heartbeats.
    instance_id = await engine.client.start("beats", {"seconds": 1.5, "beat": True})
    beats = await result_of(engine, instance_id, 30)
    assert beats >= 10
    assert not calls.cancelled.is_set()


async def test_an_asyncio_call_without_heartbeats_times_out(engine: Engine, calls: Calls) -> None:
    await engine.client.register(
        one_step("silent", "beating", timeout={"start_to_close": 20, "heartbeat": 0.5})
    )
    instance_id = await engine.client.start("silent", {"seconds": 1.5, "beat": False})
    await failure_of(engine, instance_id)
    assert await failed_types(engine, instance_id) == ["HeartbeatTimeout"]
    with trio.fail_after(10):
        await calls.cancelled.wait()


async def test_a_call_that_ignores_its_cancellation_is_abandoned_after_a_grace(
    engine: Engine, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_asyncio_activities, "CANCEL_GRACE", 0.2)
    await engine.client.register(one_step("stubborn", "stubborn", timeout={"start_to_close": 0.5}))
    instance_id = await engine.client.start("stubborn", None)
    await failure_of(engine, instance_id)
    # Reported as timed out, though the task it abandoned has not ended yet.
    assert await failed_types(engine, instance_id) == ["StartToCloseTimeout"]
    assert calls.cancelled.is_set()
    assert not calls.stubborn_ended.is_set()
    with trio.fail_after(10):
        await calls.stubborn_ended.wait()


async def test_an_asyncio_exception_is_reported_with_its_type_and_message(
    engine: Engine,
) -> None:
    await engine.client.register(one_step("lookup", "lookup"))
    instance_id = await engine.client.start("lookup", {"key": "k-7"})
    await failure_of(engine, instance_id)
    history = await engine.history(instance_id)
    [error] = [r["detail"]["error"] for r in history if r["kind"] == "activity.failed"]
    assert error["type"] == "LookupFailed"
    assert error["message"] == "no row for 'k-7'"
    assert "in lookup" in error["traceback"]


async def test_asyncio_code_without_the_declaration_fails_clearly_at_once(
    engine: Engine,
) -> None:
    # Five attempts allowed, one made: the error is not retryable.
    definition = one_step("undeclared", "undeclared", retry={"max_attempts": 5})
    await engine.client.register(definition)
    instance_id = await engine.client.start("undeclared", None)
    error = await failure_of(engine, instance_id)
    assert error.type == "WrongEventLoop"
    history = await engine.history(instance_id)
    [failed] = [r["detail"]["error"] for r in history if r["kind"] == "activity.failed"]
    assert failed["non_retryable"] is True
    assert 'loop="asyncio"' in failed["message"]
    assert "no running event loop" in failed["message"]


def test_the_declaration_is_checked_when_decorating() -> None:
    def plain(value: Any) -> None:
        pass

    async def coroutine(value: Any) -> None:
        pass

    with pytest.raises(TypeError, match='loop="asyncio" but is not an async def'):
        actors.activity(loop="asyncio")(plain)
    with pytest.raises(ValueError, match="not 'curio'"):
        actors.activity(loop="curio")(coroutine)  # type: ignore[arg-type]


async def test_a_worker_without_trio_asyncio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if trio-asyncio were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "trio_asyncio", None)
    specs = actors.collect_activities([fetch, lookup])
    async with open_transport("memory://") as transport:
        with pytest.raises(RuntimeError, match=r"\(fetch, lookup\) need trio-asyncio") as caught:
            actors.Worker(transport, specs)
    assert "actors[asyncio]" in str(caught.value)


def test_the_worker_command_without_trio_asyncio_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trio_asyncio", None)
    # Refused before it connects: nothing listens at this URL.
    argv = ["--url", "nats://127.0.0.1:1", "--activities", __name__, "--only", "fetch"]
    assert worker.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "(fetch) need trio-asyncio: pip install 'actors[asyncio]'" in err


async def test_the_nats_py_transport_opens_beside_trio_asyncio(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker serving an asyncio activity imports trio-asyncio, which changes
    # asyncio's loop functions for the whole process; nats-py's own loop
    # (in the JetStream transport's thread) must still be a stock one.
    async with open_transport("memory://") as memory:
        actors.Worker(memory, actors.collect_activities([fetch]))
    assert "trio_asyncio" in sys.modules
    monkeypatch.setenv("ACTORS_NATS_CLIENT", "nats-py")
    async with open_transport(nats_url) as transport:
        bucket = await transport.ensure_kv(KVSpec(bucket="asyncio_beside"))
        revision = await bucket.put("key", b"value")
        entry = await bucket.get("key")
        assert entry is not None
        assert (entry.value, entry.revision) == (b"value", revision)
