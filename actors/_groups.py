"""The exceptions inside the groups Trio's nurseries raise.

A nursery wraps whatever leaves it in an exception group, and nurseries
inside nurseries nest the groups; what a caller wants to report or match is
the error a task raised. The worker (the error it records for an attempt),
the client, the HTTP API (the answer's status) and the command line (the
exit code) all read it through these two functions. The transport, below
this layer, keeps its own ``sole`` for the nursery it opens around its
owner's block (``transport/_nursery.py``).
"""

from __future__ import annotations

from typing import overload

__all__ = ["leaves", "sole"]


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` that are not groups, in order; ``[exc]`` if it is not one."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@overload
def sole(exc: Exception) -> Exception: ...
@overload
def sole(exc: BaseException) -> BaseException: ...
def sole(exc: BaseException) -> BaseException:
    """The one exception inside ``exc``'s nested groups of one; else ``exc`` itself.

    A group of several is returned as it is (at the depth where it has
    several). An :class:`Exception` gives an :class:`Exception`: an
    :class:`ExceptionGroup` holds nothing else.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
