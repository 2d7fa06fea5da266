"""``open_transport``: the one way to get a transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._interface import Transport
from ._options import MEMORY_SCHEME, ConnectOptions, parse_url


@asynccontextmanager
async def open_transport(
    url: str, options: ConnectOptions | None = None
) -> AsyncIterator[Transport]:
    """Open the transport ``url`` names, and close it when the block exits.

    ``memory://`` gives a fresh in-process broker (share the transport object
    to share the broker); ``nats://host:port`` (several comma-separated for a
    cluster, ``tls://`` for TLS) connects to NATS JetStream. Raises
    :class:`InvalidSpecError` for a bad URL and :class:`ConnectionLostError` if
    no server can be reached within the connect timeout.
    """
    kind, servers = parse_url(url)
    options = options or ConnectOptions()
    if kind == MEMORY_SCHEME:
        from .memory import MemoryTransport

        async with MemoryTransport() as memory:
            yield memory
    else:
        from .jetstream import open_jetstream

        async with open_jetstream(servers, options) as jetstream:
            yield jetstream
