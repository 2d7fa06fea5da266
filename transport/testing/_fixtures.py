"""The ground every part of the conformance suite stands on: its fixtures and their contract.

A transport under test comes in through one fixture, ``connect``; the rest
(a transport per test, streams and buckets with names no other test uses, a
virtual clock where the transport keeps Trio's time) is made here from it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import pytest
import trio.testing

from .. import Delivery, KeyValue, KVSpec, StreamSpec, Transport

#: What the ``clock`` fixture gives: Trio's autojump clock, or ``None`` for real time.
Clock: TypeAlias = trio.testing.MockClock | None
#: Opens a new transport on the broker under test, closing it when the block exits.
Connect = Callable[[], AbstractAsyncContextManager[Transport]]
#: How many consumers a stream has, by whatever means the implementation offers.
CountConsumers = Callable[[Transport, str], Awaitable[int]]
#: What ``consume`` delivers into.
Inbox: TypeAlias = trio.MemoryReceiveChannel[Delivery]


class MakeStream(Protocol):
    """``await make_stream(tag="", **options)``: a stream on ``names.space(tag).>``."""

    def __call__(self, tag: str = "", **options: Any) -> Awaitable[StreamSpec]: ...


class MakeKV(Protocol):
    """``await make_kv(tag="", **options)``: a bucket named ``names.bucket(tag)``."""

    def __call__(self, tag: str = "", **options: Any) -> Awaitable[KeyValue]: ...


@dataclass(frozen=True)
class Names:
    """Stream, bucket, consumer and subject names that no other test uses.

    The suite may share one broker among all its tests, so each takes its
    names from here. ``tag`` tells several assets of one test apart:
    ``names.stream("2")``.
    """

    suffix: str = field(default_factory=lambda: secrets.token_hex(4))

    def stream(self, tag: str = "") -> str:
        return f"S{tag}_{self.suffix}"

    def bucket(self, tag: str = "") -> str:
        return f"B{tag}_{self.suffix}"

    def durable(self, tag: str = "") -> str:
        return f"C{tag}_{self.suffix}"

    def space(self, tag: str = "") -> str:
        """The first subject token of this test's subjects (``space.>``)."""
        return f"t{self.suffix}{tag}"

    def stream_spec(self, tag: str = "", **options: Any) -> StreamSpec:
        """The spec of stream ``stream(tag)``, taking ``space(tag).>``."""
        return StreamSpec(name=self.stream(tag), subjects=(f"{self.space(tag)}.>",), **options)


@asynccontextmanager
async def own_transport(connect: Connect) -> AsyncIterator[Transport]:
    """A transport opened for the block, for the tests that close it themselves.

    ``aclose()`` must not cancel the code around it, which would end the
    block early and silently: the block must run to its end. A hang fails
    the test after 20 seconds.
    """
    finished = False
    with trio.fail_after(20):
        async with connect() as transport:
            yield transport
            finished = True
    assert finished, "aclose() cancelled the block it was called in"


@pytest.mark.trio
class SuiteBase:
    """The fixtures of the suite; a subclass provides ``connect`` (see :class:`TransportTests`)."""

    @pytest.fixture
    def connect(self) -> Connect:
        """The transport under test: override this fixture."""
        pytest.fail(
            f"{type(self).__name__} runs the transport conformance suite: give it a "
            "`connect` fixture returning a function that opens a transport "
            "(an async context manager), as transport.testing.TransportTests describes"
        )

    @pytest.fixture
    def virtual_time(self) -> bool:
        """Whether the transport's timers follow Trio's clock (override to say so)."""
        return False

    @pytest.fixture
    def count_consumers(self) -> CountConsumers | None:
        """A way to count a stream's consumers, if the implementation has one (override)."""
        return None

    @pytest.fixture
    def names(self) -> Names:
        return Names()

    @pytest.fixture
    def clock(self, virtual_time: bool) -> Clock:
        """Trio's autojump clock where the transport keeps Trio's time, else real time.

        Timing tests (ack wait, nak delays, delayed delivery, max age) then
        run instantly; on a real broker the same body takes real seconds.
        pytest-trio runs a test on a clock only if the clock is the value of
        one of the test's own fixtures, so a timing test requests this one.
        """
        return trio.testing.MockClock(autojump_threshold=0) if virtual_time else None

    @pytest.fixture
    async def transport(self, connect: Connect) -> AsyncIterator[Transport]:
        async with connect() as opened:
            yield opened

    @pytest.fixture
    def make_stream(self, transport: Transport, names: Names) -> MakeStream:
        async def make(tag: str = "", **options: Any) -> StreamSpec:
            spec = names.stream_spec(tag, **options)
            await transport.ensure_stream(spec)
            return spec

        return make

    @pytest.fixture
    def make_kv(self, transport: Transport, names: Names) -> MakeKV:
        async def make(tag: str = "", **options: Any) -> KeyValue:
            return await transport.ensure_kv(KVSpec(bucket=names.bucket(tag), **options))

        return make

    @pytest.fixture
    async def kv(self, make_kv: MakeKV) -> KeyValue:
        """A new bucket with the default options (``make_kv()``)."""
        return await make_kv()
