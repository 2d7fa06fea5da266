"""Fixtures of the HTTP API tests: an engine, the API served over real HTTP, an HTTP client.

Modelled on ``tests/engine/conftest.py``: each test runs on the memory
transport and on a NATS server of its own (the engine's stream and bucket
names are fixed, so tests must not share a broker), with the orchestrator
and a worker serving this module's activities in the test's process. The
API is served by :func:`actors.serve_api` on a free port, and called with
``httpx`` over TCP, on Trio (httpx runs on anyio, which runs on Trio).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
import trio

import actors
from actors.http import serve_api
from actors.http._openapi import openapi_document
from transport import Transport, open_transport

TOKEN = "test-token-0123456789"

GREET = """
type: greet
version: 1
description: say hello
steps:
  - {id: hello, activity: greet}
"""

APPROVAL = """
type: approval
version: 1
steps:
  - {id: wait, wait_signal: approved, timeout: 1m}
  - {id: hello, activity: greet, input: "{name: steps.wait.output.by}"}
"""

FAILING = """
type: failing
version: 1
steps:
  - {id: refuse, activity: refuse}
"""

ODD = """
type: odd
version: 1
steps:
  - {id: odd, activity: odd_values}
"""


@actors.activity
async def greet(value: Any) -> dict[str, Any]:
    return {"greeting": f"hello {value['name']}"}


@actors.activity
async def refuse(value: Any) -> None:
    raise actors.ActivityError("card declined", type="Declined", non_retryable=True)


@actors.activity
async def odd_values(value: Any) -> dict[str, Any]:
    """Values of the engine's data model that JSON does not have."""
    return {"bytes": b"\x00\xff", "nan": math.nan, "inf": -math.inf}


#: The test definitions, by type.
DEFINITIONS = {"greet": GREET, "approval": APPROVAL, "failing": FAILING, "odd": ODD}


@dataclass
class Served:
    """The engine's client, the API's base URL, and HTTP clients with and without the token.

    Test modules reach what they need through this (``definitions``,
    ``token``) and import nothing from here at run time.
    """

    client: actors.Client
    transport: Transport
    url: str
    token: str | None
    http: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    nursery: trio.Nursery
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    #: The orchestrators and workers started, to stop when the test ends.
    running: list[actors.Orchestrator | actors.Worker] = field(default_factory=list)

    async def register_examples(self) -> None:
        for text in self.definitions.values():
            await self.client.register(text)

    async def start_services(self) -> tuple[actors.Orchestrator, actors.Worker]:
        """Run an orchestrator and a worker for this module's activities (until the test ends)."""
        orchestrator = actors.Orchestrator(
            self.transport, actors.OrchestratorConfig(passivate_after=5.0, drain_timeout=2.0)
        )
        await self.nursery.start(orchestrator.run)
        worker = actors.Worker(
            self.transport,
            actors.collect_activities([greet, refuse, odd_values]),
            actors.WorkerConfig(ack_wait=5.0, concurrency=8, drain_timeout=2.0),
        )
        await self.nursery.start(worker.run)
        self.running += [orchestrator, worker]
        return orchestrator, worker


@pytest.fixture
def api_token() -> str | None:
    """The token the API is served with; a test module overrides this to change it."""
    return TOKEN


@pytest.fixture
def services() -> bool:
    """Whether an orchestrator and a worker serve the API's engine from the start.

    A test module overrides this with ``False`` to see the API with none
    running, and starts them itself (``Served.start_services``).
    """
    return True


class Conformance:
    """Checks every answer against the OpenAPI document: status, headers, body.

    Installed as an httpx response hook, so that every call a test makes is
    also a check of the document against what the app really does.
    """

    def __init__(self, *, auth: bool) -> None:
        self.document = openapi_document(auth=auth)
        self.schema = schemathesis.openapi.from_dict(self.document)
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in self.document["paths"]
        ]
        self.checked = 0

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if not isinstance(response.request.stream, httpx.ByteStream):
            return  # a streamed request body cannot be shown in a report: skip
        path = response.request.url.path
        method = response.request.method.lower()
        for pattern, template in self.templates:
            operations = self.document["paths"][template]
            if pattern.match(path) and method in operations:
                operation = self.schema[template][method.upper()]
                operation.validate_response(response)
                self.checked += 1
                return


@pytest.fixture
async def served(engine_url: str, api_token: str | None, services: bool) -> AsyncIterator[Served]:
    """A running engine, and the API served over HTTP on a free port."""
    # By function: this module's name in sys.modules is shared with every
    # other conftest.py of the suite.
    async with open_transport(engine_url) as transport, trio.open_nursery() as nursery:
        async with actors.Client(transport) as client:
            api = trio.CancelScope()
            stopped = trio.Event()

            async def run_api(task_status: trio.TaskStatus[str]) -> None:
                try:
                    with api:
                        await serve_api(client, port=0, token=api_token, task_status=task_status)
                finally:
                    stopped.set()

            url = await nursery.start(run_api)
            headers = {} if api_token is None else {"Authorization": f"Bearer {api_token}"}
            hooks = {"response": [Conformance(auth=api_token is not None)]}
            async with (
                httpx.AsyncClient(
                    base_url=url, headers=headers, timeout=30, event_hooks=hooks
                ) as http,
                httpx.AsyncClient(base_url=url, timeout=30, event_hooks=hooks) as anonymous,
            ):
                served = Served(client, transport, url, api_token, http, anonymous, nursery)
                if services:
                    await served.start_services()
                yield served
            # The API stops before the client it calls is closed.
            api.cancel()
            await stopped.wait()
        for service in served.running:
            service.shutdown()
        # Whatever a test left running must not hang the teardown.
        nursery.cancel_scope.deadline = trio.current_time() + 10
