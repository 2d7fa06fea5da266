"""Paused workflow types, as every orchestrator follows them.

A paused type is a key ``paused.{type}`` of ``WORKFLOW_OPERATIONS``
(``actors.wire``). Each orchestrator watches the bucket and keeps the
paused types in memory: a start of a paused type is stored paused, its
first step not begun, until the type is resumed (``Client.resume_type``
then resumes each such instance). A start decided before the watch brought
the pause in runs as usual; so :meth:`Client.pause_type` with ``running``
pauses the instances it finds running as well.
"""

from __future__ import annotations

import logging

import trio

from transport import KeyValue, KVOp

from ..core import Pause
from ..wire import MessageError, TypePause, decode_type_pause, paused_type

__all__ = ["TypePauses"]

log = logging.getLogger("actors.orchestrator")


class TypePauses:
    """The workflow types paused now, kept current by :meth:`follow`."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._paused: dict[str, TypePause] = {}

    def pause_for(self, workflow_type: str) -> Pause | None:
        """How a new instance of ``workflow_type`` is paused; ``None`` if the type is not."""
        found = self._paused.get(workflow_type)
        if found is None:
            return None
        return Pause(found.by, found.reason, found.at, by_type=True)

    async def follow(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the bucket (its current keys, then every change); runs until cancelled.

        Ready once the keys stored when it began are read.
        """
        kv = self._kv
        # The changes since this revision replay, in order, over what is read
        # next: whatever the reads missed or saw early ends as the bucket has it.
        mark = await kv.latest_revision()
        for key in await kv.keys("paused.>"):
            entry = await kv.get(key)
            if entry is not None:
                self._apply(key, entry.value)
        async with kv.watch("paused.>", since=mark) as changes:
            task_status.started()
            async for change in changes:
                if change.op is KVOp.PUT:
                    self._apply(change.key, change.value)
                else:
                    workflow_type = paused_type(change.key)
                    if workflow_type is not None:
                        self._paused.pop(workflow_type, None)

    def _apply(self, key: str, value: bytes) -> None:
        workflow_type = paused_type(key)
        if workflow_type is None:
            return
        try:
            pause = decode_type_pause(value)
        except MessageError as exc:
            log.warning("type pause %s does not decode (%s); the type counts as paused", key, exc)
            pause = TypePause(workflow_type, "", "(a damaged record)", 0.0)
        self._paused[workflow_type] = pause
