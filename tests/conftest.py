"""Suite-wide fixtures: NATS servers and the transport parametrization.

``tests/`` has no ``__init__.py``, so pytest (default "prepend" import mode) puts this
folder on ``sys.path`` when it loads this root conftest: test modules can
``import natsserver``.

Fixtures:

* ``nats_server`` (session): the shared server, an object with ``.url`` and
  ``.source`` ("env" for ``NATS_URL``, "container" for testcontainers, "binary" for a
  :class:`natsserver.NatsServer`). Never kill or restart it.
* ``nats_url`` (session): its URL.
* ``fresh_nats_server`` (function): a :class:`natsserver.NatsServer` of the test's own
  on a new store in ``tmp_path``; kill/restart/pause it freely. Skipped when
  ``NATS_URL`` is set.
* ``nats_client`` (function): ``"trio"`` and ``"nats-py"`` in turn, set as
  ``ACTORS_NATS_CLIENT`` for the test (for JetStream-only tests that must
  hold on both NATS clients).
* ``transport_url`` (function): ``"memory://"`` or the session ``nats_url``, ids
  ``memory``, ``jetstream`` (on nats-py) and ``jetstream-trio`` (on the Trio
  client); the last two are marked ``jetstream`` and set ``ACTORS_NATS_CLIENT``
  for the test, so that every transport it opens runs on that client.
* ``engine_url`` (function): ``"memory://"`` or the URL of a server of the test's
  own (for the engine and the API, whose stream and bucket names are fixed).
* ``clock`` (function): with ``engine_url``, Trio's autojump clock on memory, so
  that timers cost no real time; ``None`` (real time) on NATS.

Tests using ``nats_server``, ``nats_url`` or ``fresh_nats_server`` get the
``jetstream`` mark automatically. Option ``--transport memory|jetstream|jetstream-trio|all``
(default all) deselects the other ``transport_url`` parameters (``jetstream``
keeps both of its clients); ``memory`` also deselects every other test marked
``jetstream`` (they need a real nats-server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import natsserver
import pytest
import trio.testing

MEMORY_URL = "memory://"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transport",
        choices=("memory", "jetstream", "jetstream-trio", "all"),
        default="all",
        help=(
            "run transport_url tests for this transport only (default: all). "
            "'memory' also deselects every test marked jetstream."
        ),
    )


def pytest_report_header(config: pytest.Config) -> str:
    transport = config.getoption("--transport")
    if os.environ.get("NATS_URL"):
        nats = f"NATS_URL={os.environ['NATS_URL']}"
    else:
        backend = os.environ.get("NATS_TEST_BACKEND", "auto")
        try:
            binary = natsserver.find_nats_server()
        except natsserver.NatsServerError:
            binary = "none found"
        nats = f"backend={backend}, binary={binary}"
    return f"transport: {transport}; nats: {nats}"


#: Fixtures that need a real nats-server: tests using them get the ``jetstream`` mark.
SERVER_FIXTURES = frozenset({"nats_server", "nats_url", "fresh_nats_server"})


@pytest.hookimpl(tryfirst=True)  # before -m selection sees the marks added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        if SERVER_FIXTURES.intersection(fixturenames) and not item.get_closest_marker("jetstream"):
            item.add_marker(pytest.mark.jetstream)
    transport = config.getoption("--transport")
    if transport == "all":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("transport_url") if callspec is not None else None
        if param is not None:
            # "jetstream" keeps both of its clients.
            wanted = param == transport or param.startswith(f"{transport}-")
        else:
            wanted = transport != "memory" or item.get_closest_marker("jetstream") is None
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def nats_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[natsserver.NatsEndpoint]:
    """The session's NATS server (``NATS_URL``, a container, or the binary)."""
    directory: Path = tmp_path_factory.mktemp("nats-session")
    with natsserver.nats_url_from_env_or_container(directory) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def nats_url(nats_server: natsserver.NatsEndpoint) -> str:
    """Client URL of the session's NATS server."""
    return nats_server.url


@pytest.fixture
def fresh_nats_server(tmp_path: Path) -> Iterator[natsserver.NatsServer]:
    """A started nats-server of this test's own (new store in tmp_path); stopped after."""
    if os.environ.get("NATS_URL"):
        pytest.skip("NATS_URL is set: tests that kill or restart a server need their own")
    with natsserver.NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture(params=["trio", "nats-py"])
def nats_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each NATS client in turn, for every transport the test opens (``ACTORS_NATS_CLIENT``)."""
    name: str = request.param
    monkeypatch.setenv("ACTORS_NATS_CLIENT", name)
    return name


#: The NATS client of each JetStream parameter of ``transport_url``.
NATS_CLIENTS = {"jetstream": "nats-py", "jetstream-trio": "trio"}


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("jetstream", id="jetstream", marks=pytest.mark.jetstream),
        pytest.param("jetstream-trio", id="jetstream-trio", marks=pytest.mark.jetstream),
    ]
)
def transport_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``memory://`` or the session's NATS URL, one test run per transport."""
    if request.param == "memory":
        return MEMORY_URL
    monkeypatch.setenv("ACTORS_NATS_CLIENT", NATS_CLIENTS[request.param])
    url: str = request.getfixturevalue("nats_url")
    return url


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("jetstream", id="jetstream", marks=pytest.mark.jetstream),
    ]
)
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``memory://``, or the URL of a nats-server started for this test alone.

    For the engine and the API: their stream and bucket names are fixed, so
    tests must not share a broker.
    """
    if request.param == "memory":
        yield "memory://"
        return
    if os.environ.get("NATS_URL"):
        pytest.skip("engine tests need a NATS server of their own")
    with natsserver.NatsServer(tmp_path / "nats") as server:
        yield server.url


@pytest.fixture
def clock(engine_url: str) -> trio.testing.MockClock | None:
    """Trio's autojump clock on memory; real time on NATS (request it by name)."""
    if engine_url.startswith("memory:"):
        return trio.testing.MockClock(autojump_threshold=0)
    return None
