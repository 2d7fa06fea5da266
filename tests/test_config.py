"""Settings of every entry point (flag > ACTORS_* variable > TOML file > default) and logs.

The commands' options are resolved without a broker, through click's
``make_context`` with the ``default_map`` their ``main`` builds; a service
run through the command line is caught where it would connect. The JSON
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
from types import SimpleNamespace
from typing import Any

import click
import pytest
import trio

import actors
from actors import orchestrator, worker
from actors.cli import SETTINGS, _services, cli
from actors.cli import main as cli_main
from actors.cli._app import App
from actors.cli._config import load_config
from actors.cli._logs import JsonFormatter, TextFormatter
from actors.cli._main import SERVICES, _file_defaults, config_tables
from actors.cli._options import SettingOption
from actors.cli._services import ORCHESTRATOR_FIELDS, WORKER_FIELDS, build
from actors.cli._settings import default_of
from actors.core import ActivityCompleted, Limits
from actors.runtime import OrchestratorConfig, WorkerConfig, _instance
from transport import open_transport

ACTIVITIES = "actors.examples.activities"


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


def env_name(key: str) -> str:
    return SETTINGS[key].variable


def service_args(name: str, argv: list[str]) -> Any:
    """Service ``name``'s option values for ``argv``, resolved as its ``main`` resolves them."""
    command = SERVICES[name]
    ctx = command.make_context(name, list(argv), default_map=_file_defaults(argv, command))
    return SimpleNamespace(**ctx.params)


def orchestrator_args(argv: list[str]) -> Any:
    return service_args("orchestrator", argv)


def worker_args(argv: list[str]) -> Any:
    return service_args("worker", ["--activities", ACTIVITIES, *argv])


def cli_params(argv: list[str]) -> dict[str, Any]:
    """The group's option values for ``argv``, resolved as ``main`` resolves them."""
    ctx = cli.make_context(
        "actors", [*argv, "list"], obj=App(), default_map=_file_defaults(argv, cli)
    )
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
        activities = ["actors.examples.activities"]   # only the worker's: the others ignore it
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
    w = service_args("worker", ["--config", config])
    assert (w.url, w.ack_wait, w.activities) == ("nats://worker:1", 3.0, (ACTIVITIES,))
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


CONNECTION = {"url", "user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key"}
SERVICES_BOTH = {
    *CONNECTION, "replicas", "log_level", "log_format", "ack_wait", "drain_timeout",
    "metrics_port", "metrics_host", "trace_file",
}  # fmt: skip
ORCHESTRATOR_ONLY = {
    "passivate_after", "max_idle_actors", "start_wait", "max_waiting_events", "lease",
    "partitions", "max_input", "max_output", "max_state", "retention", "retention_by_type",
    "removal_rate",
}  # fmt: skip


def _options(command: click.Command) -> Iterator[click.Option]:
    yield from (param for param in command.params if isinstance(param, click.Option))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _options(sub)


def test_each_table_holds_the_settings_of_its_commands() -> None:
    """What a file may hold, table by table, as docs/operations.md lists it."""
    assert config_tables() == {
        "cli": {*CONNECTION, "replicas", "connect_timeout", "log_level", "log_format"}
        | {"metrics_port"},
        "orchestrator": SERVICES_BOTH | ORCHESTRATOR_ONLY,
        "worker": SERVICES_BOTH
        | {"activities", "only", "concurrency", "threads", "presence_interval"},
    }
    # Every setting is some command's ...
    assert set().union(*config_tables().values()) == set(SETTINGS)
    # ... and every option read from an ACTORS_* variable is a setting's, with the
    # setting's variable (but the file's own, and dev's API token: no key for a secret).
    for option in _options(cli):
        if option.envvar in (None, "ACTORS_CONFIG", "ACTORS_API_TOKEN"):
            continue
        assert isinstance(option, SettingOption), option.name
        assert option.envvar == option.setting.variable
        assert option.opts == [option.setting.flag]


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
        (cli_main, ["orchestrator", "--config", config]),
        (cli_main, ["--config", config, "worker", "--activities", ACTIVITIES]),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(("orchestrator: config file", "worker: config file")), err
        assert f"config file {config}" in err
        assert message in err
        assert len(err.strip().splitlines()) == 1
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
    assert orchestrator.main([]) == 2
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
    for main, argv in ((orchestrator.main, []), (cli_main, ["orchestrator"])):
        assert main([*argv, "--url", "nats://127.0.0.1:1"]) == 2
        assert message in capsys.readouterr().err


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORS_ACK_WAIT", "")
    assert orchestrator_args([]).ack_wait == 30.0


# -- the services' defaults are the engine's ------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "fields"),
    [
        ("orchestrator", OrchestratorConfig, ORCHESTRATOR_FIELDS),
        ("worker", WorkerConfig, WORKER_FIELDS),
    ],
)
def test_a_service_with_no_settings_runs_on_its_configs_defaults(
    name: str, config: type, fields: dict[str, str]
) -> None:
    """No default is restated: each option's is its config field's (``OrchestratorConfig()``)."""
    argv = ["--activities", ACTIVITIES] if name == "worker" else []
    assert build(config, fields, vars(service_args(name, argv))) == config()
    # And every field a setting fills is one the config has.
    for key, path in fields.items():
        assert SETTINGS[key].default is None, key  # nothing to disagree with the config
        assert default_of(config, path) == getattr(service_args(name, argv), key)


def test_a_setting_goes_into_its_field(tmp_path: Path) -> None:
    args = orchestrator_args(
        ["--ack-wait", "7", "--partitions", "4", "--max-state", "2048", "--lease", "3"]
    )
    config = build(OrchestratorConfig, ORCHESTRATOR_FIELDS, vars(args))
    assert (config.layout.ack_wait, config.layout.partitions) == (7.0, 4)
    assert (config.limits.max_state, config.lease) == (2048, 3.0)
    args = worker_args(["--ack-wait", "8", "--replicas", "3"])
    work = build(WorkerConfig, WORKER_FIELDS, vars(args))
    assert (work.ack_wait, work.layout.replicas) == (8.0, 3)


def test_a_list_setting_takes_values_after_one_flag_or_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert worker_args(["--only", "a", "b", "--threads", "2"]).only == ("a", "b")
    assert worker_args(["--only", "a", "--only", "b"]).only == ("a", "b")
    assert worker_args(["--only=a"]).only == ("a",)
    monkeypatch.setenv("ACTORS_ONLY", "a,,b")
    assert worker_args([]).only == ("a", "b")
    monkeypatch.delenv("ACTORS_ONLY")
    config = write(tmp_path, 'only = ["c", "d"]\n')
    assert worker_args(["--config", config]).only == ("c", "d")
    assert worker_args(["--config", config, "--only", "e"]).only == ("e",)


def test_a_log_level_is_taken_in_any_case() -> None:
    assert orchestrator_args(["--log-level", "debug"]).log_level == "DEBUG"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """What the services would serve with, instead of connecting: (name, url, settings)."""
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def serve(name: str, url: str, values: dict[str, Any], drain: float, make: Any) -> int:
        calls.append((name, url, dict(values)))
        return 0

    monkeypatch.setattr(_services, "_serve", serve)
    return calls


def test_the_groups_options_before_a_service_are_the_services(
    served: list[tuple[str, str, dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``actors --url X orchestrator`` is ``actors orchestrator --url X``; a flag after wins."""
    monkeypatch.setenv("ACTORS_NATS_URL", "nats://env:1")
    assert cli_main(["--url", "nats://before:1", "orchestrator", "--lease", "3"]) == 0
    assert cli_main(["--url", "nats://before:1", "orchestrator", "--url", "nats://after:1"]) == 0
    assert cli_main(["orchestrator"]) == 0
    config = write(tmp_path, '[orchestrator]\nurl = "nats://file:1"\nack_wait = 4\n')
    monkeypatch.delenv("ACTORS_NATS_URL")
    assert cli_main(["--config", config, "orchestrator"]) == 0
    only = ["--only", "ship", "increment"]
    assert cli_main(["worker", "--activities", ACTIVITIES, *only, "--threads", "3"]) == 0
    assert [(name, url) for name, url, _ in served] == [
        ("orchestrator", "nats://before:1"),
        ("orchestrator", "nats://after:1"),
        ("orchestrator", "nats://env:1"),
        ("orchestrator", "nats://file:1"),
        ("worker", "nats://127.0.0.1:4222"),
    ]
    assert served[0][2]["lease"] == 3.0
    assert served[3][2]["ack_wait"] == 4.0
    assert served[4][2]["threads"] == 3


def test_the_file_values_are_typed(tmp_path: Path) -> None:
    config = write(tmp_path, "ack_wait = 5\n[worker]\nthreads = 2\n")
    values = load_config(config, config_tables())
    assert values["worker"] == {"ack_wait": 5.0, "threads": 2}
    assert isinstance(values["orchestrator"]["ack_wait"], float)
    assert values["cli"] == {}


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


def test_the_retention_settings_fill_the_orchestrators_config() -> None:
    """What the flags, variables and file give reaches ``OrchestratorConfig``; a bad
    per-type period is refused by the config itself."""
    values = {
        key: default_of(OrchestratorConfig, path) for key, path in ORCHESTRATOR_FIELDS.items()
    }
    values |= {"retention": 3600.0, "retention_by_type": ("order=1d",), "removal_rate": 50.0}
    config = build(OrchestratorConfig, ORCHESTRATOR_FIELDS, values)
    assert (config.retention, config.retention_by_type, config.removal_rate) == (
        3600.0,
        ("order=1d",),
        50.0,
    )
    with pytest.raises(ValueError, match="'order=soon'"):
        OrchestratorConfig(retention_by_type=("order=soon",))
