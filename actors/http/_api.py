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
:data:`~actors.http._bounds.MAX_BODY_BYTES`; payload values are strict JSON
within the engine's bounds on the way in (:mod:`actors.wire._json`), and on the
way out bytes become base64 strings and non-finite floats the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. At most ``max_in_flight``
requests are served at once: one more is answered 503 at once, never
dropped, and a burst waits in a listen backlog of :data:`LISTEN_BACKLOG`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import hypercorn.trio
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from transport import TransportError

from ..core import (
    MAX_VERSION,
    Definition,
    InstanceStatus,
    InvalidNameError,
    check_instance_id,
    check_name,
    load_definition,
    parse_definition,
)
from ..observability import MeasuredApp, Metrics
from ..runtime import (
    HISTORY_LIMIT,
    Client,
    InstanceInfo,
    WorkflowError,
)
from ._guards import Handler, _Admission, _BearerAuth, _by_method, _guarded, _http_error
from ._openapi import (
    DEFAULT_PAGE,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_REASON,
    MAX_WAIT,
    openapi_document,
)
from ._operations import Operations
from ._requests import (
    _YAML_TYPES,
    ApiError,
    _fields,
    _int_param,
    _invalid,
    _json,
    _json_body,
    _media_type,
    _optional,
    _payload,
    _query,
    _read_body,
    _string,
    _version,
)
from ._schedules import ScheduleEndpoints
from .ui import WebUi

__all__ = ["ApiError", "create_app", "serve_api"]

log = logging.getLogger("actors.api")

#: How long ``POST /workflows/{type}`` waits for the orchestrator to store the
#: new instance before answering 202 instead of 201.
START_VISIBLE_WAIT: Final = 5.0
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
        self._schedules = ScheduleEndpoints(client)
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
            route("/slots", GET=self.list_slots),
            route("/workers", GET=self.list_workers),
            *self._operation_routes(route),
            *(route(path, **handlers) for path, handlers in self._schedules.routes()),
        ]

    def _operation_routes(self, route: Callable[..., Route]) -> list[Route]:
        """The instance operations' routes (``_operations.py``), by path."""
        by_path: dict[str, dict[str, Handler]] = {}
        for path, method, handler in Operations(self._client).handlers():
            by_path.setdefault(path, {})[method] = handler
        return [route(path, **handlers) for path, handlers in by_path.items()]

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    @property
    def openapi_document(self) -> dict[str, Any]:
        """The OpenAPI document this API serves."""
        return self._openapi

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

    async def list_slots(self, request: Request) -> Response:
        return _json({"items": [info.to_data() for info in await self._client.slots()]})

    async def list_workers(self, request: Request) -> Response:
        return _json({"items": [worker.to_data() for worker in await self._client.workers()]})

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

    async def cancel(self, request: Request) -> Response:
        return await self._stop(request, self._client.cancel)

    async def terminate(self, request: Request) -> Response:
        return await self._stop(request, self._client.terminate)

    async def _stop(
        self, request: Request, stop: Callable[[str, str], Awaitable[None]]
    ) -> Response:
        """Cancel or terminate (``stop``) the instance, with the body's optional reason."""
        instance_id = check_instance_id(request.path_params["id"])
        body = _fields(await _json_body(request, required=False), (), ("reason",))
        reason = _optional(body, "reason")
        reason = "" if reason is None else _string(reason, "reason", MAX_REASON)
        await self._existing(instance_id)
        await stop(instance_id, reason)
        return _json({"id": instance_id}, 202)


def _build(
    client: Client, token: str | None, max_in_flight: int, metrics: Metrics | None = None
) -> tuple[ASGIApp, _Api]:
    if token is not None and not token:
        raise ValueError("the token must not be empty (use None for no token)")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    api = _Api(client, auth=token is not None)
    ui = WebUi(client, token=token, openapi=api.openapi_document)
    app: ASGIApp = Starlette(
        routes=[*api.routes(), *ui.routes()], exception_handlers={HTTPException: _http_error}
    )
    if token is not None:
        app = _BearerAuth(app, token)
    if metrics is not None:
        app = MeasuredApp(app, metrics)
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
    metrics: Metrics | None = None,
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
    seconds to finish. With ``metrics``, each request is counted and timed
    there (:class:`~actors.observability.MeasuredApp`).
    """
    app, api = _build(client, token, max_in_flight, metrics)
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
