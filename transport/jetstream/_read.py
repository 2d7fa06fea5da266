"""Reading a stream's stored messages on nats-py (``read``).

The reading is :class:`transport.jscore.PageReader`; here one ``read`` call
is one asyncio task on the loop thread, so it crosses between the threads
once each way however many requests it makes (see ``_transport.py``).
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from ..jscore import Request, WireMsg
from ._wire import _Received, _Replies


def on_the_loop(replies: _Replies) -> Request:
    """A reader's requests, made and awaited on the loop thread through ``replies``."""

    async def request(
        subject: str, payload: bytes, /, *, batch: list[Any] | None = None
    ) -> WireMsg:
        collect: list[Msg] | None = [] if batch is not None else None
        end = await (await replies.start(subject, payload, collect=collect))
        if batch is not None and collect:
            batch.extend(_Received(msg) for msg in collect)
        return _Received(end)

    return request
