"""The NATS JetStream transport on nats-py, which runs on asyncio, driven from Trio.

This package is the only place that imports asyncio or nats. The rest of the
program sees Trio calls that raise :class:`TransportError` subclasses. The
JetStream logic is :mod:`transport.jscore`, shared with the transport on the
Trio client; this package supplies nats-py's side of it: ``_connection.py``
(connecting, reconnecting, closing, requests), this module (publishing and
reading), ``_wire.py`` (the bridge between the two threads and the wire
helpers), the subscriptions of pull consumers (``_consume.py``) and watches
(``_kv.py``), ``_read.py`` and ``_tls.py``.

nats-py runs on a stock asyncio loop in a thread of its own
(:class:`_LoopThread`), and every crossing between the two threads is paid
once per batch:

* Outgoing work (publishes, KV writes and reads, acks, pull requests) is queued
  by Trio tasks into :class:`_Bridge`, whose pump hands everything queued in
  *one* crossing. Inside asyncio each operation only writes to nats-py's
  outgoing buffer and, for requests, registers a future on a shared reply
  inbox (:class:`_Replies`); no asyncio task is created per operation.
* Incoming messages (replies, pulled messages, watch updates) arrive in nats-py
  subscription callbacks on the loop thread, which queue them and wake Trio
  once for everything queued since its last wake-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.msg import Msg

from .._specs import (
    PubAck,
    StoredMessage,
    check_read,
)
from ..jscore import PageReader, Prepared, WireMsg
from ._connection import Connection
from ._consume import _Puller
from ._kv import _JetStreamKV
from ._read import on_the_loop
from ._wire import _Received, _translate


class JetStreamTransport(Connection):
    """:class:`Transport` over NATS JetStream. Opened by :func:`open_jetstream`."""

    _puller_class = _Puller
    _kv_class = _JetStreamKV

    # -- publishing --------------------------------------------------------

    async def _publish_prepared(self, prepared: Sequence[Prepared]) -> list[PubAck]:
        replies = self._replies
        assert replies is not None

        async def start_all() -> asyncio.Future[list[Msg | BaseException]]:
            futures: list[asyncio.Future[Msg]] = []
            for subject, data, headers in prepared:
                try:
                    futures.append(await replies.start(subject, data, headers))
                except Exception as exc:  # this one failed; the others go on
                    failed = asyncio.get_running_loop().create_future()
                    failed.set_exception(exc)
                    futures.append(failed)
            return asyncio.gather(*futures, return_exceptions=True)

        outcomes: list[Msg | BaseException] = await self._bridge.call(start_all)

        async def reply_of(index: int) -> WireMsg:
            outcome = outcomes[index]
            if isinstance(outcome, BaseException):
                raise _translate(outcome, connected=self._nc.is_connected)
            return _Received(outcome)

        return await self._receipts(prepared, reply_of)

    # -- reading -----------------------------------------------------------

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        """One crossing to the loop thread and back per call, whatever requests
        the reading (:class:`~transport.jscore.PageReader`) makes there."""
        self._check_open()
        check_read(stream, subject, start_seq, limit)
        replies = self._replies
        assert replies is not None
        reader = PageReader(
            on_the_loop(replies), stream, subject, start_seq, limit, direct=self._supports_batch_get
        )
        try:
            found: list[StoredMessage] = await self._bridge.call(reader.run, spawn=True)
        except BaseException:
            reader.abandoned = True  # the task stops before its next request
            raise
        return found


#: Connect to NATS on nats-py (see :meth:`JetStreamBase.opened`).
open_jetstream = JetStreamTransport.opened


__all__ = ["JetStreamTransport", "open_jetstream"]
