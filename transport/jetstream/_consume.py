"""JetStream pull consumers on nats-py: the pull inbox is a subscription on
the loop thread, whose callback queues each message and wakes Trio once
for a whole burst. The pulling itself is :class:`transport.jscore.PullerCore`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..jscore import PullerCore, reply_meta
from ._wire import _Received, _status

if TYPE_CHECKING:
    from ._transport import JetStreamTransport


class _Puller(PullerCore["JetStreamTransport"]):
    """A pull consumer whose inbox is a nats-py subscription."""

    def __init__(self, transport: JetStreamTransport, *args: Any) -> None:
        super().__init__(transport, *args)
        self._sub: Subscription | None = None
        #: Set (on the loop thread) once the owner has left.
        self._retired = False

    async def subscribe(self) -> None:
        nc = self._t._nc

        async def sub() -> Subscription:
            return await nc.subscribe(self._inbox + ".>", cb=self._on_msg)

        self._sub = await self._t._bridge.call(sub)

    async def _on_msg(self, msg: Msg) -> None:
        if self._retired:
            # The owner has left: hand back at once what the server sent
            # before it learnt so (see hand_back).
            if _status(msg) is None and reply_meta(msg.reply) is not None:
                await self._t._nc.publish(msg.reply, b"-NAK")
            return
        # On the loop thread: deque appends are thread-safe, and one Trio
        # wake-up covers a whole burst of messages.
        self.arrived(_Received(msg))
        self._t._thread.to_trio(self.wake)

    async def _retire_on_loop(self, sub: Subscription) -> None:
        # On the loop thread, so no _on_msg is halfway through an append:
        # from here on arrivals are handed back, not queued. Draining tells
        # the server to stop (which also ends the pull requests still open
        # there) and waits for everything it sent before that.
        self._retired = True
        await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped

    async def _retire(self) -> None:
        if self._sub is not None:
            await self._t._bridge.call(functools.partial(self._retire_on_loop, self._sub))

    def _post(self, subject: str, payload: bytes, reply: str) -> None:
        self._t._bridge.post(subject, payload, reply)
