"""Tests of the nats-server harness itself (tests/natsserver.py), stdlib-only checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import natsserver
import pytest

from actors.testing import StoreInUseError, _store_lock

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def first_line(url: str, timeout: float = 5.0) -> bytes:
    """Connect to a nats:// URL and return the first protocol line the server sends."""
    parsed = urllib.parse.urlsplit(url.split(",")[0])
    assert parsed.hostname is not None
    assert parsed.port is not None
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "server closed the connection before sending a line"
            data += chunk
    return data.split(b"\r\n", 1)[0]


def http_get(url: str) -> tuple[int, Any]:
    """GET a monitoring URL; return (status, parsed JSON body)."""
    try:
        with _NO_PROXY.open(url, timeout=5.0) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def create_stream(url: str, name: str) -> dict[str, Any]:
    """Create a file-backed stream over the raw NATS protocol; return the API reply."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname is not None
    assert parsed.port is not None
    body = json.dumps({"name": name, "subjects": [f"{name}.>"], "storage": "file"}).encode()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=5.0) as sock:
        sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            b"SUB _INBOX.harness 1\r\n"
            + f"PUB $JS.API.STREAM.CREATE.{name} _INBOX.harness {len(body)}\r\n".encode()
            + body
            + b"\r\nPING\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {data!r}"
            data += chunk
            start = data.find(b"MSG _INBOX.harness ")
            if start < 0:
                if b"PING\r\n" in data:
                    sock.sendall(b"PONG\r\n")
                    data = data.replace(b"PING\r\n", b"")
                continue
            header_end = data.find(b"\r\n", start)
            if header_end < 0:
                continue
            size = int(data[start:header_end].split()[-1])
            payload = data[header_end + 2 : header_end + 2 + size]
            if len(payload) == size:
                reply: dict[str, Any] = json.loads(payload)
                return reply


def test_free_ports_are_distinct() -> None:
    ports = natsserver.free_ports(20)
    assert len(set(ports)) == 20
    assert all(0 < p < 65536 for p in ports)
    assert 0 < natsserver.free_port() < 65536


def test_config_must_not_set_store_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="store_dir"):
        natsserver.NatsServer(tmp_path, config={"jetstream": {"store_dir": str(tmp_path)}})


def test_nats_url_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATS_URL", "nats://example.invalid:4222")
    with natsserver.nats_url_from_env_or_container(tmp_path) as endpoint:
        assert endpoint.url == "nats://example.invalid:4222"
        assert endpoint.source == "env"
    assert not list(tmp_path.iterdir()), "nothing is started for NATS_URL"


@pytest.mark.jetstream
def test_server_starts_and_sends_info(tmp_path: Path) -> None:
    server = natsserver.NatsServer(
        tmp_path / "s", config={"jetstream": {"sync_interval": "always"}}
    )
    with server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert first_line(server.url).startswith(b"INFO ")
        status, health = http_get(server.monitor_url + "/healthz?js-enabled-only=true")
        assert (status, health) == (200, {"status": "ok"})
        _, jsz = http_get(server.monitor_url + "/jsz")
        assert jsz["config"]["sync_always"] is True
        assert jsz["config"]["store_dir"] == str(tmp_path / "s" / "jetstream")
        pid = server.pid
        assert pid is not None
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "Server is ready" in server.log_path.read_text()


@pytest.mark.jetstream
def test_session_server_sends_info(nats_url: str) -> None:
    assert first_line(nats_url).startswith(b"INFO ")


@pytest.mark.jetstream
def test_kill_restart_keeps_url_and_store(fresh_nats_server: natsserver.NatsServer) -> None:
    server = fresh_nats_server
    url = server.url
    reply = create_stream(url, "HARNESS")
    assert reply.get("config", {}).get("name") == "HARNESS", reply

    server.kill()
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port or 0), timeout=1.0).close()

    server.restart()
    assert server.url == url
    assert first_line(url).startswith(b"INFO ")
    _, jsz = http_get(server.monitor_url + "/jsz")
    assert jsz["streams"] == 1, "the stream survived SIGKILL in the same store"


@pytest.mark.jetstream
def test_pause_resume(fresh_nats_server: natsserver.NatsServer) -> None:
    server = fresh_nats_server
    server.pause()
    assert server.paused
    assert not server.healthy(timeout=0.3)
    server.resume()
    assert server.healthy()
    assert first_line(server.url).startswith(b"INFO ")


@pytest.mark.jetstream
def test_cluster_of_three(tmp_path: Path) -> None:
    started = time.monotonic()
    with natsserver.NatsCluster(tmp_path / "cluster", size=3) as cluster:
        elapsed = time.monotonic() - started
        assert elapsed < 30, f"cluster start took {elapsed:.1f}s"
        urls = cluster.urls.split(",")
        assert len(set(urls)) == 3
        leaders = set()
        for node in cluster.nodes:
            assert first_line(node.url).startswith(b"INFO ")
            status, health = http_get(node.monitor_url + "/healthz")
            assert (status, health) == (200, {"status": "ok"})
            _, jsz = http_get(node.monitor_url + "/jsz")
            meta = jsz["meta_cluster"]
            assert meta["cluster_size"] == 3
            leaders.add(meta["leader"])
        assert len(leaders) == 1
        assert leaders.pop() in {f"actors-test-n{i}" for i in range(3)}

        # A follower comes back on the same ports and store.
        leader = cluster.meta_leader()
        follower = next(i for i in range(3) if cluster.nodes[i].server_name != leader)
        url = cluster.nodes[follower].url
        cluster.kill(follower)
        cluster.restart(follower)
        assert cluster.nodes[follower].url == url
        assert cluster.wait_healthy() == leader


@pytest.mark.jetstream
def test_a_relative_folder_holds_the_store_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the server runs inside its folder and read a relative -sd
    # against it, so "data/nats" kept its store in data/nats/data/nats.
    monkeypatch.chdir(tmp_path)
    with natsserver.NatsServer(Path("data") / "nats") as server:
        _, jsz = http_get(server.monitor_url + "/jsz")
        assert jsz["config"]["store_dir"] == str(tmp_path / "data" / "nats" / "jetstream")


@pytest.mark.jetstream
def test_a_second_server_on_a_folder_in_use_refuses(tmp_path: Path) -> None:
    with natsserver.NatsServer(tmp_path / "store") as first:
        runs = first.log_path.read_text().count("=== ")
        second = natsserver.NatsServer(tmp_path / "store")
        with pytest.raises(StoreInUseError) as refused:
            second.start()
        message = str(refused.value)
        assert f"{tmp_path / 'store'} is in use by nats-server pid {first.pid} " in message
        assert f"of pid {os.getpid()} (" in message
        assert "\n" not in message
        assert not second.running
        assert first.log_path.read_text().count("=== ") == runs, "nothing was spawned"
        assert first.healthy()
    # Stopped, the first lets go.
    with natsserver.NatsServer(tmp_path / "store") as second:
        assert second.healthy()


_ORPHAN = """
import os, signal, sys, threading
from actors.testing import NatsServer

# Started from a thread, the server gets no death signal: it outlives this process.
server = NatsServer(sys.argv[1])
starter = threading.Thread(target=server.start)
starter.start()
starter.join()
print(server.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.jetstream
def test_a_server_that_outlives_its_starter_keeps_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _ORPHAN, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphan = int(done.stdout)
    try:
        # The lock is the server's too: its starter's death does not free the
        # store while the server still writes to it.
        monkeypatch.setattr(_store_lock, "_LOCK_GRACE", 0.5)
        with pytest.raises(StoreInUseError, match=f"nats-server pid {orphan}, whose"):
            natsserver.NatsServer(folder).start()
    finally:
        os.kill(orphan, signal.SIGKILL)
    # Once it is gone too, the folder is free (the grace covers its last moments).
    monkeypatch.setattr(_store_lock, "_LOCK_GRACE", 10.0)
    with natsserver.NatsServer(folder) as server:
        assert server.healthy()
