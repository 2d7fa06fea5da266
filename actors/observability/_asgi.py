"""The HTTP API's requests, counted: an ASGI middleware over the API's app.

Requests are counted by method, route and status, and timed by route. The
route is the path template Starlette matched (``/workflows/{id}``), never
the path itself, so that instance ids never become labels; a request that
matched no route counts under ``_unmatched``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._metrics import Metrics, clock

__all__ = ["MeasuredApp"]


class MeasuredApp:
    """``app``, with each HTTP request counted in ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = clock()
        status = 500  # unless an answer starts

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sent)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "_unmatched"
            self._metrics.request(scope["method"], path, status, clock() - began)
