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
    cluster, ``tls://`` for TLS) connects to NATS JetStream, on the NATS
    client ``options`` choose (:meth:`ConnectOptions.nats_client`).

    Raises :class:`InvalidSpecError` for a bad URL or client name, or TLS or
    credential files that cannot be read or used; :class:`ConnectionLostError`
    if no server can be reached within the connect timeout, or one that must
    use TLS (a ``tls://`` URL, or any with TLS files given) offers none;
    :class:`AuthorizationError` if the server refuses the credentials.
    """
    kind, servers = parse_url(url)
    options = options or ConnectOptions()
    if kind == MEMORY_SCHEME:
        from .memory import MemoryTransport

        async with MemoryTransport() as memory:
            yield memory
    elif options.nats_client() == "trio":
        from .jetstream_trio import open_jetstream_trio

        async with open_jetstream_trio(servers, options) as jetstream:
            yield jetstream
    else:
        from .jetstream import open_jetstream

        async with open_jetstream(servers, options) as jetstream:
            yield jetstream
