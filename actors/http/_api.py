"""The HTTP Engine API: an ASGI app over a :class:`Client`, served on Trio.

:func:`create_app` builds a Starlette app whose handlers call the client;
:func:`serve_api` serves it with Hypercorn's Trio worker. Starlette runs on
anyio, and anyio runs on whatever event loop calls it, so every handler runs
as a Trio task of the process that owns the client: there is no second
event loop and no thread between the HTTP server and the engine.

Contract (``docs/api.md`` and ``GET /openapi.json``, written in
``actors/_openapi.py``, say it in full): JSON in and out; every error is
``{"error": {"type", "message", "details"?}}`` with a 4xx status for
anything the caller can fix, 503 when the broker fails, and 500 only for a
bug (logged with its traceback). Bodies are read up to
:data:`~actors.http._openapi.MAX_BODY_BYTES`; payload values are strict JSON
within the engine's bounds on the way in (:mod:`actors.wire._json`), and on the
way out bytes become base64 strings and non-finite floats the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. At most ``max_in_flight``
requests are served at once: one more is answered 503 at once, never
dropped, and a burst waits in a listen backlog of :data:`LISTEN_BACKLOG`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from typing import Any, Final, NoReturn

import hypercorn.trio
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from transport import StorageFullError, TooLargeError, TransportError

from ..core import (
    MAX_VERSION,
    Definition,
    DefinitionError,
    InstanceStatus,
    InvalidNameError,
    check_instance_id,
    check_name,
    load_definition,
    parse_definition,
)
from ..errors import ActorsError, BrokerError, RequestError, SizeLimitError
from ..runtime import (
    Client,
    InstanceInfo,
    WorkflowError,
)
from ..wire import JsonError, check_payload, dumps, loads
from ._openapi import (
    DEFAULT_PAGE,
    MAX_BODY_BYTES,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_REASON,
    MAX_WAIT,
    openapi_document,
)

__all__ = ["ApiError", "create_app", "serve_api"]

log = logging.getLogger("actors.api")

#: How long ``POST /workflows/{type}`` waits for the orchestrator to store the
#: new instance before answering 202 instead of 201.
START_VISIBLE_WAIT: Final = 5.0
#: The most field problems an error answer lists.
MAX_DETAILS: Final = 100
#: The most history records ``GET /workflows/{id}/history`` returns.
HISTORY_LIMIT: Final = 10_000
#: How long a finished instance's history may take to show its final record.
HISTORY_SETTLE: Final = 2.0
_FINAL_RECORDS: Final = frozenset(
    {"workflow.completed", "workflow.failed", "workflow.cancelled", "workflow.terminated"}
)
#: How long in-flight requests get to finish once the server is told to stop.
SHUTDOWN_GRACE: Final = 3.0
#: Requests served at once by default; past it a request is answered 503 at once.
DEFAULT_MAX_IN_FLIGHT: Final = 1000
#: Connections the kernel holds for the server before it accepts them (its
#: listen backlog; the kernel caps it at ``net.core.somaxconn``).
LISTEN_BACKLOG: Final = 4096
#: Paths served without a token (probes and tooling must reach them).
_OPEN_PATHS: Final = frozenset({"/health", "/openapi.json"})
_JSON_TYPE: Final = "application/json"
#: What ``POST /definitions`` reads as YAML (the first is the registered type).
_YAML_TYPES: Final = ("application/yaml", "text/yaml", "application/x-yaml")


class ApiError(RequestError):
    """An answer other than success: the status, and the body's ``error`` object.

    Its status and type are the instance's own (``http_status``,
    ``http_type``), not its class's.
    """

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        details: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.http_type = type
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def response(self) -> Response:
        error: dict[str, Any] = {"type": self.http_type, "message": _clip(self.message)}
        if self.details is not None:
            # Bounded: a body of a megabyte can hold tens of thousands of
            # unknown fields, and a message may quote what it was sent.
            error["details"] = [
                {"path": _clip(detail["path"], 200), "message": _clip(detail["message"])}
                for detail in self.details[:MAX_DETAILS]
            ]
        return _json({"error": error}, self.http_status, self.headers)


def _clip(text: str, limit: int = 1000) -> str:
    """``text``, shortened to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _invalid(message: str, path: str | None = None) -> NoReturn:
    details = None if path is None else [{"path": path, "message": message}]
    raise ApiError(
        422, "ValidationError", message if path is None else f"{path}: {message}", details=details
    )


# -- JSON ------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = dumps(data, compact=True)
    return Response(body.encode(), status, dict(headers or {}), media_type=_JSON_TYPE)


def _parse_json(body: bytes) -> Any:
    """Strict JSON (see :func:`actors.wire._json.loads`); else 400."""
    try:
        return loads(body)
    except JsonError as exc:
        raise ApiError(400, "MalformedBody", f"the body is {_body_fault(exc)}") from None


def _body_fault(exc: JsonError) -> str:
    # "the body is not UTF-8", "the body is nested too deeply", "the body is
    # not valid JSON: ...", and the rest ("the key 'a' appears twice ...").
    reason = exc.reason
    if reason.startswith(("not ", "nested ")):
        return reason
    return f"not valid JSON: {reason}"


def _payload(value: Any, path: str) -> Any:
    """``value`` if it is a payload the engine can carry; else 422 naming the part at fault."""
    try:
        check_payload(value, path)
    except JsonError as exc:
        raise ApiError(
            422,
            "InvalidPayload",
            str(exc),
            details=[{"path": exc.path, "message": exc.reason}],
        ) from None
    return value


# -- requests --------------------------------------------------------------------


def _media_type(request: Request) -> str | None:
    header = request.headers.get("content-type")
    return None if header is None else header.split(";", 1)[0].strip().lower()


async def _read_body(request: Request) -> bytes:
    """The whole body, refusing (413) one over :data:`MAX_BODY_BYTES` before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(request)
    chunks: list[bytes] = []
    size = 0
    # A chunked body declares no length: count as it arrives. (aclosing:
    # Trio wants an async generator left early closed, not garbage-collected.)
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _too_large(request)
            chunks.append(chunk)
    return b"".join(chunks)


def _too_large(request: Request) -> ApiError:
    # The rest of the body is left unread, so the connection cannot carry
    # another request: say so, or the client would send its next one on it.
    # (HTTP/2 has no such header, and needs none: its streams are separate.)
    close = request.scope.get("http_version") in ("1.0", "1.1")
    return ApiError(
        413,
        "PayloadTooLarge",
        f"the body is over {MAX_BODY_BYTES} bytes",
        headers={"Connection": "close"} if close else None,
    )


async def _json_body(request: Request, *, required: bool) -> Any:
    """The body as JSON. An empty body is ``{}`` where one is optional, else 400."""
    media_type = _media_type(request)
    # A body without a Content-Type is read as JSON, the only thing it can be here.
    if media_type is not None and media_type != _JSON_TYPE and not media_type.endswith("+json"):
        raise ApiError(415, "UnsupportedMediaType", f"send {_JSON_TYPE}, not {media_type}")
    body = await _read_body(request)
    if not body:
        if required:
            raise ApiError(400, "MalformedBody", "a JSON body is required")
        return {}
    return _parse_json(body)


def _fields(
    data: Any, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``data`` if it is an object with every required field and no others; else 422."""
    if not isinstance(data, dict):
        _invalid("the body must be a JSON object")
    problems = [
        {"path": key, "message": "unknown field"}
        for key in data
        if key not in required and key not in optional
    ]
    problems += [{"path": key, "message": "required"} for key in required if key not in data]
    if problems:
        raise ApiError(
            422,
            "ValidationError",
            "; ".join(f"{_clip(p['path'], 80)}: {p['message']}" for p in problems[:5]),
            details=problems,
        )
    return data


def _version(value: object, path: str) -> int:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says too).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        _invalid(f"must be an integer from 1 to {MAX_VERSION}", path)
    return value


def _string(value: object, path: str, max_length: int) -> str:
    if not isinstance(value, str):
        _invalid("must be a string", path)
    if len(value) > max_length:
        _invalid(f"must be at most {max_length} characters", path)
    return value


def _optional(body: Mapping[str, Any], key: str) -> Any:
    """An optional field's value: ``None`` if it is left out or ``null`` (the same thing)."""
    return body.get(key)


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, refusing (422) unknown and repeated ones.

    Where a query selects, a misspelt parameter silently ignored would
    select something else: refuse it instead.
    """
    params: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            _invalid(f"unknown query parameter {key[:80]!r} (expected: {', '.join(allowed)})")
        if key in params:
            _invalid(f"query parameter {key!r} is given twice")
        params[key] = value
    return params


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    # isdigit() alone admits other scripts' digits; int() reads them too, but
    # the spec says ASCII.
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        _invalid(f"must be an integer from {low} to {high}", name)
    return int(text)


# -- errors ----------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The exception that matters inside the groups Trio's nurseries raise.

    The one exception of (nested) groups of one; the first broker error of
    a group of nothing else (a watch and a read failing together); else
    ``exc`` itself.
    """
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
            continue
        broker, rest = exc.split(TransportError)
        if broker is None or rest is not None:
            return exc
        exc = broker.exceptions[0]
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
        if scope["type"] == "lifespan" or scope.get("path") in _OPEN_PATHS:
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


# -- the endpoints ---------------------------------------------------------------


def _outcome(info: InstanceInfo) -> Response:
    """``GET /workflows/{id}/result``'s answer for the instance as it is."""
    if info.status is InstanceStatus.COMPLETED:
        return _json({"status": "completed", "output": info.output})
    if not info.status.terminal:
        return _json({"status": str(info.status)}, 202)
    error: dict[str, Any]
    if info.status is InstanceStatus.FAILED:
        what = info.error
        message = f"workflow {info.id} failed"
        if what is not None:
            message += f": {what.type}: {what.message}"
        error = {"type": "WorkflowFailed", "message": message}
    else:
        error = {"type": "WorkflowCancelled", "message": f"workflow {info.id} was {info.status}"}
    if info.error is not None:
        error["workflow_error"] = info.error.to_data()
    return _json({"status": str(info.status), "error": error}, 409)


class _Api:
    """The handlers, over one client, and the long waits to end at shutdown."""

    def __init__(self, client: Client, *, auth: bool) -> None:
        self._client = client
        self._openapi = openapi_document(auth=auth)
        self._waits: set[trio.CancelScope] = set()
        self._closing = False

    def close(self) -> None:
        """End every wait in progress (and any that starts later) at once.

        A result request waiting up to a minute would otherwise hold the
        server's shutdown for its whole grace period.
        """
        self._closing = True
        for scope in self._waits:
            scope.cancel()

    @contextmanager
    def _bounded(self, seconds: float) -> Iterator[trio.CancelScope]:
        with trio.move_on_after(seconds) as scope:
            if self._closing:
                scope.cancel()
            self._waits.add(scope)
            try:
                yield scope
            finally:
                self._waits.discard(scope)

    def routes(self) -> list[Route]:
        def route(path: str, **handlers: Handler) -> Route:
            endpoint = _guarded(_by_method(handlers))
            return Route(path, endpoint, methods=list(handlers))

        return [
            route("/health", GET=self.health),
            route("/openapi.json", GET=self.openapi),
            route("/definitions", GET=self.list_definitions, POST=self.register),
            route("/definitions/{type}", GET=self.get_definition),
            route("/definitions/{type}/{version}", GET=self.get_definition),
            route("/workflows", GET=self.list_workflows),
            route("/workflows/{type_or_id}", GET=self.get_workflow, POST=self.start),
            route("/workflows/{id}/result", GET=self.result),
            route("/workflows/{id}/history", GET=self.history),
            route("/workflows/{id}/signals/{name}", POST=self.signal),
            route("/workflows/{id}/cancel", POST=self.cancel),
            route("/workflows/{id}/terminate", POST=self.terminate),
        ]

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return _json(self._openapi)

    # -- definitions

    async def register(self, request: Request) -> Response:
        media_type = _media_type(request)
        if media_type in _YAML_TYPES:
            body = await _read_body(request)
            if not body:
                raise ApiError(400, "MalformedBody", "a YAML body is required")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "MalformedBody", "the body is not UTF-8") from None
            # Parsing and validation are CPU work (pure-Python YAML: about a
            # second per MiB): a thread keeps the engine's tasks running.
            definition = await trio.to_thread.run_sync(load_definition, text)
        else:
            data = await _json_body(request, required=True)
            definition = await trio.to_thread.run_sync(parse_definition, data)
        stored: Definition = await self._client.register(definition)
        return _json({"type": stored.type, "version": stored.version}, 201)

    async def list_definitions(self, request: Request) -> Response:
        return _json(await self._client.definitions())

    async def get_definition(self, request: Request) -> Response:
        workflow_type = check_name("workflow type", request.path_params["type"])
        version = 0  # the newest
        text = request.path_params.get("version")
        if text is not None:
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_VERSION:
                _invalid(f"must be an integer from 1 to {MAX_VERSION}", "version")
            version = int(text)
        definition = await self._client.definition(workflow_type, version)
        return _json(definition.to_data())

    # -- instances

    async def start(self, request: Request) -> Response:
        workflow_type = check_name("workflow type", request.path_params["type_or_id"])
        body = _fields(await _json_body(request, required=True), ("input",), ("id", "version"))
        wanted_id = _optional(body, "id")
        if wanted_id is not None:
            check_instance_id(wanted_id)
        version = _optional(body, "version")
        version = 0 if version is None else _version(version, "version")
        input_value = _payload(body["input"], "input")
        instance_id = await self._client.start(
            workflow_type, input_value, id=wanted_id, version=version
        )
        location = {"Location": f"/workflows/{instance_id}"}
        if await self._stored(instance_id):
            return _json({"id": instance_id}, 201, location)
        # Accepted by the broker; no orchestrator has stored it (yet).
        return _json({"id": instance_id, "status": "pending"}, 202, location)

    async def _stored(self, instance_id: str) -> bool:
        """Whether the instance is stored, waiting a little for the orchestrator to store it.

        So that a caller who starts an instance can read, signal or cancel
        it right away: until it is stored those answer 404.
        """
        with self._bounded(START_VISIBLE_WAIT):
            try:
                await self._client.wait_for(instance_id, lambda _: True)
            except (TransportError, WorkflowError):
                # The start is published; whether it is stored yet is all we
                # could not learn (the watch failed, or ended), and a 503
                # would invite a second start.
                log.warning("could not watch %s after its start", instance_id, exc_info=True)
                return False
            return True
        return False

    async def list_workflows(self, request: Request) -> Response:
        params = _query(request, ("type", "status", "limit", "offset"))
        workflow_type = params.get("type")
        if workflow_type is not None:
            check_name("workflow type", workflow_type)
        status = params.get("status")
        choices = [str(member) for member in InstanceStatus]
        if status is not None and status not in choices:
            _invalid(f"must be one of {', '.join(choices)}", "status")
        limit = _int_param(params, "limit", DEFAULT_PAGE, 0, MAX_PAGE)
        offset = _int_param(params, "offset", 0, 0, MAX_OFFSET)
        # count_and_list is Client.list with the number of matches: one query
        # of the client's instance index, not a read of every state.
        page, total = await self._client.count_and_list(
            workflow_type=workflow_type, status=status, limit=limit, offset=offset
        )
        items = [
            {
                "id": summary.id,
                "type": summary.type,
                "version": summary.version,
                "status": str(summary.status),
                "created_at": summary.created_at,
                "updated_at": summary.updated_at,
            }
            for summary in page
        ]
        return _json({"items": items, "total": total})

    async def _existing(self, instance_id: str) -> InstanceInfo:
        info = await self._client.status(check_instance_id(instance_id))
        if info is None:
            raise await self._missing(instance_id)
        return info

    async def _missing(self, instance_id: str) -> ApiError:
        """The 404 for an instance not stored: it does not exist, or its start is pending."""
        if await self._client.start_pending(instance_id):
            return ApiError(
                404,
                "Pending",
                f"workflow instance {instance_id!r} is not stored yet: the broker accepted "
                "its start, but no orchestrator has picked it up",
            )
        return ApiError(404, "NotFound", f"no workflow instance {instance_id!r}")

    async def get_workflow(self, request: Request) -> Response:
        info = await self._existing(request.path_params["type_or_id"])
        return _json(info.to_data())

    async def result(self, request: Request) -> Response:
        instance_id = request.path_params["id"]
        params = _query(request, ("wait",))
        wait = 0.0
        if "wait" in params:
            try:
                wait = float(params["wait"])
            except ValueError:
                wait = -1.0
            if not 0 <= wait <= MAX_WAIT:  # NaN fails this too
                _invalid(f"must be a number of seconds from 0 to {MAX_WAIT:g}", "wait")
        found = await self._client.status(check_instance_id(instance_id))
        # A start this API made that no orchestrator took yet is waited for
        # like an instance under way: one may come.
        if found is None and not await self._client.start_pending(instance_id):
            raise await self._missing(instance_id)
        if (found is None or not found.status.terminal) and wait > 0:
            with self._bounded(wait):
                found = await self._client.wait(instance_id)
            if found is None:
                found = await self._client.status(instance_id)
        if found is None:
            return _json({"status": "pending"}, 202)
        return _outcome(found)

    async def history(self, request: Request) -> Response:
        info = await self._existing(request.path_params["id"])
        records = await self._client.history(info.id, limit=HISTORY_LIMIT)
        if info.status.terminal:
            records = await self._settled(info.id, records)
        items = [
            {
                "seq": record["seq"],
                "kind": record["kind"],
                "at": record.get("at"),
                "detail": record.get("detail") or {},
            }
            for record in records
        ]
        return _json({"items": items})

    async def _settled(
        self, instance_id: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The history of a finished instance, once it holds its final record.

        The orchestrator stores a state before it publishes that change's
        history records, so a caller who has just seen the instance finish
        could read a history without its end. The records are usually a few
        milliseconds behind: read again, briefly, until they arrive. (The
        stream offers no watch of one subject to wait on instead.)
        """
        delay = 0.005
        with self._bounded(HISTORY_SETTLE):
            while len(records) < HISTORY_LIMIT and not any(
                record["kind"] in _FINAL_RECORDS for record in reversed(records)
            ):
                await trio.sleep(delay)
                delay = min(delay * 2, 0.2)
                records = await self._client.history(instance_id, limit=HISTORY_LIMIT)
        return records

    async def signal(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        name = check_name("signal name", request.path_params["name"])
        body = _fields(await _json_body(request, required=True), ("payload",), ("signal_id",))
        payload = _payload(body["payload"], "payload")
        signal_id = _optional(body, "signal_id")
        if signal_id is not None:
            # It becomes part of a broker message id: keep it to id characters.
            try:
                check_instance_id(signal_id)
            except InvalidNameError:
                _invalid("must be 1 to 128 letters, digits, '_' or '-'", "signal_id")
        await self._existing(instance_id)
        await self._client.signal(instance_id, name, payload, signal_id=signal_id)
        return _json({"id": instance_id}, 202)

    async def _reason(self, request: Request) -> str:
        body = _fields(await _json_body(request, required=False), (), ("reason",))
        reason = _optional(body, "reason")
        return "" if reason is None else _string(reason, "reason", MAX_REASON)

    async def cancel(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        reason = await self._reason(request)
        await self._existing(instance_id)
        await self._client.cancel(instance_id, reason)
        return _json({"id": instance_id}, 202)

    async def terminate(self, request: Request) -> Response:
        instance_id = check_instance_id(request.path_params["id"])
        reason = await self._reason(request)
        await self._existing(instance_id)
        await self._client.terminate(instance_id, reason)
        return _json({"id": instance_id}, 202)


def _build(client: Client, token: str | None, max_in_flight: int) -> tuple[ASGIApp, _Api]:
    if token is not None and not token:
        raise ValueError("the token must not be empty (use None for no token)")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    api = _Api(client, auth=token is not None)
    app: ASGIApp = Starlette(routes=api.routes(), exception_handlers={HTTPException: _http_error})
    if token is not None:
        app = _BearerAuth(app, token)
    # Outermost: a request over the limit costs neither a token check nor routing.
    return _Admission(app, max_in_flight), api


def create_app(
    client: Client, *, token: str | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> ASGIApp:
    """The Engine API as an ASGI app, calling ``client`` (which must stay open while it serves).

    With ``token``, every request but ``GET /health`` and ``GET
    /openapi.json`` must carry ``Authorization: Bearer <token>``, or is
    answered 401. At most ``max_in_flight`` requests are served at once;
    one more is answered ``503 Overloaded`` with ``Retry-After: 1`` at once.
    Raises ``ValueError`` for an empty token or a limit below 1. The app
    runs on whatever event loop serves it through anyio; ``client`` is
    Trio's, so serve it on Trio (:func:`serve_api`).
    """
    return _build(client, token, max_in_flight)[0]


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (closed again if binding fails).

    Bound here rather than by Hypercorn, which leaks its socket when the
    bind fails and reports the failure wrapped in exception groups; this
    way a busy port is a plain ``OSError`` from :func:`serve_api`.
    """
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_api(
    client: Client,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Engine API over HTTP on ``host:port`` until cancelled.

    Binds first (``port=0``: a free port), then reports the URL it serves
    (``http://127.0.0.1:54321``) through ``task_status``, so ``await
    nursery.start(serve_api, client, port=0)`` returns it. Raises
    ``OSError`` if it cannot bind, ``ValueError`` for an empty token or a
    ``max_in_flight`` below 1 (see :func:`create_app`). Cancelling it stops
    the server cleanly: no new connections, waits on results end at once
    (answered 202), and requests in progress get :data:`SHUTDOWN_GRACE`
    seconds to finish.
    """
    app, api = _build(client, token, max_in_flight)
    config = Config()
    # Hypercorn adopts the descriptor (and listens on it) as soon as it
    # starts; it runs shielded, so nothing can stop it before it does.
    config.bind = [f"fd://{_bound_socket(host, port).detach()}"]
    config.accesslog = None
    # A Logger instance, not "-": Hypercorn then installs no handler of its
    # own, and its messages follow the process's logging configuration.
    config.errorlog = logging.getLogger("actors.api.server")
    # Hypercorn's default of 100 pending connections made the kernel drop
    # the rest of a burst unseen: their clients waited for SYN retries
    # (1 s, 3 s, ...) or gave up, and nothing was logged. Accepted, a request
    # over the limit is answered (503) instead.
    config.backlog = LISTEN_BACKLOG
    config.graceful_timeout = SHUTDOWN_GRACE
    config.include_server_header = False
    stop = trio.Event()
    # Hypercorn stops gracefully when its shutdown trigger returns, but a
    # cancellation from outside would cut every connection mid-answer. So it
    # runs shielded, and our cancellation is turned into that trigger.
    shield = trio.CancelScope(shield=True)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        with shield:
            await hypercorn.trio.serve(
                app,  # type: ignore[arg-type]  # Hypercorn's own ASGI types are narrower
                config,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        # The server stopped by itself: stop serve_api too.
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        try:
            binds: list[str] = await nursery.start(run)
            task_status.started(binds[0])
            await trio.sleep_forever()
        finally:
            stop.set()
            api.close()
            # A backstop in case Hypercorn's own grace does not end it.
            shield.deadline = trio.current_time() + SHUTDOWN_GRACE + 2
