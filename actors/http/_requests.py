"""Reading a request and answering it: bodies, JSON in and out, fields, queries, ``ApiError``.

Everything a handler reads from the caller goes through here, so that every
refusal is an :class:`ApiError` with a status the caller can act on, and
JSON out is always standard JSON (bytes as base64, non-finite floats as
strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from typing import Any, Final, NoReturn

from starlette.requests import Request
from starlette.responses import Response

from ..core import MAX_VERSION
from ..errors import RequestError
from ..wire import JsonError, check_payload, dumps, loads
from ._bounds import MAX_BODY_BYTES

#: The most field problems an error answer lists.
MAX_DETAILS: Final = 100
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
