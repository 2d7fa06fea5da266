"""Prometheus text read back into samples, for the metrics tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "parse", "value"]

#: Each sample's value by (name, labels).
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """The samples of a scrape (the Prometheus text format)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly ``labels``; 0 if there is none."""
    return samples.get((name, frozenset(labels.items())), 0.0)
