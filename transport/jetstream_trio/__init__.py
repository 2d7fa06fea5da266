"""The NATS JetStream transport on the Trio client of the NATS protocol.

No asyncio and no thread: the client (:mod:`transport.natsproto`) is a task
of the transport's nursery. The JetStream logic is :mod:`transport.jscore`,
shared with the nats-py implementation (:mod:`transport.jetstream`).
"""

from ._transport import open_jetstream_trio as open_jetstream_trio

__all__ = ["open_jetstream_trio"]
