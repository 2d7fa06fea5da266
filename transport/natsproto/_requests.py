"""Requests on one shared reply inbox.

One wildcard subscription (``_INBOX.<random>.*``) takes every reply; each
request gets its own last token, and a dict maps the token to the waiting
:class:`Pending`. A request is two steps, so that many can be pipelined:
:meth:`Requests.start` writes it (no checkpoint), :meth:`Requests.wait`
waits for its reply until its own deadline, counted from its start.

Deadlines are kept by one task (:meth:`Requests.expire`) rather than a
cancel scope per request: a scope with a deadline costs about 10 us here, a
twentieth of a round trip. Every request has the same timeout, so the
requests in the order they were made are in the order of their deadlines.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from typing import TYPE_CHECKING

import trio

from .._errors import ConnectionLostError, TransportError, TransportTimeoutError
from ._protocol import Msg

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._client import Client

__all__ = ["Pending", "Requests", "new_inbox"]


def new_inbox() -> str:
    """A fresh reply subject nobody else uses."""
    return f"_INBOX.{secrets.token_hex(11)}"


class Pending:
    """One request under way: its reply (or error) once it has come."""

    __slots__ = ("batch", "deadline", "done", "error", "reply", "token")

    def __init__(self, token: str, deadline: float, batch: list[Msg] | None) -> None:
        self.token = token
        self.deadline = deadline
        self.batch = batch
        self.done = trio.Event()
        self.reply: Msg | None = None
        self.error: TransportError | None = None


class Requests:
    """The client's request/reply multiplexer (see the module's docstring)."""

    def __init__(self, client: Client, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        prefix = new_inbox()
        self._prefix = prefix + "."
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        #: Requests in the order made (of their deadlines), answered ones too
        #: until they come first.
        self._deadlines: deque[Pending] = deque()
        self._wake_expirer = trio.Event()
        client.subscribe(prefix + ".*", self._on_reply)

    def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        pending = self._pending.get(token)
        if pending is None:
            return  # late: its caller timed out or went away
        if pending.batch is not None and msg.status is None:
            # A batch's messages come in order, then a status that ends it.
            pending.batch.append(msg)
            return
        del self._pending[token]
        pending.reply = msg
        pending.done.set()

    def start(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        batch: list[Msg] | None = None,
    ) -> Pending:
        """Write a request; the handle to :meth:`wait` for its reply with.

        With ``batch`` the reply is a batch of messages ended by a status
        message (a batched direct get): the messages are appended to
        ``batch`` as they come, and the reply is the status message. The
        whole batch must arrive within the deadline. Raises as
        :meth:`Client.publish` does; nothing is registered then.
        """
        token = str(next(self._ids))
        pending = Pending(token, trio.current_time() + self._timeout, batch)
        self._client.publish(subject, data, reply=self._prefix + token, headers=headers)
        self._pending[token] = pending
        deadlines = self._deadlines
        while deadlines and deadlines[0].done.is_set():
            deadlines.popleft()  # answered: nothing to expire
        deadlines.append(pending)
        if len(deadlines) == 1:
            self._wake_expirer.set()
        return pending

    async def expire(self) -> None:
        """Fail each request whose deadline passed before its reply came; forever."""
        deadlines = self._deadlines
        while True:
            while deadlines and deadlines[0].done.is_set():
                deadlines.popleft()
            if not deadlines:
                await self._wake_expirer.wait()
                self._wake_expirer = trio.Event()
                continue
            first = deadlines[0]
            if first.deadline > trio.current_time():
                await trio.sleep_until(first.deadline)
                continue
            deadlines.popleft()
            self._pending.pop(first.token, None)
            first.done.set()  # with neither reply nor error: timed out

    async def wait(self, pending: Pending) -> Msg:
        """The reply to ``pending``.

        Raises :class:`TransportTimeoutError` if none came by its deadline
        while connected, :class:`ConnectionLostError` if the connection was
        lost meanwhile (the outcome is unknown), and
        :class:`TransportClosedError` if the client was closed.
        """
        if not pending.done.is_set():  # (a pipelined one may have its reply already)
            try:
                await pending.done.wait()
            finally:
                self.forget(pending)
        if pending.error is not None:
            raise pending.error
        if pending.reply is None:
            if self._client.is_connected:
                raise TransportTimeoutError("the server did not answer in time")
            raise ConnectionLostError("disconnected: the outcome is unknown")
        return pending.reply

    async def request(
        self,
        subject: str,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        batch: list[Msg] | None = None,
    ) -> Msg:
        """:meth:`start` and :meth:`wait` in one."""
        return await self.wait(self.start(subject, data, headers, batch=batch))

    def forget(self, pending: Pending) -> None:
        """Stop waiting for ``pending``'s reply (a reply that still comes is dropped)."""
        if not pending.done.is_set():
            self._pending.pop(pending.token, None)

    def fail_all(self, error: TransportError) -> None:
        """End every request under way with ``error``."""
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.error = error
            waiting.done.set()
