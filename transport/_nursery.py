"""A nursery for a resource's background tasks that wraps its owner's block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside ``exc``'s nested groups of one; else ``exc`` itself.

    The engine reads Trio's groups the same way (``actors/_groups.py``), in
    its own layer: transport sits below it and imports nothing of it, and
    exception groups are no part of a transport's public face.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """Open a nursery around the caller's block, for background tasks.

    Trio wraps whatever leaves a nursery in an exception group, and nested
    nurseries nest the groups. When a single
    exception is all there is, it is raised bare, so that the owner of
    ``async with open_transport(...)`` sees its own errors, and ours (say a
    :class:`ConnectionLostError` while connecting), unchanged. Several
    concurrent failures still arrive as a group.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        sole = _sole(group)
        if isinstance(sole, BaseExceptionGroup):
            raise
        raise sole from sole.__cause__
