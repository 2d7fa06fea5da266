"""An orchestrator service that kills itself at a chosen point of its event handling.

    python -m tests.reliability.crashing_orchestrator POINT COUNT [orchestrator flags...]

runs ``python -m actors.orchestrator`` with the flags, and the ``COUNT``-th
time the process reaches ``POINT`` it ends with ``os._exit`` (no cleanup, no
flush, no ack: as a power cut would leave it). ``COUNT`` 0 never crashes.
The points, in the order an instance actor passes them for one event
(load -> decide -> persist -> publish -> ack):

* ``after-state-write``: the compare-and-set write of the new state succeeded;
* ``before-publish``: the messages the decision produced are about to go out;
* ``after-publish``: they are stored by the broker, the event is not yet acked;
* ``before-ack``: the event's ack is about to be sent.

The hooks wrap the orchestrator's own methods and the transport's, in this
process only: nothing of this is in the engine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, Final, TypeVar

from actors import orchestrator
from actors.runtime import _instance
from transport import Delivery

POINTS: Final = ("after-state-write", "before-publish", "after-publish", "before-ack")
#: The exit code of a crash, distinct from the service's own codes (0, 1, 2).
CRASH_CODE: Final = 70

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class _Tripwire:
    def __init__(self, point: str, count: int) -> None:
        self.point = point
        self.count = count
        self.reached = 0

    def reach(self, point: str) -> None:
        if point != self.point or self.count <= 0:
            return
        self.reached += 1
        if self.reached == self.count:
            os.write(2, f"CRASH at {point} (#{self.reached})\n".encode())
            os._exit(CRASH_CODE)


def install(point: str, count: int) -> None:
    """Patch the hooks in: crash the ``count``-th time ``point`` is reached."""
    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")
    wire = _Tripwire(point, count)
    actor = _instance.InstanceActor

    persist = actor._persist

    @wraps(persist)
    async def _persist(self: Any, *args: Any) -> bool:
        written = await persist(self, *args)
        if written:
            wire.reach("after-state-write")
        return written

    actor._persist = _persist  # type: ignore[method-assign]

    init = actor.__init__

    @wraps(init)
    def _init(self: Any, context: Any, instance_id: str) -> None:
        init(self, context, instance_id)
        self._transport = _PublishHooks(self._transport, wire)

    actor.__init__ = _init  # type: ignore[method-assign]

    ack = Delivery.ack

    @wraps(ack)
    async def _ack(self: Delivery) -> None:
        wire.reach("before-ack")
        await ack(self)

    Delivery.ack = _ack  # type: ignore[method-assign]


class _PublishHooks:
    """The actor's view of the transport, with the publish points marked."""

    def __init__(self, inner: Any, wire: _Tripwire) -> None:
        self._inner = inner
        self._wire = wire

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish_many(self, messages: Sequence[Any]) -> Any:
        self._wire.reach("before-publish")
        acks = await self._inner.publish_many(messages)
        self._wire.reach("after-publish")
        return acks


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    install(argv[0], int(argv[1]))
    return orchestrator.main(list(argv[2:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
