"""The ``WORKFLOW_DEFINITIONS`` bucket: every version of every workflow type.

A version, once registered, never changes: registering the same content
again is a no-op, and different content under an existing version is refused
(:class:`VersionConflictError`). That immutability is what lets every process
cache compiled definitions forever, and what lets an instance run the version
it started with however many versions come after.
"""

from __future__ import annotations

import logging

import trio

from transport import ConflictError, KeyValue, KVOp

from ..core import Definition, DefinitionError, parse_definition
from ..errors import RequestError
from ..wire import CodecError, MessageError, decode_definition, definition_key, encode_definition

__all__ = ["DefinitionStore", "VersionConflictError"]

log = logging.getLogger("actors.definitions")


class VersionConflictError(RequestError, ValueError, http_status=409, http_type="VersionConflict"):
    """That version of the type is already registered with different content."""


class DefinitionStore:
    """Registers definitions and looks them up, caching what it has compiled."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._compiled: dict[tuple[str, int], Definition] = {}
        self._newest: dict[str, int] = {}
        #: One listing of a type's versions at a time (see ``get``).
        self._listing: dict[str, trio.Lock] = {}

    async def register(self, definition: Definition) -> Definition:
        """Store ``definition``; idempotent for identical content.

        Raises :class:`VersionConflictError` if the version holds other content.
        """
        key = definition_key(definition.type, definition.version)
        data = encode_definition(definition.to_data())
        try:
            await self._kv.create(key, data)
        except ConflictError:
            entry = await self._kv.get(key)
            if entry is None or entry.value != data:
                raise VersionConflictError(
                    f"{definition.type} version {definition.version} is already registered "
                    "with different content; register it as a new version"
                ) from None
        self._remember(definition)
        return definition

    def _remember(self, definition: Definition) -> None:
        self._compiled[(definition.type, definition.version)] = definition
        if definition.version > self._newest.get(definition.type, 0):
            self._newest[definition.type] = definition.version

    async def get(self, workflow_type: str, version: int = 0) -> Definition | None:
        """The definition of ``workflow_type`` at ``version`` (0: the newest known).

        ``None`` if there is none. A stored definition that no longer parses
        (damaged, or written by a newer engine) counts as missing, so the
        newest version is the newest one that parses: a bad entry under a
        new version number must not make every start of the type fail.
        """
        if version:
            return await self._load(workflow_type, version)
        found = await self._load_newest(workflow_type)
        if found is not None:
            return found
        # Callers that miss together (a burst of starts on a new client)
        # make one listing, not one each: a listing is a consumer on the
        # server, which caps them, and the first one fills the cache.
        lock = self._listing.setdefault(workflow_type, trio.Lock())
        try:
            async with lock:
                found = await self._load_newest(workflow_type)
                if found is not None:
                    return found
                for candidate in reversed(await self.versions(workflow_type)):
                    found = await self._load(workflow_type, candidate)
                    if found is not None:
                        return found
                return None
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._listing.pop(workflow_type, None)

    async def _load_newest(self, workflow_type: str) -> Definition | None:
        """The newest version this store knows of, if it knows one and it loads."""
        newest = self._newest.get(workflow_type, 0)
        return await self._load(workflow_type, newest) if newest else None

    async def _load(self, workflow_type: str, version: int) -> Definition | None:
        """That exact version, compiled (``None`` if absent or if it does not parse)."""
        cached = self._compiled.get((workflow_type, version))
        if cached is not None:
            return cached
        entry = await self._kv.get(definition_key(workflow_type, version))
        if entry is None:
            return None
        definition = _parsed(entry.value)
        if definition is None or (definition.type, definition.version) != (
            workflow_type,
            version,
        ):
            return None
        self._remember(definition)
        return definition

    async def versions(self, workflow_type: str) -> list[int]:
        """Every registered version of ``workflow_type``, ascending."""
        found: list[int] = []
        for key in await self._kv.keys(f"{workflow_type}.*"):
            suffix = key.rsplit(".", 1)[-1]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    async def types(self) -> dict[str, list[int]]:
        """Every registered type with its versions."""
        found: dict[str, list[int]] = {}
        for key in await self._kv.keys():
            workflow_type, _, suffix = key.rpartition(".")
            if workflow_type and suffix.isdigit():
                found.setdefault(workflow_type, []).append(int(suffix))
        return {name: sorted(versions) for name, versions in sorted(found.items())}

    async def follow(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the newest-version cache current by watching the bucket; runs until cancelled.

        A start that names no version runs the newest version this process
        has seen; following the bucket keeps that within a watch hop of the
        latest registration.
        """
        async with self._kv.watch() as changes:
            task_status.started()
            async for change in changes:
                if change.op is not KVOp.PUT:
                    continue
                workflow_type, _, suffix = change.key.rpartition(".")
                if suffix.isdigit() and int(suffix) > self._newest.get(workflow_type, 0):
                    # Only a version that parses becomes the newest (see get).
                    definition = _parsed(change.value)
                    if definition is not None and (definition.type, definition.version) == (
                        workflow_type,
                        int(suffix),
                    ):
                        self._remember(definition)
                    else:
                        log.warning(
                            "definition %s does not parse as that type and version; "
                            "it counts as missing",
                            change.key,
                        )


def _parsed(data: bytes) -> Definition | None:
    """The definition stored as ``data``, or ``None`` if it does not parse."""
    try:
        return parse_definition(decode_definition(data))
    except (DefinitionError, MessageError, CodecError):
        return None
