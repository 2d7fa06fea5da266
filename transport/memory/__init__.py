"""The in-process transport: JetStream's semantics for streams, consumers and buckets, in Trio."""

from ._transport import MemoryTransport as MemoryTransport

__all__ = [
    "MemoryTransport",
]
