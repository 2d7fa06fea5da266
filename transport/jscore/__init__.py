"""JetStream without a client library: what both JetStream transports share.

The JetStream transport runs on one of two NATS clients: nats-py (on an
asyncio loop in a thread of its own, :mod:`transport.jetstream`) or the Trio
client of :mod:`transport.natsproto` (:mod:`transport.jetstream_trio`). The
logic of JetStream itself is here, once: the API's errors and conventions
(``_api``), stream and bucket configurations (``_config``), the transport's
streams, buckets, publishes and consumes (``_base``), pull consumers
(``_pull``), buckets and watches (``_kv``) and reading (``_read``). Each
client supplies requests, subscriptions and publishes nobody waits for.
"""

from ._api import API as API
from ._api import HEARTBEAT as HEARTBEAT
from ._api import KV_HEADROOM as KV_HEADROOM
from ._api import PULL_EXPIRES as PULL_EXPIRES
from ._api import JetStreamDisabledError as JetStreamDisabledError
from ._api import NoStreamAnswered as NoStreamAnswered
from ._api import StreamExistsError as StreamExistsError
from ._api import WireMsg as WireMsg
from ._api import api_error as api_error
from ._api import api_reply as api_reply
from ._api import dur as dur
from ._api import epoch as epoch
from ._api import new_inbox as new_inbox
from ._api import parse_ack as parse_ack
from ._api import reply_meta as reply_meta
from ._api import rfc3339 as rfc3339
from ._api import wall_clock as wall_clock
from ._base import ENSURE_PATIENCE as ENSURE_PATIENCE
from ._base import JetStreamBase as JetStreamBase
from ._base import Prepared as Prepared
from ._kv import KVCore as KVCore
from ._kv import WatcherCore as WatcherCore
from ._pull import JsDelivery as JsDelivery
from ._pull import PullerCore as PullerCore
from ._read import PageReader as PageReader
from ._read import Request as Request

__all__ = [
    "API",
    "ENSURE_PATIENCE",
    "HEARTBEAT",
    "KV_HEADROOM",
    "PULL_EXPIRES",
    "JetStreamBase",
    "JetStreamDisabledError",
    "JsDelivery",
    "KVCore",
    "NoStreamAnswered",
    "PageReader",
    "Prepared",
    "PullerCore",
    "Request",
    "StreamExistsError",
    "WatcherCore",
    "WireMsg",
    "api_error",
    "api_reply",
    "dur",
    "epoch",
    "new_inbox",
    "parse_ack",
    "reply_meta",
    "rfc3339",
    "wall_clock",
]
