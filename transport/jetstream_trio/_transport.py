"""The JetStream transport on the Trio client of the NATS protocol.

Everything runs in the Trio thread: the client (:mod:`transport.natsproto`)
is a task of the transport's nursery, a request is a write to its buffer
and an event to wait on, and a subscription hands each message to a
callback that queues it for its consumer or watch. The JetStream logic
itself is :mod:`transport.jscore`, shared with the nats-py implementation;
this module supplies publishing and reading, and the subscriptions of pull
consumers and watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from .._errors import TransportClosedError, TransportError
from .._specs import PubAck, StoredMessage, check_read
from ..jscore import (
    KVCore,
    PageReader,
    Prepared,
    PullerCore,
    WatcherCore,
    WireMsg,
    reply_meta,
)
from ..natsproto import Msg, Pending, Subscription
from ._connection import Connection

__all__ = ["JetStreamTransport", "open_jetstream_trio"]


class _Puller(PullerCore["JetStreamTransport"]):
    """A pull consumer whose inbox is a subscription of the Trio client."""

    def __init__(self, transport: JetStreamTransport, *args: Any) -> None:
        super().__init__(transport, *args)
        self._client = transport._client
        self._sub: Subscription | None = None
        self._retired = False

    async def subscribe(self) -> None:
        self._sub = self._client.subscribe(self._inbox + ".>", self._on_msg)

    def _on_msg(self, msg: Msg) -> None:
        if self._retired:
            # The owner has left: hand back at once what the server sent
            # before it learnt so (see hand_back).
            if msg.status is None and msg.reply and reply_meta(msg.reply) is not None:
                with suppress(TransportClosedError):
                    self._client.post(msg.reply, b"-NAK")
            return
        self.arrived(msg)
        self.wake()

    async def _retire(self) -> None:
        # From here on arrivals are handed back, not queued. Draining tells
        # the server to stop (which also ends the pull requests still open
        # there) and waits for everything it sent before that.
        self._retired = True
        if self._sub is not None:
            await self._client.drain(self._sub)

    def _post(self, subject: str, payload: bytes, reply: str) -> None:
        self._client.post(subject, payload, reply=reply)


class _Watcher(WatcherCore):
    """A watch whose push consumer delivers to a subscription of the Trio client."""

    def __init__(self, transport: JetStreamTransport, *args: Any, **kwargs: Any) -> None:
        super().__init__(transport, *args, **kwargs)
        self._client = transport._client
        self._sub: Subscription | None = None

    async def _listen(self, inbox: str, generation: int) -> None:
        def on_msg(msg: Msg) -> None:
            if generation == self.generation:
                self._arrived.append(msg)
                self.wake()

        self._sub = self._client.subscribe(inbox, on_msg)

    async def _unlisten(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self._client.unsubscribe(sub)


class _KV(KVCore):
    watcher = _Watcher


class JetStreamTransport(Connection):
    """:class:`Transport` over NATS JetStream, on the Trio client.

    Opened by :func:`open_jetstream_trio`.
    """

    _puller_class = _Puller
    _kv_class = _KV

    async def _publish_prepared(self, prepared: Sequence[Prepared]) -> list[PubAck]:
        requests = self._client.requests
        if len(prepared) == 1:
            # One request and its reply, without a batch's bookkeeping: a
            # workflow is mostly a chain of single publishes.
            subject, data, headers = prepared[0]
            return await self._receipts(
                prepared, lambda _: requests.request(subject, data, headers)
            )
        started: list[Pending | TransportError] = []
        for subject, data, headers in prepared:
            try:
                started.append(requests.start(subject, data, headers))
            except TransportError as exc:  # this one failed; the others go on
                started.append(exc)

        async def reply_of(index: int) -> WireMsg:
            outcome = started[index]
            if isinstance(outcome, TransportError):
                raise outcome
            return await requests.wait(outcome)

        try:
            return await self._receipts(prepared, reply_of)
        finally:
            for outcome in started:
                if isinstance(outcome, Pending):
                    requests.forget(outcome)  # what was not waited for: cancelled

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        self._check_open()
        check_read(stream, subject, start_seq, limit)
        reader = PageReader(
            self._client.requests.request,
            stream,
            subject,
            start_seq,
            limit,
            direct=self._supports_batch_get,
        )
        return await reader.run()


#: Connect to NATS on the Trio client (see :meth:`JetStreamBase.opened`).
open_jetstream_trio = JetStreamTransport.opened
