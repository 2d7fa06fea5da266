"""The web UI's pages beyond instances: definitions, dead letters, workers and queues, API docs.

Each reads what the engine stores, through the same client as the API:
definitions from their bucket, dead letters and the oldest task of each
activity type from their streams (read without a consumer, so reading
changes nothing), the tasks waiting and running from the workers'
consumers (``Transport.consumer_lag``), the orchestrators from the
partitions bucket, and the live workers from the presence bucket
(``Client.workers``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import yaml
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from transport import NotFoundError

from ...core import MAX_VERSION, InvalidNameError, check_name
from ...wire import (
    DEADLETTER_STREAM,
    PARTITIONS_BUCKET,
    TASKS_STREAM,
    Layout,
    MessageError,
    WorkerPresence,
    decode_deadletter,
    task_subject,
)
from .._requests import ApiError
from ._steps import diagram_svg, nodes_of, walk

if TYPE_CHECKING:
    from ._app import WebUi

__all__ = ["MorePages"]

#: Dead letters per page.
LETTERS_PAGE: Final = 25
#: Bytes of a dead letter's sample shown.
SAMPLE_SHOWN: Final = 2048
#: A task held longer than this is flagged: a long run, or no worker serving its type.
STUCK_AFTER: Final = 30.0
#: An orchestrator whose announcement has not changed for this long is flagged:
#: a running one renews it every quarter of its lease (10 s by default).
SILENT_AFTER: Final = 15.0


@dataclass
class Member:
    """An orchestrator announced in the partitions bucket, as this process has seen it."""

    name: str
    #: Seconds since this process first saw its current announcement (``None``:
    #: seen changed since the previous look, or seen for the first time).
    unchanged_for: float | None
    silent: bool
    #: Not seen by an earlier look: nothing to compare yet.
    new: bool


@dataclass
class Queue:
    """What the page shows of one activity type's queue."""

    activity: str
    used_by: list[str]
    #: Tasks not yet handed to a worker, and handed out but not yet acknowledged;
    #: ``None`` when no worker ever made the type's consumer.
    waiting: int | None
    running: int | None
    #: When the oldest task still held was stored.
    oldest: float | None
    #: The live workers that serve the type (none: its tasks wait).
    workers: list[WorkerPresence]


class MorePages:
    """The handlers of the definitions, dead letters, workers and API docs pages."""

    def __init__(self, ui: WebUi) -> None:
        self._ui = ui
        self._client = ui.client
        #: Each orchestrator's announcement: its revision, and when this
        #: process first saw that revision (the bucket keeps no times).
        self._announced: dict[str, tuple[int, float]] = {}

    def routes(self) -> list[BaseRoute]:
        route = self._ui.route
        return [
            route("/ui/definitions", GET=self.definitions),
            route("/ui/definitions/{type}", GET=self.newest),
            route("/ui/definitions/{type}/{version}", GET=self.definition),
            route("/ui/deadletters", GET=self.deadletters),
            route("/ui/workers", GET=self.workers),
        ]

    # -- definitions ---------------------------------------------------------------

    async def definitions(self, request: Request) -> Response:
        types = await self._client.definitions()
        per_type = {
            name: sum((await self._client.count_by_status(workflow_type=name)).values())
            for name in types
        }
        return self._ui.render(
            request, "definitions.html", title="Definitions", types=types, per_type=per_type
        )

    async def newest(self, request: Request) -> Response:
        workflow_type = _type(request)
        definition = await self._client.definition(workflow_type)
        return RedirectResponse(f"/ui/definitions/{workflow_type}/{definition.version}", 303)

    async def definition(self, request: Request) -> Response:
        workflow_type = _type(request)
        version = _version(request.path_params["version"], "version")
        definition = await self._client.definition(workflow_type, version)
        versions = (await self._client.definitions()).get(workflow_type, [version])
        data = definition.to_data()
        text = _yaml(data)
        against_text = request.query_params.get("against", "")
        diff: list[tuple[str, str]] = []
        against = 0
        if against_text:
            against = _version(against_text, "against")
            other = await self._client.definition(workflow_type, against)
            diff = _diff(_yaml(other.to_data()), text, against, version)
        nodes = nodes_of(data["steps"])
        activities = sorted(
            {node.label for _, node in walk(nodes) if node.kind == "activity"}
            | {node.compensate for _, node in walk(nodes) if node.compensate}
        )
        return self._ui.render(
            request,
            "definition.html",
            title=f"{workflow_type} v{version}",
            definition=definition,
            versions=versions,
            diagram=diagram_svg(nodes, title=f"steps of {workflow_type} v{version}"),
            yaml_text=text,
            diff=diff,
            against=against,
            activities=activities,
        )

    # -- dead letters --------------------------------------------------------------

    async def deadletters(self, request: Request) -> Response:
        start_text = request.query_params.get("from", "1")
        start = _version(start_text, "from", high=2**63)
        try:
            stored = await self._client.transport.read(
                DEADLETTER_STREAM, "deadletter.>", start_seq=start, limit=LETTERS_PAGE + 1
            )
        except NotFoundError:
            stored = []
        letters = []
        for message in stored[:LETTERS_PAGE]:
            letter: dict[str, Any] = {
                "seq": message.stream_seq,
                "time": message.time,
                "source": message.subject.removeprefix("deadletter."),
            }
            try:
                body = decode_deadletter(message.data)
            except MessageError as exc:
                letter.update(subject="?", reason=f"(not a dead letter: {exc})", sample="")
            else:
                letter.update(
                    subject=body["subject"],
                    reason=body["reason"],
                    deliveries=body["num_delivered"],
                    sample=_sample(body["data"]),
                    size=len(body["data"]),
                )
            letters.append(letter)
        following = stored[LETTERS_PAGE].stream_seq if len(stored) > LETTERS_PAGE else None
        return self._ui.render(
            request,
            "deadletters.html",
            title="Dead letters",
            letters=letters,
            following=following,
            start=start,
        )

    # -- workers and queues -----------------------------------------------------------

    async def workers(self, request: Request) -> Response:
        users: dict[str, set[str]] = {}
        for workflow_type, versions in (await self._client.definitions()).items():
            for version in versions:
                definition = await self._client.definition(workflow_type, version)
                for _, node in walk(nodes_of(definition.to_data()["steps"])):
                    for name in (node.label if node.kind == "activity" else None, node.compensate):
                        if name:
                            users.setdefault(name, set()).add(f"{workflow_type} v{version}")
        workers = await self._client.workers()
        queues = [
            await self._queue(name, sorted(used), [w for w in workers if name in w.activities])
            for name, used in sorted(users.items())
        ]
        orchestrators, partitions = await self._orchestrators()
        now = self._client.transport.now()
        return self._ui.render(
            request,
            "workers.html",
            title="Workers and queues",
            queues=queues,
            orchestrators=orchestrators,
            partitions=partitions,
            workers=workers,
            now=now,
            stuck_after=STUCK_AFTER,
        )

    async def _queue(
        self, activity: str, used_by: list[str], workers: list[WorkerPresence]
    ) -> Queue:
        """The tasks of ``activity``: waiting and running, as its workers' consumer counts them.

        Workers of a type share one durable consumer, made by the first
        worker that serves the type: without it, no worker ever served it.
        """
        transport = self._client.transport
        consumer = Layout().activity_consumer(activity, 1.0).durable
        waiting: int | None = None
        running: int | None = None
        try:
            lag = await transport.consumer_lag(TASKS_STREAM, consumer)
        except NotFoundError:
            pass  # no such consumer (or stream): no worker ever served the type
        else:
            waiting, running = lag.pending, lag.unacked
        try:
            first = await transport.read(TASKS_STREAM, task_subject(activity), limit=1)
        except NotFoundError:
            first = []
        oldest = first[0].time if first else None
        return Queue(activity, used_by, waiting, running, oldest, workers)

    async def _orchestrators(self) -> tuple[list[Member], int]:
        """The orchestrators announced, and how many partitions have an owner.

        A running orchestrator rewrites its announcement every few seconds;
        one that stopped cleanly deletes it, one that crashed leaves it
        behind until another takes its partitions (or the bucket's hour-long
        TTL passes). So an announcement this process has seen unchanged for
        :data:`SILENT_AFTER` seconds is flagged: that orchestrator stopped.
        """
        try:
            kv = await self._client.transport.kv(PARTITIONS_BUCKET)
            keys = await kv.keys()
        except NotFoundError:
            return [], 0
        now = self._client.transport.now()
        members = []
        seen: dict[str, tuple[int, float]] = {}
        for key in sorted(keys):
            if not key.startswith("member."):
                continue
            entry = await kv.get(key)
            if entry is None:
                continue
            name = key.removeprefix("member.")
            before = self._announced.get(name)
            new = before is None
            if before is not None and before[0] == entry.revision:
                seen[name] = before
                unchanged: float | None = now - before[1]
            else:
                seen[name] = (entry.revision, now)
                unchanged = None
            silent = unchanged is not None and unchanged > SILENT_AFTER
            members.append(Member(name, unchanged, silent, new))
        self._announced = seen
        return members, sum(key.startswith("owner.") for key in keys)


def _type(request: Request) -> str:
    try:
        return check_name("workflow type", request.path_params["type"])
    except InvalidNameError as exc:
        raise ApiError(404, "NotFound", str(exc)) from None


def _version(text: str, name: str, high: int = MAX_VERSION) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
        raise ApiError(400, "ValidationError", f"{name} must be an integer from 1 to {high}")
    return int(text)


def _yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=100)


def _diff(old: str, new: str, old_version: int, new_version: int) -> list[tuple[str, str]]:
    """The unified diff from one version's YAML to another's, each line with its class."""
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"v{old_version}", f"v{new_version}", lineterm=""
    )
    shown = []
    for line in lines:
        kind = (
            "hunk"
            if line.startswith(("@@", "---", "+++"))
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "same"
        )
        shown.append((kind, line))
    return shown


def _sample(data: bytes) -> str:
    """The start of a dead message, as text if it is text, else as hex."""
    head = data[:SAMPLE_SHOWN]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\n\r\t" for c in text):
        return text + ("…" if len(data) > SAMPLE_SHOWN else "")
    return head.hex(" ") + (" …" if len(data) > SAMPLE_SHOWN else "")
