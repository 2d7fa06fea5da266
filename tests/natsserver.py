"""Real ``nats-server`` clusters and endpoints for the test suite.

Importable from any test module or conftest (``import natsserver``): ``tests/`` has
no ``__init__.py`` and holds the root ``conftest.py``, so pytest's default "prepend"
import mode puts ``tests/`` on ``sys.path``. A single server is
:class:`actors.testing._natsserver.NatsServer` (re-exported here); this module adds
loopback clusters and the choice of a server for the session (``NATS_URL``, a
testcontainers container, or the binary).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from actors.testing import (
    HOST,
    START_ATTEMPTS,
    AddressInUseError,
    NatsServer,
    NatsServerError,
    find_nats_server,
    free_port,
    free_ports,
    http_get,
    merge_config,
    read_info,
)

__all__ = [
    "DEFAULT_IMAGE",
    "ExternalNats",
    "NatsCluster",
    "NatsEndpoint",
    "NatsServer",
    "NatsServerError",
    "docker_available",
    "find_nats_server",
    "free_port",
    "free_ports",
    "nats_url_from_env_or_container",
    "read_info",
]

DEFAULT_IMAGE = "nats:2.12"
# --------------------------------------------------------------------------- cluster


class NatsCluster:
    """``size`` JetStream nodes on loopback forming one plain JetStream cluster.

    Node ``i`` lives in ``directory / f"n{i}"`` with server name ``f"{name}-n{i}"`` and its
    own client, monitoring and cluster ports; every node's route list names all
    cluster ports. ``jetstream_domain`` sets ``jetstream.domain`` on every node;
    ``config``/``config_text`` are added to every node's config (see
    :class:`NatsServer`).

    :meth:`start` returns once every node answers ``/healthz`` and all nodes report
    the same JetStream meta leader. If a first start loses a port race, the whole
    cluster is stopped and started again on new ports (a few times). Nodes keep their
    ports across :meth:`kill`/:meth:`restart`.
    """

    def __init__(
        self,
        directory: Path | str,
        size: int = 3,
        *,
        name: str = "actors-test",
        jetstream_domain: str | None = None,
        config: Mapping[str, Any] | None = None,
        config_text: str = "",
        binary: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.directory = Path(directory)
        self.size = size
        self.name = name
        self.jetstream_domain = jetstream_domain
        self.start_timeout = start_timeout
        self._extra_config = dict(config or {})
        self._cluster_ports: list[int] = []
        self.nodes: list[NatsServer] = [
            NatsServer(
                self.directory / f"n{i}",
                server_name=f"{name}-n{i}",
                config_text=config_text,
                binary=binary,
                start_timeout=start_timeout,
            )
            for i in range(size)
        ]
        self._assign_ports()

    # ----------------------------------------------------------------- properties

    @property
    def urls(self) -> str:
        """All client URLs, comma-separated (``nats://127.0.0.1:P1,nats://...``)."""
        return ",".join(self.url_list)

    @property
    def url_list(self) -> list[str]:
        """All client URLs as a list (the form nats-py's ``servers=`` takes)."""
        return [node.url for node in self.nodes]

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> NatsCluster:
        """Start every node and wait for a healthy cluster with a meta leader; return self.

        Bounded by ``start_timeout``; on failure all nodes are killed and
        :class:`NatsServerError` is raised with each node's log tail.
        """
        if any(node.running for node in self.nodes):
            raise NatsServerError("cluster already started; use restart(i) for one node")
        # Stores that this start creates: a retry on new ports wipes them, or the
        # failed attempt's Raft state (peers on the old ports) slows the election.
        fresh = [not (node.store_dir / "jetstream").exists() for node in self.nodes]
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                for node in self.nodes:
                    node.directory.mkdir(parents=True, exist_ok=True)
                    node._spawn()
                for node in self.nodes:
                    node._wait_ready(wait_healthy=False)
                self.wait_healthy()
            except AddressInUseError:
                self.kill_all()
                if attempt == START_ATTEMPTS:
                    raise
                for node, new in zip(self.nodes, fresh, strict=True):
                    if new:
                        shutil.rmtree(node.store_dir / "jetstream", ignore_errors=True)
                self._assign_ports()
                continue
            except BaseException:
                self.kill_all()
                raise
            for node in self.nodes:
                node._ever_started = True
            return self
        raise AssertionError("unreachable")

    def wait_healthy(self, nodes: Sequence[int] | None = None, timeout: float | None = None) -> str:
        """Wait until the given nodes (default: all) answer ``/healthz`` 200 and agree on a
        JetStream meta leader; return the leader's server name.

        Raises :class:`NatsServerError` after ``timeout`` (default ``start_timeout``)
        seconds, or at once if a node's process has exited.
        """
        which = list(range(self.size)) if nodes is None else list(nodes)
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit

        while True:
            for i in which:
                node = self.nodes[i]
                proc = node._proc
                if proc is None or proc.poll() is not None:
                    node._reap()
                    tail = node.log_tail()
                    if "address already in use" in node._run_log():
                        raise AddressInUseError(f"node {i} port taken:\n{tail}")
                    raise NatsServerError(f"cluster node {i} is not running; log tail:\n{tail}")
            why, leader = self._health(which)
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- node {i} ({self.nodes[i].log_path}):\n{self.nodes[i].log_tail(15)}"
                    for i in which
                )
                raise NatsServerError(f"cluster not healthy after {limit}s ({why})\n{tails}")
            time.sleep(0.05)

    def meta_leader(self) -> str | None:
        """Server name of the JetStream meta leader as seen by the first reachable node."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                jsz = node.monitor("/jsz", timeout=1.0)
            except (OSError, ValueError):
                continue
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` and reap it."""
        self.nodes[i].kill()

    def stop_node(self, i: int) -> None:
        """Gracefully stop node ``i`` (see :meth:`NatsServer.stop`)."""
        self.nodes[i].stop()

    def restart(self, i: int, *, wait_healthy: bool = True) -> NatsServer:
        """Start node ``i`` again on its ports and store (killing it first if running).

        With ``wait_healthy`` (default) waits until that node answers ``/healthz``, which
        needs a meta leader, so it blocks until ``start_timeout`` if a quorum is down;
        pass ``wait_healthy=False`` to wait only for its client port.
        """
        return self.nodes[i].restart(wait_healthy=wait_healthy)

    def kill_all(self) -> None:
        """SIGKILL and reap every node."""
        for node in self.nodes:
            node.kill()

    def stop(self) -> None:
        """Gracefully stop every node (each bounded, then SIGKILL)."""
        for node in self.nodes:
            node._send_term()  # all at once, so the nodes shut down in parallel
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals

    def _assign_ports(self) -> None:
        n = self.size
        ports = free_ports(3 * n)
        self._cluster_ports = ports[2 * n :]
        routes = [f"nats-route://{HOST}:{p}" for p in self._cluster_ports]
        for i, node in enumerate(self.nodes):
            node.port = ports[i]
            node.http_port = ports[n + i]
            # Ports are the cluster's to move, never the node's own: a node restart
            # keeps them (the routes of the others name its cluster port).
            node._fixed_port = True
            js: dict[str, Any] = {}
            if self.jetstream_domain:
                js["domain"] = self.jetstream_domain
            base: dict[str, Any] = {
                "cluster": {
                    "name": self.name,
                    "listen": f"{HOST}:{self._cluster_ports[i]}",
                    "routes": routes,
                },
            }
            if js:
                base["jetstream"] = js
            node.config = merge_config(base, self._extra_config)

    def _health(self, which: Sequence[int]) -> tuple[str, str | None]:
        leaders: set[str] = set()
        for i in which:
            node = self.nodes[i]
            try:
                status, body = http_get(node.monitor_url + "/healthz", 1.0)
                if status != 200:
                    return f"node {i} /healthz {status}: {body[:200]!r}", None
                jsz = node.monitor("/jsz", timeout=1.0)
            except (OSError, ValueError) as err:
                return f"node {i}: {err}", None
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            if not leader:
                return f"node {i} sees no meta leader", None
            leaders.add(str(leader))
        if len(leaders) != 1:
            return f"nodes disagree on the meta leader: {sorted(leaders)}", None
        return "", leaders.pop()


# --------------------------------------------------------------------------- session server


class NatsEndpoint(Protocol):
    """What the session fixture yields: something with a client URL."""

    @property
    def url(self) -> str: ...

    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class ExternalNats:
    """A NATS server this module did not start as a process (``NATS_URL`` or a container).

    ``source`` is ``"env"`` or ``"container"``. It cannot be killed or restarted here.
    """

    url: str
    source: str


def docker_available(timeout: float = 3.0) -> bool:
    """True if a Docker engine answers a ping within ``timeout`` seconds.

    Cheap when there is none: without ``DOCKER_HOST`` and without
    ``/var/run/docker.sock`` it returns False without importing anything. The
    ``docker`` package is optional (False if missing). Never raises.
    """
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    ok = False
    # A failed connection attempt can leave an unclosed socket behind; its
    # ResourceWarning must not turn into a test error under filterwarnings=error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            client = docker.from_env(timeout=timeout)
            try:
                ok = bool(client.ping())
            finally:
                client.close()
        except Exception:
            ok = False
        gc.collect()
    return ok


@contextlib.contextmanager
def _nats_container(image: str, timeout: float = 120.0) -> Iterator[str]:
    """Run a NATS container with ``-js`` via testcontainers; yield its client URL."""
    # testcontainers' NATS module uses its own deprecated wait helpers (at import and
    # at start): keep those DeprecationWarnings away from filterwarnings=error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        container: Any
        try:
            from testcontainers.community.nats import NatsContainer
        except ImportError:  # moved or gone in another testcontainers version
            NatsContainer = None  # type: ignore[assignment,misc]
        if NatsContainer is not None:
            container = NatsContainer(image, jetstream=True, ready_timeout_secs=int(timeout))
        else:
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.wait_strategies import LogMessageWaitStrategy

            container = (
                DockerContainer(image)
                .with_command("-js")
                .with_exposed_ports(4222)
                .waiting_for(LogMessageWaitStrategy("Server is ready"))
            )
        container.start()
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(4222)
        yield f"nats://{host}:{port}"
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            container.stop()


@contextlib.contextmanager
def nats_url_from_env_or_container(
    directory: Path | str, *, image: str | None = None
) -> Iterator[NatsEndpoint]:
    """Provide the session's NATS server; yield an object with ``.url`` and ``.source``.

    1. ``NATS_URL`` set: yield ``ExternalNats(url, "env")``; nothing is started.
    2. Else, if a Docker engine answers (:func:`docker_available`): a testcontainers
       NATS container (image ``image`` or ``$NATS_IMAGE`` or :data:`DEFAULT_IMAGE`)
       with ``-js``; yields ``ExternalNats(url, "container")``; removed on exit.
    3. Else: a :class:`NatsServer` from the binary in ``directory``; stopped on exit.

    ``NATS_TEST_BACKEND`` = ``binary`` or ``container`` skips the choice in 2/3
    (``container`` then fails if there is no Docker engine).
    """
    url = os.environ.get("NATS_URL")
    if url:
        yield ExternalNats(url=url, source="env")
        return
    backend = os.environ.get("NATS_TEST_BACKEND", "auto").lower()
    if backend not in ("auto", "binary", "container"):
        raise ValueError(f"NATS_TEST_BACKEND={backend!r}: use auto, binary or container")
    use_container = backend == "container" or (backend == "auto" and docker_available())
    if backend == "container" and not docker_available():
        raise NatsServerError("NATS_TEST_BACKEND=container, but no Docker engine answers")
    if use_container:
        img = image or os.environ.get("NATS_IMAGE") or DEFAULT_IMAGE
        with _nats_container(img) as container_url:
            yield ExternalNats(url=container_url, source="container")
        return
    with NatsServer(directory) as server:
        yield server
