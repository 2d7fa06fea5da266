"""Worker presence: the entries of ``WORKER_PRESENCE``, one per live worker process.

A worker process writes its entry under its own id when it starts serving,
rewrites it every few seconds (so that ``seen`` advances) and deletes it when
it stops cleanly. One that crashed stops rewriting it: readers take the entry
for dead once ``seen`` is older than the entry's ``ttl``, and the bucket drops
it ``PRESENCE_TTL`` seconds after its last write. The value is a small JSON
object, not a CBOR envelope, so that a worker written in any language (or a
person with the ``nats`` CLI) can announce itself; ``docs/wire.md`` gives
its fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from ..core import check_name
from ._fields import _LIST, _NUMBER, _STR, MessageError, _Fields, _names
from ._json import JsonError, loads
from ._names import PRESENCE_TTL

__all__ = ["WorkerPresence", "decode_presence", "encode_presence", "presence_key"]

#: What a worker id (and so a key of ``WORKER_PRESENCE``) may hold: a single
#: key token of every broker, at most 200 bytes.
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """One worker process as it last announced itself.

    ``seen`` and ``started_at`` are seconds since the epoch on the worker's
    clock; the entry counts as live while ``seen`` is at most ``ttl``
    seconds old (see :meth:`live`).
    """

    id: str
    host: str
    pid: int
    started_at: float
    #: The activity types it serves, sorted.
    activities: tuple[str, ...]
    #: Tasks of one type it runs at once.
    concurrency: int
    #: Tasks it was running when it last wrote the entry.
    running: int
    #: The engine's version it runs (any text for a worker of another kind).
    version: str
    seen: float
    #: Seconds after ``seen`` the entry is taken for dead: a few of its intervals.
    ttl: float = PRESENCE_TTL

    def live(self, now: float) -> bool:
        """Whether the entry was rewritten within its ``ttl`` before ``now``.

        ``now`` is the reader's clock: the machines' clocks must agree to
        well within the ttl (NTP does). A ``seen`` in the future counts as
        live rather than as a reason to drop a worker.
        """
        return now - self.seen <= self.ttl

    def to_data(self) -> dict[str, Any]:
        """The entry as plain data: its fields, as the bucket's JSON holds them."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "activities": list(self.activities),
            "concurrency": self.concurrency,
            "running": self.running,
            "version": self.version,
            "seen": self.seen,
            "ttl": self.ttl,
        }


def presence_key(worker_id: str) -> str:
    """The key of ``WORKER_PRESENCE`` for ``worker_id``; raises :class:`MessageError`
    for an id that is not one key token (letters, digits, ``-``, ``_``)."""
    if not isinstance(worker_id, str) or _ID.fullmatch(worker_id) is None:
        raise MessageError(
            f"a worker id must be 1 to 200 letters, digits, '-' or '_', got {worker_id!r}"
        )
    return worker_id


def encode_presence(presence: WorkerPresence) -> bytes:
    """The entry's value: a compact JSON object (its fields as ``docs/wire.md`` lists them)."""
    return json.dumps(presence.to_data(), separators=(",", ":"), allow_nan=False).encode()


def decode_presence(key: str, data: bytes) -> WorkerPresence:
    """The entry stored under ``key``. Raises :class:`MessageError` saying what is wrong.

    Required: ``id`` (equal to the key), ``activities`` (a list of activity
    names), ``seen`` (a finite number). The rest default when absent or
    null: ``host`` ``""``, ``pid`` 0, ``started_at`` ``seen``,
    ``concurrency`` 1, ``running`` 0, ``version`` ``""``, ``ttl``
    ``PRESENCE_TTL``. Fields not listed are ignored, for later additions.
    """
    try:
        body = loads(data)
    except JsonError as exc:
        raise MessageError(f"worker entry {key!r} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError(f"worker entry {key!r} must be a JSON object")
    try:
        return _presence(key, _Fields(body))
    except MessageError as exc:
        raise MessageError(f"worker entry {key!r}: {exc}") from None


def _presence(key: str, fields: _Fields) -> WorkerPresence:
    worker_id = presence_key(fields.text("id"))
    if worker_id != key:
        raise MessageError(f"its id {worker_id!r} is not its key")
    activities = fields.require("activities", _LIST)
    for index, name in enumerate(activities):
        if not isinstance(name, str):
            raise MessageError(f"field 'activities[{index}]' must be a string")
        with _names(f"activities[{index}]: "):
            check_name("activity", name)
    seen = _instant(fields, "seen", None)
    ttl = _instant(fields, "ttl", PRESENCE_TTL)
    if ttl <= 0:
        raise fields.wrong("ttl", "a number of seconds above 0")
    return WorkerPresence(
        id=worker_id,
        host=fields.get("host", _STR, ""),
        pid=fields.count("pid", default=0, least=0, wanted="an integer >= 0"),
        started_at=_instant(fields, "started_at", seen),
        activities=tuple(sorted(set(activities))),
        concurrency=fields.count("concurrency", default=1, least=1, wanted="an integer >= 1"),
        running=fields.count("running", default=0, least=0, wanted="an integer >= 0"),
        version=fields.get("version", _STR, ""),
        seen=seen,
        ttl=ttl,
    )


def _instant(fields: _Fields, name: str, default: float | None) -> float:
    """A finite number (seconds); ``default`` when absent or null (required if ``None``)."""
    if default is None:
        value: Any = fields.require(name, _NUMBER)
    else:
        value = fields.get(name, _NUMBER, default)
    if not math.isfinite(value):
        raise fields.wrong(name, "a finite number")
    return float(value)
