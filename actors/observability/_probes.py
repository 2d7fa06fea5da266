"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, served by a Trio task.

A small HTTP/1.1 server of its own (GET and HEAD, one request per
connection): the probes need no framework, and it runs as a task of the
service's nursery, so it ends with the service and never outlives it in a
thread. Each connection has :data:`REQUEST_TIMEOUT` seconds to send a request
of at most :data:`MAX_REQUEST` bytes.

* ``/healthz``: 200 while the process's event loop answers (Kubernetes'
  liveness probe).
* ``/readyz``: 200 once every check of its :class:`Readiness` passes, else
  503 with the reasons, one a line (the readiness probe).
* ``/metrics``: the Prometheus text format of a :class:`~actors.observability.Metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Final, Protocol

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from transport import ConnectionState, Transport

from ._metrics import Metrics

__all__ = [
    "MAX_REQUEST",
    "REQUEST_TIMEOUT",
    "ProbesPortError",
    "Probes",
    "Readiness",
    "serve_probes",
]

log = logging.getLogger("actors.probes")

#: Bytes of a request (line and headers) read at most.
MAX_REQUEST: Final = 8192
#: Seconds a connection has to send its request and take the answer.
REQUEST_TIMEOUT: Final = 10.0

#: Seconds an oversized request is read on (and dropped) after its answer.
_LINGER: Final = 1.0

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class ProbesPortError(OSError):
    """The metrics and probes port cannot be listened on (taken, or a bad address)."""


class Readiness:
    """Named checks that must all pass for ``/readyz`` to answer 200.

    A check returns ``None`` when it passes, else why it does not
    (``"not connected to the broker"``).
    """

    def __init__(self) -> None:
        self._checks: list[Callable[[], str | None]] = []

    def add(self, check: Callable[[], str | None]) -> None:
        self._checks.append(check)

    def reasons(self) -> list[str]:
        """Why the process is not ready: empty when it is."""
        return [reason for check in self._checks if (reason := check()) is not None]


class Service(Protocol):
    """A service as the probes run it: an orchestrator, a worker."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def shutdown(self) -> None: ...


class Probes:
    """A service run with its metrics and probes served beside it.

    Ready (``/readyz``) once the service has started (an orchestrator: its
    streams and buckets provisioned, the definitions loaded, its intake
    consumer bound, its leases running; a worker: every activity's consumer
    bound, the withdrawn tasks read) while its transport is connected, and
    until it is told to shut down.
    """

    def __init__(self, metrics: Metrics, transport: Transport, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.readiness = Readiness()
        self._host, self._port = host, port
        self._service: Service | None = None
        self._started = False
        self._stopping = False
        self.url: str | None = None
        self.readiness.add(lambda: connected(transport))
        self.readiness.add(self._state)

    def _state(self) -> str | None:
        if self._stopping:
            return "shutting down"
        if not self._started:
            return "starting: streams, consumers and definitions not ready yet"
        return None

    async def run(
        self, service: Service, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the probes, then run ``service``; return when it returns (the probes stop).

        Started once the service is; raises what the service raises, and
        :class:`ProbesPortError` if the port cannot be listened on.
        """
        self._service = service
        async with trio.open_nursery() as nursery:
            serve = partial(serve_probes, self.metrics, self.readiness)
            self.url = await nursery.start(partial(serve, host=self._host, port=self._port))
            await nursery.start(self._run_service, service, nursery.cancel_scope)
            self._started = True
            task_status.started()

    @staticmethod
    async def _run_service(
        service: Service,
        probes: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await service.run(task_status=task_status)
        probes.cancel()  # the service is done: so are its probes

    def shutdown(self) -> None:
        """Not ready any more; tell the service to shut down."""
        self._stopping = True
        if self._service is not None:
            self._service.shutdown()


def connected(transport: Transport) -> str | None:
    """A readiness check: ``None`` while ``transport`` is connected to its broker."""
    state = transport.state
    if state is ConnectionState.CONNECTED:
        return None
    return f"not connected to the broker ({state.value})"


async def serve_probes(
    metrics: Metrics,
    readiness: Readiness,
    *,
    host: str = "0.0.0.0",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the probes and the metrics on ``host:port`` until cancelled.

    Started (``await nursery.start(serve_probes, ...)``) once listening,
    with the URL it serves (``http://127.0.0.1:9464``; ``port=0``: a free
    port). Raises :class:`ProbesPortError` if it cannot listen.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ProbesPortError(
            f"cannot listen on {host}:{port} for metrics and probes: {exc.strerror or exc}"
        ) from None
    sockname = listeners[0].socket.getsockname()
    shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    url = f"http://{shown}:{sockname[1]}"

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            # A prober that went away (broken) has nothing to be answered.
            with trio.move_on_after(REQUEST_TIMEOUT), suppress(trio.BrokenResourceError):
                await _answer(stream, metrics, readiness)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("metrics, /healthz and /readyz on %s", url)
        task_status.started(url)


async def _answer(stream: trio.SocketStream, metrics: Metrics, readiness: Readiness) -> None:
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request:
        if len(request) > MAX_REQUEST:
            await _send(stream, 400, b"request too large\n")
            # Closing with the rest unread would reset the connection, and
            # the client might lose the answer: read on for a moment.
            await stream.send_eof()
            with trio.move_on_after(_LINGER):
                while await stream.receive_some(MAX_REQUEST):
                    pass
            return
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            return
        request += chunk
    line = request.split(b"\n", 1)[0].decode("latin-1").strip().split(" ")
    if len(line) != 3 or not line[2].startswith("HTTP/"):
        await _send(stream, 400, b"not an HTTP request\n")
        return
    method, target = line[0], line[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        await _send(stream, 405, b"GET or HEAD only\n", head=False, allow=True)
        return
    head = method == "HEAD"
    if target == "/healthz":
        await _send(stream, 200, b"ok\n", head=head)
    elif target == "/readyz":
        reasons = readiness.reasons()
        if reasons:
            await _send(stream, 503, "".join(f"{r}\n" for r in reasons).encode(), head=head)
        else:
            await _send(stream, 200, b"ready\n", head=head)
    elif target == "/metrics":
        await metrics.refresh()
        body = generate_latest(metrics.registry)
        await _send(stream, 200, body, head=head, content_type=CONTENT_TYPE_LATEST)
    else:
        await _send(stream, 404, b"the paths are /metrics, /healthz and /readyz\n", head=head)


async def _send(
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    *,
    head: bool = False,
    content_type: str = "text/plain; charset=utf-8",
    allow: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        lines.append("Allow: GET, HEAD")
    header = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    await stream.send_all(header if head else header + body)
