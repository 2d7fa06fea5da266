"""The transport's error hierarchy.

Every failure a transport reports is a :class:`TransportError`. No exception of
the underlying client library (nats-py, asyncio) crosses the transport boundary,
and cancellation always stays Trio's own.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base class of every error a transport raises."""


class ConnectionLostError(TransportError):
    """The broker could not be reached, or the connection broke under an operation.

    The operation's outcome is unknown: a publish may or may not have been stored.
    Retrying with the same message id is safe.
    """


class AuthorizationError(ConnectionLostError):
    """The server refused the credentials (user/password, token, NKey, creds).

    Retrying with the same credentials does not help.
    """


class TransportClosedError(TransportError):
    """The transport was closed by its owner (``aclose``) before or during the call."""


class ConflictError(TransportError):
    """A compare-and-set failed: the key exists (create) or moved on (update)."""


class NotFoundError(TransportError):
    """A stream, bucket or consumer that the call needs does not exist."""


class TooLargeError(TransportError):
    """A payload is larger than the stream, bucket or connection accepts."""


class TransportTimeoutError(TransportError):
    """The broker did not answer within the operation's deadline."""


class StorageFullError(TransportError):
    """The broker refused a write because a storage limit was reached (back-pressure)."""


class InvalidSpecError(TransportError, ValueError):
    """A stream, bucket, consumer or message specification is invalid, or an
    existing asset with the same name is incompatible with it."""
