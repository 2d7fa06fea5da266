"""The engine's Prometheus metrics, counted in plain numbers and exported at scrape time.

The services update their metrics on the hot path (every event decided,
every task run), so an update costs a dictionary lookup and an addition:
no lock, no metric object per label set, no ``labels()`` call. A
:class:`Metrics` is a prometheus-client *collector*: when it is scraped it
turns those numbers into metric families (cumulative histogram buckets,
gauges read from the services at that moment). Each one has a registry of its
own (:attr:`Metrics.registry`), never the process's default registry, so that
several services in one process (tests, the dev server) do not collide.

Labels are bounded: workflow types, activity names, event kinds, outcomes,
never an instance id. Types and names come from the definitions and the
workers' code, but a hostile start may name any type: past
:data:`MAX_SERIES` label sets, a family counts the rest under ``_other``.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Final

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from transport import ConnectionState, Transport, TransportError

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    Command,
    ErrorInfo,
    Event,
    InstanceState,
    InstanceStatus,
    ScheduleActivity,
    SignalReceived,
    StartRequested,
    TerminateRequested,
    TimerFired,
    TimerKind,
)

__all__ = ["MAX_SERIES", "NO_METRICS", "Metrics"]

log = logging.getLogger("actors.metrics")

#: Label sets a family keeps at most; past it the rest count under ``_other``.
MAX_SERIES: Final = 1000
_OTHER: Final = "_other"
#: How long a scrape waits for the broker's consumer counts.
_POLL_TIMEOUT: Final = 2.0

# Buckets, in seconds, for the latencies each histogram measures.
_FAST: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WAIT: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RUN: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LONG: Final = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0, 86400.0,
)  # fmt: skip

#: The event kinds a decision is counted under.
_EVENT_KINDS: Final[dict[type, str]] = {
    StartRequested: "start",
    ActivityCompleted: "activity_completed",
    ActivityFailed: "activity_failed",
    TimerFired: "timer",
    SignalReceived: "signal",
    CancelRequested: "cancel",
    TerminateRequested: "terminate",
}
#: The errors of an attempt that are timeouts, by the ``kind`` label they count under.
_TIMEOUTS: Final = {
    "ScheduleToStartTimeout": "schedule_to_start",
    "StartToCloseTimeout": "start_to_close",
    "HeartbeatTimeout": "heartbeat",
}
_ENDED: Final = {
    InstanceStatus.COMPLETED: "completed",
    InstanceStatus.FAILED: "failed",
    InstanceStatus.CANCELLED: "cancelled",
    InstanceStatus.TERMINATED: "terminated",
}


class _Counter:
    """A counter family: one number per label set."""

    __slots__ = ("documentation", "labels", "name", "values")

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...] = (), amount: float = 1) -> None:
        values = self.values
        if key in values:
            values[key] += amount
        elif len(values) < MAX_SERIES:
            values[key] = amount
        else:
            other = (_OTHER,) * len(key)
            values[other] = values.get(other, 0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        return family


class _Histogram:
    """A histogram family: per label set, a count per bucket (not cumulative) and a sum."""

    __slots__ = ("bounds", "documentation", "labels", "name", "series")

    def __init__(
        self, name: str, documentation: str, bounds: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        #: Per label set: [count in each bucket..., count over the last bound, sum].
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, key: tuple[str, ...] = ()) -> None:
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                key = (_OTHER,) * len(key)
            series = self.series.setdefault(key, [0.0] * (len(self.bounds) + 2))
        # bisect_left: a value equal to a bound counts in that bound's bucket (le).
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, series in list(self.series.items()):
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, count in zip((*self.bounds, math.inf), series, strict=False):
                total += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), total))
            family.add_metric(list(key), buckets, series[-1])
        return family


#: What a service reports of itself when scraped: (gauge name, label values, value).
GaugeReading = tuple[str, tuple[str, ...], float]


class Metrics:
    """The metrics of one process's services: recorded on the hot path, exported when scraped.

    Give one to an :class:`~actors.Orchestrator` and a :class:`~actors.Worker`
    (``metrics=``); they may share it (the dev server does), and each
    registers what it reports when scraped (its gauges, its broker
    consumers' counts). :attr:`registry` is this object's own registry,
    which :func:`~actors.observability.serve_probes` serves.
    """

    def __init__(self) -> None:
        c, h = _Counter, _Histogram
        self.started = c("actors_workflows_started_total", "Workflow instances started.", ["type"])
        self.completed = c(
            "actors_workflows_completed_total", "Workflow instances completed.", ["type"]
        )
        self.failed = c("actors_workflows_failed_total", "Workflow instances failed.", ["type"])
        self.cancelled = c(
            "actors_workflows_cancelled_total", "Workflow instances cancelled.", ["type"]
        )
        self.terminated = c(
            "actors_workflows_terminated_total", "Workflow instances terminated.", ["type"]
        )
        self._ended = {
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "terminated": self.terminated,
        }
        self.decisions = c(
            "actors_decisions_total",
            "Events that changed an instance (decided, written and published), by event kind.",
            ["event"],
        )
        self.conflicts = c(
            "actors_cas_conflicts_total",
            "State writes refused by compare-and-set: another process advanced the instance.",
        )
        self.redeliveries = c(
            "actors_redeliveries_total",
            "Messages delivered again (a process died, or handed them back), by source.",
            ["source"],
        )
        self.dead_letters = c(
            "actors_dead_letters_total",
            "Messages that could not be processed and went to dead letters, by source.",
            ["source"],
        )
        self.attempts = c(
            "actors_activity_attempts_total",
            "Activity attempts reported by this process's workers, by activity and outcome.",
            ["activity", "outcome"],
        )
        self.retries = c(
            "actors_activity_retries_total",
            "Activity attempts after the first, scheduled by the orchestrator.",
            ["activity"],
        )
        self.timeouts = c(
            "actors_timeouts_total",
            "Timeouts by kind: schedule_to_start, start_to_close, heartbeat (reported by "
            "workers); activity and signal (timers fired at the orchestrator).",
            ["kind"],
        )
        self.decision_seconds = h(
            "actors_decision_seconds",
            "Time to decide one event: load, decide, write, publish, ack.",
            _FAST,
        )
        self.lag_seconds = h(
            "actors_event_lag_seconds",
            "From an event's storing in the broker to its decision.",
            _WAIT,
        )
        self.schedule_to_start = h(
            "actors_activity_schedule_to_start_seconds",
            "From an activity's scheduling to a worker's taking it.",
            _WAIT,
            ["activity"],
        )
        self.run_seconds = h(
            "actors_activity_run_seconds",
            "An activity attempt's run time in the worker.",
            _RUN,
            ["activity"],
        )
        self.workflow_seconds = h(
            "actors_workflow_duration_seconds",
            "From a workflow's start to its end, by type.",
            _LONG,
            ["type"],
        )
        self.requests = c(
            "actors_api_requests_total",
            "Requests to the HTTP API, by method, route and status.",
            ["method", "route", "status"],
        )
        self.request_seconds = h(
            "actors_api_request_seconds",
            "Time to answer a request to the HTTP API, by route.",
            _FAST,
            ["route"],
        )
        self._counters = (
            self.started,
            *self._ended.values(),
            self.decisions,
            self.conflicts,
            self.redeliveries,
            self.dead_letters,
            self.attempts,
            self.retries,
            self.timeouts,
            self.requests,
        )
        self._histograms = (
            self.decision_seconds,
            self.lag_seconds,
            self.schedule_to_start,
            self.run_seconds,
            self.workflow_seconds,
            self.request_seconds,
        )
        self._gauges: list[Callable[[], Iterable[GaugeReading]]] = []
        self._pollers: list[Callable[[], Awaitable[Iterable[GaugeReading]]]] = []
        self._polled: list[GaugeReading] = []
        self._transports: list[Transport] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    # -- the orchestrator's hot path ----------------------------------------------------

    def decided(
        self,
        event: Event,
        before: InstanceState | None,
        after: InstanceState,
        commands: Sequence[Command],
        seconds: float,
        lag: float,
    ) -> None:
        """An event changed an instance from ``before`` to ``after`` in ``seconds``.

        ``lag`` is the time from the event's storing to now. Counts the
        decision, a start, an end (with the workflow's duration), the retries
        it schedules and the timeouts it applies.
        """
        self.decisions.inc((_EVENT_KINDS.get(type(event), "other"),))
        self.decision_seconds.observe(seconds)
        self.lag_seconds.observe(max(0.0, lag))
        kind = (after.type,)
        if before is None:
            self.started.inc(kind)
        if after.status.terminal and (before is None or not before.status.terminal):
            self._ended[_ENDED[after.status]].inc(kind)
            self.workflow_seconds.observe(max(0.0, after.updated_at - after.created_at), kind)
        for command in commands:
            if isinstance(command, ScheduleActivity) and command.attempt > 1:
                self.retries.inc((command.activity,))
        if isinstance(event, TimerFired):
            if event.kind is TimerKind.TIMEOUT:
                self.timeouts.inc(("activity",))
            elif event.kind is TimerKind.SIGNAL_TIMEOUT:
                self.timeouts.inc(("signal",))

    def conflict(self) -> None:
        """A write of the state met a compare-and-set conflict."""
        self.conflicts.inc()

    def delivered(self, source: str, num_delivered: int) -> None:
        """A message of ``source`` (``events``, ``tasks``) was delivered ``num_delivered`` times."""
        if num_delivered > 1:
            self.redeliveries.inc((source,))

    def dead_letter(self, source: str) -> None:
        """A message of ``source`` went to dead letters."""
        self.dead_letters.inc((source,))

    # -- the worker's hot path ----------------------------------------------------------

    def task_taken(self, activity: str, waited: float) -> None:
        """A worker took a task of ``activity`` ``waited`` seconds after its scheduling."""
        self.schedule_to_start.observe(max(0.0, waited), (activity,))

    def ran(self, activity: str, seconds: float) -> None:
        """An attempt of ``activity`` ran for ``seconds``."""
        self.run_seconds.observe(seconds, (activity,))

    def reported(self, activity: str, error: ErrorInfo | None) -> None:
        """A worker reported an attempt of ``activity``: its output, or ``error``."""
        if error is None:
            outcome = "completed"
        elif (timeout := _TIMEOUTS.get(error.type)) is not None:
            outcome = "timed_out"
            self.timeouts.inc((timeout,))
        elif error.type == "ActivityCancelled":
            outcome = "cancelled"
        elif error.type == "WorkerLost":
            outcome = "lost"
        else:
            outcome = "failed"
        self.attempts.inc((activity, outcome))

    # -- the HTTP API -----------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """The API answered a request to ``route`` (its template) with ``status``."""
        self.requests.inc((method, route, str(status)))
        self.request_seconds.observe(seconds, (route,))

    # -- what services report when scraped ------------------------------------------------

    def add_gauges(self, read: Callable[[], Iterable[GaugeReading]]) -> None:
        """Have ``read()`` report gauges at each scrape (values of one name and labels add up)."""
        self._gauges.append(read)

    def add_consumers(
        self, transport: Transport, stream: str, consumers: Callable[[], Iterable[str]]
    ) -> None:
        """Poll the pending and unacknowledged counts of ``consumers()`` of ``stream`` at scrape."""

        async def poll() -> list[GaugeReading]:
            readings: list[GaugeReading] = []
            for name in sorted(set(consumers())):
                try:
                    lag = await transport.consumer_lag(stream, name)
                except TransportError:
                    continue  # not there (yet), or the broker is away: no reading
                readings.append(("actors_consumer_pending", (stream, name), lag.pending))
                readings.append(("actors_consumer_unacked", (stream, name), lag.unacked))
            return readings

        self._pollers.append(poll)

    def add_connection(self, transport: Transport) -> None:
        """Report whether ``transport`` is connected to its broker (once, however often asked)."""
        if transport in self._transports:
            return
        self._transports.append(transport)
        self.add_gauges(
            lambda: [
                (
                    "actors_connected",
                    (),
                    1.0 if transport.state is ConnectionState.CONNECTED else 0.0,
                )
            ]
        )

    async def refresh(self) -> None:
        """Poll the broker for what :meth:`add_consumers` asked, within a bound.

        Called before each scrape is answered: the counts cost one request
        per consumer, and only when someone looks.
        """
        polled: list[GaugeReading] = []
        with trio.move_on_after(_POLL_TIMEOUT):
            for poll in self._pollers:
                polled.extend(await poll())
        self._polled = polled

    def collect(self) -> Iterator[Metric]:
        """Every family, as prometheus-client's registry asks of a collector."""
        for counter in self._counters:
            yield counter.family()
        for histogram in self._histograms:
            yield histogram.family()
        yield from self._gauge_families()

    def _gauge_families(self) -> Iterator[Metric]:
        families = {
            "actors_actors_alive": GaugeMetricFamily(
                "actors_actors_alive", "Instance actors in memory (idle ones included)."
            ),
            "actors_actors_idle": GaugeMetricFamily(
                "actors_actors_idle", "Instance actors waiting for an event."
            ),
            "actors_partitions_owned": GaugeMetricFamily(
                "actors_partitions_owned", "Partitions of the instances this process decides."
            ),
            "actors_activities_running": GaugeMetricFamily(
                "actors_activities_running",
                "Activity attempts running in this process, by activity.",
                labels=["activity"],
            ),
            "actors_connected": GaugeMetricFamily(
                "actors_connected", "1 while connected to the broker, else 0."
            ),
            "actors_consumer_pending": GaugeMetricFamily(
                "actors_consumer_pending",
                "Messages a broker consumer has still to deliver (its backlog).",
                labels=["stream", "consumer"],
            ),
            "actors_consumer_unacked": GaugeMetricFamily(
                "actors_consumer_unacked",
                "Messages a broker consumer delivered and awaits the acknowledgement of.",
                labels=["stream", "consumer"],
            ),
        }
        sums: dict[tuple[str, tuple[str, ...]], float] = {}
        readings: list[GaugeReading] = list(self._polled)
        for read in self._gauges:
            readings.extend(read())
        for name, labels, value in readings:
            sums[name, labels] = sums.get((name, labels), 0.0) + value
        for (name, labels), value in sums.items():
            families[name].add_metric(list(labels), value)
        yield from families.values()


class _NoMetrics(Metrics):
    """Records nothing: what a service without metrics updates (at the cost of a call)."""

    def decided(self, *args: object, **kwargs: object) -> None:
        pass

    def conflict(self) -> None:
        pass

    def delivered(self, source: str, num_delivered: int) -> None:
        pass

    def dead_letter(self, source: str) -> None:
        pass

    def task_taken(self, activity: str, waited: float) -> None:
        pass

    def ran(self, activity: str, seconds: float) -> None:
        pass

    def reported(self, activity: str, error: ErrorInfo | None) -> None:
        pass

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        pass

    def add_gauges(self, read: Callable[[], Iterable[GaugeReading]]) -> None:
        pass

    def add_consumers(
        self, transport: Transport, stream: str, consumers: Callable[[], Iterable[str]]
    ) -> None:
        pass

    def add_connection(self, transport: Transport) -> None:
        pass


#: The metrics of a service given none: every update does nothing.
NO_METRICS: Final[Metrics] = _NoMetrics()

#: A monotonic clock in seconds, for the durations measured on the hot path.
clock: Final = time.perf_counter
