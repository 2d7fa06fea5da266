"""The command line, ``python -m actors ...``, run as a user runs it.

One nats-server, one ``python -m actors.orchestrator`` and one ``python -m
actors.worker --activities actors.examples.activities`` serve the whole module (a
module-scoped fixture: starting them per test would cost more than the
tests). Every CLI call is a subprocess with the repository root as its
working directory; the tests check its stdout (tables, or the one JSON
document of ``--json``), its stderr and its exit code. Each test uses
instance ids of its own, so that the tests do not depend on each other's
instances; only ``definitions register`` runs first (a fixture).

Broker-down, memory:// and credential tests need no engine; the demo runs on
memory:// in its own process.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from natsserver import NatsServer, free_port

import actors
from actors.cli import ExitCode

#: The tests that start a nats-server (deselected by ``--transport memory``).
jetstream = pytest.mark.jetstream

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "actors" / "examples"
#: Seconds any one CLI call may take (generous: most take well under one).
CALL_TIMEOUT = 60
#: Seconds a service may take to say it is ready.
READY_TIMEOUT = 60

SMALL_ORDER = {"items": [{"sku": "apple", "quantity": 3}], "card": "visa-1"}
SHORT_ORDER = {"items": [{"sku": "melon", "quantity": 50}], "card": "visa-2"}
REFUND = {"order_id": "r", "items": [{"sku": "pear", "quantity": 4}]}


@dataclass
class Run:
    """One finished CLI call."""

    args: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error(self) -> dict[str, Any]:
        """The JSON error object ``--json`` prints on stderr."""
        error: dict[str, Any] = json.loads(self.err)["error"]
        return error

    def __str__(self) -> str:
        return f"{' '.join(self.args)} -> {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Nothing from the caller's ACTORS_* or COLUMNS may change what is tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORS_") and k != "COLUMNS"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli_all(*calls: list[str], env: dict[str, str] | None = None) -> list[Run]:
    """Run ``python -m actors ARGS`` for each ARGS at once (from the repository root).

    Calls that do not depend on each other run side by side: each costs
    mostly the interpreter's start. Never raises for a non-zero exit.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "actors", *args],
            cwd=REPO_ROOT,
            env=_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in calls
    ]
    runs = []
    for args, proc in zip(calls, procs, strict=True):
        out, err = proc.communicate(timeout=CALL_TIMEOUT)
        runs.append(Run(list(args), proc.returncode, out, err))
    return runs


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m actors ARGS`` from the repository root; never raises for a non-zero exit."""
    argv = [sys.executable, "-m", "actors", *args]
    proc = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT,
        check=False,
    )
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr)


def assert_ok(run: Run, *fragments: str) -> None:
    """The call succeeded and its stdout holds every fragment."""
    assert run.code == 0, run
    for fragment in fragments:
        assert fragment in run.out, run


def assert_clean_error(run: Run, code: ExitCode, *fragments: str) -> None:
    """The call failed with ``code``, said why in a few lines, and showed no traceback."""
    assert run.code == code, run
    assert "Traceback" not in run.err, run
    assert run.out == "", run
    for fragment in fragments:
        assert fragment in run.err, run


# -- the engine the module shares ----------------------------------------------------------


@dataclass
class Engine:
    url: str

    def __call__(self, *args: str, stdin: str | None = None) -> Run:
        return cli("--url", self.url, *args, stdin=stdin)

    def all(self, *calls: list[str]) -> list[Run]:
        """Independent calls, run side by side."""
        return cli_all(*(["--url", self.url, *args] for args in calls))

    def json(self, *args: str) -> Any:
        run = self("--json", *args)
        assert run.code == 0, run
        return run.json()

    def wait_until(self, instance_id: str, what: str, check: Any, seconds: float = 30) -> None:
        """Poll ``status --json`` until ``check(state)`` holds (another process's state)."""
        deadline = time.monotonic() + seconds
        while True:
            state = self.json("status", instance_id)
            if check(state):
                return
            assert time.monotonic() < deadline, f"{instance_id} never {what}: {state}"
            time.sleep(0.2)


def _spawn(name: str, argv: list[str], url: str, logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("ab")
    with log:
        return subprocess.Popen(
            [sys.executable, *argv, "--url", url],
            cwd=REPO_ROOT,
            env=_env({"PYTHONPATH": str(REPO_ROOT)}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(name: str, proc: subprocess.Popen[bytes], logs: Path) -> None:
    # Another process's log is all there is to wait on: poll it.
    deadline = time.monotonic() + READY_TIMEOUT
    log = logs / f"{name}.log"
    while "]: ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{name} did not get ready:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A nats-server, an orchestrator and a worker for the examples; definitions registered."""
    if os.environ.get("NATS_URL"):
        pytest.skip("the CLI tests start a NATS server of their own")
    directory = tmp_path_factory.mktemp("cli")
    with NatsServer(directory / "nats") as server:
        services = {
            "orchestrator": _spawn(
                "orchestrator", ["-m", "actors.orchestrator"], server.url, directory
            ),
            "worker": _spawn(
                "worker",
                ["-m", "actors.worker", "--activities", "actors.examples.activities"],
                server.url,
                directory,
            ),
        }
        try:
            for name, proc in services.items():
                _wait_ready(name, proc, directory)
            running = Engine(server.url)
            registered = running(
                "definitions",
                "register",
                str(EXAMPLES / "count.yaml"),
                str(EXAMPLES / "order.yaml"),
                str(EXAMPLES / "refund.yaml"),
            )
            assert registered.code == 0, registered
            yield running
        finally:
            for proc in services.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in services.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# -- definitions ---------------------------------------------------------------------------


@jetstream
def test_definitions_register_list_show(engine: Engine, tmp_path: Path) -> None:
    again = engine(
        "definitions", "register", "actors/examples/count.yaml", "actors/examples/order.yaml"
    )
    assert_ok(again, "unchanged", "count", "order")

    # JSON by extension, and YAML from stdin.
    echo = tmp_path / "echo.json"
    echo.write_text(json.dumps({"type": "cli_echo", "version": 1, "steps": [
        {"id": "only", "activity": "increment"}]}))  # fmt: skip
    stdin_yaml = "type: cli_echo\nversion: 2\nsteps:\n  - {id: one, activity: increment}\n"
    rows = engine.json("definitions", "register", str(echo))
    assert rows == [{"file": str(echo), "type": "cli_echo", "version": 1, "status": "registered"}]
    rows = engine("--json", "definitions", "register", "-", stdin=stdin_yaml).json()
    assert rows == [{"file": "-", "type": "cli_echo", "version": 2, "status": "registered"}]

    listed = {row["type"]: row for row in engine.json("definitions", "list")}
    assert listed["cli_echo"]["versions"] == [1, 2]
    assert listed["cli_echo"]["latest"] == 2
    assert listed["order"]["versions"] == [3]
    assert listed["refund"]["description"].startswith("Reserve the returned goods")
    table = engine("definitions", "list")
    assert_ok(table, "cli_echo", "1, 2")

    shown = engine.json("definitions", "show", "cli_echo", "--version", "1")
    assert (shown["type"], shown["version"], shown["steps"][0]["id"]) == ("cli_echo", 1, "only")
    assert engine.json("definitions", "show", "cli_echo")["version"] == 2
    assert_ok(engine("definitions", "show", "count"), "count v1", "activity: increment")

    assert_clean_error(
        engine("definitions", "show", "nope"), ExitCode.NOT_FOUND, "'nope' is not registered"
    )
    assert_clean_error(
        engine("definitions", "show", "count", "--version", "9"), ExitCode.NOT_FOUND, "version 9"
    )


@jetstream
def test_invalid_definitions_register_nothing(engine: Engine, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("type: cli_never\nversion: 1\nsteps: [{id: a, activity: increment}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: cli_bad\nversion: 0\nsteps:\n  - {id: a, activity: 7}\n  - {id: a}\n")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    run = engine("definitions", "register", str(good), str(bad), str(broken))
    assert_clean_error(
        run,
        ExitCode.INVALID,
        "nothing was registered",
        f"{bad}: version:",
        f"{bad}: steps[0].activity:",
        f"{bad}: steps[1]",
        f"{broken}:",
    )
    types = {row["type"] for row in engine.json("definitions", "list")}
    assert "cli_never" not in types

    as_json = engine("--json", "definitions", "register", str(bad))
    assert as_json.code == ExitCode.INVALID, as_json
    error = as_json.error()
    assert (error["code"], error["reason"]) == (ExitCode.INVALID, "invalid")
    assert any(detail.startswith(f"{bad}: version:") for detail in error["details"])

    # The same type and version with other content: refused, and said so.
    conflict = tmp_path / "conflict.yaml"
    conflict.write_text("type: count\nversion: 1\nsteps: [{id: only, activity: increment}]\n")
    assert_clean_error(
        engine("definitions", "register", str(conflict)),
        ExitCode.INVALID,
        "already registered with different content",
    )
    assert_clean_error(
        engine("definitions", "register", str(tmp_path / "missing.yaml")),
        ExitCode.INVALID,
        "cannot read",
    )


# -- start, result, status, list, history ----------------------------------------------------


@jetstream
def test_start_then_result(engine: Engine) -> None:
    started = engine("start", "count", "--input", '{"count": 0}', "--id", "cli-count-1")
    assert (started.code, started.out) == (0, "cli-count-1\n"), started
    # The id is the idempotency key: starting it again changes nothing.
    assert engine("start", "count", "--id", "cli-count-1").out == "cli-count-1\n"

    result = engine.json("result", "cli-count-1")
    assert (result["status"], result["output"], result["error"]) == (
        "completed",
        {"count": 3},
        None,
    ), result
    assert result["duration"] >= 0
    assert_ok(engine("result", "cli-count-1"), "completed", '"count": 3')

    random_id = engine("start", "count", "--input", '{"count": 10}').out.strip()
    assert len(random_id) == 24, random_id
    assert engine.json("result", random_id)["output"] == {"count": 13}


@jetstream
def test_start_wait(engine: Engine, tmp_path: Path) -> None:
    order = {"order_id": "cli-order-1", **SMALL_ORDER}
    run = engine("--json", "start", "order", "--input", json.dumps(order), "--id", "cli-order-1",
                 "--wait", "--timeout", "30")  # fmt: skip
    assert run.code == 0, run
    outcome = run.json()
    assert (outcome["id"], outcome["status"], outcome["type"]) == (
        "cli-order-1",
        "completed",
        "order",
    )
    assert outcome["output"]["charged"] == 1.5, outcome

    # The input from a file: YAML by its name.
    data = tmp_path / "input.yaml"
    data.write_text("count: 100\n")
    human = engine("start", "count", "--input-file", str(data), "--wait")
    assert_ok(human, "completed", '"count": 103')

    # A workflow that fails: exit 1, the error shown, compensation done.
    short = {"order_id": "cli-short-1", **SHORT_ORDER}
    args = ["start", "order", "--input", json.dumps(short), "--id", "cli-short-1", "--wait"]
    failed = engine(*args)
    assert failed.code == ExitCode.NOT_COMPLETED, failed
    assert "OutOfStock" in failed.out, failed
    assert "error: workflow cli-short-1 failed: OutOfStock" in failed.err, failed
    assert "Traceback" not in failed.err
    outcome = engine("--json", *args).json()
    # (Whether authorize_card ran, and so was compensated, is a race: not checked.)
    assert (outcome["status"], outcome["error"]["type"]) == ("failed", "OutOfStock"), outcome


@jetstream
def test_start_many_and_result_many_with_progress(engine: Engine) -> None:
    run = engine("--json", "start", "count", "--input", '{"count": 0}', "--count", "20",
                 "--id", "cli-many", "--wait")  # fmt: skip
    assert run.code == 0, run
    outcomes = run.json()
    assert [o["id"] for o in outcomes] == [f"cli-many-{n}" for n in range(1, 21)]
    assert all(o["status"] == "completed" and o["output"] == {"count": 3} for o in outcomes)
    # The progress bar goes to stderr (its last state, as stderr is not a terminal).
    assert "20/20" in run.err, run

    ids = ["cli-many-1", "cli-many-2", "cli-many-3"]
    table = engine("result", *ids)
    assert_ok(table, *ids, "3 instances: 3 completed")
    assert "3/3" in table.err
    assert [o["status"] for o in engine.json("result", *ids)] == ["completed"] * 3

    # One unknown id among them: the others are still reported, the exit code is 3.
    mixed = engine("--json", "result", "cli-many-1", "cli-nope")
    assert mixed.code == ExitCode.NOT_FOUND, mixed
    assert [o["status"] for o in mixed.json()] == ["completed", "unknown"]

    started = engine("start", "count", "--count", "3", "--id", "cli-nowait")
    assert started.out.split() == ["cli-nowait-1", "cli-nowait-2", "cli-nowait-3"], started


@jetstream
def test_status_list_history(engine: Engine) -> None:
    order = {"order_id": "cli-hist-1", **SMALL_ORDER}
    args = ["start", "order", "--input", json.dumps(order), "--id", "cli-hist-1", "--wait"]
    assert engine(*args).code == 0

    state = engine.json("status", "cli-hist-1")
    assert (state["status"], state["input"]) == ("completed", order)
    assert {"reserve", "authorize", "charge", "deliver"} <= set(state["steps"])
    assert state["steps"]["charge"]["status"] == "completed"
    assert_ok(
        engine("status", "cli-hist-1"), "order v3", "completed", "reserve", "charge", "visa-1"
    )

    records = engine.json("history", "cli-hist-1")
    kinds = [record["kind"] for record in records]
    assert (kinds[0], kinds[-1]) == ("workflow.started", "workflow.completed"), kinds
    assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
    assert_ok(engine("history", "cli-hist-1"), "+0.000s", "activity.scheduled", "charge")

    listed = engine.json("list", "--type", "order", "--status", "completed", "--limit", "1")
    # The latest match (and only it): the order just run.
    assert [i["id"] for i in listed["instances"]] == ["cli-hist-1"], listed
    assert listed["total"] >= 1
    everything = engine.json("list", "--limit", "10000")
    assert everything["total"] == len(everything["instances"]) >= 1
    assert_ok(engine("list", "--type", "order", "--limit", "5"), "cli-hist-1", "matching instances")
    assert engine.json("list", "--type", "cli_none")["total"] == 0

    for command in (["status", "cli-nope"], ["history", "cli-nope"]):
        assert_clean_error(engine(*command), ExitCode.NOT_FOUND, "no instance 'cli-nope'")
    assert engine("--json", "status", "cli-nope").error()["code"] == ExitCode.NOT_FOUND
    assert_clean_error(engine("list", "--status", "sleeping"), ExitCode.INVALID, "sleeping")


# -- signals, cancel, terminate, timeouts ------------------------------------------------------


def _waiting_for_approval(state: dict[str, Any]) -> bool:
    return state["steps"].get("approval", {}).get("status") == "waiting"


@jetstream
def test_signal_cancel_terminate(engine: Engine) -> None:
    for name in ("cli-sig", "cli-cancel", "cli-term"):
        refund = {**REFUND, "order_id": name}
        assert engine("start", "refund", "--input", json.dumps(refund), "--id", name).code == 0
    for name in ("cli-sig", "cli-cancel", "cli-term"):
        engine.wait_until(name, "waited for approval", _waiting_for_approval)

    # Still running: a result that does not wait says so, exit 5.
    running = engine("--json", "result", "cli-sig", "--wait", "0")
    assert running.code == ExitCode.TIMED_OUT, running
    assert running.json()["status"] == "running"
    short_wait = engine("result", "cli-sig", "--wait", "0.3")
    assert short_wait.code == ExitCode.TIMED_OUT, short_wait
    assert "still running" in short_wait.err

    sent = engine("signal", "cli-sig", "approved", "--data", '{"by": "cli"}')
    assert_ok(sent, "sent approved to cli-sig")
    result = engine.json("result", "cli-sig", "--wait", "30")
    assert (result["status"], result["output"]["approved_by"]) == ("completed", "cli"), result

    cancelled = engine("cancel", "cli-cancel", "--reason", "changed my mind")
    assert_ok(cancelled, "cancel requested")
    outcome = engine("--json", "result", "cli-cancel", "--wait", "30")
    assert outcome.code == ExitCode.NOT_COMPLETED, outcome
    # reserve_stock completed before the cancel: its release ran.
    assert (outcome.json()["status"], outcome.json()["compensation"]) == (
        "cancelled",
        "completed",
    )
    kinds = [r["kind"] for r in engine.json("history", "cli-cancel")]
    assert "compensation.started" in kinds, kinds

    terminated = engine.json("terminate", "cli-term", "--reason", "stop")
    assert terminated == {"id": "cli-term", "requested": "terminate", "status": "running",
                          "sent": True}  # fmt: skip
    outcome = engine("result", "cli-term", "--wait", "30")
    assert outcome.code == ExitCode.NOT_COMPLETED, outcome
    assert "terminated" in outcome.out
    assert "error: workflow cli-term terminated" in outcome.err

    # Once terminal, a cancel is a no-op and a signal is not used: exit 0 with a note.
    again = engine("cancel", "cli-term")
    assert_ok(again)
    assert "already terminated" in again.err, again
    late = engine("signal", "cli-sig", "approved")
    assert_ok(late)
    assert "will not be used" in late.err, late

    *missing, bad_json, bad_name = engine.all(
        ["signal", "cli-nope", "approved"],
        ["cancel", "cli-nope"],
        ["terminate", "cli-nope"],
        ["result", "cli-nope"],
        ["signal", "cli-sig", "approved", "--data", "{oops"],
        ["signal", "cli-sig", "not a name"],
    )
    for run in missing:
        assert_clean_error(run, ExitCode.NOT_FOUND, "no instance 'cli-nope'")
    assert_clean_error(bad_json, ExitCode.INVALID, "JSON")
    assert_clean_error(bad_name, ExitCode.INVALID, "signal name")


@jetstream
def test_start_wait_timeout(engine: Engine) -> None:
    refund = {**REFUND, "order_id": "cli-slow"}
    run = engine("--json", "start", "refund", "--input", json.dumps(refund), "--id", "cli-slow",
                 "--wait", "--timeout", "0.5")  # fmt: skip
    assert run.code == ExitCode.TIMED_OUT, run
    assert run.json()["status"] == "running"
    assert engine("terminate", "cli-slow").code == 0


@jetstream
def test_start_of_an_id_another_type_has_is_a_conflict(engine: Engine) -> None:
    first = engine("start", "count", "--input", '{"count": 0}', "--id", "cli-taken", "--wait")
    assert_ok(first, "completed")
    refund = json.dumps({**REFUND, "order_id": "cli-taken"})
    # Regression: this exited 0, showing the count's result as the refund's.
    run = engine("start", "refund", "--input", refund, "--id", "cli-taken", "--wait")
    assert_clean_error(run, ExitCode.INVALID, "'cli-taken' is a 'count' workflow")
    assert len(run.err.strip().splitlines()) == 1, run
    as_json = engine("--json", "start", "refund", "--input", refund, "--id", "cli-taken")
    assert as_json.code == ExitCode.INVALID, as_json
    assert "'count'" in as_json.error()["message"]
    # The same type again is idempotent.
    assert_ok(engine("start", "count", "--id", "cli-taken"), "cli-taken")


@jetstream
def test_start_wait_with_no_orchestrator_says_pending(tmp_path: Path) -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("needs a NATS server of its own, with no orchestrator")
    with NatsServer(tmp_path / "nats") as server:
        count = str(EXAMPLES / "count.yaml")
        registered = cli("--url", server.url, "definitions", "register", count)
        assert registered.code == 0, registered
        start = ["start", "count", "--id", "cli-pending", "--wait", "--timeout", "0.5"]
        # Regression: this said "running" of an instance that was never stored.
        run = cli("--url", server.url, *start)
        assert run.code == ExitCode.TIMED_OUT, run
        assert "pending" in run.out, run
        assert "running" not in run.out, run
        assert "the broker accepted its start, but no orchestrator has picked it up" in run.err
        # Started again (by another process), it is still the same pending start.
        as_json = cli("--url", server.url, "--json", *start)
        assert as_json.code == ExitCode.TIMED_OUT, as_json
        assert as_json.json()["status"] == "pending"


# -- mistakes ------------------------------------------------------------------------------


@jetstream
def test_input_mistakes(engine: Engine, tmp_path: Path) -> None:
    bad_file = tmp_path / "input.json"
    bad_file.write_text("{bad")
    expected = [
        (["start", "count", "--input", "{bad"], ExitCode.INVALID, "'--input'", "not valid JSON"),
        (["start", "count", "--input-file", str(bad_file)], ExitCode.INVALID, "not valid JSON"),
        (["start", "count", "--input", "1", "--input-file", str(bad_file)], ExitCode.INVALID,
         "not both"),
        (["start", "count", "--input-file", str(tmp_path / "none")], ExitCode.INVALID,
         "cannot read"),
        (["start", "count", "--timeout", "3"], ExitCode.INVALID, "--timeout bounds --wait"),
        (["start", "nope"], ExitCode.NOT_FOUND, "'nope' is not registered"),
        (["start", "count", "--version", "4"], ExitCode.NOT_FOUND, "no version 4"),
        (["start", "count", "--id", "a b"], ExitCode.INVALID, "'a b' is not valid"),
        (["status", "a.b"], ExitCode.INVALID, "'a.b' is not valid"),
        (["bogus"], ExitCode.INVALID, "No such command"),
        (["start"], ExitCode.INVALID, "Missing argument"),
        (["list", "--limit", "0"], ExitCode.INVALID, "--limit"),
    ]  # fmt: skip
    runs = engine.all(*(args for args, *_ in expected))
    for run, (_, code, *fragments) in zip(runs, expected, strict=True):
        assert_clean_error(run, code, *fragments)

    as_json = engine("--json", "start", "count", "--input", "[1,")
    assert as_json.code == ExitCode.INVALID, as_json
    error = as_json.error()
    assert (error["code"], error["reason"]) == (ExitCode.INVALID, "invalid")
    assert "not valid JSON" in error["message"]


# -- no engine needed ------------------------------------------------------------------------


def test_memory_url_is_refused_for_data_commands() -> None:
    commands = [["list"], ["status", "x"], ["definitions", "list"], ["start", "count"]]
    for run in cli_all(*(["--url", "memory://", *command] for command in commands)):
        assert_clean_error(run, ExitCode.INVALID, "memory://", "inside one process")
    run = cli("list", env={"ACTORS_NATS_URL": "memory://"})
    assert_clean_error(run, ExitCode.INVALID, "memory://")


def test_broker_down_exits_2_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    began = time.monotonic()
    # The URL from the flag, and from the environment (with --json).
    env = {"ACTORS_NATS_URL": url, "ACTORS_CONNECT_TIMEOUT": "0.5"}
    flag, from_env = cli_all(["--url", url, "list"], ["--json", "start", "count"], env=env)
    assert_clean_error(flag, ExitCode.UNREACHABLE, f"cannot reach the broker at {url}")
    assert len(flag.err.strip().splitlines()) == 1, flag
    assert from_env.code == ExitCode.UNREACHABLE, from_env
    assert from_env.error()["reason"] == "unreachable"
    assert url in from_env.error()["message"]
    assert time.monotonic() - began < 15


@jetstream
def test_credentials_from_the_environment(tmp_path: Path) -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("needs a NATS server of its own")
    config = {"authorization": {"user": "engine", "password": "s3cret"}}
    with NatsServer(tmp_path / "nats", config=config) as server:
        good = {"ACTORS_NATS_USER": "engine", "ACTORS_NATS_PASSWORD": "s3cret"}
        run = cli("--url", server.url, "--json", "definitions", "list", env=good)
        assert (run.code, run.json()) == (0, []), run
        run = cli("--url", server.url, "--user", "engine", "--password", "wrong", "list")
        assert_clean_error(run, ExitCode.UNREACHABLE, "refused the credentials")
    assert_clean_error(cli("--user", "u", "--token", "t", "list"), ExitCode.INVALID, "not both")


#: Every command of the command line.
COMMANDS = ("definitions", "start", "status", "result", "list", "history", "signal", "cancel",
            "terminate", "slots", "orchestrator", "worker", "dev", "demo",
            "signal-with-start", "pause", "resume", "retry", "rerun", "delete",
            "schedules", "workers")  # fmt: skip


def _commands_in_help(text: str) -> set[str]:
    """The command names a group's ``--help`` lists."""
    listed = text.partition("\nCommands:\n")[2]
    return {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}


def test_help_lists_every_command() -> None:
    run = cli("--help")
    assert run.code == 0, run
    assert _commands_in_help(run.out) == set(COMMANDS), run
    assert "ACTORS_NATS_URL" in run.out


def test_the_actors_script_runs_the_command_line() -> None:
    """The console script ``actors`` (pyproject's [project.scripts]) is the same command line."""
    script = Path(sysconfig.get_path("scripts")) / "actors"
    assert script.is_file(), f"no {script}: reinstall the package (pip install -e .)"
    run = subprocess.run(
        [str(script), "--help"], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Usage: actors [OPTIONS] COMMAND"), run.stdout
    assert _commands_in_help(run.stdout) == set(COMMANDS), run.stdout
    # Its errors name it, as they name ``python -m actors``.
    bad = subprocess.run(
        [str(script), "orchestrator", "--lease", "0"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stdout) == (2, ""), bad.stderr
    assert bad.stderr.strip().endswith("(see actors orchestrator --help)"), bad.stderr


def _flags_in_help(text: str) -> list[str]:
    """The long flags of a command's ``--help``, in order."""
    return re.findall(r"^  (?:-\w, )?(--[\w-]+)", text, flags=re.MULTILINE)


@pytest.mark.parametrize(
    ("module", "command"),
    [("actors.orchestrator", "orchestrator"), ("actors.worker", "worker")],
)
def test_a_service_has_the_same_flags_as_a_module_and_as_a_command(
    module: str, command: str
) -> None:
    by_command = cli(command, "--help")
    code, out, err = _python("-m", module, "--help")
    assert (code, by_command.code) == (0, 0), (err, by_command)
    assert out.startswith(f"Usage: python -m {module} [OPTIONS]"), out
    assert by_command.out.startswith(f"Usage: python -m actors {command} [OPTIONS]"), by_command
    flags = _flags_in_help(by_command.out)
    assert {"--url", "--config", "--ack-wait", "--drain-timeout", "--log-format"} <= set(flags)
    assert _flags_in_help(out) == flags
    # Past the usage line, the two helps are one text.
    assert out.partition("\n")[2] == by_command.out.partition("\n")[2]


def _python(*args: str) -> tuple[int, str, str]:
    """``python ARGS`` from the repository root: its exit code, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True
    )
    return done.returncode, done.stdout, done.stderr


def test_demo_on_memory() -> None:
    run = cli("demo", "--url", "memory://", "--count", "5")
    assert run.code == 0, run
    for text in ("registered    order v3", "order-", "refund-", "count x5", "5 of 5 returned"):
        assert text in run.out, run


# -- payloads and output: what JSON can say ------------------------------------------------


@jetstream
def test_json_output_is_standard_json_whatever_the_data(engine: Engine) -> None:
    """Values JSON lacks (bytes, NaN, infinities) print as the API spells them."""
    # Python's client may start with any value the engine carries; the CLI and API only JSON.
    odd = {"raw": b"\x00\xff", "nan": math.nan, "inf": math.inf, "ninf": -math.inf}

    async def start() -> None:
        async with actors.Client.connect(engine.url) as client:
            await client.start("count", odd, id="cli-odd")
            await client.wait_for("cli-odd", lambda info: True)  # stored

    trio.run(start)
    run = engine("--json", "status", "cli-odd")
    assert run.code == 0, run

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{name} in the output: {run.out}")

    state = json.loads(run.out, parse_constant=no_constants)
    assert state["input"] == {"raw": "AP8=", "nan": "NaN", "inf": "Infinity", "ninf": "-Infinity"}
    # The same in a table's JSON view, and in history details.
    assert_ok(engine("status", "cli-odd"), '"AP8="', '"NaN"')
    json.loads(engine("--json", "history", "cli-odd").out, parse_constant=no_constants)


@jetstream
def test_a_payload_beyond_the_engine_is_refused_and_nothing_starts(
    engine: Engine, tmp_path: Path
) -> None:
    big = tmp_path / "big.json"
    big.write_text('{"count": 18446744073709551616}')
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"count": 0, "pad": "x" * 1_100_000}))
    deep = tmp_path / "deep.yaml"
    deep.write_text("count: " + "[" * 29 + "]" * 29 + "\n")  # 30 deep
    runs = engine.all(
        ["start", "count", "--id", "cli-big-1", "--input", '{"count": 18446744073709551616}'],
        ["start", "count", "--id", "cli-big-2", "--input-file", str(big)],
        ["start", "count", "--id", "cli-big-3", "--input-file", str(huge)],
        ["start", "count", "--id", "cli-big-4", "--input-file", str(deep)],
        ["signal", "cli-count-1", "approved", "--data", "[18446744073709551616]"],
    )
    expected = [
        "input.count: a number must be from -2**64 to 2**64-1",
        "input.count: a number must be from -2**64 to 2**64-1",
        "huge.json is over 1048576 bytes",
        "nested more than 29 lists and objects deep",
        "data[0]: a number must be from -2**64 to 2**64-1",
    ]
    for run, message in zip(runs, expected, strict=True):
        assert_clean_error(run, ExitCode.INVALID, message)
        assert len(run.err.strip().splitlines()) == 1, run
    for n in range(1, 5):
        assert engine("status", f"cli-big-{n}").code == ExitCode.NOT_FOUND
    # 2**64 - 1 is the largest integer the engine carries: it goes through.
    ok = engine("start", "count", "--id", "cli-big-ok", "--input", '{"n": 18446744073709551615}')
    assert ok.code == 0, ok


@jetstream
def test_yaml_dates_in_an_input_file_are_text(engine: Engine, tmp_path: Path) -> None:
    data = tmp_path / "input.yaml"
    data.write_text("count: 1\nwhen: 2024-01-31\nat: 2024-01-31 10:00:00\n")
    assert engine("start", "count", "--id", "cli-date", "--input-file", str(data)).code == 0
    state = engine.json("status", "cli-date")
    assert state["input"] == {"count": 1, "when": "2024-01-31", "at": "2024-01-31 10:00:00"}


@jetstream
def test_signal_data_from_a_file_or_stdin(engine: Engine, tmp_path: Path) -> None:
    for name in ("cli-sigfile", "cli-sigstdin"):
        refund = {**REFUND, "order_id": name}
        assert engine("start", "refund", "--input", json.dumps(refund), "--id", name).code == 0
    for name in ("cli-sigfile", "cli-sigstdin"):
        engine.wait_until(name, "waited for approval", _waiting_for_approval)
    data = tmp_path / "approval.yaml"
    data.write_text("by: a file\n")
    assert_ok(engine("signal", "cli-sigfile", "approved", "--data-file", str(data)))
    sent = engine("signal", "cli-sigstdin", "approved", "--data-file", "-", stdin='{"by": "stdin"}')
    assert_ok(sent)
    for name, by in (("cli-sigfile", "a file"), ("cli-sigstdin", "stdin")):
        result = engine.json("result", name, "--wait", "30")
        assert (result["status"], result["output"]["approved_by"]) == ("completed", by), result


@jetstream
def test_a_missing_creds_file_is_refused_though_this_server_needs_none(
    engine: Engine, tmp_path: Path
) -> None:
    missing = tmp_path / "engine.creds"
    run = engine("--creds", str(missing), "list")
    assert_clean_error(run, ExitCode.INVALID, f"--creds {missing}: No such file or directory")
    assert engine("list").code == 0


@jetstream
def test_workers_lists_the_running_worker_and_what_it_serves(engine: Engine) -> None:
    [worker] = engine.json("workers")
    assert worker["host"] == socket.gethostname()
    assert {"reserve_stock", "charge_card", "ship"} <= set(worker["activities"])
    assert (worker["concurrency"], worker["running"]) == (16, 0)
    assert worker["seen"] >= worker["started_at"]
    assert_ok(engine("workers"), worker["id"], "reserve_stock", "live workers: 1")


@jetstream
def test_slots_and_a_queued_status(engine: Engine) -> None:
    """``slots`` lists who holds a limit's slot and who waits; ``status`` says what it waits for."""
    assert engine("definitions", "register", str(EXAMPLES / "payout.yaml")).code == 0
    big = json.dumps({"account": "cli-acc", "amount": 5000})
    small = json.dumps({"account": "cli-acc", "amount": 5})
    assert engine("start", "payout", "--input", big, "--id", "cli-pay-big").code == 0
    engine.wait_until(
        "cli-pay-big", "waited for approval", lambda state: "approval" in state["steps"]
    )
    assert engine("start", "payout", "--input", small, "--id", "cli-pay-small").code == 0
    engine.wait_until("cli-pay-small", "queued", lambda state: state["status"] == "queued")

    (slot,) = [s for s in engine.json("slots")["slots"] if s["value"] == "cli-acc"]
    assert slot["scope"] == "workflow"
    assert (slot["name"], slot["key"], slot["limit"]) == ("payout", "input.account", 1)
    assert (slot["holders"], slot["queue"]) == (["cli-pay-big"], ["cli-pay-small"])
    assert_ok(
        engine("slots"), "workflow payout", "input.account", "cli-acc", "1/1", "cli-pay-small"
    )
    assert_ok(
        engine("status", "cli-pay-small"),
        "queued",
        'concurrency[0]: input.account = "cli-acc" (limit 1)',
    )

    assert engine("signal", "cli-pay-big", "approved", "--data", '{"by": "cli"}').code == 0
    result = engine.json("result", "cli-pay-small", "--wait", "30")
    assert result["output"] == {"account": "cli-acc", "paid": 5}


# -- instance operations ---------------------------------------------------------------------


@jetstream
def test_signal_with_start(engine: Engine) -> None:
    refund = json.dumps({**REFUND, "order_id": "cli-sws"})
    first = engine(
        "signal-with-start", "refund", "cli-sws", "approved", "--data", '{"by": "sws"}',
        "--input", refund, "--signal-id", "once",
    )  # fmt: skip
    assert_ok(first, "sent approved to cli-sws (starting it)")
    result = engine.json("result", "cli-sws", "--wait", "30")
    assert (result["status"], result["output"]["approved_by"]) == ("completed", "sws"), result
    again = engine.json("signal-with-start", "refund", "cli-sws", "approved", "--input", refund)
    assert again == {"id": "cli-sws", "signal": "approved", "started": False}
    other = engine("signal-with-start", "count", "cli-sws", "approved")
    assert_clean_error(other, ExitCode.INVALID, "'cli-sws' is a 'refund' workflow")


@jetstream
def test_pause_and_resume(engine: Engine) -> None:
    refund = json.dumps({**REFUND, "order_id": "cli-pause"})
    assert engine("start", "refund", "--input", refund, "--id", "cli-pause").code == 0
    engine.wait_until("cli-pause", "waited for approval", _waiting_for_approval)
    assert_ok(engine("pause", "cli-pause", "--reason", "audit", "--by", "ann"), "pause requested")
    engine.wait_until("cli-pause", "paused", lambda state: state["paused"] is not None)
    shown = engine("status", "cli-pause")
    assert_ok(shown, "paused", "by ann", "audit")
    assert_ok(engine("signal", "cli-pause", "approved", "--data", '{"by": "cli"}'))
    engine.wait_until("cli-pause", "held the signal", lambda state: state["held"] == 1)
    assert engine.json("status", "cli-pause")["status"] == "running"
    assert_ok(engine("resume", "cli-pause"), "resume requested")
    result = engine.json("result", "cli-pause", "--wait", "30")
    assert (result["status"], result["output"]["approved_by"]) == ("completed", "cli"), result

    assert_ok(engine("pause", "--type", "count"), "paused count")
    assert_ok(engine("resume", "--type", "count"), "resumed count")
    both = engine("pause", "cli-pause", "--type", "count")
    assert_clean_error(both, ExitCode.INVALID, "give an instance ID or --type TYPE")
    finished = engine("pause", "cli-pause")
    assert_clean_error(finished, ExitCode.INVALID, "cli-pause is completed: nothing to pause")


@jetstream
def test_retry_rerun_and_retry_in_bulk(engine: Engine) -> None:
    cardless = json.dumps({"order_id": "cli-nocard", "items": SMALL_ORDER["items"]})
    assert engine("start", "order", "--input", cardless, "--id", "cli-nocard").code == 0
    failed = engine("--json", "result", "cli-nocard", "--wait", "30")
    assert failed.code == ExitCode.NOT_COMPLETED, failed

    unknown = engine("retry", "cli-nocard", "--from", "nowhere")
    assert_clean_error(unknown, ExitCode.INVALID, "not a top-level step of order")
    assert_ok(engine("retry", "cli-nocard", "--reason", "card added"), "run 2")
    engine.wait_until(
        "cli-nocard", "ended its run 2", lambda s: s["run"] == 2 and s["status"] == "failed"
    )
    assert_ok(engine("status", "cli-nocard"), "run", "2")

    again = engine.json("rerun", "cli-nocard", "--id", "cli-nocard-2")
    assert again == {"id": "cli-nocard-2", "rerun_of": "cli-nocard"}
    rerun = engine("--json", "result", "cli-nocard-2", "--wait", "30")
    assert rerun.code == ExitCode.NOT_COMPLETED, rerun

    # Asked first; "n" retries nothing.
    asked = engine("retry", "--type", "order", "--status", "failed", "--since", "1h", stdin="n\n")
    assert asked.code == 0, asked
    assert "failed instance(s) of order?" in asked.err
    assert "retried 0 instance(s)" in asked.out
    bulk = engine.json("retry", "--type", "order", "--since", "1h", "--yes", "--rate", "100")
    assert {"cli-nocard", "cli-nocard-2"} <= set(bulk["retried"])
    assert bulk["count"] == len(bulk["retried"])
    both = engine("retry", "cli-nocard", "--type", "order")
    assert_clean_error(both, ExitCode.INVALID, "give an instance ID, or --type")

    engine.wait_until(
        "cli-nocard-2", "ended again", lambda s: s["run"] == 2 and s["status"] == "failed"
    )
    assert_ok(engine("delete", "cli-nocard-2", "--wait"), "removed cli-nocard-2")
    gone = engine("status", "cli-nocard-2")
    assert gone.code == ExitCode.NOT_FOUND, gone
