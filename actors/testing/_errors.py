"""What goes wrong with a local ``nats-server``: not started, a port taken, its store in use."""

from __future__ import annotations

from pathlib import Path

from ..errors import BrokerError

__all__ = ["AddressInUseError", "NatsServerError", "StoreInUseError"]


class NatsServerError(BrokerError, RuntimeError):
    """A nats-server did not start, did not become ready, or is otherwise unusable."""


class AddressInUseError(NatsServerError):
    """The server exited because one of its ports was taken."""


class StoreInUseError(NatsServerError):
    """Another server runs on this folder's store: two would corrupt it.

    ``holder`` says who holds the folder's lock, as far as the lock file tells
    (``"nats-server pid 130 of pid 123 (python3 -m actors dev)"``).
    """

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"the nats-server folder {directory} is in use by {holder}: stop that one, "
            "or give this one another data folder"
        )
        self.directory = directory
        self.holder = holder
