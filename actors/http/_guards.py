"""What stands around every handler: errors mapped to answers, the in-flight limit, the token.

An exception becomes its answer by its class (:mod:`actors.errors`), never
by a list; past ``max_in_flight`` requests a new one is answered 503 at
once; without the right bearer token, 401 (``/health`` and
``/openapi.json`` excepted).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from transport import StorageFullError, TooLargeError, TransportError

from .._groups import leaves
from ..core import DefinitionError
from ..errors import ActorsError, BrokerError, SizeLimitError
from ._requests import ApiError, _clip

log = logging.getLogger("actors.api")

#: Paths served without a token (probes and tooling must reach them), and the
#: web UI's entry points (``/`` leads to it; ``/docs`` renders the open document).
_OPEN_PATHS: Final = frozenset({"/health", "/openapi.json", "/", "/docs", "/ui"})
#: The web UI checks the token itself: a browser signs in once and sends a cookie.
_UI_PREFIX: Final = "/ui/"


# -- errors ----------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The exception that matters inside the groups Trio's nurseries raise.

    The one exception of (nested) groups of one; the first broker error of
    a group of nothing else (a watch and a read failing together); else
    ``exc`` itself.
    """
    found = leaves(exc)
    if len(found) == 1 or all(isinstance(leaf, TransportError) for leaf in found):
        return found[0]
    return exc


def _error_response(exc: Exception, request: Request) -> Response:
    """The answer for an exception a handler raised, by its class; 500 (logged) for a bug.

    An :class:`~actors.errors.ActorsError` carries its status and type (500
    for the engine's own faults, which are logged as bugs). A transport
    error is the broker's (503, :class:`~actors.errors.BrokerError`'s type,
    logged), save a message over the broker's size, which is the caller's
    (as :class:`~actors.errors.SizeLimitError`), and a full store, which
    has its own type and asks for a longer wait.
    """
    leaf = _leaf(exc)
    if isinstance(leaf, ApiError):
        return leaf.response()
    if isinstance(leaf, ActorsError) and leaf.http_status != 500:
        if isinstance(leaf, DefinitionError):
            details = [{"path": error.path, "message": error.message} for error in leaf.errors]
            summary = "; ".join(_clip(str(error)) for error in leaf.errors[:3])
            message = f"invalid workflow definition ({len(details)} problems): {summary}"
            return ApiError(leaf.http_status, leaf.http_type, message, details=details).response()
        return ApiError(leaf.http_status, leaf.http_type, str(leaf)).response()
    if isinstance(leaf, TooLargeError):
        message = str(leaf) or "too large"
        return ApiError(SizeLimitError.http_status, SizeLimitError.http_type, message).response()
    if isinstance(leaf, StorageFullError):
        log.warning("%s %s: broker storage full: %r", request.method, request.url.path, leaf)
        return ApiError(
            BrokerError.http_status,
            "StorageFull",
            f"the broker is out of storage and refused the write ({leaf}); nothing was "
            "stored: retry later",
            headers={"Retry-After": "5"},
        ).response()
    if isinstance(leaf, TransportError):
        log.warning("%s %s: broker error: %r", request.method, request.url.path, leaf)
        return ApiError(
            BrokerError.http_status,
            BrokerError.http_type,
            f"the broker failed: {type(leaf).__name__}: {leaf}",
            headers={"Retry-After": "1"},
        ).response()
    if isinstance(leaf, ClientDisconnect):
        return ApiError(400, "ClientDisconnect", "the client went away").response()
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "InternalError", "internal error (logged by the server)").response()


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """``handler``, with every exception turned into its error answer."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return _error_response(exc, request)

    return endpoint


def _by_method(handlers: Mapping[str, Handler]) -> Handler:
    """One endpoint for a path served by several methods.

    One route per path (not per method) makes a 405 list every allowed method.
    """

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing's own errors (unknown path, method not allowed) in the API's error format."""
    assert isinstance(exc, HTTPException)
    kinds = {404: "NotFound", 405: "MethodNotAllowed"}
    message = (
        f"no endpoint {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
    )
    return ApiError(
        exc.status_code, kinds.get(exc.status_code, "HTTPError"), message, headers=exc.headers
    ).response()


# -- admission -------------------------------------------------------------------


class _Admission:
    """Serves at most ``limit`` requests at once; answers the others 503 at once.

    A request over the limit gets ``503 Overloaded`` with ``Retry-After: 1``
    (and ``Connection: close``: the client comes back later, on a new
    connection), never silence. The log says when the limit is first hit
    and, once requests in progress are under it again, how many were
    refused meanwhile: two lines per burst, not one per refusal.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit
        self._in_flight = 0
        self._refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            await self._refuse(scope, receive, send)
            return
        self._in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_flight -= 1
            if self._refused and self._in_flight < self._limit:
                log.warning(
                    "back under the limit of %d requests in progress: %d refused (503) meanwhile",
                    self._limit,
                    self._refused,
                )
                self._refused = 0

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._refused:
            log.warning(
                "%d requests in progress, the limit: answering 503 until one ends", self._limit
            )
        self._refused += 1
        headers = {"Retry-After": "1"}
        if scope.get("http_version") in ("1.0", "1.1"):
            headers["Connection"] = "close"
        error = ApiError(
            503,
            "Overloaded",
            f"the API is serving {self._limit} requests, its limit: retry after a second",
            headers=headers,
        )
        await error.response()(scope, receive, send)


# -- auth ------------------------------------------------------------------------


class _BearerAuth:
    """Refuses (401) every request but to the open paths without ``Authorization: Bearer <token>``.

    It wraps the whole app, before routing, so an unauthenticated caller
    learns nothing about which paths exist. Tokens are compared as SHA-256
    digests with :func:`hmac.compare_digest`: constant time, and the
    length of the token is not revealed either.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._digest = hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or path in _OPEN_PATHS or path.startswith(_UI_PREFIX):
            await self._app(scope, receive, send)
            return
        given = self._token(scope)
        if given is not None and hmac.compare_digest(hashlib.sha256(given).digest(), self._digest):
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":
            # A WebSocket (the app serves none): closing before accepting
            # makes the server refuse the handshake (403).
            await send({"type": "websocket.close", "code": 1008})
            return
        if given is None:
            challenge, message = 'Bearer realm="actors"', "a bearer token is required"
        else:
            challenge = 'Bearer realm="actors", error="invalid_token"'
            message = "the bearer token is not valid"
        error = ApiError(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})
        await error.response()(scope, receive, send)

    @staticmethod
    def _token(scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = bytes(value).partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    return bytes(token.strip())
                return None
        return None
