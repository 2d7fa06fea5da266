"""Durable streams, consumers and key-value buckets for Trio programs.

One interface (:class:`Transport`), two implementations chosen by URL: an
in-process broker (``memory://``) and NATS JetStream (``nats://``, ``tls://``).
"""

from ._errors import AuthorizationError as AuthorizationError
from ._errors import ConflictError as ConflictError
from ._errors import ConnectionLostError as ConnectionLostError
from ._errors import InvalidSpecError as InvalidSpecError
from ._errors import NotFoundError as NotFoundError
from ._errors import StorageFullError as StorageFullError
from ._errors import TooLargeError as TooLargeError
from ._errors import TransportClosedError as TransportClosedError
from ._errors import TransportError as TransportError
from ._errors import TransportTimeoutError as TransportTimeoutError
from ._interface import Delivery as Delivery
from ._interface import KeyValue as KeyValue
from ._interface import Settlement as Settlement
from ._interface import Transport as Transport
from ._open import open_transport as open_transport
from ._options import MEMORY_SCHEME as MEMORY_SCHEME
from ._options import ConnectOptions as ConnectOptions
from ._options import parse_url as parse_url
from ._specs import DELIVER_AT_HEADER as DELIVER_AT_HEADER
from ._specs import MAX_PARTITIONS as MAX_PARTITIONS
from ._specs import ConnectionEvent as ConnectionEvent
from ._specs import ConnectionState as ConnectionState
from ._specs import ConsumerLag as ConsumerLag
from ._specs import ConsumerSpec as ConsumerSpec
from ._specs import Discard as Discard
from ._specs import KVChange as KVChange
from ._specs import KVEntry as KVEntry
from ._specs import KVOp as KVOp
from ._specs import KVSpec as KVSpec
from ._specs import OutMessage as OutMessage
from ._specs import Partitioning as Partitioning
from ._specs import PubAck as PubAck
from ._specs import Retention as Retention
from ._specs import Storage as Storage
from ._specs import StoredMessage as StoredMessage
from ._specs import StreamSpec as StreamSpec
from ._specs import partition_of as partition_of

__all__ = [
    "AuthorizationError",
    "ConflictError",
    "ConnectOptions",
    "ConnectionEvent",
    "ConnectionLostError",
    "ConnectionState",
    "ConsumerLag",
    "ConsumerSpec",
    "DELIVER_AT_HEADER",
    "Delivery",
    "Discard",
    "InvalidSpecError",
    "KVChange",
    "KVEntry",
    "KVOp",
    "KVSpec",
    "KeyValue",
    "MAX_PARTITIONS",
    "MEMORY_SCHEME",
    "NotFoundError",
    "OutMessage",
    "Partitioning",
    "PubAck",
    "Retention",
    "Settlement",
    "StorageFullError",
    "Storage",
    "StoredMessage",
    "StreamSpec",
    "TooLargeError",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "TransportTimeoutError",
    "open_transport",
    "parse_url",
    "partition_of",
]
