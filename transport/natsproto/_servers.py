"""The servers a client knows, and which one to try next.

The pool starts with the URLs the client was given and grows with the
cluster's other members as the servers announce them (``connect_urls`` in
``INFO``). The next server is the least-tried one, and the wait before
trying it doubles with its failures in a row, up to a cap, with jitter so
that many clients restarted together do not all knock at once.
"""

from __future__ import annotations

import random
from urllib.parse import SplitResult, urlsplit

__all__ = ["Server", "ServerPool"]

_DEFAULT_PORT = 4222


class Server:
    """One server of the pool: where it is, and how its last attempts went."""

    __slots__ = ("attempts", "implicit", "tls_hostname", "url")

    def __init__(self, url: SplitResult, *, implicit: bool, tls_hostname: str) -> None:
        self.url = url
        #: Learnt from a server's INFO rather than given.
        self.implicit = implicit
        #: The name a TLS certificate must carry: the host given for the
        #: server, or for one learnt from the cluster (often an IP
        #: address), the host of the first server given.
        self.tls_hostname = tls_hostname
        #: Failed attempts in a row (0 once connected).
        self.attempts = 0

    @property
    def host(self) -> str:
        return self.url.hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return self.url.port or _DEFAULT_PORT

    @property
    def key(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def netloc(self) -> str:
        """``host:port``, without credentials (for messages and logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Server {self.url.scheme}://{self.netloc} attempts={self.attempts}>"


class ServerPool:
    """Every known server, in the order to try them among equals."""

    def __init__(self, urls: list[str], *, reconnect_wait: float, max_reconnect_wait: float):
        if not urls:
            raise ValueError("no server URL")
        self._wait = reconnect_wait
        self._max_wait = max_reconnect_wait
        self.servers: list[Server] = []
        for text in urls:
            url = urlsplit(text)
            self._add(Server(url, implicit=False, tls_hostname=url.hostname or ""))
        self._scheme = "tls" if any(s.url.scheme == "tls" for s in self.servers) else "nats"
        self._tls_hostname = self.servers[0].tls_hostname

    def _add(self, server: Server) -> bool:
        if any(known.key == server.key for known in self.servers):
            return False
        self.servers.append(server)
        return True

    def learn(self, connect_urls: object) -> None:
        """Add the servers an ``INFO`` announced (``host:port`` strings), once each."""
        if not isinstance(connect_urls, list):
            return
        for entry in connect_urls:
            if not isinstance(entry, str) or not entry:
                continue
            try:
                url = urlsplit(f"{self._scheme}://{entry}")
                url.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                continue
            if url.hostname:
                self._add(Server(url, implicit=True, tls_hostname=self._tls_hostname))

    def next(self) -> tuple[Server, float]:
        """The server to try next and the seconds to wait before trying it.

        The least-tried server first (the first of equals); no wait for a
        server that has not failed since it last answered.
        """
        server = min(self.servers, key=lambda s: s.attempts)
        if not server.attempts:
            return server, 0.0
        wait = min(self._wait * 2 ** min(server.attempts, 16), self._max_wait)
        return server, wait * random.uniform(0.8, 1.0)

    def failed(self, server: Server) -> None:
        server.attempts += 1

    def connected(self, server: Server) -> None:
        """``server`` answered: it goes last among equals, so that when it
        fails the others are tried before it again."""
        server.attempts = 0
        self.servers.remove(server)
        self.servers.append(server)
