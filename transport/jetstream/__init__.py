"""The NATS JetStream transport on nats-py: the only modules that import asyncio or nats-py.

The reference implementation, selectable with ``ConnectOptions(client="nats-py")``
or ``ACTORS_NATS_CLIENT=nats-py``; the default is the Trio client
(:mod:`transport.jetstream_trio`).
"""

from ._transport import open_jetstream as open_jetstream

__all__ = [
    "open_jetstream",
]
