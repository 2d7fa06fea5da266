"""The root of every error the engine raises, and whose fault each one is.

:class:`ActorsError` is the root. Every error class of the package derives
from one of its four categories, which say who can do something about it:

- :class:`RequestError`: the caller's request. Something sent is not valid
  (a definition, a name, a payload), names what does not exist (a workflow
  type), conflicts with what is stored (a version, an instance id), or is
  over a size limit (:class:`SizeLimitError`). Sent again unchanged, it
  fails again.
- :class:`OutcomeError`: the instance's outcome, not a fault of the engine:
  a workflow that failed, was cancelled or terminated
  (:class:`~actors.WorkflowError` and its subclasses), and the error an
  activity raises to fail its step (:class:`~actors.ActivityError`).
- :class:`EngineError`: the engine's: a bug, a damaged message or state.
- :class:`BrokerError`: the broker's, where the engine finds it itself (a
  ``nats-server`` that does not start). The transport's own errors keep
  their root, :class:`transport.TransportError` (the transport never imports
  this package); the command line and the API map those by class too.

Each class carries what the front ends need to report it, as class
attributes that a subclass inherits from its category or overrides on its
``class`` line (``class VersionConflictError(RequestError, http_status=409,
http_type="VersionConflict")``):

``exit_code``
    The command line's exit code (the table in ``docs/cli.md``), or ``None``
    for an error that is a bug: the command line lets it raise, with its
    traceback.
``http_status``, ``http_type``
    The HTTP API's status and ``error.type`` (the table in ``docs/api.md``).

The command line and the API read these from the exception, never from a
list of classes of their own, so a new error is reported as its category
says until its class says more. ``docs/api.md`` ("Errors by class") lists
every class with its code and status.

This module imports nothing of the package, so that every layer, the core
included, can import it.
"""

from __future__ import annotations

from types import EllipsisType

__all__ = [
    "ActorsError",
    "BrokerError",
    "EngineError",
    "OutcomeError",
    "RequestError",
    "SizeLimitError",
]


class ActorsError(Exception):
    """The root of every error the engine raises; never raised itself.

    Derive from one of its categories (:class:`RequestError`,
    :class:`OutcomeError`, :class:`EngineError`, :class:`BrokerError`),
    not from this class: the categories give the front ends' mapping.
    """

    #: The command line's exit code; ``None``: a bug (the command line raises it).
    exit_code: int | None
    #: The HTTP API's status.
    http_status: int
    #: The HTTP API's ``error.type``.
    http_type: str

    def __init_subclass__(
        cls,
        *,
        exit_code: int | EllipsisType | None = ...,
        http_status: int | EllipsisType = ...,
        http_type: str | EllipsisType = ...,
    ) -> None:
        """Set the class's mapping from the keywords given; the rest is inherited."""
        super().__init_subclass__()
        if not isinstance(exit_code, EllipsisType):
            cls.exit_code = exit_code
        if not isinstance(http_status, EllipsisType):
            cls.http_status = http_status
        if not isinstance(http_type, EllipsisType):
            cls.http_type = http_type


class RequestError(ActorsError, exit_code=4, http_status=422, http_type="ValidationError"):
    """The caller's request is at fault: change it, then send it again.

    Exit code 4 (invalid) and 422 unless the class says otherwise: 3 and
    404 for what does not exist, 409 for a conflict with what is stored,
    413 for a size limit passed.
    """


class SizeLimitError(RequestError, http_status=413, http_type="PayloadTooLarge"):
    """Something is over a size limit: what was sent, or what it would make.

    The base of the engine's "too large" errors: an input, output or state
    over the orchestrator's :class:`~actors.Limits`
    (:class:`~actors.LimitExceededError`), and a value whose encoding is over
    the codec's largest message (:class:`~actors.PayloadTooLargeError`). A
    message over the broker's own limit is the transport's
    ``TooLargeError``, which the front ends report as this class.
    """


class OutcomeError(ActorsError, exit_code=1, http_status=409, http_type="WorkflowFailed"):
    """An instance, or an activity's attempt, ended other than by completing.

    Not a fault of the request, the engine or the broker: the workflow or
    the activity decided so (or a caller cancelled or terminated it). Exit
    code 1 (not completed); 409, as ``GET /workflows/{id}/result`` answers.
    """


class EngineError(ActorsError, exit_code=None, http_status=500, http_type="InternalError"):
    """The engine is at fault: a bug, or a message or stored state it cannot read.

    The command line lets it raise, with its traceback; the API answers 500
    and logs it.
    """


class BrokerError(ActorsError, exit_code=2, http_status=503, http_type="BrokerUnavailable"):
    """The broker is at fault, as the engine itself finds it (not through a transport).

    Exit code 2 (the broker), 503 (retry later).
    """
