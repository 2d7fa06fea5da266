"""Fixtures of the transport conformance suite: one test body for every transport.

``transport_url`` (from ``tests/conftest.py``) parametrizes each test over the
implementations. The NATS server is shared by the whole session, so every test
takes its stream, bucket, consumer and subject names from :func:`names`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio.testing

from transport import KeyValue, KVSpec, StreamSpec, Transport, open_transport


@dataclass(frozen=True)
class Names:
    """Names that no other test in the session uses.

    ``tag`` distinguishes several assets of one test: ``names.stream("2")``.
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


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
def is_memory(transport_url: str) -> bool:
    return transport_url.startswith("memory:")


@pytest.fixture
def clock(transport_url: str) -> trio.testing.MockClock | None:
    """Trio's autojump clock on the memory transport, real time on JetStream.

    The memory broker's timers (ack wait, nak delay, ``deliver_at``, duplicate
    window) follow Trio's clock, so timing tests run instantly there; on
    JetStream the same body takes real seconds. pytest-trio runs a test on a
    clock only if the clock is one of the test's own arguments, so a timing
    test must request this fixture by name (a fixture that merely looks up
    ``autojump_clock`` with ``request.getfixturevalue`` has no effect).
    """
    if transport_url.startswith("memory:"):
        return trio.testing.MockClock(autojump_threshold=0)
    return None


@pytest.fixture
async def transport(transport_url: str) -> AsyncIterator[Transport]:
    async with open_transport(transport_url) as opened:
        yield opened


@pytest.fixture
def make_stream(transport: Transport, names: Names) -> Callable[..., Awaitable[StreamSpec]]:
    """``await make_stream(tag="", **options)``: a stream on ``names.space(tag).>``."""

    async def make(tag: str = "", **options: Any) -> StreamSpec:
        spec = StreamSpec(name=names.stream(tag), subjects=(f"{names.space(tag)}.>",), **options)
        await transport.ensure_stream(spec)
        return spec

    return make


@pytest.fixture
def make_kv(transport: Transport, names: Names) -> Callable[..., Awaitable[KeyValue]]:
    """``await make_kv(tag="", **options)``: a bucket named ``names.bucket(tag)``."""

    async def make(tag: str = "", **options: Any) -> KeyValue:
        return await transport.ensure_kv(KVSpec(bucket=names.bucket(tag), **options))

    return make
