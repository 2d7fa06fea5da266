"""The Trio NATS client against real nats-servers: what it does when servers
die, go silent or belong to a cluster, and how it authenticates.

Each test starts its own server (or cluster) so that it can kill, pause and
restart it. The client is driven directly, below the JetStream transport.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nkeys
import pytest
import trio
from natsserver import NatsCluster, NatsServer

from transport import (
    AuthorizationError,
    ConnectionEvent,
    ConnectionLostError,
    ConnectionState,
    ConnectOptions,
    KVSpec,
    StreamSpec,
    TooLargeError,
    TransportTimeoutError,
    open_transport,
)
from transport.natsproto import Client, Msg

pytestmark = pytest.mark.jetstream

FAST = {"reconnect_wait": 0.05, "max_reconnect_wait": 0.5, "connect_timeout": 2.0}


class Watched:
    """A client's connection events, each awaitable by state."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: ConnectionEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, state: ConnectionState, count: int = 1) -> ConnectionEvent:
        while sum(e.state is state for e in self.events) < count:
            await self._changed.wait()
        return [e for e in self.events if e.state is state][count - 1]


@asynccontextmanager
async def running(servers: list[str], watched: Watched, **options: float) -> AsyncIterator[Client]:
    client = Client(servers, ConnectOptions(**{**FAST, **options}), watched)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            await client.aclose()


async def test_posts_wait_out_a_restart_and_requests_fail_at_once(fresh_nats_server):
    server = fresh_nats_server
    watched = Watched()
    got: list[Msg] = []
    with trio.fail_after(30):
        async with running([server.url], watched) as client:
            client.subscribe("held.>", got.append)
            await trio.to_thread.run_sync(server.kill)
            await watched.wait_for(ConnectionState.DISCONNECTED)
            client.post("held.ack", b"written while disconnected")
            began = trio.current_time()
            with pytest.raises(ConnectionLostError, match="nothing was sent"):
                await client.requests.request("held.request", b"")
            assert trio.current_time() - began < 0.5
            await trio.to_thread.run_sync(server.restart)
            await watched.wait_for(ConnectionState.CONNECTED)
            await client.flush()
    # The subscription was made again before what was held went out.
    assert [(m.subject, m.data) for m in got] == [("held.ack", b"written while disconnected")]


async def test_a_request_under_way_fails_when_the_connection_drops(fresh_nats_server):
    server = fresh_nats_server
    watched = Watched()
    with trio.fail_after(30):
        async with running([server.url], watched, request_timeout=60.0) as client:
            client.subscribe("mute", lambda _msg: None)  # a responder that never answers
            pending = client.requests.start("mute", b"are you there?")
            await client.flush()  # it reached the server
            await trio.to_thread.run_sync(server.kill)
            began = trio.current_time()
            with pytest.raises(ConnectionLostError, match="outcome unknown"):
                await client.requests.wait(pending)
            # At once, not at the minute-long deadline.
            assert trio.current_time() - began < 5


async def test_a_request_without_an_answer_times_out_while_connected(fresh_nats_server):
    watched = Watched()
    with trio.fail_after(30):
        async with running([fresh_nats_server.url], watched, request_timeout=0.5) as client:
            client.subscribe("mute", lambda _msg: None)
            with pytest.raises(TransportTimeoutError):
                await client.requests.request("mute", b"")
            # No responder at all: the server says so at once (no_responders).
            reply = await client.requests.request("nobody.listens", b"")
            assert reply.status == "503"


async def test_a_silent_connection_is_dropped_after_two_missed_pings(fresh_nats_server):
    server = fresh_nats_server
    watched = Watched()
    with trio.fail_after(30):
        async with running([server.url], watched, ping_interval=0.3) as client:
            server.pause()  # the connection stays open and says nothing
            try:
                began = trio.current_time()
                await watched.wait_for(ConnectionState.DISCONNECTED)
                silent_for = trio.current_time() - began
            finally:
                server.resume()
            await watched.wait_for(ConnectionState.CONNECTED)
            await client.flush()
    # Two unanswered pings, dropped at the third: two to three intervals
    # (0.6 to 0.9 s), with room for a loaded machine.
    assert 0.5 <= silent_for <= 3.0, silent_for


async def test_the_cluster_members_a_server_announces_take_over(tmp_path):
    with NatsCluster(tmp_path / "cluster", 3) as cluster:
        watched = Watched()
        got: list[Msg] = []
        with trio.fail_after(60):
            async with running([cluster.nodes[0].url], watched) as client:
                client.subscribe("echo", lambda msg: got.append(msg))
                # Given one server, the client learns the others from its INFO.
                assert len(client._pool.servers) == 3
                await trio.to_thread.run_sync(cluster.kill, 0)
                event = await watched.wait_for(ConnectionState.CONNECTED)
                assert event.detail != f"127.0.0.1:{cluster.nodes[0].port}"
                client.post("echo", b"after the failover")
                await client.flush()
        assert [m.data for m in got] == [b"after the failover"]


# -- NKeys, and what the server refuses, on both clients ----------------------------


def _nkey(directory: Path, name: str) -> tuple[str, str]:
    """(public key, seed file) of a fresh user NKey."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = directory / f"{name}.nk"
    path.write_bytes(bytes(seed) + b"\n")
    return nkeys.from_seed(bytearray(seed)).public_key.decode(), str(path)


async def test_an_nkey_gets_in_and_a_stranger_is_refused(tmp_path, nats_client):
    public, seed_file = _nkey(tmp_path, "engine")
    _, stranger = _nkey(tmp_path, "stranger")
    config = {"authorization": {"users": [{"nkey": public}]}}
    with NatsServer(tmp_path / "nats", config=config) as server, trio.fail_after(30):
        options = ConnectOptions(nkey_seed_file=seed_file, client=nats_client)
        async with open_transport(server.url, options) as transport:
            await transport.ensure_stream(StreamSpec(name="NK", subjects=("nk.>",)))
            assert (await transport.publish("nk.a", b"signed in")).seq == 1
        refused = ConnectOptions(nkey_seed_file=stranger, client=nats_client, connect_timeout=1)
        with pytest.raises(AuthorizationError):
            async with open_transport(server.url, refused):
                pytest.fail("a stranger's key got in")


async def test_a_message_over_max_payload_is_refused_and_the_connection_stays(
    tmp_path, nats_client
):
    with NatsServer(tmp_path / "nats", config={"max_payload": 4096}) as server:
        events: list[ConnectionEvent] = []
        with trio.fail_after(30):
            options = ConnectOptions(client=nats_client)
            async with open_transport(server.url, options) as transport:
                listening = transport.connection_events()
                await transport.ensure_stream(StreamSpec(name="BIG", subjects=("big.>",)))
                kv = await transport.ensure_kv(KVSpec(bucket="BIG"))
                # Headers count towards the limit: 4000 bytes of data and a long id.
                with pytest.raises(TooLargeError):
                    await transport.publish("big.a", b"x" * 4000, msg_id="i" * 200)
                with pytest.raises(TooLargeError):
                    await kv.put("k", b"x" * 5000)
                assert (await transport.publish("big.a", b"x" * 1000)).seq == 1
                while True:
                    try:
                        events.append(listening.receive_nowait())
                    except trio.WouldBlock:
                        break
        assert events == [], "the connection was dropped"
