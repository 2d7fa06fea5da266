"""The NATS JetStream transport: the only modules that import asyncio or nats-py."""

from ._transport import open_jetstream as open_jetstream

__all__ = [
    "open_jetstream",
]
