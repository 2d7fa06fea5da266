"""The wire contract as a program in another language meets it.

``interop.mjs`` is a Node.js program written from ``docs/wire.md``: over raw
NATS (nats.js, and cbor-x with its default options) it starts workflows with
a JSON body and with a CBOR envelope, serves every activity they run as a
worker on the durable consumers ``activity-{name}``, signals them, and reads
their ends from the ``WORKFLOW_STATES`` bucket. This test registers the
definitions, runs a real orchestrator against a ``nats-server`` of its own,
runs the program, and checks its report against what the engine stored:
outputs, histories, and that nothing went to dead letters.

Without ``node`` on ``PATH`` the test is skipped, unless ``CI`` is set: there
it fails, since the interop proof must not vanish from a CI run unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import natsserver
import pytest
import trio

import actors
from actors.wire import HISTORY_STREAM, decode_deadletter, decode_history, history_subject
from actors.wire._names import DEADLETTER_STREAM
from transport import ConsumerSpec, Transport, open_transport

HERE = Path(__file__).resolve().parent
PROGRAM = HERE / "interop.mjs"
#: Seconds npm may take to install the locked packages.
NPM_TIMEOUT = 600
#: The ack wait of the consumers the program creates, and how long its slow
#: activity runs: longer than the ack wait, so only keep-alives hold the task.
ACK_WAIT = 1.5
SLOW = 4.0
#: Seconds the program may take in all (it needs about SLOW + a few).
DEADLINE = 60.0

INTEROP = {
    "type": "interop",
    "version": 1,
    "steps": [
        {"id": "greet", "activity": "js_greet"},
        {"id": "approval", "wait_signal": "approved", "timeout": "2m"},
        {
            "id": "flaky",
            "activity": "js_flaky",
            "input": "{greeting: steps.greet.output.greeting}",
            "retry": {"max_attempts": 3, "initial_interval": "200ms"},
        },
        {"id": "slow", "activity": "js_slow", "input": "{seconds: input.seconds}"},
    ],
    "output": (
        "{greeting: steps.greet.output.greeting, approved_by: steps.approval.output.by,"
        " flaky: steps.flaky.output, slow: steps.slow.output}"
    ),
}
REFUSE = {
    "type": "interop_refuse",
    "version": 1,
    "steps": [
        {
            "id": "refuse",
            "activity": "js_refuse",
            "retry": {"max_attempts": 5, "initial_interval": "200ms"},
        }
    ],
}
#: The (step, attempt) pairs of an ``interop`` instance: one retry of ``flaky``.
ATTEMPTS = (("greet", 1), ("flaky", 1), ("flaky", 2), ("slow", 1))
TERMINAL_RECORDS = frozenset(
    {"workflow.completed", "workflow.failed", "workflow.cancelled", "workflow.terminated"}
)


def _installed() -> bool:
    """Whether ``node_modules`` holds what ``package-lock.json`` locks."""
    hidden = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    return hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, with the program's locked packages installed.

    Runs ``npm ci`` when ``node_modules`` is missing or older than the lock.
    Skips without node or npm, except under ``CI``, where it fails.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = "node" if node is None else "npm"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not on PATH; CI must run the Node.js interop test")
        pytest.skip(f"{missing} is not on PATH")
    if not _installed():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return node


@pytest.fixture
async def engine(
    fresh_nats_server: natsserver.NatsServer,
) -> AsyncIterator[tuple[Transport, actors.Client]]:
    """An orchestrator (no worker: the Node program serves every activity) and a client."""
    async with open_transport(fresh_nats_server.url) as transport, trio.open_nursery() as nursery:
        config = actors.OrchestratorConfig(passivate_after=5.0, drain_timeout=2.0)
        orchestrator = actors.Orchestrator(transport, config)
        await nursery.start(orchestrator.run)
        async with actors.Client(transport) as client:
            yield transport, client
        orchestrator.shutdown()


async def run_program(node: str, url: str, run: str) -> dict[str, Any]:
    """Run ``interop.mjs`` to its end; its report (fails the test if it failed)."""
    config = {"url": url, "run": run, "ack_wait": ACK_WAIT, "slow": SLOW, "deadline": DEADLINE}
    with trio.fail_after(DEADLINE + 30):
        done = await trio.run_process(
            [node, str(PROGRAM), json.dumps(config)],
            cwd=HERE,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    try:
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"the Node program exited {done.returncode} without a report:\n{out}\n{err}")
    if done.returncode != 0 or report["errors"]:
        pytest.fail(
            f"the Node program exited {done.returncode}\nerrors: {report['errors']}\n"
            f"report: {report}\nstderr:\n{err}"
        )
    return report


async def final_history(
    transport: Transport, client: actors.Client, instance_id: str
) -> list[dict[str, Any]]:
    """The instance's history once it holds its terminal record.

    The orchestrator stores a state before it publishes that change's
    records, so the end seen in the bucket may be ahead of the history:
    this waits (on a consumer of the instance's subject) for the record.
    """
    spec = ConsumerSpec(
        durable=f"wait-{instance_id}"[:64], filter_subjects=(history_subject(instance_id),)
    )
    with trio.fail_after(30):
        async with transport.consume(HISTORY_STREAM, spec) as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                if any(r["kind"] in TERMINAL_RECORDS for r in decode_history(delivery.data)):
                    break
    return await client.history(instance_id)


def kinds(history: list[dict[str, Any]]) -> Counter[str]:
    return Counter(record["kind"] for record in history)


async def test_node_program_starts_serves_signals_and_reads_results(
    node: str,
    fresh_nats_server: natsserver.NatsServer,
    engine: tuple[Transport, actors.Client],
) -> None:
    transport, client = engine
    await client.register(INTEROP)
    await client.register(REFUSE)
    run = "n1"
    ids = {"json": f"{run}-json", "cbor": f"{run}-cbor", "refuse": f"{run}-refuse"}

    report = await run_program(node, fresh_nats_server.url, run)

    # Starts: the JSON one, its copy (dropped by its message id), the CBOR one.
    starts = [(s["id"], s["encoding"], s["duplicate"]) for s in report["starts"]]
    assert starts == [
        (ids["json"], "json", False),
        (ids["json"], "json", True),
        (ids["cbor"], "cbor", False),
        (ids["refuse"], "json", False),
    ]
    # Each ran to the end the program read from the states bucket.
    for encoding in ("json", "cbor"):
        assert report["instances"][ids[encoding]] == {
            "status": "completed",
            "output": {
                "greeting": f"hello, {encoding}",
                "approved_by": encoding,
                "flaky": {"attempt": 2, "seen": {"greeting": f"hello, {encoding}"}},
                "slow": {"slept": SLOW},
            },
            "error": None,
        }
    refused = report["instances"][ids["refuse"]]
    assert refused["status"] == "failed"
    assert refused["error"]["type"] == "Refused"
    assert refused["error"]["non_retryable"] is True
    assert refused["error"]["message"] == (
        "step 'refuse' failed after 1 attempt(s): this input is refused for good"
    )

    # Every attempt ran once, on its first delivery: the slow one too, kept
    # alive past the ack wait by in-progress acks.
    ran = Counter((t["instance"], t["step"], t["attempt"]) for t in report["tasks"])
    expected = {(ids[e], s, a) for e in ("json", "cbor") for s, a in ATTEMPTS} | {
        (ids["refuse"], "refuse", 1)
    }
    assert set(ran) == expected
    assert all(count == 1 for count in ran.values()), ran
    assert all(t["delivery"] == 1 for t in report["tasks"]), report["tasks"]
    slow = [t for t in report["tasks"] if t["step"] == "slow"]
    assert all(t["keepalives"] >= int(SLOW / ACK_WAIT) for t in slow), slow

    # The histories say the same, from the engine's side.
    for encoding in ("json", "cbor"):
        history = await final_history(transport, client, ids[encoding])
        counted = kinds(history)
        assert counted["workflow.started"] == 1  # the second start did nothing
        assert counted["workflow.completed"] == 1
        failed = [r["detail"] for r in history if r["kind"] == "activity.failed"]
        assert [(d["step"], d["attempt"], d["error"]["type"]) for d in failed] == [
            ("flaky", 1, "Flaky")
        ]
        assert failed[0]["error"]["non_retryable"] is False
        retried = [r["detail"] for r in history if r["kind"] == "activity.retry_scheduled"]
        assert [(d["step"], d["attempt"]) for d in retried] == [("flaky", 2)]
        received = [r["detail"] for r in history if r["kind"] == "signal.received"]
        assert [d["signal"] for d in received] == ["approved"]
    history = await final_history(transport, client, ids["refuse"])
    counted = kinds(history)
    # Non-retryable: one attempt of the five the policy allows.
    assert counted["activity.scheduled"] == 1
    assert counted["activity.failed"] == 1
    assert counted["activity.retry_scheduled"] == 0
    assert counted["workflow.failed"] == 1

    # Nothing the program sent was refused.
    letters = await transport.read(DEADLETTER_STREAM, "deadletter.>")
    assert [dict(decode_deadletter(m.data)) for m in letters] == []
