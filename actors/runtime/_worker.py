"""Activity workers: one consumer per activity type, N worker actors on each.

Every worker process serving an activity type shares that type's durable
consumer, so tasks spread over all of them, and a task held by a process
that dies comes back to another after the consumer's ack wait. For each
task a worker actor:

1. refuses it if it waited longer than ``schedule_to_start``, or if its
   instance withdrew it;
2. runs the activity (async in Trio, asyncio code as a task on the worker's
   trio-asyncio loop, sync in a thread under a limiter),
   telling the broker it is in progress every third of the ack wait, and
   cancelling it when ``start_to_close`` passes, a ``heartbeat`` is missed,
   or its instance withdraws it;
3. publishes the result (or the error, with type, message and traceback) on
   the result subject, with a message id unique to the attempt;
4. and only then acks the task.

An instance withdraws a task it no longer wants (it was cancelled, it
failed, the attempt timed out) with a key in ``ACTIVITY_CANCELS``, which
every worker process watches: the worker knows nothing of the instances'
states.

On shutdown the actors stop taking tasks, finish the ones in hand within
``drain_timeout``, and hand back (nak) whatever is left.

While it runs, the process announces itself in ``WORKER_PRESENCE``
(``_presence.py``): what it serves, how many tasks it runs, when it was
last seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

import trio

from transport import (
    Delivery,
    KeyValue,
    KVChange,
    KVOp,
    Transport,
    TransportClosedError,
    TransportError,
)

from .._groups import sole
from ..core import ErrorInfo
from ..observability import NO_METRICS, Metrics, clock, tracing
from ..wire import (
    CANCELS_BUCKET,
    PRESENCE_BUCKET,
    PRESENCE_INTERVAL,
    PRESENCE_TTL,
    RATES_BUCKET,
    TASKS_STREAM,
    CodecError,
    Layout,
    MessageError,
    Task,
    decode_activity_cancel,
    decode_task,
)
from ._activity import ActivityInfo, ActivitySpec, _Context, _current, bind
from ._asyncio_activities import AsyncioLoop, require_trio_asyncio, wrong_loop
from ._counters import Counters
from ._deadletters import deadletter
from ._flow import Pacer
from ._partitions import member_id
from ._presence import Announcer
from ._results import PUBLISH_RETRY, error_info, publish_result

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("actors.worker")

#: The longest a starting worker waits to have read the withdrawn tasks.
_CATCH_UP: Final = 5.0


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """How a worker process runs. Durations in seconds."""

    layout: Layout = field(default_factory=Layout)
    #: Activities of one type running at once in this process.
    concurrency: int = 16
    #: Threads for sync activities, shared by every type in this process.
    threads: int = 16
    #: A task held by a process that stopped answering comes back after this
    #: (by default as long as an event: the engine's one ack wait, ``Layout``'s).
    ack_wait: float = Layout.ack_wait
    drain_timeout: float = 10.0
    #: A task delivered this many times (its workers died running it) fails
    #: its attempt with ``WorkerLost`` instead of running again, so that a
    #: task that kills its worker cannot do so forever.
    max_deliveries: int = 5
    #: Seconds between rewrites of the process's presence entry; readers take
    #: it for dead three intervals after the last. At most ``PRESENCE_TTL / 3``,
    #: so that the bucket keeps the entry between rewrites; shorter for tests.
    presence_interval: float = PRESENCE_INTERVAL

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.threads < 1:
            raise ValueError("concurrency and threads must be at least 1")
        if self.ack_wait <= 0 or self.drain_timeout < 0:
            raise ValueError("ack_wait must be positive and drain_timeout not negative")
        if not 0 < self.presence_interval <= PRESENCE_TTL / 3:
            raise ValueError(
                f"presence_interval must be above 0 and at most {PRESENCE_TTL / 3:g} seconds"
            )


#: One attempt of one step of one instance: what a withdrawal names.
_Attempt: TypeAlias = tuple[str, str, int]


class _Timeout(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(eq=False, slots=True)
class _Running:
    """A task whose activity is running, as the upkeep task sees it."""

    delivery: Delivery
    task: Task
    #: Cancelled to stop the activity; ``stopped`` then says why.
    scope: trio.CancelScope
    stopped: list[_Timeout]
    #: The Trio time its next keep-alive is due.
    touch_at: float


class Worker:
    """Serves ``activities`` until :meth:`shutdown`; run it with ``nursery.start``."""

    def __init__(
        self,
        transport: Transport,
        activities: Iterable[ActivitySpec],
        config: WorkerConfig | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._transport = transport
        #: Where it counts what it does (``None``: nowhere); see ``actors.observability``.
        self._metrics = metrics or NO_METRICS
        self._activities = {spec.name: spec for spec in activities}
        if not self._activities:
            raise ValueError("a worker needs at least one activity")
        self._config = config or WorkerConfig()
        #: The trio-asyncio loop of the asyncio activities, if there are any.
        asyncio_names = [s.name for s in self._activities.values() if s.loop == "asyncio"]
        self._asyncio = AsyncioLoop(asyncio_names) if asyncio_names else None
        self._limiter = trio.CapacityLimiter(self._config.threads)
        self._fetch_scopes: set[trio.CancelScope] = set()
        self._stopping = False
        self._stopped = trio.Event()
        self._cancels: KeyValue | None = None
        #: Paces the attempts of steps with a rate limit (once running).
        self._pacer: Pacer | None = None
        #: Activities running now, kept alive by ``_upkeep``, by their attempt.
        self._running: dict[_Attempt, _Running] = {}
        #: Attempts their instances withdrew, with why, and the Trio time
        #: they are forgotten (``Layout.cancel_ttl`` after they were seen).
        self._withdrawn: dict[_Attempt, tuple[str, float]] = {}
        #: This process among the workers (its key in ``WORKER_PRESENCE``).
        self.id = member_id()
        #: Counters for tests and operators (a ``dict``; see :meth:`wait_until`).
        self.stats = Counters(("completed", "failed", "handed_back", "cancelled"))
        _observed(self, self._metrics, transport)

    @staticmethod
    def check(activities: Iterable[ActivitySpec]) -> None:
        """Raise ``RuntimeError`` if this process cannot serve ``activities``:
        some are declared ``loop="asyncio"`` and trio-asyncio is not installed.

        The constructor checks the same; this lets a front end refuse
        before it connects.
        """
        names = [spec.name for spec in activities if spec.loop == "asyncio"]
        if names:
            require_trio_asyncio(names)

    @property
    def activity_names(self) -> list[str]:
        return sorted(self._activities)

    async def wait_until(self, condition: Callable[[], object]) -> None:
        """Return once ``condition()`` is true: at once if it is already.

        ``condition`` is called again after each change of :attr:`stats`
        (a task reported, handed back or cancelled), and never on a timer,
        so it must depend on them alone. Waits for ever if the condition
        never holds: bound it (``trio.fail_after``). Meant for tests, such
        as ``await worker.wait_until(lambda: worker.stats["completed"] >= 3)``.
        """
        await self.stats.wait_until(condition)

    def shutdown(self) -> None:
        """Stop taking tasks; finish those in hand within ``drain_timeout``."""
        self._stopping = True
        self._stopped.set()
        for scope in list(self._fetch_scopes):
            scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Provision, serve every activity type, return after shutdown and drain."""
        assets = await self._config.layout.provision(self._transport)
        self._cancels = assets.buckets[CANCELS_BUCKET]
        self._pacer = Pacer(self._transport, assets.buckets[RATES_BUCKET])
        announcer = Announcer(
            self._transport,
            assets.buckets[PRESENCE_BUCKET],
            self.id,
            self.activity_names,
            self._config,
            running=lambda: len(self._running),
        )
        async with trio.open_nursery() as upkeep:
            upkeep.start_soon(self._upkeep)
            await upkeep.start(self._watch_withdrawals)
            if self._asyncio is not None:
                # Closed with the upkeep, once every activity has ended.
                await upkeep.start(self._asyncio.run)
            async with trio.open_nursery() as nursery:
                for spec in self._activities.values():
                    await nursery.start(self._serve, spec)
                # Announced once it takes tasks, so that a listed worker serves.
                await upkeep.start(announcer.run)
                task_status.started()
            # Every activity has ended (or been handed back): nothing to keep
            # alive, and nothing served any more.
            await announcer.close()
            upkeep.cancel_scope.cancel()

    async def _upkeep(self) -> None:
        """Keep every running task alive; forget withdrawals past their time.

        One task for all of them, rather than one per task: a task that
        ends within a tick costs nothing here. A keep-alive is due a third
        of the ack wait after the last; the tick is a quarter of that, so
        one is at most a tick late.
        """
        config = self._config
        tick = max(0.01, config.ack_wait / 3 / 4)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for running in list(self._running.values()):
                if now >= running.touch_at:
                    running.touch_at = now + config.ack_wait / 3
                    await running.delivery.in_progress()
            for attempt in [a for a, (_, until) in self._withdrawn.items() if until <= now]:
                del self._withdrawn[attempt]

    async def _watch_withdrawals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Learn of every task an instance withdraws; cancel it if it runs here.

        The watch starts from what the bucket holds (the withdrawals of the
        last ``cancel_ttl``), so a task withdrawn before this process started
        is refused too; it resumes by itself after the broker comes back.
        Started once it has read what the bucket held when it began, so that
        no task is served before the withdrawals made before it are known
        (or after ``_CATCH_UP``, should the newest of them have expired
        meanwhile, which a watch cannot tell from one still to come).
        """
        cancels = self._cancels
        assert cancels is not None
        latest = await cancels.latest_revision()
        async with cancels.watch(since=0) as changes:
            caught_up = latest == 0
            if caught_up:
                task_status.started()
            deadline = trio.current_time() + _CATCH_UP
            while True:
                change: KVChange | None = None
                with trio.move_on_at(math.inf if caught_up else deadline):
                    try:
                        change = await changes.receive()
                    except trio.EndOfChannel:
                        if caught_up:
                            return
                        raise TransportClosedError(
                            "the watch of the withdrawn tasks ended before it was read"
                        ) from None
                if change is not None:
                    self._withdraw(change)
                if not caught_up and (change is None or change.revision >= latest):
                    if change is None:
                        log.warning(
                            "the withdrawn tasks were not read within %ss; serving anyway",
                            _CATCH_UP,
                        )
                    caught_up = True
                    task_status.started()

    def _withdraw(self, change: KVChange) -> None:
        if change.op is not KVOp.PUT:
            return
        try:
            cancel = decode_activity_cancel(change.value)
        except (MessageError, CodecError) as exc:
            log.warning("ignoring a malformed withdrawal %r: %s", change.key, exc)
            return
        attempt = (cancel.instance_id, cancel.step, cancel.attempt)
        reason = cancel.reason or "the instance withdrew the task"
        forget_at = trio.current_time() + self._config.layout.cancel_ttl
        self._withdrawn[attempt] = (reason, forget_at)
        running = self._running.get(attempt)
        if running is not None and not running.scope.cancel_called:
            running.stopped.append(_Timeout("ActivityCancelled", reason))
            self.stats["cancelled"] += 1
            running.scope.cancel()

    async def _serve(
        self, spec: ActivitySpec, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self._config
        consumer = config.layout.activity_consumer(spec.name, config.ack_wait)
        async with (
            self._transport.consume(
                TASKS_STREAM, consumer, buffer=config.concurrency
            ) as deliveries,
            trio.open_nursery() as actors,
        ):
            for _ in range(config.concurrency):
                actors.start_soon(self._actor, spec, deliveries)
            task_status.started()
            await self._stopped.wait()
            # The actors stop fetching and finish what they hold; past
            # the deadline they are cancelled and hand their tasks back.
            actors.cancel_scope.deadline = trio.current_time() + config.drain_timeout

    async def _actor(
        self, spec: ActivitySpec, deliveries: trio.MemoryReceiveChannel[Delivery]
    ) -> None:
        while not self._stopping:
            delivery: Delivery | None = None
            with trio.CancelScope() as fetch:
                self._fetch_scopes.add(fetch)
                try:
                    if self._stopping:
                        break
                    delivery = await deliveries.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    if self._stopping:
                        return
                    # The tasks ended without shutdown(): the transport was
                    # closed under the worker. Returning would leave it waiting
                    # for a shutdown, alive and serving nothing.
                    raise TransportClosedError(
                        "the connection to the broker closed for good"
                    ) from None
                finally:
                    self._fetch_scopes.discard(fetch)
            if delivery is None:
                return
            try:
                await self._handle(spec, delivery)
            finally:
                if delivery.settled is None:
                    # Cancelled mid-task (drain deadline): hand it back now
                    # rather than after the ack wait.
                    self.stats["handed_back"] += 1
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await delivery.nak()

    async def _handle(self, spec: ActivitySpec, delivery: Delivery) -> None:
        try:
            task = decode_task(delivery.data)
        except (MessageError, CodecError) as exc:
            await self._deadletter(delivery, f"malformed task: {exc}")
            return
        if task.work.activity != spec.name:
            await self._deadletter(delivery, f"task for {task.work.activity!r} on {spec.name!r}")
            return
        self._metrics.delivered("tasks", delivery.num_delivered)
        if delivery.num_delivered > self._config.max_deliveries:
            lost = ErrorInfo(
                "WorkerLost",
                f"the task was delivered {delivery.num_delivered - 1} times and no "
                "worker finished it",
            )
            await self._report(delivery, task, None, lost)
            return
        now = self._transport.now()
        if (
            task.work.schedule_to_start is not None
            and now > task.work.scheduled_at + task.work.schedule_to_start
        ):
            late = ErrorInfo(
                "ScheduleToStartTimeout",
                f"task waited {now - task.work.scheduled_at:.3f}s; the limit is "
                f"{task.work.schedule_to_start}s",
            )
            await self._report(delivery, task, None, late)
            return
        self._metrics.task_taken(spec.name, now - task.work.scheduled_at)
        if task.work.rate is not None and not await self._pace(task, delivery):
            return
        withdrawn = self._withdrawn.get(_attempt_of(task))
        if withdrawn is not None:
            # Reported, so that an instance waiting for the attempt to settle
            # (to compensate it) need not wait for its timeout.
            self.stats["cancelled"] += 1
            await self._report(delivery, task, None, ErrorInfo("ActivityCancelled", withdrawn[0]))
            return
        work = task.work
        with tracing.activity_span(
            spec.name, task.instance_id, work.step, work.attempt, delivery.headers
        ) as traced:
            began = clock()
            output, error = await self._run(spec, task, delivery)
            self._metrics.ran(spec.name, clock() - began)
            traced.done(error)
            await self._report(delivery, task, output, error, traced.headers)

    async def _pace(self, task: Task, delivery: Delivery) -> bool:
        """Wait for the start the attempt's rate limit allows, keeping the task alive.

        The wait holds one of this type's worker actors, not a slot of any
        limit; a withdrawal during it is seen by the check that follows.
        ``False``: the broker failed the reservation, and the task was handed
        back to be tried again.
        """
        pacer = self._pacer
        assert pacer is not None
        assert task.work.rate is not None
        try:
            start = await pacer.reserve(task.work.rate)
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.warning("could not reserve a rate turn (%s); handing the task back", exc)
            self.stats["handed_back"] += 1
            await delivery.nak(PUBLISH_RETRY)
            return False
        keep_alive = self._config.ack_wait / 3
        while (wait := start - self._transport.now()) > 0:
            await trio.sleep(min(wait, keep_alive))
            if start - self._transport.now() > 0:
                await delivery.in_progress()
        return True

    async def _run(
        self, spec: ActivitySpec, task: Task, delivery: Delivery
    ) -> tuple[Any, ErrorInfo | None]:
        info = ActivityInfo(
            task.instance_id,
            task.workflow_type,
            task.work.step,
            task.work.attempt,
            task.work.activity,
            delivery.num_delivered,
        )
        context = _Context(info)
        timed_out: list[_Timeout] = []
        outcome: tuple[Any, ErrorInfo | None] = (None, None)
        now = trio.current_time()
        run_scope = trio.CancelScope(deadline=now + task.work.start_to_close)
        config = self._config
        running = _Running(delivery, task, run_scope, timed_out, touch_at=now + config.ack_wait / 3)
        attempt = _attempt_of(task)
        self._running[attempt] = running
        try:
            if task.work.heartbeat is None:
                with run_scope:
                    outcome = await self._call(spec, context, task.work.input)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        self._watch_heartbeat, context, task.work.heartbeat, run_scope, timed_out
                    )
                    with run_scope:
                        # Caught in here, not around the nursery, so that the error
                        # is the activity's own and not wrapped in an exception group.
                        outcome = await self._call(spec, context, task.work.input)
                    nursery.cancel_scope.cancel()
        finally:
            # A second delivery of the attempt (its first outlived the ack
            # wait) may have taken the entry over: leave that one alone.
            if self._running.get(attempt) is running:
                del self._running[attempt]
        if run_scope.cancelled_caught:
            if timed_out:
                return None, ErrorInfo(timed_out[0].kind, str(timed_out[0]))
            return None, ErrorInfo(
                "StartToCloseTimeout", f"no result within {task.work.start_to_close}s"
            )
        return outcome

    async def _call(
        self, spec: ActivitySpec, context: _Context, value: Any
    ) -> tuple[Any, ErrorInfo | None]:
        try:
            if spec.is_async:
                token = _current.set(context)
                try:
                    if self._asyncio is not None and spec.loop == "asyncio":
                        return await self._asyncio.call(spec.fn, value), None
                    return await spec.fn(value), None
                finally:
                    _current.reset(token)
            output = await trio.to_thread.run_sync(
                bind(context, spec.fn), value, limiter=self._limiter, abandon_on_cancel=True
            )
            return output, None
        except Exception as exc:
            error = error_info(sole(exc))
            if spec.is_async and spec.loop == "trio":
                # Asyncio code run on Trio fails the same way every time.
                message = wrong_loop(spec.name, sole(exc))
                if message is not None:
                    error = replace(
                        error, type="WrongEventLoop", message=message, non_retryable=True
                    )
            return None, error

    @staticmethod
    async def _watch_heartbeat(
        context: _Context, interval: float, scope: trio.CancelScope, timed_out: list[_Timeout]
    ) -> None:
        while True:
            due = context.last_beat + interval
            now = trio.current_time()
            if now >= due:
                timed_out.append(_Timeout("HeartbeatTimeout", f"no heartbeat for {interval}s"))
                scope.cancel()
                return
            await trio.sleep(due - now)

    async def _report(
        self,
        delivery: Delivery,
        task: Task,
        output: Any,
        error: ErrorInfo | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        error = await publish_result(
            self._transport, delivery, task, output, error, self._config.ack_wait, headers
        )
        self.stats["completed" if error is None else "failed"] += 1
        self._metrics.reported(task.work.activity, error)
        await delivery.ack()

    async def _deadletter(self, delivery: Delivery, reason: str) -> None:
        self._metrics.dead_letter("tasks")
        await deadletter(
            self._transport,
            delivery,
            reason,
            source="tasks",
            subject=delivery.subject,
            retry_delay=PUBLISH_RETRY,
            log=log,
        )


def _observed(worker: Worker, metrics: Metrics, transport: Transport) -> None:
    """Have ``metrics`` report the worker's running activities and its consumers' lag."""

    def running() -> list[tuple[str, tuple[str, ...], float]]:
        counts = dict.fromkeys(worker._activities, 0)
        for entry in worker._running.values():
            counts[entry.task.work.activity] = counts.get(entry.task.work.activity, 0) + 1
        return [("actors_activities_running", (name,), n) for name, n in counts.items()]

    metrics.add_gauges(running)
    layout = worker._config.layout
    metrics.add_consumers(
        transport,
        TASKS_STREAM,
        lambda: [layout.activity_consumer(name, 1).durable for name in worker._activities],
    )
    metrics.add_connection(transport)


def _attempt_of(task: Task) -> _Attempt:
    return (task.instance_id, task.work.step, task.work.attempt)
