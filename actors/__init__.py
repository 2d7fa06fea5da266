"""A durable workflow engine on Trio and NATS JetStream.

The engine itself (definitions, the sans-io core, the orchestrator, workers
and the client) is being built on top of the :mod:`transport` package; today
this package holds the wire codec and the local ``nats-server`` launcher.
"""

from ._codec import CodecError as CodecError
from ._codec import CodecLimits as CodecLimits
from ._codec import Envelope as Envelope
from ._codec import PayloadTooLargeError as PayloadTooLargeError
from ._codec import decode as decode
from ._codec import encode as encode

__all__ = ["CodecError", "CodecLimits", "Envelope", "PayloadTooLargeError", "decode", "encode"]
