"""JetStream key-value buckets on nats-py: a watch's push consumer delivers
to a subscription on the loop thread. The buckets and watches themselves are
:class:`transport.jscore.KVCore` and :class:`transport.jscore.WatcherCore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..jscore import KVCore, WatcherCore
from ._wire import _Received

if TYPE_CHECKING:
    from ._transport import JetStreamTransport


class _Watcher(WatcherCore):
    """A watch whose push consumer delivers to a nats-py subscription."""

    def __init__(self, transport: JetStreamTransport, *args: Any, **kwargs: Any) -> None:
        super().__init__(transport, *args, **kwargs)
        self._transport = transport
        self._sub: Subscription | None = None

    async def _listen(self, inbox: str, generation: int) -> None:
        thread = self._transport._thread

        async def on_msg(msg: Msg) -> None:
            if generation == self.generation:  # read across threads; only a hint
                self._arrived.append(_Received(msg))
                thread.to_trio(self.wake)

        nc = self._transport._nc

        async def sub() -> Subscription:
            return await nc.subscribe(inbox, cb=on_msg)

        self._sub = await self._transport._bridge.call(sub)

    async def _unlisten(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._transport._bridge.call(sub.unsubscribe)


class _JetStreamKV(KVCore):
    """A KV bucket stored as stream ``KV_<bucket>``, one subject per key."""

    watcher = _Watcher
