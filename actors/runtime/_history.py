"""Reading an instance's history from the history stream, page by page, without a consumer."""

from __future__ import annotations

from typing import Any, Final

from transport import Transport

from ..wire import HISTORY_STREAM, MessageError, decode_history, history_subject

__all__ = ["HISTORY_LIMIT", "read_history"]

#: The most records ``Client.history`` returns unless told otherwise (and the
#: API's ``GET /workflows/{id}/history`` at all).
HISTORY_LIMIT: Final = 10_000
#: Messages read per page.
_PAGE: Final = 1000


async def read_history(transport: Transport, instance_id: str, limit: int) -> list[dict[str, Any]]:
    """The records of ``instance_id``, oldest first, at most ``limit``; see ``Client.history``."""
    subject = history_subject(instance_id)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    start = 1
    while len(records) < limit:
        size = min(_PAGE, limit - len(records))
        page = await transport.read(HISTORY_STREAM, subject, start_seq=start, limit=size)
        for message in page:
            try:
                found = decode_history(message.data)
            except MessageError:
                # Only the orchestrator writes records, from states it
                # stored; one that does not decode was put there by
                # another publisher (or a newer engine). Nothing depends
                # on the history (the state is the truth), so the rest is
                # more use to the reader than an error.
                continue
            for record in found:
                # A record published again after a crash, later than the
                # broker's duplicate window, is the same record once more.
                if record["seq"] in seen:
                    continue
                seen.add(record["seq"])
                record.setdefault("instance", instance_id)
                records.append(record)
                if len(records) == limit:
                    break
            if len(records) == limit:
                break
        if len(page) < size:
            break
        start = page[-1].stream_seq + 1
    return records
