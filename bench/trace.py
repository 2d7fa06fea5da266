"""A wire trace of one workflow: every message on the broker, hop by hop.

Starts a ``nats-server`` (default settings), one ``actors.orchestrator`` and
one ``actors.worker`` process as ``bench/engine.py`` does, and a tap: a
connection subscribed to every subject (``>``), which sees each message the
moment the server routes it (publishes, JetStream API requests, pull
requests, deliveries, acks, replies). The client, in this process, runs
``--workflows`` 3-activity workflows (``actors/examples/count.yaml``) one
after another, after one untraced warm-up. For each it prints:

* every message, with its time since the start, the gap since the one
  before, who sent it (by reply inbox: each connection has its own; a
  message without one is named by what it is) and what it is;
* the sum of the gaps by who had to act next (the time each process, and
  the server, held the workflow up), and the counts by kind: publishes,
  state writes, acks, pulls.

A gap is the time between two messages as the tap saw them: it includes
the sender's work, the broker's and the network's, not the tap's own
(its callback only appends to a list). The tap's connection adds load of its
own, so the total is a little above ``bench/engine.py``'s p50.

Usage, from the repository root::

    python bench/trace.py                  # 3 traced workflows
    python bench/trace.py --workflows 1    # one
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parent
# Run as a script, this file's folder comes first on sys.path, where
# bench/transport.py would shadow the transport package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import trio  # noqa: E402

from actors import Client  # noqa: E402
from actors.testing import NatsServer  # noqa: E402
from transport import ConnectOptions  # noqa: E402
from transport.natsproto import Client as NatsClient  # noqa: E402
from transport.natsproto import Msg  # noqa: E402


def _load(name: str, path: Path) -> ModuleType:
    """A module from a file (bench/ is not a package, and must not be on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


engine = _load("bench_engine", HERE / "engine.py")

#: How long after the result the tap keeps listening: the acks and the
#: history that follow the last decision are part of the workflow's cost.
TAIL: Final = 0.05


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as the tap saw it."""

    at: float
    subject: str
    reply: str | None
    size: int
    status: str | None


def inbox_of(subject: str | None) -> str | None:
    """The connection's inbox prefix in a reply subject (``_INBOX.<id>``), if it is one."""
    if subject is None or not subject.startswith("_INBOX."):
        return None
    return ".".join(subject.split(".")[:2])


def consumer_of(seen: Seen) -> tuple[str, str] | None:
    """The stream and consumer a delivery comes from (its reply is the ack subject)."""
    if seen.reply is None or not seen.reply.startswith("$JS.ACK."):
        return None
    parts = seen.reply.split(".")
    return parts[2], parts[3]


def role_of_consumer(stream: str) -> str:
    if stream == "ACTIVITY_TASKS":
        return "worker"
    if stream == "WORKFLOW_EVENTS":
        return "orchestrator"
    return "client"  # the client's watch of the states


#: Who publishes what: the subject of a publish names its sender's role.
_PUBLISHERS: Final = (
    ("$KV.WORKFLOW_STATES.", "orchestrator"),
    ("activity.tasks.", "orchestrator"),
    ("history.", "orchestrator"),
    ("$JS.API.DIRECT.GET.", "client"),
)


class Names:
    """Who sent what: each connection's inbox prefix, named by what it publishes."""

    def __init__(self) -> None:
        self.by_inbox: dict[str, str] = {}

    def learn(self, seen: Seen) -> None:
        inbox = inbox_of(seen.reply)
        if inbox is None or inbox in self.by_inbox:
            return
        subject = seen.subject
        if subject.startswith("instance.") and ".start." in subject:
            self.by_inbox[inbox] = "client"
        elif subject.startswith("instance.") and (
            ".completed." in subject or ".failed." in subject
        ):
            self.by_inbox[inbox] = "worker"
        else:
            for prefix, role in _PUBLISHERS:
                if subject.startswith(prefix):
                    self.by_inbox[inbox] = role
                    return

    def sender(self, seen: Seen) -> str:
        consumer = consumer_of(seen)
        if consumer is not None:
            return f"server > {role_of_consumer(consumer[0])}"
        if seen.subject.startswith("_INBOX."):
            # A reply: the server answers a connection.
            return f"server > {self.by_inbox.get(inbox_of(seen.subject) or '', '?')}"
        inbox = inbox_of(seen.reply)
        if inbox is not None:
            return self.by_inbox.get(inbox, "?")
        if seen.subject.startswith("$JS.ACK."):
            return role_of_consumer(seen.subject.split(".")[2])
        return "?"


def describe(seen: Seen) -> str:
    """What a message is, in a few words."""
    s = seen.subject
    consumer = consumer_of(seen)
    if consumer is not None:
        return f"delivery {'/'.join(consumer)}: {s} ({seen.size} B)"
    if s.startswith("_INBOX."):
        if seen.status == "100":
            return "idle heartbeat"
        if seen.status is not None:
            return f"status {seen.status}"
        return f"reply ({seen.size} B)"
    if s.startswith("$JS.ACK."):
        return f"ack {'/'.join(s.split('.')[2:4])}"
    if s.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return f"pull {'/'.join(s.split('.')[5:7])}"
    if s.startswith("$JS.API."):
        return f"API {'.'.join(s.split('.')[2:5])}"
    if s.startswith("$KV."):
        return f"KV write {s.split('.')[1]} ({seen.size} B)"
    return f"publish {s} ({seen.size} B)"


def kind_of(seen: Seen) -> str:
    s = seen.subject
    if consumer_of(seen) is not None:
        return "deliveries"
    if s.startswith("_INBOX."):
        return "heartbeats" if seen.status == "100" else "replies"
    if s.startswith("$JS.ACK."):
        return "acks"
    if s.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return "pulls"
    if s.startswith("$JS.API."):
        return "API requests"
    if s.startswith("$KV."):
        return "KV writes"
    return "publishes"


def report(trace: list[Seen], names: Names, total_ms: float) -> str:
    lines = [f"{'t ms':>8} {'gap ms':>7}  {'from':<22} what"]
    first = trace[0].at if trace else 0.0
    previous = first
    held: defaultdict[str, float] = defaultdict(float)
    for seen in trace:
        gap = (seen.at - previous) * 1000
        who = names.sender(seen)
        # A gap is the time the sender of the next message took to send it
        # (for the server's messages: to store, route and deliver).
        held[who.split(" > ")[0]] += gap
        lines.append(f"{(seen.at - first) * 1000:8.3f} {gap:7.3f}  {who:<22} {describe(seen)}")
        previous = seen.at
    kinds = Counter(kind_of(seen) for seen in trace)
    lines.append("")
    lines.append(f"start to result: {total_ms:.2f} ms; messages: {len(trace)}")
    lines.append(
        "gaps by who sent the next message: "
        + ", ".join(f"{who} {ms:.2f} ms" for who, ms in sorted(held.items(), key=lambda i: -i[1]))
    )
    lines.append("by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return "\n".join(lines)


async def traced(url: str, workflows: int) -> list[tuple[list[Seen], Names, float]]:
    seen: list[Seen] = []
    names = Names()

    def on_msg(msg: Msg) -> None:
        record = Seen(time.perf_counter(), msg.subject, msg.reply, len(msg.data), msg.status)
        seen.append(record)
        names.learn(record)

    found: list[tuple[list[Seen], Names, float]] = []
    async with trio.open_nursery() as nursery:
        tap = NatsClient([url], ConnectOptions())
        await nursery.start(tap.run)
        tap.subscribe(">", on_msg)
        await tap.flush()
        async with Client.connect(url) as client:
            await client.register(engine.DEFINITION.read_text())
            await engine.one_workflow(client)  # warm-up, not traced
            await trio.sleep(TAIL)
            for _ in range(workflows):
                seen.clear()
                start = time.perf_counter()
                await engine.one_workflow(client)
                total_ms = (time.perf_counter() - start) * 1000
                await trio.sleep(TAIL)
                found.append(([s for s in seen if s.at >= start], names, total_ms))
        await tap.aclose()
        nursery.cancel_scope.cancel()
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=3, help="traced workflows (3)")
    parser.add_argument("--json", type=Path, help="also write the traces to this file")
    args = parser.parse_args(argv)
    if args.workflows < 1:
        parser.error("--workflows must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats")
        services: list[Any] = []
        try:
            server.start()
            url = server.url
            services = engine.engine_services(url, workdir)
            deadline = time.monotonic() + engine.READY_TIMEOUT
            for service in services:
                service.wait_ready(deadline)
            traces = trio.run(traced, url, args.workflows)
            for service in services:
                service.terminate()
            for service in services:
                service.wait_exit()
        finally:
            for service in services:
                service.kill()
            server.stop()
    for i, (trace, names, total_ms) in enumerate(traces, 1):
        print(f"== workflow {i} ==")
        print(report(trace, names, total_ms))
        print()
    totals = [total for _, _, total in traces]
    print(f"start to result, median of {len(totals)}: {statistics.median(totals):.2f} ms")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "total_ms": total,
                        "messages": [
                            [s.at, s.subject, s.reply, s.size, s.status, names.sender(s)]
                            for s in trace
                        ],
                    }
                    for trace, names, total in traces
                ]
            )
        )


if __name__ == "__main__":
    main()
