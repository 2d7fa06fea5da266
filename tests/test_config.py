"""Settings of every entry point (flag > ACTORS_* variable > TOML file > default) and logs.

The parsers are exercised without a broker: the services' through
``parse_service_args`` (what their ``main`` calls), the command line's through
click's ``make_context`` with the ``default_map`` its ``main`` builds. The JSON
log format is checked on records of a real orchestrator (memory transport)
whose engine is made to fail on an activity's result.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import trio

import actors
from actors import orchestrator, worker
from actors.cli import Defaults, cli, parse_service_args
from actors.cli import main as cli_main
from actors.cli._commands import App, _config_defaults
from actors.cli._config import KEYS, env_name, load_config
from actors.cli._service import JsonFormatter, TextFormatter
from actors.core import ActivityCompleted, Limits
from actors.runtime import _instance
from transport import open_transport

ACTIVITIES = "examples.activities"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ACTORS_* variable of the developer's leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("ACTORS_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "actors.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def orchestrator_args(argv: list[str]) -> Any:
    return parse_service_args(orchestrator._parser, "orchestrator", argv)[1]


def worker_args(argv: list[str]) -> Any:
    return parse_service_args(worker._parser, "worker", ["--activities", ACTIVITIES, *argv])[1]


def cli_params(argv: list[str]) -> dict[str, Any]:
    """The group's option values for ``argv``, resolved as ``main`` resolves them."""
    ctx = cli.make_context("actors", [*argv, "list"], obj=App(), default_map=_config_defaults(argv))
    return ctx.params


# -- precedence -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "key", "flag", "values"),
    [
        (orchestrator_args, "ack_wait", "--ack-wait", (30.0, 5.0, 7.0, 9.0)),
        (orchestrator_args, "max_input", "--max-input", (Limits().max_input, 4096, 8192, 16384)),
        (worker_args, "concurrency", "--concurrency", (16, 4, 5, 6)),
        (
            worker_args,
            "url",
            "--url",
            ("nats://127.0.0.1:4222", "nats://f:1", "nats://e:1", "nats://a:1"),
        ),
    ],
)
def test_a_service_takes_the_flag_then_the_variable_then_the_file_then_the_default(
    parse: Any,
    key: str,
    flag: str,
    values: tuple[Any, Any, Any, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin, in_file, in_env, in_flag = values
    assert getattr(parse([]), key) == builtin
    file_value = json.dumps(in_file)
    config = write(tmp_path, f"{key} = {file_value}\n")
    assert getattr(parse(["--config", config]), key) == in_file
    monkeypatch.setenv("ACTORS_CONFIG", config)  # the variable names the file too
    assert getattr(parse([]), key) == in_file
    monkeypatch.setenv(env_name(key), str(in_env))
    assert getattr(parse([]), key) == in_env
    assert getattr(parse([flag, str(in_flag)]), key) == in_flag


def test_the_cli_takes_the_option_then_the_variable_then_the_file_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_params([])["connect_timeout"] == 2.0
    config = write(tmp_path, 'connect_timeout = 3\nurl = "nats://file:1"\n')
    params = cli_params(["--config", config])
    assert (params["connect_timeout"], params["url"]) == (3.0, "nats://file:1")
    monkeypatch.setenv("ACTORS_CONFIG", config)
    monkeypatch.setenv("ACTORS_CONNECT_TIMEOUT", "4")
    params = cli_params([])
    assert (params["connect_timeout"], params["url"]) == (4.0, "nats://file:1")
    params = cli_params(["--connect-timeout", "5", "--url", "nats://flag:1"])
    assert (params["connect_timeout"], params["url"]) == (5.0, "nats://flag:1")


def test_an_entry_points_table_overrides_the_top_level(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        url = "nats://top:1"
        ack_wait = 1
        activities = ["examples.activities"]   # only the worker's: the others ignore it
        connect_timeout = 9                     # only the CLI's
        [orchestrator]
        ack_wait = 2
        [worker]
        ack_wait = 3
        url = "nats://worker:1"
        [cli]
        url = "nats://cli:1"
        """,
    )
    o = orchestrator_args(["--config", config])
    assert (o.url, o.ack_wait) == ("nats://top:1", 2.0)
    w = parse_service_args(worker._parser, "worker", ["--config", config])[1]
    assert (w.url, w.ack_wait, w.activities) == ("nats://worker:1", 3.0, [ACTIVITIES])
    c = cli_params(["--config", config])
    assert (c["url"], c["connect_timeout"]) == ("nats://cli:1", 9.0)


def test_credentials_and_tls_come_from_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'user = "u"\npassword = "p"\ntoken = "t"\ncreds = "c.creds"\n'
        'tls_ca = "ca.pem"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\nreplicas = 3\n',
    )
    expected = ("u", "p", "t", "c.creds", "ca.pem", "cert.pem", "key.pem", 3)
    for args in (orchestrator_args(["--config", config]), worker_args(["--config", config])):
        got = (args.user, args.password, args.token, args.creds, args.tls_ca, args.tls_cert)
        assert (*got, args.tls_key, args.replicas) == expected
    params = cli_params(["--config", config])
    names = ("user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key", "replicas")
    assert tuple(params[name] for name in names) == expected


def test_the_keys_are_exactly_the_flags() -> None:
    """KEYS (what a file may hold) and the flags of each entry point agree."""
    for entry, parser in (
        ("orchestrator", orchestrator._parser(Defaults({}))),
        ("worker", worker._parser(Defaults({}))),
    ):
        dests = {action.dest for action in parser._actions} - {"help", "config"}
        assert dests == {key for key, spec in KEYS.items() if entry in spec.used_by}, entry
    group = {p.name for p in cli.params} - {"config", "as_json"}
    import actors.__main__  # noqa: F401 (it adds the dev command to the group)

    dev = cli.commands["dev"]
    assert isinstance(dev, click.Command)
    dev_keys = {p.name for p in dev.params} & {"log_level", "log_format"}
    assert group | dev_keys == {key for key, spec in KEYS.items() if "cli" in spec.used_by}


# -- errors -------------------------------------------------------------------------


BAD_FILES = [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[worker]\nbogus = 1\n", "unknown key [worker] 'bogus'"),
    ("[cli]\nack_wait = 1\n", "cli has no setting [cli] 'ack_wait'"),
    ('replicas = "three"\n', "'replicas' must be an integer, not 'three'"),
    ("replicas = true\n", "'replicas' must be an integer, not True"),
    ('[orchestrator]\nack_wait = "soon"\n', "[orchestrator] 'ack_wait' must be a number"),
    ('log_format = "xml"\n', "'log_format' must be one of text, json, not 'xml'"),
    ('activities = "a,b"\n', "'activities' must be a list of strings"),
    # Bounds: the same as the flags' (docs/operations.md).
    ("replicas = 9\n", "'replicas' must be an integer from 1 to 5, not 9"),
    ("ack_wait = nan\n", "'ack_wait' must be a number above 0 and at most 1000000000, not nan"),
    ("ack_wait = 0\n", "'ack_wait' must be a number above 0 and at most 1000000000, not 0"),
    ("[worker]\nconcurrency = 0\n", "[worker] 'concurrency' must be an integer from 1 to 10000"),
    ("[orchestrator]\nmax_state = 2000000\n", "must be an integer from 1024 to 1048576"),
    ("[cli]\nconnect_timeout = -inf\n", "'connect_timeout' must be a number above 0"),
    ("worker = 3\n", "[worker] must be a table"),
    ("url = \n", "is not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_a_usage_error_of_every_entry_point(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, text)
    for main, argv in (
        (orchestrator.main, ["--config", config]),
        (worker.main, ["--config", config, "--activities", ACTIVITIES]),
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert f"config file {config}" in err
        assert message in err
    assert cli_main(["--config", config, "list"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: config file ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.toml")
    monkeypatch.setenv("ACTORS_CONFIG", missing)
    with pytest.raises(SystemExit) as caught:
        orchestrator.main([])
    assert caught.value.code == 2
    assert f"config file {missing}: No such file or directory" in capsys.readouterr().err
    assert cli_main(["list"]) == 4
    assert f"config file {missing}: No such file or directory" in capsys.readouterr().err
    # JSON errors stay JSON.
    assert cli_main(["--json", "list"]) == 4
    error = json.loads(capsys.readouterr().err)["error"]
    assert (error["code"], error["reason"]) == (4, "invalid")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACTORS_LOG_FORMAT": "xml"}, "argument --log-format: invalid choice: 'xml'"),
        ({"ACTORS_LOG_LEVEL": "loud"}, "argument --log-level: invalid choice: 'loud'"),
        ({"ACTORS_ACK_WAIT": "soon"}, "argument --ack-wait: invalid float value: 'soon'"),
    ],
)
def test_a_bad_variable_is_a_usage_error(
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        orchestrator.main(["--url", "nats://127.0.0.1:1"])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORS_ACK_WAIT", "")
    assert orchestrator_args([]).ack_wait == 30.0


def test_the_file_values_are_typed(tmp_path: Path) -> None:
    config = write(tmp_path, "ack_wait = 5\n[worker]\nthreads = 2\n")
    assert load_config(config, "worker") == {"ack_wait": 5.0, "threads": 2}
    assert isinstance(load_config(config, "orchestrator")["ack_wait"], float)


# -- logs -------------------------------------------------------------------------


def record(**extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("actors.test")
    return logger.makeRecord(
        "actors.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None, extra=extra
    )


def test_the_text_format_shows_the_fields_after_the_message() -> None:
    line = TextFormatter().format(record(instance="i1", step="a", attempt=2))
    assert line.endswith("]: hello there instance=i1 step=a attempt=2")
    assert TextFormatter().format(record()).endswith("]: hello there")


def test_the_json_format_is_one_object_a_line() -> None:
    data = json.loads(JsonFormatter().format(record(instance="i1", step="a", attempt=2)))
    assert {k: data[k] for k in ("level", "logger", "message", "instance", "step", "attempt")} == {
        "level": "WARNING",
        "logger": "actors.test",
        "message": "hello there",
        "instance": "i1",
        "step": "a",
        "attempt": 2,
    }
    assert data["time"].endswith("+00:00")
    assert "activity" not in data


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the ``actors`` loggers write, in the JSON format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("actors")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@actors.activity
async def config_test_echo(value: Any) -> Any:
    return value


async def test_the_orchestrators_logs_carry_instance_step_and_attempt(
    json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decide = _instance.decide

    def decide(definition: Any, state: Any, event: Any, now: float) -> Any:
        if isinstance(event, ActivityCompleted):
            raise RuntimeError("a bug in the engine")
        return real_decide(definition, state, event, now)

    # The engine's net for its own bugs logs the event it failed on.
    monkeypatch.setattr(_instance, "decide", decide)
    definition = {
        "type": "echo",
        "version": 1,
        "steps": [{"id": "s1", "activity": "config_test_echo"}],
    }
    specs = actors.collect_activities([sys.modules[__name__]])
    with trio.fail_after(30):
        async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
            orch = actors.Orchestrator(transport)
            work = actors.Worker(transport, specs)
            await nursery.start(orch.run)
            await nursery.start(work.run)
            async with actors.Client(transport) as client:
                await client.register(definition)
                instance_id = await client.start("echo", {"x": 1})
                with pytest.raises(actors.WorkflowError):
                    await client.result(instance_id)
            orch.shutdown()
            work.shutdown()
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    failed = [line for line in lines if "failed deciding" in line["message"]]
    assert failed, lines
    assert failed[0]["level"] == "ERROR"
    assert failed[0]["logger"] == "actors.orchestrator"
    assert (failed[0]["instance"], failed[0]["step"], failed[0]["attempt"]) == (
        instance_id,
        "s1",
        1,
    )
    assert "RuntimeError: a bug in the engine" in failed[0]["exception"]
