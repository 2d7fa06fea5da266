"""Reading a stream's stored messages on nats-py (``read``).

The reading is :class:`transport.jscore.PageReader`; here one ``read`` call
is one asyncio task on the loop thread, so it crosses between the threads
once each way however many requests it makes (see ``_transport.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nats.aio.msg import Msg

from ..jscore import API, PageReader, WireMsg, epoch
from ._wire import _Received, _Replies

#: The server's time stamps, read (kept under this name for the tests).
_epoch = epoch


class _Reader(PageReader):
    """One ``read`` call, run by :meth:`run` as one task on the loop thread."""

    def __init__(self, replies: _Replies, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replies = replies

    async def _request(
        self, api: str, body: Mapping[str, Any], batch: list[WireMsg] | None = None
    ) -> WireMsg:
        payload = json.dumps(body).encode()
        collect: list[Msg] | None = [] if batch is not None else None
        future = await self._replies.start(f"{API}.{api}", payload, collect=collect)
        end = await future
        if batch is not None and collect:
            batch.extend(_Received(msg) for msg in collect)
        return _Received(end)
