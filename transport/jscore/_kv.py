"""JetStream key-value buckets, and watches on self-managed ordered consumers.

The same logic for either client: a bucket is the stream ``KV_<bucket>``, a
key the subject ``$KV.<bucket>.<key>``; writes are publishes with
``Nats-Expected-Last-Subject-Sequence``, reads direct gets (or, on a
replicated bucket, message gets answered by the leader). A client's
subclass of :class:`WatcherCore` supplies the subscription of a watch.
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import trio

from .._errors import (
    ConflictError,
    ConnectionLostError,
    NotFoundError,
    TooLargeError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from .._options import ConnectOptions
from .._specs import KVChange, KVEntry, KVOp, check_key, check_subject
from ._api import (
    API,
    HEARTBEAT,
    NoStreamAnswered,
    WireMsg,
    api_error,
    dur,
    new_inbox,
    parse_ack,
    reply_meta,
)
from ._pull import PullHost

__all__ = ["KVCore", "KVHost", "WatcherCore", "watch_config"]

log = logging.getLogger("transport.jetstream")


class KVHost(PullHost, Protocol):
    """What a bucket needs of its transport."""

    _options: ConnectOptions

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> WireMsg: ...

    def _check_open(self) -> None: ...

    def _serve(
        self,
        run: Callable[[trio.TaskStatus[None]], Awaitable[None]],
        cleanup: Callable[[], Awaitable[None]],
        *,
        deadline: float,
    ) -> AbstractAsyncContextManager[None]: ...


class KVCore:
    """A KV bucket stored as stream ``KV_<bucket>``, one subject per key.

    A client's subclass sets :attr:`watcher` to its :class:`WatcherCore`.
    """

    watcher: Callable[..., WatcherCore]

    def __init__(
        self, transport: KVHost, bucket: str, *, direct: bool, max_value_size: int | None
    ) -> None:
        self._t = transport
        self._max_value_size = max_value_size
        self._bucket = bucket
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}."
        self._direct = direct

    @property
    def bucket(self) -> str:
        return self._bucket

    async def get(self, key: str) -> KVEntry | None:
        subject = self.prefix + check_key(key)
        if self._direct:
            msg = await self._t._request(f"{API}.DIRECT.GET.{self.stream}.{subject}")
            if msg.status == "404":
                return None
            if msg.status is not None:
                raise api_error({"code": int(msg.status), "description": "direct get failed"})
            headers = msg.headers or {}
            if headers.get("KV-Operation") in ("DEL", "PURGE"):
                return None
            return KVEntry(key, msg.data, int(headers["Nats-Sequence"]))
        try:
            resp = await self._t._api(f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": subject})
        except NotFoundError:
            return None
        message = resp["message"]
        raw_headers = base64.b64decode(message.get("hdrs") or b"")
        if b"KV-Operation: DEL" in raw_headers or b"KV-Operation: PURGE" in raw_headers:
            return None
        return KVEntry(key, base64.b64decode(message.get("data") or b""), int(message["seq"]))

    async def _write(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        if self._max_value_size is not None and len(value) > self._max_value_size:
            raise TooLargeError(f"value of {len(value)} bytes exceeds {self._max_value_size}")
        msg = await self._t._request(self.prefix + check_key(key), value, headers)
        try:
            return parse_ack(msg.status, msg.data, key).seq
        except NoStreamAnswered:
            # The bucket's stream exists (this handle found it): it has no
            # leader for the moment. Nothing was written; retrying is safe.
            raise ConnectionLostError(
                f"bucket {self._bucket} did not answer (no leader yet?); nothing written"
            ) from None

    async def create(self, key: str, value: bytes) -> int:
        try:
            return await self._write(key, value, {"Nats-Expected-Last-Subject-Sequence": "0"})
        except ConflictError:
            # A deleted key can be created again, at the delete marker's revision.
            marker = await self._last_raw(key)
            if marker is None or marker[1] is None:
                raise ConflictError(f"key {key!r} exists") from None
            return await self.update(key, value, marker[0])

    async def _last_raw(self, key: str) -> tuple[int, str | None] | None:
        """(revision, operation) of the key's last message, even a delete marker."""
        subject = self.prefix + key
        msg = await self._t._request(f"{API}.DIRECT.GET.{self.stream}.{subject}")
        if msg.status is not None:
            return None
        headers = msg.headers or {}
        return int(headers["Nats-Sequence"]), headers.get("KV-Operation")

    async def update(self, key: str, value: bytes, revision: int) -> int:
        if revision < 1:
            # The server reads "expected revision 0" as "absent": that is create.
            raise ConflictError(f"no revision {revision} of key {key!r}")
        return await self._write(key, value, {"Nats-Expected-Last-Subject-Sequence": str(revision)})

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, {})

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        headers = {"KV-Operation": "DEL"}
        if revision is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(revision)
        elif await self.get(key) is None:
            return
        await self._write(key, b"", headers)

    async def keys(self, pattern: str = ">") -> list[str]:
        watcher = self.watcher(self._t, self, pattern, since=None, headers_only=True)
        return await watcher.snapshot_keys()

    async def latest_revision(self) -> int:
        # The stream's leader answers the info: a write acknowledged before is in it.
        state = (await self._t._api(f"STREAM.INFO.{self.stream}"))["state"]
        # Age and history limits remove the oldest first: while the stream
        # holds a message, it holds its last one.
        return int(state["last_seq"]) if int(state["messages"]) else 0

    @asynccontextmanager
    async def watch(
        self, pattern: str = ">", *, since: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[KVChange]]:
        self._t._check_open()
        watcher = self.watcher(self._t, self, pattern, since=since)
        async with self._t._serve(watcher.run, watcher.stop, deadline=2.0):
            yield watcher.receive


def watch_config(
    inbox: str, subject_filter: str, last_rev: int | None, *, headers_only: bool
) -> dict[str, Any]:
    """An ephemeral ordered push consumer from after ``last_rev`` (or each key's latest)."""
    config: dict[str, Any] = {
        "deliver_subject": inbox,
        "ack_policy": "none",
        "max_deliver": 1,
        "flow_control": True,
        "idle_heartbeat": dur(HEARTBEAT),
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": dur(30.0),
        "filter_subject": subject_filter,
        "headers_only": headers_only,
    }
    if last_rev is None:
        config["deliver_policy"] = "last_per_subject"
    else:
        config["deliver_policy"] = "by_start_sequence"
        config["opt_start_seq"] = last_rev + 1
    return config


class WatcherCore:
    """An ordered view of a bucket's changes, on an ephemeral push consumer.

    The consumer is ours to recreate: on a gap in its sequence, two missed
    heartbeats or a reconnect, it is deleted and made again starting after the
    last revision delivered, so nothing is skipped and nothing repeats. Flow
    control replies are withheld while our channel is full, which pauses the
    server instead of buffering here.

    A client's subclass implements :meth:`_listen` and :meth:`_unlisten`.
    """

    def __init__(
        self,
        transport: KVHost,
        kv: KVCore,
        pattern: str,
        *,
        since: int | None,
        headers_only: bool = False,
        buffer: int = 256,
    ) -> None:
        check_subject(pattern, wildcards=True)
        self._t = transport
        self._kv = kv
        self._filter = kv.prefix + pattern
        self._last_rev = since
        # Replaying current values: deleted keys are not "current", skip them.
        self._replaying = since is None
        self._headers_only = headers_only
        self.send, self.receive = trio.open_memory_channel[KVChange](buffer)
        self._arrived: deque[WireMsg] = deque()
        self._wake = trio.Event()
        self._consumer: str | None = None
        self._cseq = 0
        self.generation = 0
        self._flow_reply: str | None = None

    # -- the client's part ---------------------------------------------------

    async def _listen(self, inbox: str, generation: int) -> None:
        """Subscribe to ``inbox``: while ``generation`` is current, what comes
        goes to ``self._arrived`` and :meth:`wake` is called in the Trio thread."""
        raise NotImplementedError

    async def _unlisten(self) -> None:
        """End the subscription :meth:`_listen` made, if any."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------

    async def _create(self) -> int:
        """(Re)create the consumer; return the number of messages it will replay."""
        await self.stop()
        self.generation += 1
        self._cseq = 0
        inbox = new_inbox()
        config = watch_config(inbox, self._filter, self._last_rev, headers_only=self._headers_only)
        await self._listen(inbox, self.generation)
        resp = await self._t._api(
            f"CONSUMER.CREATE.{self._kv.stream}", {"stream_name": self._kv.stream, "config": config}
        )
        self._consumer = resp["name"]
        pending = int(resp.get("num_pending", 0))
        if pending == 0:
            self._replaying = False
        return pending

    async def stop(self) -> None:
        """Delete the consumer and its subscription (best effort)."""
        consumer, self._consumer = self._consumer, None
        self._arrived.clear()
        try:
            await self._unlisten()
            if consumer is not None:
                await self._t._api(f"CONSUMER.DELETE.{self._kv.stream}.{consumer}")
        except TransportError as exc:
            log.debug("watch cleanup: %r", exc)

    def _change(self, msg: WireMsg, stream_seq: int) -> KVChange:
        op = (msg.headers or {}).get("KV-Operation")
        kind = KVOp.DELETE if op == "DEL" else KVOp.PURGE if op == "PURGE" else KVOp.PUT
        return KVChange(msg.subject[len(self._kv.prefix) :], msg.data, stream_seq, kind)

    async def _drain(self) -> bool:
        """Deliver what arrived; False if the consumer must be recreated."""
        while self._arrived:
            msg = self._arrived.popleft()
            status = msg.status
            if status == "100":
                if msg.reply:  # flow control: answer once we have room
                    self._flow_reply = msg.reply
                elif int((msg.headers or {}).get("Nats-Last-Consumer", "0")) > self._cseq:
                    return False  # a heartbeat says we missed something
                continue
            meta = reply_meta(msg.reply)
            if status is not None or meta is None:
                return False
            _d, stream_seq, cseq, pending, _stored = meta
            if cseq != self._cseq + 1:
                return False
            self._cseq = cseq
            if self._last_rev is not None and stream_seq <= self._last_rev:
                continue
            change = self._change(msg, stream_seq)
            if not (self._replaying and change.op is not KVOp.PUT):
                await self.send.send(change)
            self._last_rev = stream_seq
            if pending == 0:
                self._replaying = False
        if self._flow_reply is not None and self.send.statistics().current_buffer_used < 64:
            reply, self._flow_reply = self._flow_reply, None
            self._t._publish_raw(reply)
        return True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._create()
        task_status.started()
        heard = trio.current_time()
        reconnected = self._t._reconnected
        self._t._wakers.add(self.wake)
        try:
            while not self._t._ended:
                with trio.move_on_after(HEARTBEAT):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self._arrived:
                    heard = trio.current_time()
                healthy = await self._drain()
                silent = trio.current_time() - heard > 2 * HEARTBEAT + 0.5
                if reconnected.is_set() or not healthy or silent:
                    reconnected = self._t._reconnected
                    try:
                        await self._create()
                    except TransportClosedError:
                        return
                    except TransportError as exc:
                        log.debug("watch re-create failed: %r", exc)
                    heard = trio.current_time()
        except TransportClosedError:
            pass
        finally:
            self._t._wakers.discard(self.wake)
            self.send.close()

    def wake(self) -> None:
        self._wake.set()

    async def snapshot_keys(self) -> list[str]:
        """The live keys matching the filter, read once."""
        pending = await self._create()
        keys: dict[str, bool] = {}
        try:
            with trio.fail_after(self._t._options.request_timeout * 4):
                while pending > 0:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while self._arrived:
                        msg = self._arrived.popleft()
                        meta = reply_meta(msg.reply)
                        if msg.status is not None or meta is None:
                            if msg.reply and meta is None:
                                self._t._publish_raw(msg.reply)  # flow control
                            continue
                        change = self._change(msg, meta[1])
                        keys[change.key] = change.op is KVOp.PUT
                        pending = meta[3]
                        if pending == 0:
                            break
        except trio.TooSlowError:
            raise TransportTimeoutError("listing keys took too long") from None
        finally:
            with trio.CancelScope(shield=True):
                await self.stop()
        return sorted(k for k, live in keys.items() if live)
