"""Reading a JetStream stream's stored messages without a consumer (``read``).

* **Batched direct get** (nats-server 2.11+, streams with ``allow_direct``,
  which ``ensure_stream`` sets): one request to ``$JS.API.DIRECT.GET.<stream>``
  with ``seq``, ``next_by_subj`` and ``batch`` returns up to ``batch`` matching
  messages, then a ``204 EOB`` status carrying how many more match. A page is
  one round trip; the reader asks again only when the server cut the batch short
  (``max_bytes``) or a message was lost on the way.
* **Message get** (older servers, and streams without direct get, which answer
  the direct get with "no responders"): ``$JS.API.STREAM.MSG.GET.<stream>``
  with ``seq`` and ``next_by_subj`` returns one message, so a page is one round
  trip per message, made back to back. The stream leader answers it, and a
  missing stream is told apart from an empty subject here.

Every replica of a stream answers direct gets, so on a cluster a read may
lag the latest writes by the replication delay. On servers without message
schedules (before 2.12) a delayed message is stored, and read, at once.

No consumer is created, so nothing is left on the server if the caller goes
away: an abandoned read stops at its next request. The algorithm is the same
for either client; the client gives :class:`PageReader` its way of making a
request (:class:`Request`), and nats-py runs the whole read on its loop thread.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from .._errors import ConnectionLostError, TransportError
from .._specs import SCHEDULE_PREFIX, StoredMessage
from ._api import (
    API,
    BATCH_BYTES,
    DIRECT_HEADERS,
    NO_MESSAGE,
    WireMsg,
    api_error,
    epoch,
    parse_headers,
)

__all__ = ["PageReader", "Request"]

_SCHEDULES = SCHEDULE_PREFIX + "."


class Request(Protocol):
    """How a client makes a reader's requests: ``await request(subject, payload, batch=...)``.

    Returns the reply. With a list for ``batch`` the reply is a batch (a
    batched direct get): its messages are appended to the list as they
    come, and the status message that ends it is returned.
    """

    def __call__(
        self, subject: str, payload: bytes, /, *, batch: list[Any] | None = None
    ) -> Awaitable[WireMsg]: ...


class PageReader:
    """One ``read`` call, its requests made by ``request``: :meth:`run` returns the page."""

    def __init__(
        self,
        request: Request,
        stream: str,
        subject: str,
        start_seq: int,
        limit: int,
        *,
        direct: bool,
    ) -> None:
        self._ask = request
        self._stream = stream
        self._subject = subject
        self._limit = limit
        self._direct = direct
        #: The next sequence to ask for.
        self._seq = start_seq
        self._found: list[StoredMessage] = []
        #: Set when the caller stops waiting (read across threads by the
        #: nats-py client: at worst one more request is made).
        self.abandoned = False

    async def _request(
        self, api: str, body: Mapping[str, Any], batch: list[WireMsg] | None = None
    ) -> WireMsg:
        """One request to ``$JS.API.<api>``; its reply (the status ending a batch)."""
        return await self._ask(f"{API}.{api}", json.dumps(body).encode(), batch=batch)

    async def run(self) -> list[StoredMessage]:
        if not self._direct or not await self._direct_get():
            await self._message_get()
        return self._found

    def _wanted(self) -> bool:
        return len(self._found) < self._limit and not self.abandoned

    def _keep(
        self, subject: str, data: bytes, seq: int, stamp: str, headers: Mapping[str, str]
    ) -> None:
        # Pending delayed messages (server schedules) are the transport's own
        # bookkeeping: they are read once due, on their target subject.
        if not subject.startswith(_SCHEDULES):
            self._found.append(StoredMessage(subject, data, seq, epoch(stamp), headers))

    async def _direct_get(self) -> bool:
        """Read by batched direct gets; False if the stream does not answer them."""
        while self._wanted():
            batch: list[WireMsg] = []
            end = await self._request(
                f"DIRECT.GET.{self._stream}",
                {
                    "seq": self._seq,
                    "next_by_subj": self._subject,
                    "batch": self._limit - len(self._found),
                    "max_bytes": BATCH_BYTES,
                },
                batch,
            )
            status = end.status
            if status == "503":
                # No responders: no such stream, or one made without direct
                # gets. The message get below tells which, from where we are.
                return False
            if status == "404":
                return True  # nothing (more) matches
            if status != "204":
                description = end.description or "direct get failed"
                raise api_error({"code": int(status or 0), "description": description})
            # Each message names the one before it in the batch: a gap means
            # one was lost between the server and us (a slow subscription).
            previous = 0
            for msg in batch:
                headers = msg.headers or {}
                if int(headers.get("Nats-Last-Sequence", -1)) != previous:
                    break
                previous = int(headers["Nats-Sequence"])
                own = {k: v for k, v in headers.items() if k not in DIRECT_HEADERS}
                self._keep(
                    headers["Nats-Subject"], msg.data, previous, headers["Nats-Time-Stamp"], own
                )
                if not self._wanted():
                    return True
            end_headers = end.headers or {}
            if previous == 0:
                raise TransportError(f"reading {self._stream}: a direct get lost its messages")
            self._seq = previous + 1
            whole = previous == int(end_headers.get("Nats-Last-Sequence", -1))
            if whole and end_headers.get("Nats-Num-Pending") == "0":
                return True
        return True

    async def _message_get(self) -> None:
        """Read one message per request, each from after the one before."""
        while self._wanted():
            reply = await self._request(
                f"STREAM.MSG.GET.{self._stream}",
                {"seq": self._seq, "next_by_subj": self._subject},
            )
            if reply.status == "503":
                raise ConnectionLostError("JetStream is not available")
            resp = json.loads(reply.data)
            error = resp.get("error")
            if error is not None:
                if int(error.get("err_code", 0)) == NO_MESSAGE:
                    return  # nothing (more) matches; a missing stream is 10059
                raise api_error(error)
            message = resp["message"]
            seq = int(message["seq"])
            raw = base64.b64decode(message.get("hdrs") or b"")
            data = base64.b64decode(message.get("data") or b"")
            self._keep(message["subject"], data, seq, message["time"], parse_headers(raw))
            self._seq = seq + 1
