"""The one-process metric types (LocalCollector) expose what prometheus-client's own
types expose for the same observations: same families, buckets, counts and sums."""

from __future__ import annotations

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from server.metrics import LATENCY_BUCKETS, LocalCollector

# Bucket bounds themselves (le is inclusive), values between them, below the first and past the last.
VALUES = [0.0, 0.0001, 0.00011, 0.00025, 0.001, 0.0049, 0.005, 1.0, 59.9, 60.0, 61.0, 1e9]


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_local_types_expose_what_prometheus_client_exposes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    local = LocalCollector()
    h_ours = local.histogram("h_seconds", "a histogram", ["model"], buckets=LATENCY_BUCKETS)
    c_ours = local.counter("c", "a counter", ["model", "code"])
    g_ours = local.gauge("g", "a gauge")
    ours.register(local)
    h_theirs = Histogram("h_seconds", "a histogram", ["model"], buckets=LATENCY_BUCKETS, registry=theirs)
    c_theirs = Counter("c", "a counter", ["model", "code"], registry=theirs)
    g_theirs = Gauge("g", "a gauge", registry=theirs)

    for i, value in enumerate(VALUES):
        for h, c in ((h_ours, c_ours), (h_theirs, c_theirs)):
            h.labels("a" if i % 3 else "b").observe(value)
            c.labels("a", str(200 + i % 2)).inc()
    for g in (g_ours, g_theirs):
        g.inc()
        g.inc()
        g.dec()

    assert _lines(ours) == _lines(theirs)
    assert 'h_seconds_bucket{le="0.0001",model="a"} 1.0' in _lines(ours)  # 0.0001 itself: le is <=


def test_local_labels_must_match_the_label_names() -> None:
    local = LocalCollector()
    counter = local.counter("c", "a counter", ["model", "code"])
    with pytest.raises(ValueError, match="c: expected labels"):
        counter.labels("only-one")
