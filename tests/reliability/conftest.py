"""The fault-injection suite: what every scenario shares.

The scenarios reuse the engine tests' process helpers (``processes``,
``ledger_activities`` in ``tests/engine``), so that folder goes on
``sys.path`` here: ``tests/`` has no ``__init__.py`` and pytest only adds
the folder of each test file it imports.

Long scenarios carry the ``chaos`` mark and stay out of the default run
(``pyproject.toml`` deselects them); ``tox -e chaos`` runs them. Every test
prints its seed and its ``tmp_path``, which holds the run's nats-server
store, service logs and ledger. ``tox -e chaos`` puts them under
``.tox/chaos/tmp/chaos``, kept until its next run; a plain pytest run keeps
those of its last three runs (other runs may clean them sooner).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from natsserver import NatsCluster

from actors.testing import NatsServer

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
if str(ENGINE_TESTS) not in sys.path:
    sys.path.insert(0, str(ENGINE_TESTS))


@pytest.fixture
def seed(request: pytest.FixtureRequest, tmp_path: Path) -> int:
    """The scenario's random seed: ``CHAOS_SEED`` or a fresh one, printed for replay."""
    value = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request.node.nodeid}: seed {value} (replay: CHAOS_SEED={value}); data: {tmp_path}")
    return value


@pytest.fixture
def synced_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own that fsyncs every write before acking it.

    ``sync_interval: always`` is what durability rule 8 asks of a single node:
    without it, a SIGKILLed server may lose writes it acknowledged.
    """
    if os.environ.get("NATS_URL"):
        pytest.skip("NATS_URL is set: fault-injection tests need a server of their own")
    config = {"jetstream": {"sync_interval": "always"}}
    with NatsServer(tmp_path / "nats", config=config) as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three JetStream nodes on loopback, started from the test's main thread (so each
    node dies with the test process if it is killed)."""
    with NatsCluster(tmp_path / "cluster", 3) as nodes:
        yield nodes
