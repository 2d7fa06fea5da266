"""OpenTelemetry traces: one trace per workflow instance, its context in message headers.

Optional: with the ``actors[otel]`` extra (opentelemetry-api and -sdk)
installed and a tracer provider configured, the engine records spans;
without either, every function here does nothing and costs a check.

The structure (docs/observability.md has a picture):

* The client's ``start`` records a span ``start {type}`` and sends its
  context in the start message's ``traceparent`` header (W3C Trace
  Context). A program publishing a raw start may send a ``traceparent`` of
  its own; the intake forwards headers as they are.
* The orchestrator that decides the start records the instance's root span,
  ``workflow {type}``, as a child of that context (a new trace if there is
  none; for a child workflow, a new trace *linked* to its parent's span).
  Its context is stored in the instance's state (``trace``), so that every
  later decision, in whatever process, joins the same trace.
* Each later decision is a span ``{event} {detail}`` (``activity_completed
  charge``, ``timer retry charge``, ``signal approved``), a child of the
  workflow span, linked to the span that sent the event when its message
  carried one (the activity attempt, a signalling client, a child workflow).
* Every message a decision publishes carries the workflow span's context,
  so each activity attempt's span ``activity {name}``, recorded in the
  worker's process, is a child of the workflow span; its result carries the
  attempt's context back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from transport import OutMessage

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    ErrorInfo,
    Event,
    SignalReceived,
    StartRequested,
    TerminateRequested,
    TimerFired,
)

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the engine works without the extra
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "TRACEPARENT",
    "TracingUnavailableError",
    "export_to_file",
    "activity_span",
    "current_headers",
    "decision_span",
    "start_span",
    "traced",
    "tracing",
    "workflow_span",
]

#: The W3C Trace Context header, as NATS messages carry it.
TRACEPARENT: Final = "traceparent"
_TRACER_NAME: Final = "actors"


def tracing() -> bool:
    """Whether spans are recorded: OpenTelemetry is installed and a provider set."""
    if trace is None:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _propagator() -> Any:
    return TraceContextTextMapPropagator()


def _context_of(traceparent: str | None) -> Any:
    """The OpenTelemetry context a ``traceparent`` value names (``None``: none)."""
    if not traceparent:
        return None
    return _propagator().extract({TRACEPARENT: traceparent})


def _span_context(traceparent: str | None) -> Any:
    context = _context_of(traceparent)
    if context is None:
        return None
    found = trace.get_current_span(context).get_span_context()
    return found if found.is_valid else None


def _traceparent(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _propagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def current_headers() -> dict[str, str] | None:
    """The caller's current span context as headers (``None`` if it has none)."""
    if not tracing():
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier or None


def start_span(workflow_type: str, instance_id: str) -> dict[str, str] | None:
    """Record the client's ``start {type}`` span; the headers its start message carries."""
    if not tracing():
        return None
    span = trace.get_tracer(_TRACER_NAME).start_span(
        f"start {workflow_type}",
        kind=SpanKind.PRODUCER,
        attributes={"actors.workflow.type": workflow_type, "actors.instance.id": instance_id},
    )
    try:
        return {TRACEPARENT: _traceparent(span) or ""}
    finally:
        span.end()


def workflow_span(
    event: StartRequested, headers: Mapping[str, str], began: float
) -> tuple[Span | None, str | None]:
    """Open the instance's root span for its ``start``; the span and its ``traceparent``.

    A child of the start message's context; for a child workflow a new trace,
    linked to its parent's. ``began`` is the decision's start (``time.time()``).
    End it with :func:`end_span` once the start is decided.
    """
    if not tracing():
        return None, None
    sent = headers.get(TRACEPARENT)
    attributes = {
        "actors.workflow.type": event.workflow_type,
        "actors.instance.id": event.instance_id,
    }
    links = []
    parent = None
    if event.parent is not None:
        attributes["actors.parent.id"] = event.parent
        if (linked := _span_context(sent)) is not None:
            links.append(Link(linked, {"actors.link": "parent workflow"}))
    else:
        parent = _context_of(sent)
    span = trace.get_tracer(_TRACER_NAME).start_span(
        f"workflow {event.workflow_type}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=_ns(began),
    )
    return span, _traceparent(span)


def end_span(span: Span | None) -> None:
    if span is not None:
        span.end()


def decision_span(
    instance_id: str,
    trace_of_instance: str | None,
    event: Event,
    headers: Mapping[str, str],
    began: float,
) -> None:
    """Record one decision of an instance (not its start) as a child of its workflow span.

    Linked to the span that sent the event, if its message carried one.
    ``began`` is when the decision began (``time.time()``); it ends now.
    """
    if trace_of_instance is None or not tracing():
        return
    name, attributes = _describe(event)
    attributes["actors.instance.id"] = instance_id
    links = []
    sent = _span_context(headers.get(TRACEPARENT))
    if sent is not None:
        links.append(Link(sent, {"actors.link": "sender"}))
    span = trace.get_tracer(_TRACER_NAME).start_span(
        name,
        context=_context_of(trace_of_instance),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=_ns(began),
    )
    span.end()


def _describe(event: Event) -> tuple[str, dict[str, Any]]:
    """A decision span's name and attributes for ``event``."""
    match event:
        case ActivityCompleted(step=step, attempt=attempt):
            return f"activity_completed {step}", {"actors.step": step, "actors.attempt": attempt}
        case ActivityFailed(step=step, attempt=attempt, error=error):
            attributes = {"actors.step": step, "actors.attempt": attempt}
            return f"activity_failed {step}", {**attributes, "actors.error": error.type}
        case TimerFired(kind=kind, step=step, attempt=attempt):
            attributes = {"actors.step": step, "actors.attempt": attempt, "actors.timer": str(kind)}
            return f"timer {kind} {step}", attributes
        case SignalReceived(name=name):
            return f"signal {name}", {"actors.signal": name}
        case CancelRequested():
            return "cancel", {}
        case TerminateRequested():
            return "terminate", {}
        case StartRequested(workflow_type=workflow_type):
            return f"start {workflow_type}", {}
    return type(event).__name__, {}


@contextmanager
def activity_span(
    activity: str, instance_id: str, step: str, attempt: int, headers: Mapping[str, str]
) -> Iterator[_Attempt]:
    """Record an activity attempt in the worker, as a child of its workflow's span.

    Yields an :class:`_Attempt`: its ``headers`` go on the result message,
    and ``done(error)`` marks the outcome.
    """
    if not tracing():
        yield _Attempt(None)
        return
    span = trace.get_tracer(_TRACER_NAME).start_span(
        f"activity {activity}",
        context=_context_of(headers.get(TRACEPARENT)),
        kind=SpanKind.CONSUMER,
        attributes={
            "actors.activity": activity,
            "actors.instance.id": instance_id,
            "actors.step": step,
            "actors.attempt": attempt,
        },
    )
    try:
        yield _Attempt(span)
    finally:
        span.end()


class _Attempt:
    """An activity attempt's span, as the worker sees it."""

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self.headers = None if span is None else {TRACEPARENT: _traceparent(span) or ""}

    def done(self, error: ErrorInfo | None) -> None:
        if self._span is None:
            return
        if error is None:
            self._span.set_attribute("actors.outcome", "completed")
        else:
            self._span.set_attribute("actors.outcome", "failed")
            self._span.set_attribute("actors.error", error.type)
            self._span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))


def traced(messages: Sequence[OutMessage], traceparent: str | None) -> list[OutMessage]:
    """``messages``, each carrying ``traceparent`` (the instance's workflow span), if any."""
    if traceparent is None:
        return list(messages)
    return [replace(m, headers={**(m.headers or {}), TRACEPARENT: traceparent}) for m in messages]


class TracingUnavailableError(RuntimeError):
    """Spans were asked for, and the ``actors[otel]`` extra is not installed."""


def export_to_file(path: str, service: str) -> Callable[[], None]:
    """Record spans from now on, each written to ``path`` as a JSON line when it ends.

    Sets the process's tracer provider (OpenTelemetry has one per process),
    naming the process ``service`` (``service.name``). Returns the function
    that flushes and closes the file. Raises
    :class:`TracingUnavailableError` without the SDK, ``OSError`` if the
    file cannot be opened. Each span is written as it ends, in the calling
    thread: meant for debugging and tests, not for load.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        raise TracingUnavailableError(
            "traces need OpenTelemetry: pip install 'actors[otel]'"
        ) from None
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the returned function

    class _Lines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for span in spans:
                out.write(json.dumps(json.loads(span.to_json())) + "\n")
            out.flush()
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            out.close()

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(_Lines()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


#: The wall clock spans are stamped with, in seconds.
wall: Final = time.time
