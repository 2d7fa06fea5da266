"""Scenario 6 of the fault-injection suite: cut, silent and slow connections.

Every service (two orchestrators, two workers) and the client that starts the
workflows reach nats-server through a :class:`tcp_proxy.FaultProxy` of their
own, on loopback; the checker talks to the server directly. The faults:

* **cut**: every connection is reset and new ones are refused for 10 s;
* **slow**: 200 ms more latency each way, for a while;
* **blackhole**: the connections go silent without closing (a firewall or NAT
  that forgot them) and new ones are refused for a few seconds; the silent ones
  never come back, so each process must notice by itself that its connection
  is dead and make a new one.

Workflows are in flight throughout. Every accepted one must complete exactly
once (:func:`checker.check_run`); no service may exit or hang, and each must be
serving afterwards: pulling from its consumer again, as its own proxy sees.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
from checker import LEDGER_FLOW, LEDGER_TYPE, Starter, check_run, ledger_ends, ledger_input
from ledger_activities import read_ledger
from processes import Services
from tcp_proxy import HOST, FaultProxy

import actors
from actors.testing import NatsServer
from transport import (
    ConnectionLostError,
    ConnectionState,
    ConnectOptions,
    KVSpec,
    StreamSpec,
    open_transport,
)

pytestmark = pytest.mark.jetstream

#: Seconds before an event or task whose ack was lost with a connection comes back.
ACK_WAIT = "5"
#: What a process sends to ask for the next events or tasks: a pull request
#: on its consumer (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``); for an
#: orchestrator, on the consumer of any partition it owns. Each lasts 10 s,
#: and a process that is serving makes another at least as often, idle or
#: not: one whose consumer loop died, or hung, makes none (its connection
#: still answers the server's pings, from nats-py's own thread).
PULLS = {
    "orchestrator": b"$JS.API.CONSUMER.MSG.NEXT.WORKFLOW_EVENTS.partition-",
    "worker": b"$JS.API.CONSUMER.MSG.NEXT.ACTIVITY_TASKS.activity-ledger_increment",
}
#: Seconds watched after a fault (from when every process has reconnected and
#: sent what it buffered meanwhile), and pull requests each process must make
#: in them to count as serving (it makes one every 10 s at least).
SERVING_WINDOW = 15.0
SERVING_PULLS = 1
#: Room for a slow, shared machine.
SLACK = 15.0


# -- the proxy itself ---------------------------------------------------------------------


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for chunk in stream:
            await stream.send_all(chunk)
    except trio.BrokenResourceError:
        pass


async def _round_trip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    got = b""
    while len(got) < len(data):
        chunk = await stream.receive_some()
        if not chunk:
            break
        got += chunk
    return got


async def test_proxy_forwards_delays_cuts_and_blackholes() -> None:
    """The proxy forwards both ways and counts what clients send; latency delays
    each direction; a cut resets open connections and refuses new ones until
    healed; a blackhole keeps connections open but silent."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _echo, 0, host=HOST))
        target = listeners[0].socket.getsockname()[1]
        proxy = FaultProxy(HOST, target)
        await nursery.start(proxy.run)
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream(HOST, proxy.port)
            assert await _round_trip(stream, b"hello") == b"hello"
            assert (proxy.forwarded, proxy.open_links) == (1, 1)

            proxy.latency = 0.2
            began = trio.current_time()
            assert await _round_trip(stream, b"slow") == b"slow"
            assert trio.current_time() - began >= 0.4  # 0.2 s each way
            proxy.latency = 0.0

            assert proxy.cut() == 1
            # The reset reaches this end: reading fails (not a polite end of stream).
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()
            await stream.aclose()
            refused = await trio.open_tcp_stream(HOST, proxy.port)
            with pytest.raises(trio.BrokenResourceError):
                await refused.receive_some()
            await refused.aclose()
            assert proxy.refused == 1

            proxy.heal()
            stream = await trio.open_tcp_stream(HOST, proxy.port)
            assert await _round_trip(stream, b"again") == b"again"
            assert proxy.bytes_up == len(b"hellosl" + b"owagain")
            # Counted in what clients send, also across two chunks.
            proxy.count(b"split")
            assert await _round_trip(stream, b"a spl") == b"a spl"
            assert await _round_trip(stream, b"it, split") == b"it, split"
            assert proxy.seen_up == {b"split": 2}

            assert proxy.blackhole() == 1
            await stream.send_all(b"lost")
            with trio.move_on_after(0.5) as silent:
                await stream.receive_some()
            assert silent.cancelled_caught, "a blackholed connection answered"
            assert proxy.open_links == 1  # still open: nobody told either end
            await stream.aclose()
        proxy.close()
        nursery.cancel_scope.cancel()


# -- services behind proxies --------------------------------------------------------------


@dataclass
class Network:
    """A proxy per process in front of one nats-server, and the faults on all of them."""

    server: NatsServer
    proxies: dict[str, FaultProxy] = field(default_factory=dict)

    async def add(self, nursery: trio.Nursery, name: str) -> FaultProxy:
        assert self.server.port is not None
        proxy = FaultProxy(HOST, self.server.port)
        await nursery.start(proxy.run)
        self.proxies[name] = proxy
        return proxy

    def cut(self) -> None:
        for proxy in self.proxies.values():
            proxy.cut()

    def blackhole(self) -> None:
        for proxy in self.proxies.values():
            proxy.blackhole()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def slow(self, latency: float) -> None:
        for proxy in self.proxies.values():
            proxy.latency = latency


def exit_codes(services: Services, names: Iterable[str]) -> dict[str, int | None]:
    return {name: services.services[name].proc.poll() for name in names}


@dataclass
class Engine:
    services: Services
    network: Network
    client: actors.Client
    orchestrators: list[str]
    workers: list[str]

    @property
    def everyone(self) -> list[str]:
        return self.orchestrators + self.workers


@asynccontextmanager
async def engine_behind_proxies(
    server: NatsServer, tmp_path: Path, *, orchestrators: int = 2, workers: int = 2
) -> AsyncIterator[Engine]:
    """Services and a starting client, each through a proxy of its own; the ledger
    workflow registered."""
    orchs = [f"orchestrator-{i}" for i in range(orchestrators)]
    works = [f"worker-{i}" for i in range(workers)]
    network = Network(server)
    async with trio.open_nursery() as proxies:
        with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
            for name in orchs:
                proxy = await network.add(proxies, name)
                proxy.count(PULLS["orchestrator"])
                url = proxy.url
                services.spawn(
                    name, ["-m", "actors.orchestrator", "--url", url, "--ack-wait", ACK_WAIT]
                )
            for name in works:
                proxy = await network.add(proxies, name)
                proxy.count(PULLS["worker"])
                url = proxy.url
                services.spawn(
                    name,
                    [
                        "-m",
                        "actors.worker",
                        "--url",
                        url,
                        "--activities",
                        "tests.engine.ledger_activities",
                        "--ack-wait",
                        ACK_WAIT,
                    ],
                )
            await services.wait_ready(*orchs, *works)
            client_url = (await network.add(proxies, "client")).url
            async with actors.Client.connect(client_url) as client:
                await client.register(LEDGER_FLOW)
                yield Engine(services, network, client, orchs, works)
        proxies.cancel_scope.cancel()


async def forwarded_past(proxy: FaultProxy, connections: int) -> None:
    """Wait until ``proxy`` forwarded more than ``connections`` connections."""
    await proxy.wait_until(lambda: proxy.forwarded > connections)


async def pulled(proxy: FaultProxy, pulls: int) -> None:
    """Wait until ``proxy`` saw ``pulls`` pull requests in all."""
    await proxy.wait_until(lambda: sum(proxy.seen_up.values()) >= pulls)


@dataclass
class AfterFault:
    """Where each process stood when the last fault ended."""

    at: float
    ledger_lines: int
    pulls: dict[str, int]
    sent: dict[str, int]

    @classmethod
    async def settled(cls, engine: Engine, connections: dict[str, int]) -> AfterFault:
        """Where each process stands once it made a connection past ``connections``
        (each proxy's ``forwarded`` when the fault began) and sent what it
        buffered while cut off."""
        proxies = engine.network.proxies
        with trio.fail_after(60):
            # The proxies are the only witnesses of a process's new connection.
            for name, before in connections.items():
                await forwarded_past(proxies[name], before)
        # What a process buffered while cut off goes out at once on its new
        # connection, with no sign of when it is all out: leave it 2 s.
        await trio.sleep(2)
        return cls.now(engine)

    @classmethod
    def now(cls, engine: Engine) -> AfterFault:
        proxies = engine.network.proxies
        return cls(
            trio.current_time(),
            len(read_ledger(engine.services.ledger)),
            {name: sum(proxies[name].seen_up.values()) for name in engine.everyone},
            {name: proxies[name].bytes_up for name in engine.everyone},
        )


async def check_everything(
    engine: Engine, server: NatsServer, accepted: dict[str, int], mark: AfterFault
) -> None:
    """The checker's verdict, every service still up and each one serving since the fault.

    Serving: pulling from its consumer through its own proxy, at least
    :data:`SERVING_PULLS` times in the :data:`SERVING_WINDOW` seconds after
    the fault. How much work each did is printed, not asserted: a burst of
    events can go to whichever process asked first.
    """
    services = engine.services
    async with open_transport(server.url) as transport, actors.Client(transport) as client:
        report = await check_run(transport, client, accepted, services.ledger, servers=[server])
    report.assert_ok()
    proxies = engine.network.proxies

    # Each must pull within the window: done once all have, failed at its end.
    with trio.move_on_at(mark.at + SERVING_WINDOW):
        for name in engine.everyone:
            await pulled(proxies[name], mark.pulls[name] + SERVING_PULLS)
    assert exit_codes(services, engine.everyone) == dict.fromkeys(engine.everyone)
    pulls = {
        name: sum(proxies[name].seen_up.values()) - mark.pulls[name] for name in engine.everyone
    }
    since = read_ledger(services.ledger)[mark.ledger_lines :]
    runs = {
        name: sum(e.phase == "end" and e.pid == services.services[name].pid for e in since)
        for name in engine.workers
    }
    sent = {name: proxies[name].bytes_up - mark.sent[name] for name in engine.orchestrators}
    print(f"since the fault: pull requests {pulls}; activity runs {runs}; bytes sent {sent}")
    for name, count in pulls.items():
        assert count >= SERVING_PULLS, f"{name} stopped pulling after the fault: {pulls}"


async def _faults(
    server: NatsServer,
    tmp_path: Path,
    seed: int,
    *,
    kind: str,
    workflows: int,
    faults: int,
    duration: float,
) -> None:
    """``faults`` faults of ``kind`` (cut, slow or blackhole), ``duration`` s each, while
    ``workflows`` ledger workflows are started and run; then the checks."""
    rng = random.Random(seed)
    async with engine_behind_proxies(server, tmp_path) as engine, trio.open_nursery() as nursery:
        services, network = engine.services, engine.network
        starter = Starter(engine.client)
        nursery.start_soon(starter.run, workflows, faults * (duration + 3) / workflows)
        steps = 4 * workflows
        marks = sorted(rng.sample(range(steps // 10, steps * 2 // 3), faults))
        print(f"{kind} for {duration}s after {marks} activity runs")
        after = AfterFault.now(engine)
        for mark in marks:
            await ledger_ends(services.ledger, mark)
            began = time.monotonic()
            connections = {name: proxy.forwarded for name, proxy in network.proxies.items()}
            if kind == "cut":
                network.cut()
            elif kind == "blackhole":
                network.blackhole()
            else:
                network.slow(0.2)
            await trio.sleep(duration)
            assert exit_codes(services, engine.everyone) == dict.fromkeys(engine.everyone)
            network.heal()
            network.slow(0.0)
            # Slowed connections stay up; cut and silent ones are made anew.
            after = AfterFault.now(engine)
            if kind != "slow":
                after = await AfterFault.settled(engine, connections)
            print(f"{kind} over after {time.monotonic() - began:.1f}s")
        with trio.fail_after(300):
            await starter.done.wait()
        print(f"{len(starter.accepted)} starts accepted, {starter.failures} failed and retried")
        await check_everything(engine, server, starter.accepted, after)
        if kind != "slow":
            # Every process made a connection of its own after the fault.
            for name, proxy in network.proxies.items():
                assert proxy.forwarded >= 2, f"{name} never reconnected"
        assert await services.terminate_all() == dict.fromkeys(engine.everyone, 0)


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        pytest.param("cut", (40, 1, 10), id="cut-for-ten-seconds"),
        pytest.param("cut", (300, 4, 10), id="cut-again-and-again", marks=pytest.mark.chaos),
        pytest.param("slow", (40, 1, 10), id="slowed-by-200ms"),
        pytest.param("slow", (300, 2, 60), id="slowed-for-a-minute", marks=pytest.mark.chaos),
    ],
)
async def test_connections_cut_or_slowed(
    synced_server: NatsServer, tmp_path: Path, seed: int, kind: str, size: tuple[int, int, float]
) -> None:
    """Mid-run, every connection is cut (reset, and new ones refused) or slowed by
    200 ms each way: the services reconnect or keep serving, none exits, each
    serves afterwards, and every accepted workflow completes exactly once.
    ``size``: workflows, faults, seconds each; in the chaos sizes, four 10 s
    cuts among 300 workflows, and 60 s slowed, twice, among 300."""
    workflows, faults, duration = size
    await _faults(
        synced_server,
        tmp_path,
        seed,
        kind=kind,
        workflows=workflows,
        faults=faults,
        duration=duration,
    )


async def test_silent_connections_are_replaced(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """Every connection goes silent without closing (a firewall that forgot them),
    new ones refused for 5 s: each process notices its dead connection by its
    unanswered pings and makes a new one, and the run completes.

    Regression: with nats-py's default pings (every 2 minutes, dropped after two
    unanswered) the whole engine sat idle for about 6 minutes after such a fault,
    though the network was fine again after 5 s. The checker's 60 s stall limit
    fails that.
    """
    await _faults(
        synced_server, tmp_path, seed, kind="blackhole", workflows=40, faults=1, duration=5
    )


async def test_transport_replaces_a_silent_connection(synced_server: NatsServer) -> None:
    """At the transport level: a connection gone silent is declared lost after
    unanswered pings (two to three ``ping_interval``), a new one is made once the
    network lets it, and requests work again."""
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy(HOST, synced_server.port or 0)
        await nursery.start(proxy.run)
        options = ConnectOptions(ping_interval=1.0)
        async with open_transport(proxy.url, options) as transport:
            events = transport.connection_events()
            kv = await transport.ensure_kv(KVSpec(bucket="silence"))
            await kv.put("k", b"before")
            proxy.blackhole()
            began = trio.current_time()
            with trio.fail_after(3 * 1.0 + SLACK):
                while (await events.receive()).state is not ConnectionState.DISCONNECTED:
                    pass
            print(f"silence noticed after {trio.current_time() - began:.1f}s")
            proxy.heal()
            with trio.fail_after(SLACK):
                while (await events.receive()).state is not ConnectionState.CONNECTED:
                    pass
                await kv.put("k", b"after")
                entry = await kv.get("k")
            assert entry is not None
            assert entry.value == b"after"
            assert proxy.forwarded == 2
        proxy.close()
        nursery.cancel_scope.cancel()


async def test_a_request_made_while_disconnected_is_never_sent_later(
    synced_server: NatsServer,
) -> None:
    """A publish attempted while the connection is down fails at once and is never
    sent, not even after the connection comes back.

    Regression: nats-py buffered it and sent it on reconnecting, however late,
    after the caller had given up on it (``the outcome is unknown``) and retried
    or moved on. Past the streams' 120 s duplicate window that stale copy was
    stored again: with one orchestrator cut off for 130 s while another served,
    22 of 200 workflows had two history records doubled and an activity run a
    second time, after they had completed.
    """
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy(HOST, synced_server.port or 0)
        await nursery.start(proxy.run)
        async with open_transport(proxy.url) as transport:
            events = transport.connection_events()
            await transport.ensure_stream(StreamSpec(name="STALE", subjects=("stale.>",)))
            proxy.cut()
            with trio.fail_after(SLACK):
                while (await events.receive()).state is not ConnectionState.DISCONNECTED:
                    pass
            began = trio.current_time()
            with pytest.raises(ConnectionLostError, match="nothing was sent"):
                await transport.publish("stale.before", b"late", msg_id="late")
            # At once, not after the 5 s request deadline.
            assert trio.current_time() - began < 2.5
            proxy.heal()
            with trio.fail_after(SLACK):
                while (await events.receive()).state is not ConnectionState.CONNECTED:
                    pass
                # Published after whatever the connection buffered went out.
                await transport.publish("stale.after", b"now", msg_id="now")
                stored = await transport.read("STALE", "stale.>")
            assert [m.subject for m in stored] == ["stale.after"]
        proxy.close()
        nursery.cancel_scope.cancel()


@pytest.mark.chaos
async def test_one_orchestrator_cut_off_past_the_duplicate_window(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """One of two orchestrators loses its connection (reset, then refused) for
    130 s, longer than the streams' duplicate window, mid-run, while the rest of
    the engine goes on: the other takes its events after the ack wait, the cut-off
    one comes back and serves, and every workflow completes exactly once with no
    record doubled and no activity run again from a stale copy (the checker's
    strict verdict)."""
    rng = random.Random(seed)
    async with engine_behind_proxies(synced_server, tmp_path) as engine:
        services, network = engine.services, engine.network
        ids: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            starter = Starter(engine.client)
            nursery.start_soon(starter.run, 200, 0.0)
            await ledger_ends(services.ledger, rng.randint(100, 300))
            network.proxies["orchestrator-0"].cut()
            await trio.sleep(130)
            assert exit_codes(services, engine.everyone) == dict.fromkeys(engine.everyone)
            network.proxies["orchestrator-0"].heal()
        ids.update(starter.accepted)
        after = await AfterFault.settled(engine, {"orchestrator-0": 1})
        # More work once it is back, for it to show it serves.
        for n in range(200, 260):
            instance_id = f"wf-{n:05d}"
            await engine.client.start(LEDGER_TYPE, ledger_input(n), id=instance_id)
            ids[instance_id] = n
        await check_everything(engine, synced_server, ids, after)
        assert await services.terminate_all() == dict.fromkeys(engine.everyone, 0)
