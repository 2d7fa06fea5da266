"""JetStream pull consumers: credit-based pull requests feeding a Trio channel."""

from __future__ import annotations

import functools
import json
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import trio
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._errors import (
    TransportClosedError,
    TransportError,
)
from .._interface import Delivery, Settlement
from .._specs import (
    DELIVER_AT_HEADER,
    ConsumerSpec,
)
from .._subjects import check_consumer_filters
from ._wire import (
    _API,
    _HEARTBEAT,
    _PULL_EXPIRES,
    _dur,
    _new_inbox,
    _reply_meta,
    _status,
    log,
)

if TYPE_CHECKING:
    from ._transport import JetStreamTransport


# --------------------------------------------------------------------------
# Pull consumers.


class _JetStreamDelivery(Delivery):
    __slots__ = ("_puller", "_reply", "_transport")

    def __init__(
        self,
        transport: JetStreamTransport,
        msg: Msg,
        delivered: int,
        stream_seq: int,
        stored_at: float,
        puller: _Puller | None = None,
    ) -> None:
        super().__init__(msg.subject, msg.data, msg.headers or {}, delivered, stream_seq, stored_at)
        self._transport = transport
        self._reply = msg.reply
        self._puller = puller

    async def _settle(self, how: Settlement, delay: float | None) -> None:
        if how is Settlement.ACK:
            payload = b"+ACK"
        elif how is Settlement.TERM:
            payload = b"+TERM"
        elif delay:
            payload = b"-NAK " + json.dumps({"delay": _dur(delay)}).encode()
        else:
            payload = b"-NAK"
        if self._puller is not None:
            self._puller.settled(self)
        await self._settle_raw(payload)

    async def _settle_raw(self, payload: bytes) -> None:
        # After close, unsettled deliveries return by themselves after ack_wait.
        with suppress(TransportClosedError):
            self._transport._publish_raw(self._reply, payload)

    async def _touch(self) -> None:
        await self._settle_raw(b"+WPI")


class _Puller:
    """Keeps pull requests open for a durable consumer and feeds a channel.

    Credit-based: messages requested but not yet arrived plus those arrived
    but not yet taken add up to at most ``buffer``. The channel itself has no
    buffer: handing each delivery over is a rendezvous with the owner, which is
    what tells this task that credit came free (a buffered Trio channel gives
    no signal when its owner receives). A new request is made once half the
    credit is free. Requests carry idle heartbeats; silence for two
    heartbeats, or a reconnect, means the server may have forgotten them,
    and they are made again (after re-creating the consumer if need be).
    """

    def __init__(
        self, transport: JetStreamTransport, stream: str, spec: ConsumerSpec, buffer: int
    ) -> None:
        self._t = transport
        self._stream = stream
        self._spec = spec
        self._buffer = buffer
        self.send, self.receive = trio.open_memory_channel[Delivery](0)
        self._inbox = _new_inbox()
        self._next_subject = f"{_API}.CONSUMER.MSG.NEXT.{stream}.{spec.durable}"
        self._sub: Subscription | None = None
        self._arrived: deque[Msg] = deque()
        self._wake = trio.Event()
        # Requests made before a reset belong to an older epoch: their status
        # replies are ignored (their messages, if any still come, are real).
        self._epoch = 0
        self._requests = 0
        self._outstanding = 0
        self._unsettled: set[_JetStreamDelivery] = set()
        #: The consumer must be (re)created before pulling makes sense.
        self.needs_consumer = False
        #: Set (on the loop thread) once the owner has left.
        self._retired = False

    def _config(self) -> dict[str, Any]:
        spec = self._spec
        config: dict[str, Any] = {
            "durable_name": spec.durable,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": _dur(spec.ack_wait),
            "max_deliver": spec.max_deliver or -1,
            "max_ack_pending": spec.max_ack_pending,
            "max_waiting": 512,
        }
        filters = list(spec.filter_subjects)
        delayed = self._t._streams.get(self._stream)
        if not filters and delayed is not None and delayed.allow_delayed:
            filters = list(delayed.subjects)  # never the schedule subjects
        if len(filters) == 1:
            config["filter_subject"] = filters[0]
        elif filters:
            config["filter_subjects"] = filters
        return config

    async def check_filters(self) -> None:
        """Refuse filters the server would accept but that can never match."""
        filters = self._spec.filter_subjects
        if not filters:
            return
        known = self._t._streams.get(self._stream)
        if known is not None:
            subjects = known.subjects
        else:
            info = await self._t._api(f"STREAM.INFO.{self._stream}")
            subjects = tuple(info["config"].get("subjects") or ())
        check_consumer_filters(self._spec.durable, filters, self._stream, subjects)

    async def ensure_consumer(self) -> None:
        body = {"stream_name": self._stream, "config": self._config()}
        await self._t._api(f"CONSUMER.CREATE.{self._stream}.{self._spec.durable}", body)

    async def subscribe(self) -> None:
        nc = self._t._nc

        async def sub() -> Subscription:
            return await nc.subscribe(self._inbox + ".>", cb=self._on_msg)

        self._sub = await self._t._bridge.call(sub)

    async def _on_msg(self, msg: Msg) -> None:
        if self._retired:
            # The owner has left: hand back at once what the server sent
            # before it learnt so (see hand_back).
            if _status(msg) is None and _reply_meta(msg.reply) is not None:
                await self._t._nc.publish(msg.reply, b"-NAK")
            return
        # On the loop thread: deque appends are thread-safe, and one Trio
        # wake-up covers a whole burst of messages.
        self._arrived.append(msg)
        self._t._thread.to_trio(self.wake)

    async def _retire(self, sub: Subscription) -> None:
        # On the loop thread, so no _on_msg is halfway through an append:
        # from here on arrivals are handed back, not queued. Draining tells
        # the server to stop (which also ends the pull requests still open
        # there) and waits for everything it sent before that.
        self._retired = True
        await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped

    def wake(self) -> None:
        self._wake.set()

    def settled(self, delivery: _JetStreamDelivery) -> None:
        self._unsettled.discard(delivery)

    def _room(self) -> int:
        return self._buffer - len(self._arrived) - self._outstanding

    def _request(self) -> None:
        room = self._room()
        if room <= 0 or (self._outstanding and room < max(1, self._buffer // 2)):
            return
        self._requests += 1
        self._outstanding += room
        request = {
            "batch": room,
            "expires": _dur(_PULL_EXPIRES),
            "idle_heartbeat": _dur(_HEARTBEAT),
        }
        reply = f"{self._inbox}.{self._epoch}.{self._requests}"
        self._t._bridge.post(self._next_subject, json.dumps(request).encode(), reply)

    def _reset(self) -> None:
        self._epoch += 1
        self._outstanding = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._t._wakers.add(self.wake)
        try:
            await self._loop()
        except TransportClosedError:
            pass
        finally:
            self._t._wakers.discard(self.wake)
            self.send.close()

    async def _loop(self) -> None:
        heard = trio.current_time()
        reconnected = self._t._reconnected
        while not self._t._closing:
            if self._outstanding == 0:
                heard = trio.current_time()  # the silence clock starts now
            self._request()
            with trio.move_on_after(_HEARTBEAT):
                await self._wake.wait()
            self._wake = trio.Event()
            while self._arrived:
                await self._handle(self._arrived.popleft())
                self._request()
                heard = trio.current_time()
            silent = trio.current_time() - heard > 2 * _HEARTBEAT + 0.5
            if reconnected.is_set() or silent or self.needs_consumer:
                # The server may have restarted, failed over or lost the
                # consumer: it forgot the requests, and maybe the consumer.
                reconnected = self._t._reconnected
                self._reset()
                self.needs_consumer = not await self._ensure_quietly()
                if self.needs_consumer:
                    await trio.sleep(_HEARTBEAT)  # back off before the next try

    async def _ensure_quietly(self) -> bool:
        """Create or update the consumer; False (logged) if the broker failed."""
        try:
            await self.ensure_consumer()
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.debug("re-creating consumer %s failed: %r", self._spec.durable, exc)
            return False
        return True

    async def _handle(self, msg: Msg) -> None:
        status = _status(msg)
        if status is not None:
            if not msg.subject.startswith(f"{self._inbox}.{self._epoch}."):
                return  # about a request from before a reset
            headers = msg.headers or {}
            if status == "100":
                return  # an idle heartbeat
            if status in ("408", "409"):
                # The request ended; what it still owed will not come.
                owed = int(headers.get("Nats-Pending-Messages", "0"))
                self._outstanding = max(0, self._outstanding - owed)
                if "Consumer Deleted" in headers.get("Description", ""):
                    self.needs_consumer = True
            else:
                # 503 (no responders) and the like: the consumer is not there.
                self.needs_consumer = True
            return
        meta = _reply_meta(msg.reply)
        if meta is None:
            # Not a delivery (seen: empty replies during a cluster failover):
            # note it and make sure the consumer is there.
            log.debug("unexpected message on pull inbox: %r", msg.data[:200])
            self.needs_consumer = True
            return
        self._outstanding = max(0, self._outstanding - 1)
        delivered, stream_seq, _cseq, _pending, stored_at = meta
        due = (msg.headers or {}).get(DELIVER_AT_HEADER)
        if due is not None:
            wait = float(due) - self._t.now()
            if wait > 0.001:
                # Not yet due (a server without schedules): hand it back.
                early = _JetStreamDelivery(self._t, msg, delivered, stream_seq, stored_at)
                await early.nak(wait)
                return
        delivery = _JetStreamDelivery(self._t, msg, delivered, stream_seq, stored_at, self)
        self._unsettled.add(delivery)
        await self.send.send(delivery)

    async def hand_back(self) -> None:
        """Nak what is buffered or in hand, and stop receiving."""
        self.send.close()
        if self._sub is not None:
            # Unsubscribing outright would drop a message already on its way
            # (a delivery the owner just handed back, redelivered to this
            # very inbox): it would wait out the whole ack wait.
            retire = functools.partial(self._retire, self._sub)
            with suppress(TransportError):
                await self._t._bridge.call(retire)
        pending: list[_JetStreamDelivery] = list(self._unsettled)
        while self._arrived:  # popleft, not iteration: the loop thread may append
            msg = self._arrived.popleft()
            meta = _reply_meta(msg.reply)
            if _status(msg) is None and meta is not None:
                pending.append(_JetStreamDelivery(self._t, msg, meta[0], meta[1], meta[4]))
        for delivery in pending:
            await delivery.nak()
        self.receive.close()
