"""The JetStream transport on the Trio client, checked by an independent client.

nats-py (plain, on asyncio in a worker thread) reads what the Trio client
wrote, message by message and key by key, and writes what the Trio client
must read: the two clients share no code on the wire, so agreement means the
Trio client speaks the protocol, not merely to itself.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.js.errors
import pytest
import trio

from transport import (
    ConnectOptions,
    ConsumerSpec,
    KVSpec,
    OutMessage,
    Retention,
    StreamSpec,
    open_transport,
)

pytestmark = pytest.mark.jetstream

T = TypeVar("T")
TRIO = ConnectOptions(client="trio")


class Names:
    """Names no other test on the shared server uses."""

    def __init__(self) -> None:
        self.suffix = secrets.token_hex(4)

    def stream(self) -> str:
        return f"I_{self.suffix}"

    def bucket(self) -> str:
        return f"IB_{self.suffix}"

    def space(self) -> str:
        return f"interop{self.suffix}"


@pytest.fixture
def names() -> Names:
    return Names()


async def with_natspy(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(jetstream_context)`` on a nats-py connection of its own."""

    async def session() -> T:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, session())


async def test_what_the_trio_client_publishes_is_what_nats_py_reads(nats_url, names):
    space = names.space()
    spec = StreamSpec(name=names.stream(), subjects=(f"{space}.>",), retention=Retention.LIMITS)
    headers = {"X-Trace": "a b:c", "X-Empty": ""}
    async with open_transport(nats_url, TRIO) as transport:
        await transport.ensure_stream(spec)
        first = await transport.publish(f"{space}.one", b"\x00\r\nPING\r\n", headers=headers)
        acks = await transport.publish_many(
            [OutMessage(f"{space}.many", b"%d" % i, msg_id=f"m-{i}") for i in range(50)]
        )
        again = await transport.publish(f"{space}.many", b"0", msg_id="m-0")
    assert again.duplicate
    assert again.seq == acks[0].seq

    async def read(js: Any) -> list[Any]:
        return [await js.get_msg(spec.name, seq) for seq in range(1, 52)]

    stored = await with_natspy(nats_url, read)
    assert first.seq == 1
    assert stored[0].subject == f"{space}.one"
    assert stored[0].data == b"\x00\r\nPING\r\n"
    assert {k: stored[0].headers[k] for k in headers} == headers
    assert [m.data for m in stored[1:]] == [b"%d" % i for i in range(50)]
    assert [m.headers["Nats-Msg-Id"] for m in stored[1:]] == [f"m-{i}" for i in range(50)]


async def test_the_trio_clients_bucket_is_a_bucket_to_nats_py(nats_url, names):
    bucket = names.bucket()
    async with open_transport(nats_url, TRIO) as transport:
        kv = await transport.ensure_kv(KVSpec(bucket=bucket, history=5))
        created = await kv.create("order.1", b"new")
        updated = await kv.update("order.1", b"paid", created)
        await kv.put("order.2", b"other")
        await kv.delete("order.2")

    async def read(js: Any) -> tuple[Any, list[Any], Any]:
        store = await js.key_value(bucket)
        entry = await store.get("order.1")
        history = await store.history("order.1")
        try:
            await store.get("order.2")
            deleted = None
        except nats.js.errors.KeyNotFoundError as exc:
            deleted = exc.op  # a delete marker, not a key that never was
        return entry, history, deleted

    entry, history, deleted = await with_natspy(nats_url, read)
    assert (entry.value, entry.revision) == (b"paid", updated)
    assert [(h.value, h.revision) for h in history] == [(b"new", created), (b"paid", updated)]
    assert deleted == "DEL"


async def test_what_nats_py_writes_the_trio_client_reads(nats_url, names):
    space = names.space()
    spec = StreamSpec(name=names.stream(), subjects=(f"{space}.>",), retention=Retention.WORK_QUEUE)
    bucket = names.bucket()
    async with open_transport(nats_url, TRIO) as transport:
        await transport.ensure_stream(spec)
        kv = await transport.ensure_kv(KVSpec(bucket=bucket))

        async def write(js: Any) -> int:
            for i in range(20):
                await js.publish(f"{space}.job", b"job %d" % i, headers={"X-N": str(i)})
            store = await js.key_value(bucket)
            revision: int = await store.put("k", b"from nats-py")
            return revision

        revision = await with_natspy(nats_url, write)
        entry = await kv.get("k")
        assert entry is not None
        assert (entry.value, entry.revision) == (b"from nats-py", revision)
        read = await transport.read(spec.name, f"{space}.job")
        assert [m.data for m in read] == [b"job %d" % i for i in range(20)]
        received = []
        with trio.fail_after(20):
            async with transport.consume(spec.name, ConsumerSpec(durable="d")) as inbox:
                async for delivery in inbox:
                    received.append((delivery.data, delivery.headers["X-N"]))
                    await delivery.ack()
                    if len(received) == 20:
                        break
    assert received == [(b"job %d" % i, str(i)) for i in range(20)]

    async def left(js: Any) -> int:
        info = await js.stream_info(spec.name)
        return int(info.state.messages)

    assert await with_natspy(nats_url, left) == 0  # every ack reached the server


async def test_a_delayed_message_is_a_server_schedule_nats_py_can_see(nats_url, names):
    space = names.space()
    spec = StreamSpec(name=names.stream(), subjects=(f"{space}.>",), allow_delayed=True)
    async with open_transport(nats_url, TRIO) as transport:
        await transport.ensure_stream(spec)
        due = transport.now() + 0.5
        await transport.publish(f"{space}.later", b"later", msg_id="nap@1", deliver_at=due)

        async def schedule(js: Any) -> Any:
            return await js.get_last_msg(spec.name, f"_sched.{spec.name}.>")

        scheduled = await with_natspy(nats_url, schedule)
        assert scheduled.subject == f"_sched.{spec.name}.nap_401"  # schedule_token("nap@1")
        assert scheduled.headers["Nats-Schedule-Target"] == f"{space}.later"
        assert scheduled.headers["Nats-Schedule"].startswith("@at ")
        with trio.fail_after(20):
            async with transport.consume(spec.name, ConsumerSpec(durable="d")) as inbox:
                delivery = await inbox.receive()
                await delivery.ack()
        assert delivery.data == b"later"
        assert transport.now() >= due
