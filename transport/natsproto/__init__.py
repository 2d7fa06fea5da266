"""A client of the NATS protocol for Trio: no asyncio, no thread, no other client.

Written from the public NATS client protocol. What the JetStream transport
needs and no more: the core protocol with headers, subscriptions, requests on
one shared reply inbox, reconnection with backoff across the cluster's
servers, TLS (or nothing, when asked for), and user/password, token, NKey and
``.creds`` authentication.
"""

from ._client import Client as Client
from ._client import Subscription as Subscription
from ._protocol import Msg as Msg
from ._protocol import ProtocolError as ProtocolError
from ._requests import Pending as Pending
from ._requests import new_inbox as new_inbox

__all__ = ["Client", "Msg", "Pending", "ProtocolError", "Subscription", "new_inbox"]
