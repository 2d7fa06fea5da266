"""The web UI's pages: instances, one instance with its actions, sign-in.

Every page is rendered here, on the server, from the same :class:`Client`
the API's handlers call, in the API's process: no second connection to the
broker and no call over HTTP. A page is plain HTML that works without
JavaScript; ``static/ui.js`` only refreshes the parts marked live (a
fragment fetched every few seconds) and copies JSON to the clipboard.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ...core import InstanceStatus, InvalidNameError, check_instance_id, check_name
from ...runtime import HISTORY_LIMIT, Client, InstanceInfo, UnknownWorkflowTypeError
from ...wire import JsonError, check_payload, dumps, loads
from .._bounds import MAX_REASON
from .._guards import _error_response
from .._requests import ApiError, _body_fault, _read_body
from ._actions import ActionPages, offered, top_steps
from ._more import MorePages
from ._security import CSRF_FIELD, Guard
from ._security import HEADERS as _HEADERS
from ._steps import apply_states, diagram_svg, nodes_of, walk
from ._timeline import build_timeline, durations, timeline_svg

__all__ = ["PAGE_SIZE", "WebUi"]

#: Rows of the instances table per page, and history records per page.
PAGE_SIZE: Final = 50
HISTORY_PAGE: Final = 100
_STATUSES: Final = [str(status) for status in InstanceStatus]
#: What the instance page says after an action (``?done=...``).
_DONE: Final = {
    "signal": "The signal was sent.",
    "cancel": "Cancel requested.",
    "terminate": "Terminate requested.",
    "pause": "Pause requested.",
    "resume": "Resume requested.",
    "retry": "Retry requested.",
    "rerun": "Rerun started.",
}
_FINAL_RECORDS: Final = frozenset(
    {"workflow.completed", "workflow.failed", "workflow.cancelled", "workflow.terminated"}
)

Page = Callable[[Request], Awaitable[Response]]


def _when(seconds: Any) -> str:
    """Seconds since the epoch as a UTC time to the millisecond."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _pretty(value: Any) -> str:
    """A payload as indented JSON (bytes as base64, as the API shows them)."""
    return dumps(value, indent=2)


class FormError(Exception):
    """A form field a person filled in wrongly: shown next to the form, nothing done."""


class WebUi:
    """The UI's routes over ``client``, signing people in with ``token`` (``None``: no sign-in)."""

    def __init__(self, client: Client, *, token: str | None, openapi: Mapping[str, Any]) -> None:
        self._client = client
        self._guard = Guard(token)
        self._openapi = openapi
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("actors.http.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["pretty"] = _pretty
        self._env.globals["statuses"] = _STATUSES

    def routes(self) -> list[BaseRoute]:
        """The UI's routes: ``/`` (to the UI), ``/docs`` and everything under ``/ui``."""
        static = StaticFiles(directory=str(resources.files("actors.http.ui") / "static"))
        # Whole paths, not a mount: each route is then known by its own
        # template (``/ui/instances/{id}``), as the API's request metrics name it.
        return [
            Route("/", self.root, methods=["GET"]),
            self.route("/docs", GET=self.docs, open=True),
            Route("/ui", self.root, methods=["GET"]),
            Mount("/ui/static", static, name="static"),
            self.route("/ui/login", GET=self.login_form, POST=self.login, open=True),
            self.route("/ui/logout", POST=self.logout, open=True),
            self.route("/ui/", GET=self.instances),
            self.route("/ui/instances/live", GET=self.instances_live),
            self.route("/ui/instances/{id}", GET=self.instance),
            self.route("/ui/instances/{id}/live", GET=self.instance_live),
            self.route("/ui/instances/{id}/signal", POST=self.signal),
            self.route("/ui/instances/{id}/cancel", POST=self.cancel),
            self.route("/ui/instances/{id}/terminate", POST=self.terminate),
            *self.more_routes(),
            # Last: any other path under /ui, behind the sign-in like the rest
            # (so that it tells a stranger nothing), answered with a page.
            self.route("/ui/{rest:path}", GET=self.not_found, POST=self.not_found),
        ]

    def more_routes(self) -> list[BaseRoute]:
        """The routes of the other pages (definitions, queues, operations, schedules...)."""
        return MorePages(self).routes() + ActionPages(self).routes()

    @property
    def client(self) -> Client:
        """The client the pages read from and act through."""
        return self._client

    def route(self, path: str, *, open: bool = False, **handlers: Page) -> Route:
        """A route to ``handlers`` (by method) that wants a sign-in unless ``open``.

        Whatever a handler raises becomes an error page, by the API's
        mapping of errors to statuses.
        """

        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            try:
                if not open and not self._guard.signed_in(request):
                    return self._refuse(request)
                return await handlers[method](request)
            except Exception as exc:
                return self._error_page(request, exc)

        return Route(path, endpoint, methods=list(handlers))

    # -- answering ----------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """``template`` rendered with ``context``, the CSRF token and the page's headers."""
        csrf = self._guard.csrf_token(request)
        html = self._env.get_template(template).render(
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            sign_in=self._guard.required,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status, headers=_HEADERS)
        self._guard.keep_csrf(response, request, csrf)
        return response

    def _refuse(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD") and not request.url.path.endswith("/live"):
            # Back to this page once signed in: its path and query (filters, never secrets).
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target = urllib.parse.quote(target, safe="/")
            return RedirectResponse(f"/ui/login?next={target}", 303, headers=_HEADERS)
        return self.render(
            request,
            "error.html",
            401,
            title="Sign in required",
            message="Sign in with the API token to see this page.",
        )

    def _error_page(self, request: Request, exc: Exception) -> Response:
        # The API's mapping of errors to answers, by class, shown as a page.
        answer = _error_response(exc, request)
        try:
            error = json.loads(bytes(answer.body))["error"]
        except (ValueError, KeyError, TypeError):
            error = {"type": "InternalError", "message": "internal error (logged by the server)"}
        return self.render(
            request,
            "error.html",
            answer.status_code,
            title=f"{answer.status_code} {error.get('type', '')}",
            message=error.get("message", ""),
        )

    async def form(self, request: Request) -> dict[str, str]:
        """A POSTed form's fields (URL-encoded); 403 unless it carries the CSRF token."""
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise ApiError(415, "UnsupportedMediaType", "send the page's form")
        try:
            text = (await _read_body(request)).decode("utf-8")
            fields = dict(
                urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)
            )
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "MalformedBody", "the form is not valid") from None
        if not self._guard.csrf_valid(request, fields.get(CSRF_FIELD, "")):
            raise ApiError(
                403,
                "CsrfRefused",
                "the form's security token is missing or stale: reload the page and send it again",
            )
        return fields

    # -- the API docs, sign-in, what is not a page -------------------------------------

    async def docs(self, request: Request) -> Response:
        """The OpenAPI document as a page: every operation, and a form to try it."""
        return self.render(
            request,
            "docs.html",
            title="API docs",
            api=self._openapi,
            operations=_operations(self._openapi),
        )

    async def not_found(self, request: Request) -> Response:
        raise ApiError(404, "NotFound", f"no page {request.url.path}")

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/ui/", 303, headers=_HEADERS)

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", next=_local(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        fields = await self.form(request)
        target = _local(fields.get("next"))
        if not self._guard.token_matches(fields.get("token", "")):
            return self.render(
                request, "login.html", 401, next=target, error="That is not the API token."
            )
        response = RedirectResponse(target, 303, headers=_HEADERS)
        if self._guard.required:
            self._guard.sign_in(response, request)
        return response

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        response = RedirectResponse("/ui/login", 303, headers=_HEADERS)
        self._guard.sign_out(response)
        return response

    # -- instances -------------------------------------------------------------------

    async def instances(self, request: Request) -> Response:
        context = await self._instances_context(request)
        status = 400 if context["error"] else 200
        types = await self._client.definitions()
        return self.render(request, "instances.html", status, types=types, **context)

    async def instances_live(self, request: Request) -> Response:
        context = await self._instances_context(request)
        return self.render(request, "instances_live.html", **context)

    async def _instances_context(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        filters = {
            key: params.get(key, "").strip()
            for key in ("type", "version", "status", "after", "before", "prefix", "order")
        }
        error = ""
        query: dict[str, Any] = {}
        try:
            query = _instance_query(filters)
            page = _positive(params.get("page", "1"), "page")
        except FormError as exc:
            error, page = str(exc), 1
        rows: list[Any] = []
        total = 0
        counts: dict[InstanceStatus, int] = {}
        if not error:
            rows, total = await self._client.count_and_list(
                **query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
            )
            if not rows and total:
                # Past the last page (the list shrank, or a hand-made link): the last.
                page = -(-total // PAGE_SIZE)
                rows, total = await self._client.count_and_list(
                    **query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
                )
            counted = {
                key: value for key, value in query.items() if key not in ("status", "newest_first")
            }
            counts = await self._client.count_by_status(**counted)
        kept = {key: value for key, value in filters.items() if value}
        return {
            "filters": filters,
            "error": error,
            "rows": rows,
            "total": total,
            "counts": [(str(status), counts.get(status, 0)) for status in InstanceStatus],
            "all_count": sum(counts.values()),
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "first": (page - 1) * PAGE_SIZE + 1,
            "last": min(page * PAGE_SIZE, total),
            "query": urllib.parse.urlencode(kept),
            "query_without_status": urllib.parse.urlencode(
                {key: value for key, value in kept.items() if key != "status"}
            ),
            "page_link": lambda number: "?" + urllib.parse.urlencode({**kept, "page": number}),
        }

    async def info(self, request: Request) -> InstanceInfo:
        instance_id = request.path_params["id"]
        try:
            check_instance_id(instance_id)
        except InvalidNameError as exc:
            raise ApiError(404, "NotFound", str(exc)) from None
        info = await self._client.status(instance_id)
        if info is None:
            raise ApiError(404, "NotFound", f"no workflow instance {instance_id!r}")
        return info

    async def instance(self, request: Request, status: int = 200, **extra: Any) -> Response:
        info = await self.info(request)
        context = await self._instance_context(info, request)
        done = request.query_params.get("done", "")
        rerun = request.query_params.get("rerun", "") if done == "rerun" else ""
        try:
            check_instance_id(rerun)
        except InvalidNameError:
            rerun = ""
        return self.render(
            request,
            "instance.html",
            status,
            done=_DONE.get(done, ""),
            rerun=rerun,
            offered=offered(info),
            tops=await top_steps(self._client, info),
            form=extra.pop("form", {}),
            form_error=extra.pop("form_error", ""),
            **context,
            **extra,
        )

    async def instance_live(self, request: Request) -> Response:
        info = await self.info(request)
        context = await self._instance_context(info, request)
        response = self.render(request, "instance_live.html", **context)
        if context["settled"]:
            response.headers["X-Live-Final"] = "1"
        return response

    async def _instance_context(self, info: InstanceInfo, request: Request) -> dict[str, Any]:
        """What the instance's page and its live part show; ``history`` in the query pages."""
        records = await self._client.history(info.id, limit=HISTORY_LIMIT)
        pages = max(1, -(-len(records) // HISTORY_PAGE))
        try:
            history_page = min(
                _positive(request.query_params.get("history", "1"), "history"), pages
            )
        except FormError:
            history_page = 1
        start = (history_page - 1) * HISTORY_PAGE
        try:
            definition = await self._client.definition(info.type, info.version)
        except UnknownWorkflowTypeError:
            definition = None
        nodes = [] if definition is None else nodes_of(definition.to_data()["steps"])
        apply_states(nodes, info.steps, ended=info.status.terminal)
        now = time.time()
        timeline = build_timeline(
            records, info.created_at, info.updated_at if info.status.terminal else now
        )
        parent = next(
            (r["detail"].get("parent") for r in records if r["kind"] == "workflow.started"), None
        )
        children = [r["detail"] for r in records if r["kind"] == "child.started"]
        received = [r for r in records if r["kind"] == "signal.received"]
        awaited = [
            (node.id, node.label.removeprefix("signal "))
            for _, node in walk(nodes)
            if node.kind == "signal" and node.state == "waiting"
        ]
        settled = info.status.terminal and any(r["kind"] in _FINAL_RECORDS for r in records)
        return {
            "info": info,
            "records": records,
            "history": records[start : start + HISTORY_PAGE],
            "history_page": history_page,
            "history_pages": pages,
            "truncated": len(records) >= HISTORY_LIMIT,
            "tree": walk(nodes),
            "diagram": diagram_svg(
                nodes, title=f"steps of {info.type} v{info.version}", states=True
            )
            if nodes
            else Markup(""),
            "timeline": timeline,
            "timeline_svg": timeline_svg(timeline),
            "bars": durations(timeline.bars),
            "parent": parent,
            "children": children,
            "received": received,
            "awaited": awaited,
            "settled": settled,
        }

    # -- actions ---------------------------------------------------------------------

    async def signal(self, request: Request) -> Response:
        info = await self.info(request)
        fields = await self.form(request)
        form = {"name": fields.get("name", ""), "payload": fields.get("payload", "")}
        try:
            name = _signal_name(form["name"])
            payload = _json_field(form["payload"], "payload")
        except FormError as exc:
            return await self.instance(request, 400, form=form, form_error=str(exc))
        if fields.get("confirmed") != "yes":
            return self.render(
                request,
                "confirm.html",
                info=info,
                action="signal",
                question=f"Send signal {name!r} to {info.id}?",
                fields={"name": name, "payload": form["payload"]},
                payload=_pretty(payload),
            )
        await self._client.signal(info.id, name, payload)
        return RedirectResponse(f"/ui/instances/{info.id}?done=signal", 303, headers=_HEADERS)

    async def cancel(self, request: Request) -> Response:
        return await self._stop(request, "cancel")

    async def terminate(self, request: Request) -> Response:
        return await self._stop(request, "terminate")

    async def _stop(self, request: Request, action: str) -> Response:
        info = await self.info(request)
        fields = await self.form(request)
        reason = fields.get("reason", "")[:MAX_REASON]
        if fields.get("confirmed") != "yes":
            question = (
                f"Cancel {info.id}? The compensations of its completed steps run before it ends."
                if action == "cancel"
                else f"Terminate {info.id}? It stops at once, without compensation."
            )
            return self.render(
                request,
                "confirm.html",
                info=info,
                action=action,
                question=question,
                fields={"reason": reason},
                payload="",
            )
        stop = self._client.cancel if action == "cancel" else self._client.terminate
        await stop(info.id, reason)
        return RedirectResponse(f"/ui/instances/{info.id}?done={action}", 303, headers=_HEADERS)


def _operations(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's operations in its order, each with what the page shows of it."""
    found = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            body = operation.get("requestBody", {}).get("content", {})
            found.append(
                {
                    "id": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": operation.get("parameters", []) + item.get("parameters", []),
                    "body": {
                        kind: _pretty(_resolve(document, spec.get("schema", {})))
                        for kind, spec in body.items()
                    },
                    "responses": {
                        status: _resolve(document, answer).get("description", "")
                        for status, answer in operation.get("responses", {}).items()
                    },
                }
            )
    return found


def _resolve(document: Mapping[str, Any], part: Mapping[str, Any]) -> Mapping[str, Any]:
    """``part``, or what its ``$ref`` (``#/components/...``) points to in ``document``."""
    reference = part.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/"):
        return part
    found: Any = document
    for name in reference[2:].split("/"):
        found = found.get(name, {}) if isinstance(found, Mapping) else {}
    return found if isinstance(found, Mapping) else {}


def _local(target: str | None) -> str:
    """``target`` if it is a path of the UI (never another site), else the UI's first page."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _positive(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10_000_000:
        raise FormError(f"{name} must be a whole number from 1")
    return int(text)


def _moment(text: str, name: str) -> float:
    """A ``datetime-local`` field's value, read as UTC, in seconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FormError(
            f"{name}: not a date and time (YYYY-MM-DDTHH:MM, UTC): {text[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _instance_query(filters: Mapping[str, str]) -> dict[str, Any]:
    """The client query for the instances page's filters; :class:`FormError` for a bad one."""
    query: dict[str, Any] = {"newest_first": filters.get("order") != "oldest"}
    if filters["type"]:
        try:
            query["workflow_type"] = check_name("workflow type", filters["type"])
        except InvalidNameError as exc:
            raise FormError(str(exc)) from None
    if filters["version"]:
        query["version"] = _positive(filters["version"], "version")
    if filters["status"]:
        if filters["status"] not in _STATUSES:
            raise FormError(f"status must be one of {', '.join(_STATUSES)}")
        query["status"] = filters["status"]
    if filters["after"]:
        query["started_after"] = _moment(filters["after"], "started after")
    if filters["before"]:
        query["started_before"] = _moment(filters["before"], "started before")
    if filters["prefix"]:
        if len(filters["prefix"]) > 128:
            raise FormError("the id prefix is longer than any id (128 characters)")
        query["id_prefix"] = filters["prefix"]
    return query


def _signal_name(text: str) -> str:
    try:
        return check_name("signal name", text.strip())
    except InvalidNameError as exc:
        raise FormError(str(exc)) from None


def _json_field(text: str, name: str) -> Any:
    """A form field's JSON; :class:`FormError` saying where it is wrong."""
    if not text.strip():
        return None
    try:
        value = loads(text)
    except JsonError as exc:
        raise FormError(f"{name} is {_body_fault(exc)}") from None
    try:
        check_payload(value, name)
    except JsonError as exc:
        raise FormError(f"{name} is beyond what the engine carries: {exc}") from None
    return value
