"""JetStream pull consumers: credit-based pull requests feeding a Trio channel.

The logic is the same whichever client carries the messages; a client's
subclass of :class:`PullerCore` supplies how to subscribe to the pull
inbox, how to stop receiving, and how to post a pull request.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Generic, Protocol, TypeVar

import trio

from .._errors import TransportClosedError, TransportError
from .._interface import Delivery, Settlement
from .._specs import DELIVER_AT_HEADER, ConsumerSpec, StreamSpec
from .._subjects import check_consumer_filters
from ._api import API, HEARTBEAT, PULL_EXPIRES, WireMsg, dur, new_inbox, reply_meta

__all__ = ["JsDelivery", "PullHost", "PullerCore", "SettleHost", "consumer_config"]

log = logging.getLogger("transport.jetstream")


class SettleHost(Protocol):
    """What a delivery needs of its transport: a publish nobody waits for."""

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None: ...


class PullHost(SettleHost, Protocol):
    """What a pull consumer needs of its transport."""

    _streams: dict[str, StreamSpec]
    _wakers: set[Callable[[], None]]

    @property
    def _reconnected(self) -> trio.Event: ...

    @property
    def _ended(self) -> bool: ...

    async def _api(self, subject: str, body: Any = None) -> dict[str, Any]: ...

    def now(self) -> float: ...


class JsDelivery(Delivery):
    """A delivery settled by publishing to its ``$JS.ACK`` reply subject."""

    __slots__ = ("_puller", "_reply", "_transport")

    def __init__(
        self,
        transport: SettleHost,
        msg: WireMsg,
        meta: tuple[int, int, int, int, float],
        puller: PullerCore[Any] | None = None,
    ) -> None:
        delivered, stream_seq, _cseq, _pending, stored_at = meta
        super().__init__(msg.subject, msg.data, msg.headers or {}, delivered, stream_seq, stored_at)
        self._transport = transport
        self._reply = msg.reply or ""
        self._puller = puller

    async def _settle(self, how: Settlement, delay: float | None) -> None:
        if how is Settlement.ACK:
            payload = b"+ACK"
        elif how is Settlement.TERM:
            payload = b"+TERM"
        elif delay:
            payload = b"-NAK " + json.dumps({"delay": dur(delay)}).encode()
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


def consumer_config(spec: ConsumerSpec, stream: StreamSpec | None) -> dict[str, Any]:
    """The server configuration of a durable pull consumer (``stream``: its spec, if known)."""
    config: dict[str, Any] = {
        "durable_name": spec.durable,
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "ack_wait": dur(spec.ack_wait),
        "max_deliver": spec.max_deliver or -1,
        "max_ack_pending": spec.max_ack_pending,
        "max_waiting": 512,
    }
    filters = list(spec.filter_subjects)
    if not filters and stream is not None and stream.allow_delayed:
        filters = list(stream.subjects)  # never the schedule subjects
    if len(filters) == 1:
        config["filter_subject"] = filters[0]
    elif filters:
        config["filter_subjects"] = filters
    return config


H = TypeVar("H", bound=PullHost)


class PullerCore(Generic[H]):
    """Keeps pull requests open for a durable consumer and feeds a channel.

    Credit-based: messages requested but not yet arrived plus those arrived
    but not yet taken add up to at most ``buffer``. The channel itself has no
    buffer: handing each delivery over is a rendezvous with the owner, which is
    what tells this task that credit came free (a buffered Trio channel gives
    no signal when its owner receives). A new request is made once half the
    credit is free. Requests carry idle heartbeats; silence for two
    heartbeats, or a reconnect, means the server may have forgotten them,
    and they are made again (after re-creating the consumer if need be).

    A client's subclass implements :meth:`subscribe` (messages on
    ``self._inbox + ".>"`` go to :meth:`arrived`), :meth:`_retire` and
    :meth:`_post`.
    """

    def __init__(self, transport: H, stream: str, spec: ConsumerSpec, buffer: int) -> None:
        self._t = transport
        self.stream = stream
        self._spec = spec
        self._buffer = buffer
        self.send, self.receive = trio.open_memory_channel[Delivery](0)
        self._inbox = new_inbox()
        self._next_subject = f"{API}.CONSUMER.MSG.NEXT.{stream}.{spec.durable}"
        self._arrived: deque[WireMsg] = deque()
        self._wake = trio.Event()
        # Requests made before a reset belong to an older epoch: their status
        # replies are ignored (their messages, if any still come, are real).
        self._epoch = 0
        self._requests = 0
        self._outstanding = 0
        self._unsettled: set[JsDelivery] = set()
        #: The consumer must be (re)created before pulling makes sense.
        self.needs_consumer = False

    # -- the client's part ---------------------------------------------------

    async def subscribe(self) -> None:
        """Subscribe to the pull inbox, handing what comes to :meth:`arrived`."""
        raise NotImplementedError

    async def _retire(self) -> None:
        """Stop receiving; wait for what the server sent before it heard so.

        Deliveries arriving meanwhile are handed back (nak) by the client.
        """
        raise NotImplementedError

    def _post(self, subject: str, payload: bytes, reply: str) -> None:
        """Queue a publish nobody waits for (a pull request)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------

    def arrived(self, msg: WireMsg) -> None:
        """Queue a message from the inbox (from any thread: a deque append is
        atomic); the client then has :meth:`wake` called in the Trio thread."""
        self._arrived.append(msg)

    async def check_filters(self) -> None:
        """Refuse filters the server would accept but that can never match."""
        filters = self._spec.filter_subjects
        if not filters:
            return
        known = self._t._streams.get(self.stream)
        if known is not None:
            subjects = known.subjects
        else:
            info = await self._t._api(f"STREAM.INFO.{self.stream}")
            subjects = tuple(info["config"].get("subjects") or ())
        check_consumer_filters(self._spec.durable, filters, self.stream, subjects)

    async def ensure_consumer(self) -> None:
        config = consumer_config(self._spec, self._t._streams.get(self.stream))
        body = {"stream_name": self.stream, "config": config}
        await self._t._api(f"CONSUMER.CREATE.{self.stream}.{self._spec.durable}", body)

    def consumer_missing(self, exc: TransportError) -> None:
        """The consumer could not be made yet: pulling makes it once it can."""
        log.debug("consumer %s not created yet: %r", self._spec.durable, exc)
        self.needs_consumer = True

    def wake(self) -> None:
        self._wake.set()

    def settled(self, delivery: JsDelivery) -> None:
        self._unsettled.discard(delivery)

    def _room(self) -> int:
        return self._buffer - len(self._arrived) - self._outstanding

    def _request(self) -> None:
        room = self._room()
        if room <= 0 or (self._outstanding and room < max(1, self._buffer // 2)):
            return
        self._requests += 1
        self._outstanding += room
        request = {"batch": room, "expires": dur(PULL_EXPIRES), "idle_heartbeat": dur(HEARTBEAT)}
        reply = f"{self._inbox}.{self._epoch}.{self._requests}"
        self._post(self._next_subject, json.dumps(request).encode(), reply)

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
        while not self._t._ended:
            if self._outstanding == 0:
                heard = trio.current_time()  # the silence clock starts now
            self._request()
            with trio.move_on_after(HEARTBEAT):
                await self._wake.wait()
            self._wake = trio.Event()
            while self._arrived:
                await self._handle(self._arrived.popleft())
                self._request()
                heard = trio.current_time()
            silent = trio.current_time() - heard > 2 * HEARTBEAT + 0.5
            if reconnected.is_set() or silent or self.needs_consumer:
                # The server may have restarted, failed over or lost the
                # consumer: it forgot the requests, and maybe the consumer.
                reconnected = self._t._reconnected
                self._reset()
                self.needs_consumer = not await self._ensure_quietly()
                if self.needs_consumer:
                    await trio.sleep(HEARTBEAT)  # back off before the next try

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

    async def _handle(self, msg: WireMsg) -> None:
        status = msg.status
        if status is not None:
            if not msg.subject.startswith(f"{self._inbox}.{self._epoch}."):
                return  # about a request from before a reset
            if status == "100":
                return  # an idle heartbeat
            if status in ("408", "409"):
                # The request ended; what it still owed will not come.
                owed = int((msg.headers or {}).get("Nats-Pending-Messages", "0"))
                self._outstanding = max(0, self._outstanding - owed)
                if "Consumer Deleted" in (msg.description or ""):
                    self.needs_consumer = True
            else:
                # 503 (no responders) and the like: the consumer is not there.
                self.needs_consumer = True
            return
        meta = reply_meta(msg.reply)
        if meta is None:
            # Not a delivery (seen: empty replies during a cluster failover):
            # note it and make sure the consumer is there.
            log.debug("unexpected message on pull inbox: %r", msg.data[:200])
            self.needs_consumer = True
            return
        self._outstanding = max(0, self._outstanding - 1)
        due = (msg.headers or {}).get(DELIVER_AT_HEADER)
        if due is not None:
            wait = float(due) - self._t.now()
            if wait > 0.001:
                # Not yet due (a server without schedules): hand it back.
                await JsDelivery(self._t, msg, meta).nak(wait)
                return
        delivery = JsDelivery(self._t, msg, meta, self)
        self._unsettled.add(delivery)
        await self.send.send(delivery)

    async def hand_back(self) -> None:
        """Nak what is buffered or in hand, and stop receiving."""
        self.send.close()
        # Unsubscribing outright would drop a message already on its way
        # (a delivery the owner just handed back, redelivered to this very
        # inbox): it would wait out the whole ack wait.
        with suppress(TransportError):
            await self._retire()
        pending: list[JsDelivery] = list(self._unsettled)
        while self._arrived:  # popleft, not iteration: another thread may append
            msg = self._arrived.popleft()
            meta = reply_meta(msg.reply)
            if msg.status is None and meta is not None:
                pending.append(JsDelivery(self._t, msg, meta))
        for delivery in pending:
            await delivery.nak()
        self.receive.close()
