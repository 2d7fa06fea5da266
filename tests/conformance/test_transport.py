"""The transport conformance suite (:mod:`transport.testing`) on both of our transports.

``transport_url`` (``tests/conftest.py``) runs every test once on the memory
transport and once on the session's nats-server; ``--transport memory`` or
``jetstream`` keeps one of the two.
"""

from __future__ import annotations

import functools

import pytest

from transport import Transport, open_transport
from transport.memory import MemoryTransport
from transport.testing import Connect, CountConsumers, TransportTests


async def _count_consumers(transport: Transport, stream: str) -> int:
    """How many consumers ``stream`` has, from each transport's own bookkeeping."""
    if isinstance(transport, MemoryTransport):
        return len(transport._streams[stream].consumers)
    info = await transport._api(f"STREAM.INFO.{stream}")  # type: ignore[attr-defined]
    count: int = info["state"]["consumer_count"]
    return count


class TestTransport(TransportTests):
    @pytest.fixture
    def connect(self, transport_url: str) -> Connect:
        return functools.partial(open_transport, transport_url)

    @pytest.fixture
    def virtual_time(self, transport_url: str) -> bool:
        # The memory broker's timers follow Trio's clock.
        return transport_url.startswith("memory:")

    @pytest.fixture
    def count_consumers(self) -> CountConsumers:
        return _count_consumers
