"""Spans recorded in this test process: the ``spans`` fixture and helpers to read them.

Import the fixture into a test module (``from tracing_spans import spans``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from actors.observability import tracing

__all__ = ["by_name", "one", "spans"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider set to record in memory, and unset after the test.

    OpenTelemetry lets a process set its provider once; the fixture resets
    its private guard so that the other tests of this process run untraced.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert tracing.tracing()
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        assert not tracing.tracing()


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]
