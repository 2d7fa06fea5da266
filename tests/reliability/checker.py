"""The ledger workflow and the checker every fault-injection scenario ends with.

A scenario starts ``ledger_four`` instances (four ``ledger_increment`` steps:
each appends begin/end lines to an fsynced ledger file outside NATS and
returns its input with ``count`` plus one), injects its faults, and then
calls :func:`check_run`, which judges the run as the issue states it:

* every accepted start reached a terminal state with the correct output;
* every step's result was applied once: the instance's history has exactly
  one ``activity.completed`` per step and records numbered 1..``state.seq``
  with no gap or repeat (``seq`` counts the transitions the stored state went
  through, so a result applied twice shows as a repeat or an extra record);
* every step ran at least once (a ``begin`` and an ``end`` in the ledger),
  and steps that ran more than once are counted and reported;
* no consumer of a stream (a bucket's watches aside) is left with pending or
  unacknowledged messages, and the work-queue streams are empty (asked of the
  nats-servers' monitoring port);
* nothing exists, in the states bucket or the history, for unknown instances.

Everything found goes into :class:`Report`; ``assert_ok`` fails with all of it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from ledger_activities import duplicate_runs, read_ledger
from processes import collect_results, history_problems, read_history, read_states

import actors
from actors.testing import NatsServer, http_get
from actors.wire import EVENTS_STREAM, STATES_BUCKET, TASKS_STREAM
from transport import ConnectionState, Transport, TransportError

LEDGER_TYPE = "ledger_four"
LEDGER_STEPS = ("one", "two", "three", "four")
#: The same four steps, each running ``ledger_slow`` for the input's ``seconds``.
SLOW_LEDGER_TYPE = "ledger_four_slow"


def _flow(workflow_type: str, activity: str, timeout: str = "") -> str:
    lines = [f"type: {workflow_type}", "version: 1", "steps:"]
    lines += [f"  - {{id: {step}, activity: {activity}{timeout}}}" for step in LEDGER_STEPS]
    return "\n".join(lines) + "\n"


LEDGER_FLOW = _flow(LEDGER_TYPE, "ledger_increment")
#: The heartbeat bound is the worker's own clock: a test that SIGSTOPs the worker
#: mid-step (the full-store test, for as long as a CLI process takes to start on a
#: loaded machine) must stop it for less than this, or the step fails by design.
SLOW_LEDGER_FLOW = _flow(
    SLOW_LEDGER_TYPE, "ledger_slow", ", timeout: {start_to_close: 60s, heartbeat: 20s}"
)

#: The ledger steps with a wait for the signal ``go`` after the first (``signals=1`` for
#: :func:`check_run`; the output is :func:`ledger_output`'s).
GATED_TYPE = "ledger_gated"
GATED_FLOW = f"""
type: {GATED_TYPE}
version: 1
steps:
  - {{id: one, activity: ledger_increment}}
  - {{id: gate, wait_signal: go}}
  - {{id: two, activity: ledger_increment, input: steps.one.output}}
  - {{id: three, activity: ledger_increment}}
  - {{id: four, activity: ledger_increment}}
"""

_CHECKS = itertools.count(1)

#: Streams whose messages are removed once acked: empty when all work is done.
WORK_QUEUES = (EVENTS_STREAM, TASKS_STREAM)


def ledger_input(n: int, **extra: Any) -> dict[str, Any]:
    return {"n": n, "count": 0, **extra}


def ledger_output(n: int, **extra: Any) -> dict[str, Any]:
    """What ``ledger_four`` returns for :func:`ledger_input` ``(n, **extra)``."""
    return {"n": n, "count": len(LEDGER_STEPS), **extra, "trail": list(LEDGER_STEPS)}


async def start_ledger(
    client: actors.Client,
    count: int,
    *,
    prefix: str = "wf",
    first: int = 0,
    workflow_type: str = LEDGER_TYPE,
    pause: float = 0.0,
    **extra: Any,
) -> dict[str, int]:
    """Start ``count`` ledger instances with ids ``{prefix}-{n}``, ``pause`` seconds
    apart; id -> n. ``extra`` goes into every input (``seconds`` for the slow type)."""
    ids = {f"{prefix}-{n:05d}": n for n in range(first, first + count)}
    for instance_id, n in ids.items():
        await client.start(workflow_type, ledger_input(n, **extra), id=instance_id)
        if pause:
            await trio.sleep(pause)
    return ids


@dataclass
class Report:
    """What :func:`check_run` found."""

    accepted: int = 0
    completed: int = 0
    history_records: int = 0
    ledger_lines: int = 0
    #: (instance, step) -> runs beyond the first.
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def duplicate_runs(self) -> int:
        return sum(self.duplicates.values())

    def summary(self) -> str:
        return (
            f"{self.completed}/{self.accepted} completed correctly; "
            f"{self.history_records} history records; {self.ledger_lines} ledger lines; "
            f"{self.duplicate_runs} duplicate activity runs over "
            f"{len(self.duplicates)} steps; {len(self.problems)} problems"
        )

    def assert_ok(self, *, max_duplicates: int | None = None) -> None:
        """Fail with every problem found (and if duplicates exceed ``max_duplicates``)."""
        problems = list(self.problems)
        if max_duplicates is not None and self.duplicate_runs > max_duplicates:
            problems.append(f"{self.duplicate_runs} duplicate runs > {max_duplicates}")
        assert not problems, self.summary() + "\n" + "\n".join(problems[:40])


async def check_run(
    transport: Transport,
    client: actors.Client,
    ids: Mapping[str, int],
    ledger: Path,
    *,
    servers: Sequence[NatsServer] = (),
    steps: Sequence[str] = LEDGER_STEPS,
    output: Callable[[int], Any] = ledger_output,
    stall: float = 60.0,
    settle: float = 30.0,
    signals: int = 0,
) -> Report:
    """Judge a run of the instances ``ids`` (id -> n); see the module docstring.

    ``stall``: seconds without any instance finishing before the rest count as
    stuck. ``settle``: seconds the consumers get to ack what they hold after
    the last result. ``servers``: the nats-servers to ask about consumers
    (the live ones are asked; none on the memory transport). ``signals``:
    the signals each instance waits for (see ``history_problems``).
    """
    report = Report(accepted=len(ids))
    print(f"checking {len(ids)} instances")
    results = await _results(client, ids, stall, report)
    for instance_id, n in sorted(ids.items()):
        got = results.get(instance_id)
        if isinstance(got, BaseException):
            report.problems.append(f"{instance_id}: failed: {got!r}")
        elif instance_id in results and got != output(n):
            report.problems.append(f"{instance_id}: output {got!r}, expected {output(n)!r}")
        elif instance_id in results:
            report.completed += 1

    states = await read_states(transport, ids)
    unknown = await _unknown_states(transport, ids)
    if unknown:
        report.problems.append(f"states of unknown instances: {sorted(unknown)[:10]}")
    finished = [i for i in sorted(ids) if i in states and states[i].status.terminal]
    expected_records = sum(states[i].seq for i in states)
    with trio.fail_after(180):
        # A durable of its own per check: a second check reads from the start.
        records = await read_history(transport, expected_records, durable=f"check-{next(_CHECKS)}")
    report.history_records = len(records)
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["_subject"] != f"history.{record['instance']}":
            report.problems.append(f"history record on {record['_subject']}: {record}")
        by_instance.setdefault(record["instance"], []).append(record)
    strangers = set(by_instance) - set(ids)
    if strangers:
        report.problems.append(f"history of unknown instances: {sorted(strangers)[:10]}")
    report.problems += history_problems(by_instance, states, finished, steps, signals)

    entries = read_ledger(ledger)
    report.ledger_lines = len(entries)
    ended = {(e.instance, e.step) for e in entries if e.phase == "end"}
    never = [(i, s) for i in sorted(ids) for s in steps if (i, s) not in ended]
    if never:
        report.problems.append(f"{len(never)} steps never ran to the end, e.g. {never[:5]}")
    report.duplicates = duplicate_runs(entries)
    strangers = {e.instance for e in entries} - set(ids)
    if strangers:
        report.problems.append(f"activities ran for unknown instances: {sorted(strangers)[:10]}")

    if servers:
        report.problems += await _leftover_messages(servers, settle)
    print(report.summary())
    if report.duplicates:
        print("steps run more than once:", dict(sorted(report.duplicates.items())[:20]))
    return report


async def _results(
    client: actors.Client, ids: Iterable[str], stall: float, report: Report
) -> dict[str, Any]:
    """id -> output or the error; instances still unfinished after ``stall`` quiet seconds
    are reported as stuck."""
    results: dict[str, Any] = {}
    pending = await collect_results(client, ids, results, stall=stall)
    if pending:
        report.problems.append(
            f"{len(pending)} instances unfinished after {stall}s without progress, "
            f"e.g. {pending[:5]}"
        )
    return results


async def _unknown_states(transport: Transport, ids: Mapping[str, int]) -> set[str]:
    states = await transport.kv(STATES_BUCKET)
    # Keys starting with "_" are the engine's own markers, not instances.
    return {key for key in await states.keys() if not key.startswith("_") and key not in ids}


async def _leftover_messages(servers: Sequence[NatsServer], settle: float) -> list[str]:
    """What is still unacked or queued, as reported by each stream's leader; retried for
    ``settle`` seconds, since a result is visible a moment before its event is acked."""
    problems: list[str] = []
    with trio.move_on_after(settle):
        while True:
            problems = await trio.to_thread.run_sync(_leftovers_now, list(servers))
            if not problems:
                return []
            await trio.sleep(0.5)
    return problems


def _leftovers_now(servers: list[NatsServer]) -> list[str]:
    reports: dict[str, dict[str, Any]] = {}
    for server in servers:
        if not server.running or server.paused:
            continue
        try:
            _status, body = http_get(
                server.monitor_url + "/jsz?accounts=true&streams=true&consumers=true", 5.0
            )
        except OSError:
            continue
        jsz = json.loads(body)
        names = {jsz.get("server_id"), server.server_name}
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                leader = (stream.get("cluster") or {}).get("leader")
                # A follower's view may lag: believe the leader's, else any.
                if leader in names or stream["name"] not in reports:
                    reports[stream["name"]] = stream
    problems: list[str] = []
    if not reports:
        return ["no nats-server answered on its monitoring port"]
    for name, stream in sorted(reports.items()):
        messages = stream.get("state", {}).get("messages", 0)
        if name in WORK_QUEUES and messages:
            problems.append(f"stream {name}: {messages} messages left")
        if name.startswith("KV_"):
            # A bucket's consumers are watches (of leases, definitions, cancels):
            # what one has not read is no work lost, and a killed process's
            # watch lingers, pending, until the server drops it (25 s or so).
            continue
        for consumer in stream.get("consumer_detail") or []:
            pending = consumer.get("num_pending", 0)
            unacked = consumer.get("num_ack_pending", 0)
            if pending or unacked:
                problems.append(
                    f"consumer {name}/{consumer['name']}: {pending} pending, {unacked} unacked"
                )
    return problems


# -- starting through faults, and watching progress ------------------------------------


class Starter:
    """Starts ``ledger_four`` instances one after another, retrying each (with its id,
    so a start that did land counts once) until the broker accepts it.

    ``accepted`` holds every instance whose start returned: those must complete.
    """

    def __init__(self, client: actors.Client, prefix: str = "wf") -> None:
        self.client = client
        self.prefix = prefix
        self.accepted: dict[str, int] = {}
        #: Start attempts the broker failed (retried).
        self.failures = 0
        self.done = trio.Event()

    async def run(self, count: int, pause: float) -> None:
        for n in range(count):
            await self.run_one(f"{self.prefix}-{n:05d}", n)
            await trio.sleep(pause)
        self.done.set()

    async def run_one(self, instance_id: str, n: int) -> None:
        while True:
            try:
                await self.client.start(LEDGER_TYPE, ledger_input(n), id=instance_id)
                break
            except TransportError:
                # Not connected (it fails at once then) or no answer in time.
                self.failures += 1
                await trio.sleep(0.2)
        self.accepted[instance_id] = n


async def connected(transport: Transport) -> None:
    """Wait until ``transport`` is connected (again), woken by its connection events.

    Its ``state`` is always current; an event dropped for a listener that
    fell behind changes nothing, since each wake reads the state again.
    """
    with transport.connection_events() as events:
        while transport.state is not ConnectionState.CONNECTED:
            await events.receive()


async def ledger_ends(ledger: Path, at_least: int) -> None:
    """Wait until ``at_least`` activity runs have ended (the workflows are in flight)."""
    with trio.fail_after(120):
        # The workers write the ledger in other processes: nothing to wait on but the file.
        while sum(e.phase == "end" for e in read_ledger(ledger)) < at_least:  # noqa: ASYNC110
            await trio.sleep(0.05)
