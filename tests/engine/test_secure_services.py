"""NATS only: every entry point against a nats-server that requires credentials or TLS.

The orchestrator, a worker and the command line run as subprocesses; their
credentials come from a TOML config file for some and from ``ACTORS_*``
variables for the others, so that both paths are proven end to end. Wrong
credentials must end each entry point promptly with exit code 2 and a
one-line reason, not a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats_jwt
import natsserver
import pytest
import trio
from certificates import make_certificates, mutual_tls_config
from processes import REPO_ROOT, Services, service_env

pytestmark = pytest.mark.jetstream

USER, PASSWORD = "engine", "s3cret"
#: Seconds an entry point may take to give up on credentials the server refuses.
REFUSE_WITHIN = 20


def _no_shared_server() -> None:
    if os.environ.get("NATS_URL"):
        pytest.skip("these tests configure a NATS server of their own")


class EnvServices(Services):
    """:class:`Services` whose next spawn gets ``extra_env`` (ACTORS_* variables) too."""

    def __init__(self, url: str, directory: Path, ledger: Path) -> None:
        super().__init__(url, directory, ledger)
        self.extra_env: dict[str, str] = {}

    def _env(self) -> dict[str, str]:
        return {**super()._env(), **self.extra_env}


def base_env() -> dict[str, str]:
    env = service_env()
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def toml(values: dict[str, str]) -> str:
    # Values are paths and URLs: TOML basic strings with backslashes escaped.
    return "".join(
        f'{key} = "{value.replace(chr(92), chr(92) * 2)}"\n' for key, value in values.items()
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", *args],
        cwd=REPO_ROOT,
        env=env or base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def run_engine(
    tmp_path: Path, file_settings: dict[str, str], env_settings: dict[str, str]
) -> None:
    """The orchestrator configured by a file, a worker by variables, the CLI by the file."""
    config = tmp_path / "actors.toml"
    config.write_text(toml(file_settings))
    with EnvServices("unused://", tmp_path / "logs", tmp_path / "ledger") as services:
        services.spawn("orchestrator", ["-m", "actors.orchestrator", "--config", str(config)])
        services.extra_env = env_settings
        services.spawn(
            "worker", ["-m", "actors.worker", "--activities", "actors.examples.activities"]
        )
        await services.wait_ready("orchestrator", "worker")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli("--config", str(config), *args)

        registered = await trio.to_thread.run_sync(
            cli, "definitions", "register", "actors/examples/count.yaml"
        )
        assert registered.returncode == 0, registered.stderr
        started = await trio.to_thread.run_sync(
            cli, "--json", "start", "count", "--input", '{"count":0}', "--wait", "--timeout", "60"
        )
        assert started.returncode == 0, started.stderr
        assert '"count": 3' in started.stdout, started.stdout
        codes = await services.terminate_all()
        assert codes == {"orchestrator": 0, "worker": 0}


def assert_refused_promptly(argv: list[str], env: dict[str, str]) -> str:
    """Run ``python argv``: it must exit 2 within REFUSE_WITHIN s with one line; that line."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=REFUSE_WITHIN * 3,
    )
    took = time.monotonic() - began
    assert done.returncode == 2, done.stderr
    assert took < REFUSE_WITHIN, took
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# -- a token ----------------------------------------------------------------------------

TOKEN = "t0ken-for-the-engine"


async def test_a_workflow_completes_with_a_token(tmp_path: Path) -> None:
    _no_shared_server()
    config = {"authorization": {"token": TOKEN}}
    with natsserver.NatsServer(tmp_path / "nats", config=config) as server:
        await run_engine(
            tmp_path,
            {"url": server.url, "token": TOKEN},
            {"ACTORS_NATS_URL": server.url, "ACTORS_NATS_TOKEN": TOKEN},
        )


# -- a credentials file (operator mode: JWTs and NKeys) ----------------------------------


async def test_a_workflow_completes_with_a_credentials_file(tmp_path: Path) -> None:
    _no_shared_server()
    trust = nats_jwt.operator()
    creds = str(trust.creds(tmp_path / "engine.creds"))
    with natsserver.NatsServer(tmp_path / "nats", config_text=trust.config_text) as server:
        await run_engine(
            tmp_path,
            {"url": server.url, "creds": creds},
            {"ACTORS_NATS_URL": server.url, "ACTORS_NATS_CREDS": creds},
        )
        # A user of another operator is refused: exit 2, one line.
        stranger = str(nats_jwt.operator().creds(tmp_path / "stranger.creds"))
        env = {**base_env(), "ACTORS_NATS_URL": server.url, "ACTORS_NATS_CREDS": stranger}
        line = assert_refused_promptly(["-m", "actors.orchestrator"], env)
        assert line.startswith("orchestrator:"), line


# -- user and password ----------------------------------------------------------------


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[natsserver.NatsServer]:
    _no_shared_server()
    config = {"authorization": {"user": USER, "password": PASSWORD}}
    with natsserver.NatsServer(tmp_path / "nats", config=config) as server:
        yield server


async def test_a_workflow_completes_with_a_password(
    password_server: natsserver.NatsServer, tmp_path: Path
) -> None:
    url = password_server.url
    await run_engine(
        tmp_path,
        {"url": url, "user": USER, "password": PASSWORD},
        {"ACTORS_NATS_URL": url, "ACTORS_NATS_USER": USER, "ACTORS_NATS_PASSWORD": PASSWORD},
    )


def test_a_wrong_password_ends_every_entry_point_with_code_2(
    password_server: natsserver.NatsServer, tmp_path: Path
) -> None:
    url = password_server.url
    config = tmp_path / "wrong.toml"
    config.write_text(toml({"url": url, "user": USER, "password": "wrong"}))
    by_file = base_env()
    by_env = {**base_env(), "ACTORS_NATS_URL": url, "ACTORS_NATS_USER": USER}
    by_env["ACTORS_NATS_PASSWORD"] = "wrong"
    orchestrator = assert_refused_promptly(
        ["-m", "actors.orchestrator", "--config", str(config)], by_file
    )
    assert orchestrator.startswith("orchestrator: ")
    worker = assert_refused_promptly(
        ["-m", "actors.worker", "--activities", "actors.examples.activities"], by_env
    )
    assert worker.startswith("worker: ")
    cli = assert_refused_promptly(["-m", "actors", "--config", str(config), "list"], by_file)
    assert cli == f"error: {url}: the server refused the credentials"
    # A flag beats the file: the right password on the command line gets in.
    fixed = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), "--password", PASSWORD, "list"],
        cwd=REPO_ROOT,
        env=by_file,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fixed.returncode == 0, fixed.stderr


# -- TLS with a client certificate -----------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[natsserver.NatsServer, Path]]:
    _no_shared_server()
    certs = make_certificates(tmp_path / "certs")
    config = mutual_tls_config(certs)
    with natsserver.NatsServer(tmp_path / "nats", config=config) as server:
        yield server, certs


async def test_a_workflow_completes_over_mutual_tls(
    tls_server: tuple[natsserver.NatsServer, Path], tmp_path: Path
) -> None:
    server, certs = tls_server
    url = server.url.replace("nats://", "tls://")
    files = {
        "tls_ca": str(certs / "ca.pem"),
        "tls_cert": str(certs / "client.pem"),
        "tls_key": str(certs / "client.key"),
    }
    await run_engine(
        tmp_path,
        {"url": url, **files},
        {"ACTORS_NATS_URL": url, **{f"ACTORS_NATS_{k.upper()}": v for k, v in files.items()}},
    )


def test_tls_without_a_client_certificate_ends_the_cli_with_code_2(
    tls_server: tuple[natsserver.NatsServer, Path], tmp_path: Path
) -> None:
    server, certs = tls_server
    url = server.url.replace("nats://", "tls://")
    config = tmp_path / "no-cert.toml"
    config.write_text(toml({"url": url, "tls_ca": str(certs / "ca.pem")}))
    line = assert_refused_promptly(
        ["-m", "actors", "--config", str(config), "--connect-timeout", "1", "list"], base_env()
    )
    assert line.startswith("error: ")
