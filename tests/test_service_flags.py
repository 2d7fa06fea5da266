"""Every documented flag of every entry point, given bad values: one line, the documented code.

One table: the orchestrator, the worker, and the command line with each of
its commands (``dev`` and ``demo`` included), each flag with values a user
gets wrong (negative, zero, huge, not a number, NaN, a missing or unreadable
file, a URL that cannot work). The services' rows run twice: through their
own entry point (``python -m actors.orchestrator``) and as commands of the
command line (``python -m actors orchestrator``), which must behave the
same. Each row runs the entry point's ``main`` in
this process, as its console script would, and checks what the user sees:
the documented exit code (2 for the services, 4 for the command line), an
empty stdout, and exactly one line on stderr that says what is wrong, never
a traceback. Every row is refused before any connection: the broker the
entry points are pointed at does not exist, and a row that got as far as
connecting would fail with another code and message (after a short
connect timeout, never a hang).

The last tests run the entry points as processes against a real server
without TLS or credentials: a ``tls://`` URL ends each with its broker code
(2) and one line, and a ``--creds`` file that does not exist is refused
though that server would never ask for it.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import pytest
from natsserver import NatsServer, free_port

from actors import orchestrator, worker
from actors.cli import ExitCode, cli
from actors.cli import main as cli_main
from actors.cli._services import GC_THRESHOLDS, tune_gc
from actors.examples import ACTIVITIES

ROOT = Path(__file__).resolve().parents[1]
SERVICE: int = 2  # the services' exit code for a usage error and for the broker
INVALID: int = ExitCode.INVALID


@dataclass(frozen=True)
class Row:
    """An entry point given ``argv`` (and ``env``): exit ``code``, ``message`` in its line.

    ``main`` says how the entry point is run: its own ``main`` (``entry``),
    or the command line's with the entry point as a command (``command``)
    or after the group's options of ``argv`` (``group``: ``argv`` names it).
    """

    entry: str
    argv: tuple[str, ...]
    code: int
    message: str
    env: dict[str, str] = field(default_factory=dict)
    main: str = "entry"

    @property
    def id(self) -> str:
        via = "" if self.main == "entry" else f"[{self.main}] "
        return f"{via}{self.entry} {' '.join(self.argv)} {' '.join(self.env)}".strip()

    def argv_of_main(self) -> list[str]:
        """The arguments of the ``main`` this row runs."""
        if self.main == "command":
            return [self.entry, *self.argv]
        return list(self.argv)


def o(*argv: str, message: str, env: dict[str, str] | None = None) -> Row:
    return Row("orchestrator", argv, SERVICE, message, env or {})


def w(*argv: str, message: str, env: dict[str, str] | None = None) -> Row:
    # The worker needs modules; the row's own --activities comes later and wins.
    return Row("worker", ("--activities", ACTIVITIES, *argv), SERVICE, message, env or {})


def c(*argv: str, message: str, env: dict[str, str] | None = None) -> Row:
    return Row("cli", argv, INVALID, message, env or {})


# Files the rows name: made in the test's folder, under these names.
MISSING = "{tmp}/missing.pem"
JUNK = "{tmp}/junk.pem"  # not a certificate
FOLDER = "{tmp}"  # a folder where a file is wanted
HUGE = "{tmp}/huge.json"  # 2 MiB
BINARY = "{tmp}/binary.json"  # not UTF-8
BAD_YAML = "{tmp}/bad.yaml"
SET_YAML = "{tmp}/set.yaml"  # a YAML set: no JSON value
DEEP = "{tmp}/deep.json"  # 40 lists deep
BIG_INT = "{tmp}/big.json"  # an integer of 65 bits
BAD_CONFIG = "{tmp}/bad.toml"  # ack_wait = -1
UNMAKEABLE = "{tmp}/file/data"  # a folder under a file
LOUD_MODULE = "loud_module"  # a module that raises when imported

SECONDS = "must be a number above 0 and at most 1000000000"
SECONDS_OR_ZERO = "must be a number from 0 to 1000000000"

CONNECTION = [
    ("--url", "foo://x", "unknown transport URL 'foo://x'"),
    ("--url", "nats://127.0.0.1:99999", "bad port in 'nats://127.0.0.1:99999'"),
    ("--url", "nats://", "no host in 'nats://'"),
    ("--replicas", "0", "must be an integer from 1 to 5, not 0"),
    ("--replicas", "6", "must be an integer from 1 to 5, not 6"),
    ("--replicas", "three", "invalid int value: 'three'"),
    ("--creds", MISSING, "--creds {tmp}/missing.pem: No such file or directory"),
    ("--tls-ca", MISSING, "--tls-ca {tmp}/missing.pem: No such file or directory"),
    ("--tls-ca", FOLDER, "--tls-ca {tmp}: Is a directory"),
    ("--tls-ca", JUNK, "TLS CA bundle {tmp}/junk.pem: not a usable PEM file"),
    ("--tls-cert", JUNK, "a TLS client certificate needs its key"),
    ("--config", MISSING, "config file {tmp}/missing.pem: No such file or directory"),
    ("--config", BAD_CONFIG, "'ack_wait' must be a number above 0"),
]

SERVICE_ROWS = [
    *(o(flag, value, message=message) for flag, value, message in CONNECTION),
    *(w(flag, value, message=message) for flag, value, message in CONNECTION),
    o("--user", "u", "--token", "t", message="give either user/password or token, not both"),
    o("--tls-cert", JUNK, "--tls-key", JUNK, message="not a usable PEM file"),
    o("--tls-cert", MISSING, "--tls-key", MISSING, message="--tls-cert {tmp}/missing.pem"),
    o(message="must be an integer from 1 to 5, not 9", env={"ACTORS_REPLICAS": "9"}),
    o(message="--creds {tmp}/missing.pem: No such file", env={"ACTORS_NATS_CREDS": MISSING}),
    o("--log-level", "LOUD", message="argument --log-level: invalid choice: 'LOUD'"),
    o("--log-format", "xml", message="argument --log-format: invalid choice: 'xml'"),
    o("--ack-wait", "0", message=f"argument --ack-wait: {SECONDS}, not 0"),
    o("--ack-wait", "-1", message=f"{SECONDS}, not -1"),
    o("--ack-wait", "nan", message=f"{SECONDS}, not nan"),
    o("--ack-wait", "inf", message=f"{SECONDS}, not inf"),
    o("--ack-wait", "1e12", message=f"{SECONDS}, not 1000000000000"),
    o("--ack-wait", "soon", message="argument --ack-wait: invalid float value: 'soon'"),
    o(message="argument --ack-wait: invalid float value: 'x'", env={"ACTORS_ACK_WAIT": "x"}),
    o("--drain-timeout", "-1", message=f"{SECONDS_OR_ZERO}, not -1"),
    o("--drain-timeout", "nan", message=f"{SECONDS_OR_ZERO}, not nan"),
    o("--passivate-after", "-5", message=f"{SECONDS_OR_ZERO}, not -5"),
    o("--passivate-after", "inf", message=f"{SECONDS_OR_ZERO}, not inf"),
    o("--max-idle-actors", "-1", message="must be an integer of at least 0, not -1"),
    o("--start-wait", "-1", message=f"{SECONDS_OR_ZERO}, not -1"),
    o("--start-wait", "nan", message=f"{SECONDS_OR_ZERO}, not nan"),
    o("--max-waiting-events", "-1", message="must be an integer of at least 0, not -1"),
    o("--lease", "0", message=f"{SECONDS}, not 0"),
    o("--lease", "inf", message=f"{SECONDS}, not inf"),
    o("--partitions", "0", message="must be an integer from 1 to 1024, not 0"),
    o("--partitions", "2000", message="must be an integer from 1 to 1024, not 2000"),
    o("--max-idle-actors", "many", message="invalid int value: 'many'"),
    o("--max-input", "10", message="must be an integer of at least 1024, not 10"),
    o("--max-output", "1023", message="must be an integer of at least 1024, not 1023"),
    o("--max-state", "10", message="must be an integer from 1024 to 1048576, not 10"),
    o("--max-state", "3000000", message="must be an integer from 1024 to 1048576, not 3000000"),
    o(message="argument --max-input: invalid int value: 'lots'", env={"ACTORS_MAX_INPUT": "lots"}),
    o("--retention", "0", message=f"{SECONDS}, not 0"),
    o("--retention-by-type", "order=soon", message="retention_by_type: 'order=soon'"),
    o("--retention-by-type", "=1d", message="'=1d' is not TYPE=DURATION"),
    o("--removal-rate", "0", message="must be a number above 0 and at most 1000000, not 0"),
    o("--bogus", message="unrecognized arguments: --bogus"),
    o("--metrics-port", "70000", message="must be an integer from 0 to 65535, not 70000"),
    w("--metrics-port", "-1", message="must be an integer from 0 to 65535, not -1"),
    o("--trace-file", "/nonexistent/dir/spans", message="--trace-file: [Errno 2] No such file"),
    w("--ack-wait", "-1", message=f"{SECONDS}, not -1"),
    w("--drain-timeout", "nan", message=f"{SECONDS_OR_ZERO}, not nan"),
    w("--concurrency", "0", message="must be an integer from 1 to 10000, not 0"),
    w("--concurrency", "100000", message="must be an integer from 1 to 10000, not 100000"),
    w("--threads", "-1", message="must be an integer from 1 to 10000, not -1"),
    w("--threads", "x", message="invalid int value: 'x'"),
    w("--activities", "no.such.module", message="cannot import no.such.module: No module named"),
    w("--activities", ".relative", message="'.relative' is not a module name"),
    w("--activities", "os", message="module os has no @activity functions"),
    w("--activities", LOUD_MODULE, message="cannot import loud_module: RuntimeError: loud"),
    w("--only", "nope", message="no such activities: nope"),
    w("--presence-interval", "0", message="must be a number above 0 and at most 5, not 0"),
    w("--presence-interval", "6", message="must be a number above 0 and at most 5, not 6"),
    w("--presence-interval", "nan", message="must be a number above 0 and at most 5, not nan"),
    w("--presence-interval", "x", message="argument --presence-interval: invalid float value"),
    Row("worker", (), SERVICE, "the following arguments are required: --activities"),
]

CLI_ROWS = [
    *(c(flag, value, "list", message=message) for flag, value, message in CONNECTION),
    c("--user", "u", "--token", "t", "list", message="not both"),
    c("--connect-timeout", "0", "list", message=f"{SECONDS}, not 0"),
    c("--connect-timeout", "nan", "list", message=f"{SECONDS}, not nan"),
    c("--connect-timeout", "inf", "list", message=f"{SECONDS}, not inf"),
    c("list", message="must be an integer from 1 to 5, not 7", env={"ACTORS_REPLICAS": "7"}),
    c("list", message="--creds {tmp}/missing.pem", env={"ACTORS_NATS_CREDS": MISSING}),
    c("bogus", message="No such command 'bogus'"),
    c("--bogus", message="No such option '--bogus'"),
    # definitions
    c("definitions", "register", MISSING, message="cannot read {tmp}/missing.pem"),
    c("definitions", "register", FOLDER, message="is a directory"),
    c("definitions", "register", HUGE, message="huge.json is over 1048576 bytes"),
    c("definitions", "register", BINARY, message="binary.json is not UTF-8 text"),
    c("definitions", "show", "no such", message="workflow type 'no such' is not a valid name"),
    c("definitions", "show", "count", "--version", "0", message="from 1 to 1000000, not 0"),
    c("definitions", "show", "count", "--version", "9" * 30, message="from 1 to 1000000"),
    # instance operations
    c("signal-with-start", "count", "x", "go", "--signal-id", "a b", message="'a b' is not valid"),
    c("pause", "x", "--type", "count", message="give an instance ID or --type TYPE"),
    c("pause", "x", "--running", message="--running goes with --type"),
    c("retry", "x", "--from", "a b", message="step id 'a b' is not a valid name"),
    c("retry", "--type", "count", "--since", "soon", message="'soon' is not a duration"),
    c("retry", "--type", "count", "--rate", "0", message="above 0 and at most 1000, not 0"),
    # start
    c("start", message="Missing argument 'TYPE'"),
    c("start", "count", "--input", "[bad", message="not valid JSON"),
    c("start", "count", "--input", "NaN", message="NaN is not JSON"),
    c("start", "count", "--input", "1e400", message="the number 1e400 is too large"),
    c("start", "count", "--input", str(2**64), message="input: a number must be from -2**64"),
    c("start", "count", "--input", "[" * 40 + "]" * 40, message="nested more than 29"),
    c("start", "count", "--input", '["\\udc00"]', message="input[0]: the text '\\udc00' holds"),
    c("start", "count", "--input-file", MISSING, message="cannot read {tmp}/missing.pem"),
    c("start", "count", "--input-file", FOLDER, message="is a directory"),
    c("start", "count", "--input-file", HUGE, message="huge.json is over 1048576 bytes"),
    c("start", "count", "--input-file", "/dev/zero", message="/dev/zero is over 1048576 bytes"),
    c("start", "count", "--input-file", BINARY, message="is not UTF-8 text"),
    c("start", "count", "--input-file", BAD_YAML, message="bad.yaml is not valid YAML: "),
    c("start", "count", "--input-file", SET_YAML, message="a value of type set is not JSON"),
    c("start", "count", "--input-file", DEEP, message="nested more than 29 lists and objects"),
    c("start", "count", "--input-file", BIG_INT, message="input.n: a number must be from"),
    c("start", "count", "--input", "1", "--input-file", BIG_INT, message="not both"),
    c("start", "count", "--id", "a b", message="instance id 'a b' is not valid"),
    c("start", "count", "--id", "x" * 126, "--count", "100", message="is not valid"),
    c("start", "count", "--version", "0", message="must be an integer from 1 to 1000000"),
    c("start", "count", "--version", "2000000", message="not 2000000"),
    c("start", "count", "--count", "0", message="'--count'"),
    c("start", "count", "--count", "10001", message="'--count'"),
    c("start", "count", "--timeout", "3", message="--timeout bounds --wait"),
    c("start", "count", "--wait", "--timeout", "0", message=f"{SECONDS}, not 0"),
    c("start", "count", "--wait", "--timeout", "nan", message=f"{SECONDS}, not nan"),
    c("start", "count", "--wait", "--timeout", "-1", message=f"{SECONDS}, not -1"),
    # result, status, list, history
    c("result", message="Missing argument 'ID...'"),
    c("result", "a.b", message="instance id 'a.b' is not valid"),
    c("result", "x", "--wait", "-1", message=f"{SECONDS_OR_ZERO}, not -1"),
    c("result", "x", "--wait", "nan", message=f"{SECONDS_OR_ZERO}, not nan"),
    c("result", "x", "--wait", "1e10", message=f"{SECONDS_OR_ZERO}, not 10000000000"),
    c("status", "", message="instance id '' is not valid"),
    c("list", "--limit", "0", message="'--limit'"),
    c("list", "--limit", "10001", message="'--limit'"),
    c("list", "--status", "sleeping", message="'sleeping' is not one of"),
    c("list", "--type", "a.b", message="workflow type 'a.b' is not a valid name"),
    c("history", "x", "--limit", "0", message="'--limit'"),
    c("history", "x", "--limit", "x", message="'--limit'"),
    # signal, cancel, terminate
    c("signal", "x", "not a name", message="signal name 'not a name' is not a valid name"),
    c("signal", "x", "go", "--data", "[oops", message="not valid JSON"),
    c("signal", "x", "go", "--data", str(-(2**64) - 1), message="data: a number must be from"),
    c("signal", "x", "go", "--data-file", MISSING, message="cannot read {tmp}/missing.pem"),
    c("signal", "x", "go", "--data-file", HUGE, message="over 1048576 bytes"),
    c("signal", "x", "go", "--data-file", DEEP, message="data[0]"),
    c("signal", "x", "go", "--data", "1", "--data-file", DEEP, message="not both"),
    c("cancel", "a/b", message="instance id 'a/b' is not valid"),
    c("terminate", "", message="instance id '' is not valid"),
    # dev and demo: refused before a server starts
    c("dev", "--data", FOLDER, "--api-port", "70000", message="from 0 to 65535, not 70000"),
    c("dev", "--data", FOLDER, "--api-port", "-1", message="from 0 to 65535, not -1"),
    c("dev", "--data", FOLDER, "--metrics-port", "x", message="invalid int value: 'x'"),
    c("dev", "--data", FOLDER, "--nats-port", "65536", message="from 0 to 65535, not 65536"),
    c("dev", "--data", FOLDER, "--count", "-1", message="from 0 to 10000, not -1"),
    c("dev", "--data", FOLDER, "--token", "", message="'--token': must not be empty"),
    c("dev", "--data", FOLDER, "--log-level", "LOUD", message="invalid choice: 'LOUD'"),
    c("dev", "--data", FOLDER, "--log-format", "xml", message="invalid choice: 'xml'"),
    c("dev", "--data", UNMAKEABLE, message="cannot make the data folder {tmp}/file/data"),
    c(
        "dev",
        "--data",
        FOLDER,
        "--activities",
        "no.such.module",
        message="--activities: cannot import no.such.module: No module named",
    ),
    c(
        "dev",
        "--data",
        FOLDER,
        "--activities",
        "os",
        message="--activities: module os has no @activity functions",
    ),
    c("demo", "--count", "-1", message="from 0 to 10000, not -1"),
    c("demo", "--count", "many", message="invalid int value: 'many'"),
    c("demo", "--data", UNMAKEABLE, message="cannot make the data folder {tmp}/file/data"),
    # Schedules: every field of a schedule is checked before anything is sent.
    *(
        c("schedules", "create", "--id", "s1", "--workflow", "count", *argv, message=message)
        for argv, message in [
            (("--cron", "bad"), "cron expression 'bad'"),
            (("--cron", "0 * * * *", "--timezone", "Mars/Base"), "unknown time zone 'Mars/Base'"),
            (("--every", "-5s"), "spec.intervals[0].every: '-5s' is not a duration"),
            (("--every", "1h", "--offset", "xyz"), "offset: 'xyz' is not a duration"),
            (("--every", "1h", "--jitter", "-1s"), "spec.jitter: '-1s' is not a duration"),
            (("--every", "1h", "--start-at", "yesterday"), "'yesterday' is not an ISO 8601 time"),
            (("--every", "1h", "--end-at", "nope"), "spec.end_at: 'nope' is not an ISO 8601"),
            (("--every", "1h", "--overlap", "sometimes"), "'sometimes' is not one of 'skip'"),
            (("--every", "1h", "--catchup-window", "forever"), "'forever' is not a duration"),
        ]
    ),
    c(
        "schedules",
        "create",
        "--id",
        "s1",
        "--workflow",
        "bad type!",
        "--every",
        "1h",
        message="workflow type 'bad type!' is not a valid name",
    ),
    c("schedules", "describe", "s1", "--next", "0", message="0 is not in the range 1<=x<=100"),
    c(
        "schedules",
        "backfill",
        "s1",
        "--from",
        "2026-01-01",
        "--to",
        "never",
        message="--to: 'never' is not an ISO 8601 time",
    ),
]

# The services' rows again, as commands of the command line.
COMMAND_ROWS = [replace(row, main="command") for row in SERVICE_ROWS]


def g(entry: str, *argv: str, message: str) -> Row:
    """A service after the group's options: ``python -m actors --url X orchestrator``."""
    return Row(entry, argv, SERVICE, message, main="group")


# The group's options before a service are the service's own; the others are refused.
GROUP_ROWS = [
    g("orchestrator", "--url", "foo://x", "orchestrator", message="unknown transport URL"),
    g("orchestrator", "--replicas", "9", "orchestrator", message="from 1 to 5, not 9"),
    g("orchestrator", "--config", MISSING, "orchestrator", message="config file {tmp}/missing"),
    g(
        "worker",
        "--creds",
        MISSING,
        "worker",
        "--activities",
        ACTIVITIES,
        message="--creds {tmp}/missing.pem: No such file or directory",
    ),
    g(
        "worker",
        "--tls-cert",
        JUNK,
        "worker",
        "--activities",
        ACTIVITIES,
        message="a TLS client certificate needs its key",
    ),
    g("orchestrator", "--json", "orchestrator", message="unrecognized arguments: --json"),
    g(
        "orchestrator",
        "--connect-timeout",
        "1",
        "orchestrator",
        message="unrecognized arguments: --connect-timeout",
    ),
]

MAINS: dict[str, Callable[[list[str]], int]] = {
    "orchestrator": orchestrator.main,
    "worker": worker.main,
    "cli": cli_main,
}


def make_files(tmp: Path) -> None:
    (tmp / "junk.pem").write_text("not a certificate\n")
    (tmp / "huge.json").write_text('"' + "x" * 2 * 1024 * 1024 + '"')
    (tmp / "binary.json").write_bytes(b'{"a": "\xff\xfe"}')
    (tmp / "bad.yaml").write_text("a: [\n")
    (tmp / "set.yaml").write_text("!!set {a, b}\n")
    (tmp / "deep.json").write_text("[" * 40 + "]" * 40)
    (tmp / "big.json").write_text('{"n": 18446744073709551616}')
    (tmp / "bad.toml").write_text("ack_wait = -1\n")
    (tmp / "file").write_text("a file, not a folder\n")
    (tmp / f"{LOUD_MODULE}.py").write_text("raise RuntimeError('loud')\n")


def run(
    row: Row, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the row's entry point in this process: its exit code, stdout and stderr."""
    for name in list(os.environ):
        if name.startswith("ACTORS_"):
            monkeypatch.delenv(name)
    # Nowhere to connect to: a row that is not refused before connecting fails fast.
    monkeypatch.setenv("ACTORS_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ACTORS_CONNECT_TIMEOUT", "0.5")
    for name, value in row.env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp))
    monkeypatch.syspath_prepend(str(tmp))
    argv = [arg.format(tmp=tmp) for arg in row.argv_of_main()]
    thresholds = gc.get_threshold()
    try:
        code = MAINS[row.entry if row.main == "entry" else "cli"](argv)
    finally:
        # A service tunes the collector for a long life before it connects: undo it.
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    out, err = capsys.readouterr()
    return code, out, err


ALL_ROWS = SERVICE_ROWS + COMMAND_ROWS + GROUP_ROWS + CLI_ROWS


@pytest.mark.parametrize("row", ALL_ROWS, ids=lambda row: row.id)
def test_a_bad_value_is_one_line_with_the_documented_code(
    row: Row,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_files(tmp_path)
    began = time.monotonic()
    code, out, err = run(row, tmp_path, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert (code, out) == (row.code, ""), err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert row.message.format(tmp=tmp_path) in lines[0]
    prefix = "error: " if row.entry == "cli" else f"{row.entry}: "
    assert lines[0].startswith(prefix), lines[0]
    # Refused before connecting: no connect timeout was waited out.
    assert time.monotonic() - began < 5


def _flags(command: click.Command) -> set[str]:
    flags = {
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    }
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            flags |= _flags(sub)
    return flags


def test_the_table_covers_every_flag() -> None:
    """Every flag of every command is in some row, but those with nothing to get wrong.

    The services are commands of the command line: their flags are among its.
    """
    given = {arg for row in ALL_ROWS for arg in row.argv if arg.startswith("--")}
    flags = _flags(cli)
    assert {"--ack-wait", "--lease", "--activities", "--only"} <= flags
    # No value, or any text: nothing to get wrong before a server says so
    # (--host and --metrics-host are checked when their port is bound).
    free = {
        "--help", "--json", "--once", "--examples", "--no-examples", "--reason", "--password",
        "--host", "--metrics-host", "--by", "--yes", "--note",
    }  # fmt: skip
    assert flags - free - given == set()


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- against a real server ---------------------------------------------------------------


def run_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` from the repository root, without the caller's ACTORS_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORS_")}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server without TLS and without credentials."""
    if os.environ.get("NATS_URL"):
        pytest.skip("needs a NATS server of its own")
    with NatsServer(tmp_path / "nats") as server:
        yield server


#: How to run each: the arguments around the connection's, the broker's exit code, the prefix.
ENTRY_POINTS = [
    ((["-m", "actors.orchestrator"], []), SERVICE, "orchestrator: "),
    ((["-m", "actors.worker"], ["--activities", ACTIVITIES]), SERVICE, "worker: "),
    ((["-m", "actors", "orchestrator"], []), SERVICE, "orchestrator: "),
    ((["-m", "actors", "worker"], ["--activities", ACTIVITIES]), SERVICE, "worker: "),
    ((["-m", "actors"], ["list"]), ExitCode.UNREACHABLE, "error: "),
]
ENTRY_IDS = ["orch", "worker", "cli-orch", "cli-worker", "cli"]


@pytest.mark.jetstream
@pytest.mark.parametrize(("argv", "code", "prefix"), ENTRY_POINTS, ids=ENTRY_IDS)
def test_a_tls_url_to_a_server_without_tls_ends_every_entry_point(
    plain_server: NatsServer, argv: tuple[list[str], list[str]], code: int, prefix: str
) -> None:
    url = plain_server.url.replace("nats://", "tls://")
    began = time.monotonic()
    done = run_process(*argv[0], "--url", url, *argv[1])
    assert time.monotonic() - began < 20
    assert (done.returncode, done.stdout) == (code, ""), done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(prefix), line
    assert f"the server at {url} offers no TLS, and the URL says tls://" in line


@pytest.mark.jetstream
@pytest.mark.parametrize(("argv", "code", "prefix"), ENTRY_POINTS, ids=ENTRY_IDS)
def test_a_missing_creds_file_is_an_error_though_the_server_needs_none(
    plain_server: NatsServer,
    tmp_path: Path,
    argv: tuple[list[str], list[str]],
    code: int,
    prefix: str,
) -> None:
    missing = tmp_path / "engine.creds"
    done = run_process(*argv[0], "--url", plain_server.url, "--creds", str(missing), *argv[1])
    usage = SERVICE if prefix != "error: " else ExitCode.INVALID
    assert (done.returncode, done.stdout) == (usage, ""), done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{prefix}--creds {missing}: No such file or directory"
    ]
    # The same server, without the flag: the command line gets in.
    if prefix == "error: ":
        assert run_process("-m", "actors", "--url", plain_server.url, "list").returncode == 0
