"""Hostile messages for every subject the engine consumes; an engine to send them to.

:func:`catalogue` builds, for one copy (``tag``), every kind of bad message
the fault-injection suite sends: truncated CBOR, garbage, wrong types, deep
nesting, lengths declared in the exabytes, CBOR tags, unknown envelope
kinds and schema versions, bodies naming another instance or step than
their subject, subjects no event is published on, and well-formed events
for instances that do not exist. Each :class:`Bad` says where it goes and a
piece of the reason its dead letter must give. Instance ids and workflow
types in subjects carry the tag, so copies never collide with each other or
with healthy instances.

:func:`damaged_states` gives values to write straight into
``WORKFLOW_STATES``, each with the event to send to it afterwards.

:func:`read_deadletters` reads the dead-letter stream without a consumer;
:func:`letter_problems` pairs letters with the bad messages, one each.
:func:`in_process` runs an orchestrator, a worker and a client in the test's
own process, for the fast tests on both transports.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import cbor2
import trio
from test_codec import nested_lists

import actors
from actors.core import InstanceState, InstanceStatus
from actors.wire import decode_deadletter, encode_cancel, encode_state
from actors.wire._names import DEADLETTER_STREAM
from transport import Transport, open_transport

#: Bytes of a message a dead letter keeps (the orchestrator's and the worker's sample).
SAMPLE: Final = 64 * 1024
#: A length no input can hold: the CBOR headers below declare it.
HUGE: Final = 2**62


@dataclass(frozen=True)
class Bad:
    """One hostile message: where it goes, and what its dead letter must say."""

    #: What is wrong with it, for reports.
    what: str
    subject: str
    data: bytes
    #: Pieces of the dead letter's reason (each must be in it).
    reason: str | tuple[str, ...]
    #: ``events`` (the orchestrator dead-letters it) or ``tasks`` (a worker does).
    source: str = "events"

    @property
    def key(self) -> tuple[str, bytes]:
        """What identifies its dead letter: the subject and the kept sample."""
        return self.subject, self.data[:SAMPLE]


# -- CBOR pieces -------------------------------------------------------------------


def envelope(kind: str, body: Any, version: Any = 1) -> bytes:
    """An envelope as any CBOR library would write it (no validation)."""
    return cbor2.dumps({"version": version, "kind": kind, "body": body})


def _prefix(kind: str) -> bytes:
    """An envelope's bytes up to its body, to append a hand-made body to."""
    return b"\xa3" + b"".join(cbor2.dumps(x) for x in ("version", 1, "kind", kind, "body"))


def _head(major: int, length: int) -> bytes:
    """A CBOR item header with an 8-byte argument: ``major`` type, ``length``."""
    return bytes([major << 5 | 27]) + length.to_bytes(8, "big")


def poisons(kind: str, good: bytes) -> list[tuple[str, bytes, str]]:
    """(what, data, reason) for bodies broken at the envelope level.

    ``good`` is a valid message of ``kind``; some poisons are cut from it.
    Every one fails whatever the subject (none decodes as an envelope of
    ``kind``), except ``empty`` on a signal subject, which is a valid signal.
    """
    prefix = _prefix(kind)
    return [
        ("truncated", good[: len(good) // 2], "truncated CBOR"),
        ("truncated by one byte", good[:-1], "truncated CBOR"),
        ("empty", b"", "empty payload"),
        ("not CBOR", b"\x00\xffnot cbor at all", "header byte is 0x00"),
        ("byte string of 2**62 bytes", prefix + _head(2, HUGE), "exceeds the input"),
        ("text string of 2**62 bytes", prefix + _head(3, HUGE) + b"ab", "exceeds the input"),
        ("array of 2**62 items", prefix + _head(4, HUGE) + b"\x01", "max_items"),
        ("map of 2**62 entries", prefix + _head(5, HUGE) + b"\x01", "max_items"),
        ("epoch-time tag in the body", prefix + b"\xc1\x1a\x00\x00\x00\x00", "tags are not"),
        ("self-described (tag 55799) envelope", b"\xd9\xd9\xf7" + good, "header byte is 0xd9"),
        ("bignum tag in the body", prefix + b"\xc2\x41\x01", "tags are not allowed"),
        ("nested 40 deep", envelope(kind, nested_lists(40)), "nests deeper than max_depth"),
        ("indefinite-length array", prefix + b"\x9f\x01\xff", "indefinite-length"),
        ("undefined simple value", prefix + b"\xf7", "unsupported CBOR simple value"),
        ("trailing bytes", good + b"\x00", "trailing bytes"),
        ("integer map key", prefix + b"\xa1\x01\x02", "map keys must be text strings"),
        ("invalid UTF-8", prefix + b"\x62\xff\xfe", "malformed CBOR envelope"),
        ("duplicate map keys", prefix + b"\xa2\x61a\x01\x61a\x02", "malformed CBOR envelope"),
        ("schema version 2", envelope(kind, {}, 2), "newer than supported"),
        ("schema version 0", envelope(kind, {}, 0), "invalid envelope schema version 0"),
        ("schema version '1'", envelope(kind, {}, "1"), "invalid envelope schema version '1'"),
        ("unknown kind", envelope("workflow.bogus", {}), "got 'workflow.bogus'"),
        ("invalid kind", envelope("Not A Kind!", {}), "kind must be"),
        (
            "fourth envelope field",
            cbor2.dumps({"version": 1, "kind": kind, "body": {}, "extra": 1}),
            "header byte is 0xa4",
        ),
        (
            "envelope without a body",
            cbor2.dumps({"version": 1, "kind": kind, "extra": {}}),
            "exactly the fields",
        ),
        ("body not a map", envelope(kind, [1, 2]), "body must be a map"),
    ]


# -- the catalogue -----------------------------------------------------------------


def catalogue(tag: str, *, activity: str, other_activity: str, big: bool = False) -> list[Bad]:
    """Every kind of bad message once, on every subject the engine consumes.

    ``tag`` (letters and digits) makes ids and types unique to this copy;
    ``activity`` must be served by a worker (its tasks are consumed),
    ``other_activity`` is any other valid activity name. ``big`` adds one
    garbage message of nearly 1 MiB.
    """
    bads: list[Bad] = []
    counter = iter(range(1_000_000))

    def ident() -> str:
        return f"h{tag}-{next(counter)}"

    def add(
        what: str, subject: str, data: bytes, reason: str | tuple[str, ...], source: str = "events"
    ) -> None:
        bads.append(Bad(what, subject, data, reason, source))

    def poisoned(name: str, kind: str, good: bytes, subject: Any) -> None:
        """Every envelope-level poison on subjects made by ``subject()``."""
        for what, data, reason in poisons(kind, good):
            if what == "empty" and kind == "workflow.signal":
                continue  # an empty signal is a valid one (payload null)
            add(f"{name}: {what}", subject(), data, reason)

    # workflow.start.{type}
    start = envelope("workflow.start", {"id": "x", "input": 1})
    poisoned("start", "workflow.start", start, lambda: f"workflow.start.{ident()}")
    for what, body, reason in [
        ("invalid id", {"id": "bad id!"}, "instance id 'bad id!' is not valid"),
        ("id of 129 characters", {"id": "a" * 129}, "is not valid"),
        ("integer id", {"id": 5}, "instance id must be a string"),
        ("negative version", {"id": "x", "version": -1}, "must be a positive integer"),
        ("text version", {"id": "x", "version": "2"}, "must be a positive integer"),
        ("boolean version", {"id": "x", "version": True}, "must be a positive integer"),
        ("parent not a map", {"id": "x", "parent": 5}, "field 'parent' must be a map"),
        ("parent without an id", {"parent": {"id": "p", "step": "s"}}, "needs an id"),
        ("parent step invalid", {"id": "x", "parent": {"id": "p", "step": "9"}}, "parent:"),
        ("parent id missing", {"id": "x", "parent": {"step": "s"}}, "parent: instance id"),
    ]:
        add(f"start: {what}", f"workflow.start.{ident()}", envelope("workflow.start", body), reason)
    for what, data, reason in [
        ("JSON cut short", b'{"id": "x", "input": ', "start is not valid JSON"),
        ("JSON integer id", b'{"id": 5}', "instance id must be a string"),
        ("JSON nested 40 deep", b'{"input": ' + b"[" * 40 + b"]" * 40 + b"}", "within limits"),
        ("JSON array", b'[{"id": "x"}]', "a JSON start must be an object, got a list"),
        ("a task on the start subject", envelope("activity.task", {}), "got 'activity.task'"),
    ]:
        add(f"start: {what}", f"workflow.start.{ident()}", data, reason)
    add("start: type not a name", "workflow.start.9bad", start, "workflow type '9bad'")
    add("start: four tokens", f"workflow.start.{ident()}.more", start, "no event is published")

    # instance.{id}.start.{type}: a start filed under its instance
    add("filed start: another id in the body", f"instance.{ident()}.start.t", start, "another")
    add("filed start: type not a name", f"instance.{ident()}.start.9bad", start, "type '9bad'")
    add("filed start: no type", f"instance.{ident()}.start", start, "no event is published")
    add("filed start: invalid id", "instance.bad@id.start.t", start, "instance id 'bad@id'")

    # instance.{id}.cancel and instance.{id}.terminate
    for verb in ("cancel", "terminate"):
        kind = f"workflow.{verb}"
        good = encode_cancel("why", terminate=verb == "terminate")
        poisoned(verb, kind, good, lambda verb=verb: f"instance.{ident()}.{verb}")
        other = encode_cancel("why", terminate=verb != "terminate")
        add(
            f"{verb}: the other verb's kind",
            f"instance.{ident()}.{verb}",
            other,
            f"expected a '{kind}'",
        )
        add(f"{verb}: invalid id", f"instance.bad@id.{verb}", good, "instance id 'bad@id'")
        add(
            f"{verb}: four tokens", f"instance.{ident()}.{verb}.more", good, "no event is published"
        )
        add(f"{verb}: unknown instance", f"instance.{ident()}.{verb}", good, "no instance")

    # instance.{id}.signal.{name}
    signal = envelope("workflow.signal", {"payload": 1})
    poisoned("signal", "workflow.signal", signal, lambda: f"instance.{ident()}.signal.go")
    for what, data, reason in [
        ("JSON cut short", b'{"a": ', "signal is not valid JSON"),
        ("JSON string unterminated", b'"abc', "signal is not valid JSON"),
        ("JSON nested 40 deep", b"[" * 40 + b"]" * 40, "within limits"),
        ("number with junk", b"12abc", "signal is not valid JSON"),
    ]:
        add(f"signal: {what}", f"instance.{ident()}.signal.go", data, reason)
    add("signal: name not a name", f"instance.{ident()}.signal.9go", signal, "signal name '9go'")
    add("signal: invalid id", "instance.bad@id.signal.go", signal, "instance id 'bad@id'")
    add("signal: three tokens", f"instance.{ident()}.signal", signal, "no event is published")
    add("signal: unknown instance", f"instance.{ident()}.signal.go", signal, "no instance")
    add("signal: JSON, unknown instance", f"instance.{ident()}.signal.go", b"[1]", "no instance")

    # instance.{id}.{completed,failed}.{step}
    def result(instance: Any, fields: dict[str, Any] | None = None) -> bytes:
        body = {"instance": instance, "step": "s", "attempt": 1, "output": 1, **(fields or {})}
        return envelope("activity.result", {k: v for k, v in body.items() if v is not _DROP})

    for outcome in ("completed", "failed"):

        def subject(instance: str, outcome: str = outcome) -> str:
            return f"instance.{instance}.{outcome}.s"

        error = {"type": "E", "message": "m"}
        extra: dict[str, Any] = {} if outcome == "completed" else {"output": _DROP, "error": error}
        poisoned(
            outcome,
            "activity.result",
            result("x", extra),
            lambda subject=subject: subject(ident()),
        )
        wrong: list[tuple[str, dict[str, Any], str]] = [
            ("text attempt", {"attempt": "1"}, "field 'attempt'"),
            ("boolean attempt", {"attempt": True}, "field 'attempt'"),
            ("no attempt", {"attempt": _DROP}, "field 'attempt'"),
            ("integer step", {"step": 5}, "field 'step'"),
            ("another instance", {"instance": "someone-else"}, "names another instance"),
            ("another step", {"step": "t"}, "names another instance or step"),
        ]
        for what, fields, reason in wrong:
            instance = ident()
            add(
                f"{outcome}: {what}",
                subject(instance),
                result(instance, {**extra, **fields}),
                reason,
            )
        instance = ident()
        add(
            f"{outcome}: integer instance",
            subject(instance),
            result(5, extra),
            "field 'instance'",
        )
        instance = ident()
        add(
            f"{outcome}: the other outcome's body",
            subject(instance),
            result(instance, {"output": _DROP, "error": error} if not extra else {}),
            "outcome disagrees with its subject",
        )
        instance = ident()
        add(
            f"{outcome}: unknown instance",
            subject(instance),
            result(instance, extra),
            "no instance",
        )
        add(
            f"{outcome}: invalid id in body and subject",
            subject("bad@id"),
            result("bad@id", extra),
            "instance id 'bad@id' is not valid",
        )
        add(
            f"{outcome}: four tokens",
            f"instance.{ident()}.{outcome}",
            result("x"),
            "no event is published",
        )
    instance = ident()
    add(
        "failed: error not a map",
        f"instance.{instance}.failed.s",
        result(instance, {"output": _DROP, "error": "boom"}),
        "field 'error'",
    )

    # instance.{id}.timer
    def timer(instance: str, fields: dict[str, Any] | None = None) -> bytes:
        body = {"instance": instance, "kind": "sleep", "step": "s", "attempt": 1, **(fields or {})}
        return envelope("workflow.timer", body)

    poisoned("timer", "workflow.timer", timer("x"), lambda: f"instance.{ident()}.timer")
    wrong_timers: list[tuple[str, dict[str, Any], str]] = [
        ("unknown timer kind", {"kind": "bogus"}, "unknown timer kind 'bogus'"),
        ("integer kind", {"kind": 5}, "unknown timer kind 5"),
        ("text attempt", {"attempt": "x"}, "field 'attempt'"),
        ("integer step", {"step": 5}, "field 'step'"),
        ("another instance", {"instance": "someone-else"}, "names another instance"),
    ]
    for what, fields, reason in wrong_timers:
        instance = ident()
        add(f"timer: {what}", f"instance.{instance}.timer", timer(instance, fields), reason)
    instance = ident()
    add("timer: unknown instance", f"instance.{instance}.timer", timer(instance), "no instance")
    add("timer: four tokens", f"instance.{ident()}.timer.x", timer("x"), "no event is published")

    # Subjects no event is published on.
    for subject in (
        f"workflow.bogus.{ident()}",
        f"workflow.activity.completed.{ident()}.s",
        f"workflow.signal.{ident()}.go",
        "workflow.start",
        f"workflow.x{ident()}",
        f"instance.{ident()}",
        f"instance.{ident()}.bogus",
        f"instance.{ident()}.activity.completed.s",
    ):
        add(f"no such subject: {subject}", subject, start, "no event is published on")

    # activity.tasks.{activity}: the workers' own stream.
    tasks = f"activity.tasks.{activity}"

    def task(**fields: Any) -> bytes:
        body = {
            "instance": ident(),
            "type": "t",
            "step": "s",
            "attempt": 1,
            "activity": activity,
            "input": {"n": 0, "count": 0},
            "scheduled_at": 0.0,
            "schedule_to_start": None,
            "start_to_close": 30.0,
            "heartbeat": None,
            **fields,
        }
        return envelope("activity.task", {k: v for k, v in body.items() if v is not _DROP})

    for what, data, reason in poisons("activity.task", task()):
        add(f"task: {what}", tasks, data, ("malformed task: ", reason), "tasks")
    for what, fields, reason in [
        ("no instance", {"instance": _DROP}, "field 'instance'"),
        ("invalid instance id", {"instance": "a b"}, "instance id 'a b' is not valid"),
        ("invalid step key", {"step": "9x"}, "step key '9x' is not valid"),
        ("step key with a dot", {"step": "a.b"}, "step key 'a.b' is not valid"),
        ("activity not a name", {"activity": "no way"}, "activity 'no way' is not a valid"),
        ("text attempt", {"attempt": "1"}, "field 'attempt'"),
        ("no scheduled_at", {"scheduled_at": _DROP}, "field 'scheduled_at'"),
        ("NaN start_to_close", {"start_to_close": math.nan}, "'start_to_close' must be a finite"),
        ("infinite start_to_close", {"start_to_close": math.inf}, "'start_to_close' must be"),
        ("negative start_to_close", {"start_to_close": -1.0}, "'start_to_close' must be"),
        ("text start_to_close", {"start_to_close": "30s"}, "field 'start_to_close'"),
        ("NaN heartbeat", {"heartbeat": math.nan}, "'heartbeat' must be a finite"),
        ("negative heartbeat", {"heartbeat": -1.0}, "'heartbeat' must be a finite"),
        ("NaN schedule_to_start", {"schedule_to_start": math.nan}, "'schedule_to_start' must"),
    ]:
        add(f"task: {what}", tasks, task(**fields), ("malformed task: ", reason), "tasks")
    add(
        "task: a start on the tasks subject",
        tasks,
        start,
        "malformed task: expected a 'activity.task' message, got 'workflow.start'",
        "tasks",
    )
    add(
        "task: for another activity",
        tasks,
        task(activity=other_activity),
        f"task for '{other_activity}' on '{activity}'",
        "tasks",
    )
    if big:
        # Nearly the broker's largest message, of garbage: decoding must refuse
        # it cheaply, and its dead letter keeps a sample of it.
        blob = b"\xa3" + bytes(range(256)) * 4000
        add("start: 1 MB of garbage", f"workflow.start.{ident()}", blob, "map keys must be text")
    return bads


class _Drop:
    """A field value meaning "leave the field out"."""


_DROP: Any = _Drop()


# -- damaged states --------------------------------------------------------------------


def damaged_states(tag: str, sample: InstanceState) -> list[tuple[str, bytes, Bad]]:
    """(key, value, bad) to write into ``WORKFLOW_STATES``; ``sample`` is a real state.

    Publish each ``bad`` (a cancel for that key) once its value is written:
    its dead letter must say the state is damaged and how. No key is that of
    an instance that exists.
    """
    good = encode_state(dataclasses.replace(sample, id=f"h{tag}-state-0"))
    body = cbor2.loads(good)["body"]
    missing = {k: v for k, v in body.items() if k != "steps"}
    wrong_status = {**body, "status": "sleepy"}
    values = [
        (b"\x00garbage", "header byte is 0x00"),
        (good[: len(good) // 2], "truncated CBOR"),
        (envelope("activity.task", body), "expected a 'instance.state' message"),
        (envelope("instance.state", missing), "damaged instance state: field 'steps' is missing"),
        (envelope("instance.state", wrong_status), "damaged instance state"),
        (envelope("instance.state", body, 2), "newer than supported"),
        (good, "is that of 'h"),  # another instance's state under this key
    ]
    damaged: list[tuple[str, bytes, Bad]] = []
    for i, (value, reason) in enumerate(values):
        key = f"h{tag}-state-{i + 1}"
        bad = Bad(
            f"damaged state: {reason}",
            f"instance.{key}.cancel",
            encode_cancel(f"to the damaged {key}"),
            (f"instance {key}: ", reason),
        )
        damaged.append((key, value, bad))
    return damaged


def sample_state(instance_id: str = "sample") -> InstanceState:
    """A small running state to damage."""
    return InstanceState(
        id=instance_id,
        type="ledger_four",
        version=1,
        input={"n": 0},
        status=InstanceStatus.RUNNING,
        created_at=1.0,
        updated_at=1.0,
    )


# -- reading dead letters ----------------------------------------------------------------


async def read_deadletters(transport: Transport) -> list[dict[str, Any]]:
    """Every dead letter stored, oldest first, each with ``source`` (events, tasks).

    Read page by page without a consumer, so reading leaves nothing behind.
    """
    letters: list[dict[str, Any]] = []
    start = 1
    while True:
        page = await transport.read(DEADLETTER_STREAM, "deadletter.>", start_seq=start, limit=1000)
        for message in page:
            letter = dict(decode_deadletter(message.data))
            letter["source"] = message.subject.rpartition(".")[2]
            letters.append(letter)
        if len(page) < 1000:
            return letters
        start = page[-1].stream_seq + 1


async def wait_deadletters(
    transport: Transport, count: int, *, check: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """The dead letters once there are at least ``count`` (bound it with ``trio.fail_after``).

    ``check`` is called between reads: it raises to give up early (a service died).
    """
    while True:
        letters = await read_deadletters(transport)
        if len(letters) >= count:
            return letters
        if check is not None:
            check()
        # The letters are written by other tasks (or processes) as they get to
        # the messages: there is nothing to wait on but the stream itself.
        await trio.sleep(0.2)


def letter_problems(bads: Sequence[Bad], letters: Iterable[dict[str, Any]]) -> list[str]:
    """What is wrong with ``letters`` as the dead letters of ``bads``: one letter per
    bad message, from the right service, whose reason says what ``Bad.reason`` says."""
    problems: list[str] = []
    by_key: dict[tuple[str, bytes], list[dict[str, Any]]] = {}
    for letter in letters:
        by_key.setdefault((letter["subject"], bytes(letter["data"])), []).append(letter)
    wanted = Counter(bad.key for bad in bads)
    for key, count in wanted.items():
        got = by_key.get(key, [])
        if len(got) != count:
            what = [bad.what for bad in bads if bad.key == key]
            problems.append(f"{what}: {len(got)} dead letters, {count} expected")
    for bad in bads:
        got = by_key.get(bad.key, [])
        pieces = (bad.reason,) if isinstance(bad.reason, str) else bad.reason
        if not any(
            all(piece in letter["reason"] for piece in pieces) and letter["source"] == bad.source
            for letter in got
        ):
            reasons = [(letter["source"], letter["reason"][:200]) for letter in got]
            problems.append(f"{bad.what}: no {bad.source} letter saying {bad.reason!r}: {reasons}")
    strangers = set(by_key) - set(wanted)
    for key in sorted(strangers)[:20]:
        letter = by_key[key][0]
        problems.append(f"unexpected dead letter from {key[0]}: {letter['reason'][:200]}")
    return problems


# -- an engine in this process ----------------------------------------------------------


@dataclass
class InProcess:
    """An orchestrator and a worker running in the test's process, and a client."""

    transport: Transport
    client: actors.Client
    orchestrator: actors.Orchestrator
    worker: actors.Worker


@asynccontextmanager
async def in_process(
    url: str,
    activities: ModuleType,
    *,
    limits: actors.Limits | None = None,
    passivate_after: float = 5.0,
) -> AsyncIterator[InProcess]:
    """Run an engine on ``url`` serving the ``@activity`` functions of ``activities``."""
    config = actors.OrchestratorConfig(
        passivate_after=passivate_after,
        drain_timeout=2.0,
        limits=limits or actors.Limits(),
        # Events for made-up instances wait 2 s for a start, not 120.
        start_wait=2.0,
    )
    worker_config = actors.WorkerConfig(ack_wait=5.0, concurrency=8, drain_timeout=2.0)
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport, config)
        await nursery.start(orchestrator.run)
        worker = actors.Worker(transport, actors.collect_activities([activities]), worker_config)
        await nursery.start(worker.run)
        async with actors.Client(transport, limits=limits) as client:
            yield InProcess(transport, client, orchestrator, worker)
        orchestrator.shutdown()
        worker.shutdown()
        # Whatever is left running after a failed test must not hang the teardown.
        nursery.cancel_scope.deadline = trio.current_time() + 10
