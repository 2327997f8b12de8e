"""Prometheus metrics, on a registry passed in (a fresh one per app, per test).

Request counters and histograms are recorded by the request middleware; batch size
comes from ``InferResult.batch_rows``; queue depth and model readiness are read from the
repository at scrape time by a custom collector, so they cost nothing per request.
With one process the per-request counters and histograms are plain Python numbers
(``LocalCollector``) turned into metric families when scraped.

With ``--workers`` > 1 every process writes its samples to files in the directory named
by ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by
``server.__main__`` before the workers start) and ``/metrics`` merges all of them.
The scrape-time gauges cannot be read from another process, so in that mode each worker
copies its queue depth and readiness into multiprocess gauges once a second
(``MultiprocessGaugeUpdater``); counters and histograms are exact.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from scoring import ModelStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: 100 µs .. 60 s, dense where inference usually lands.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class RepositoryView:
    """What the collector needs from the running server: the repository, once built."""

    def __init__(self) -> None:
        self.repository: Any = None  # scoring.ModelRepository after startup


class RepositoryCollector(Collector):
    """infergate_queue_depth and infergate_model_ready, read from the repository when scraped."""

    def __init__(self, view: RepositoryView) -> None:
        self._view = view

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "infergate_queue_depth",
            "Requests waiting in a model version's batching queue.",
            labels=["model", "version"],
        )
        ready = GaugeMetricFamily(
            "infergate_model_ready",
            "1 when the model version is loaded and serving, else 0.",
            labels=["model", "version", "providers"],
        )
        for name, version, providers, is_ready, queue in read_models(self._view.repository):
            ready.add_metric([name, version, providers], 1.0 if is_ready else 0.0)
            if is_ready:
                depth.add_metric([name, version], float(queue))
        yield depth
        yield ready

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


def read_models(repository: Any) -> list[tuple[str, str, str, bool, int]]:
    """(model, version, providers, ready, queue depth) for every indexed version."""
    if repository is None:
        return []
    out: list[tuple[str, str, str, bool, int]] = []
    status: ModelStatus
    for status in repository.index():
        version = "" if status.version is None else str(status.version)
        providers, queue, is_ready = "", 0, status.state == "READY"
        if is_ready and status.version is not None:
            try:
                model = repository.get(status.name, status.version)
            except Exception:  # raced with an unload: report it as not ready
                is_ready = False
            else:
                providers = ",".join(model.metadata.providers)
                queue = model.queue_depth()
        out.append((status.name, version, providers, is_ready, queue))
    return out


class Metrics:
    """Every infergate_* metric of one server, on ``registry``."""

    def __init__(self, registry: CollectorRegistry, view: RepositoryView | None = None) -> None:
        self.registry = registry
        self.view = view or RepositoryView()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # One process: the per-request series are plain Python numbers read when scraped
        # (LocalCollector), a third of prometheus-client's cost per request (its locked
        # per-bucket increments were ~10% of the infer path). Several workers: the
        # prometheus-client types, whose values live in the shared multiprocess files.
        local = None if self.multiprocess else LocalCollector()
        counter: Any = Counter if local is None else local.counter
        histogram: Any = Histogram if local is None else local.histogram
        gauge: Any = Gauge if local is None else local.gauge
        self.requests = counter(
            "infergate_requests",
            "Inference requests answered, by model, version, protocol (v2|azureml) and status code.",
            ["model", "version", "protocol", "code"],
            registry=registry,
        )
        self.request_duration = histogram(
            "infergate_request_duration_seconds",
            "Time from request arrival to the end of the response, inference routes.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_duration = histogram(
            "infergate_queue_duration_seconds",
            "Time a request waited in the batching queue before its batch ran.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_duration = histogram(
            "infergate_compute_duration_seconds",
            "Time the model took to compute the batch (or request) a request rode in.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = histogram(
            "infergate_batch_size",
            "Rows in each executed batch (recorded by the batch's first request).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.inflight = gauge(
            "infergate_inflight_requests",
            "Inference requests being processed.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        if local is not None:
            registry.register(local)
        if self.multiprocess:
            self.mp_queue_depth = Gauge(
                "infergate_queue_depth",
                "Requests waiting in a model version's batching queue.",
                ["model", "version"],
                registry=None,
                multiprocess_mode="livesum",
            )
            self.mp_model_ready = Gauge(
                "infergate_model_ready",
                "1 when the model version is loaded and serving in every worker, else 0.",
                ["model", "version", "providers"],
                registry=None,
                multiprocess_mode="livemin",
            )
        else:
            registry.register(RepositoryCollector(self.view))
        # Label children cached: .labels() takes a lock and builds a tuple each call.
        self._request_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._model_children: dict[tuple[str, str], tuple[Any, Any, Any, _RecentKeys]] = {}

    def observe_request(
        self, model: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        key = (model, version, protocol, str(code))
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.request_duration.labels(model, version, protocol),
            )
            self._request_children[key] = children  # bounded: labels are known names
        children[0].inc()
        children[1].observe(seconds)

    def observe_result(self, model: str, version: str, result: Any) -> None:
        """Queue and compute time of one request; the batch size once per executed batch.

        Every request of a batch reports the same batch (rows and compute timing), so a
        batch is counted when its key is first seen; ``extra["batch_id"]`` wins if given.
        """
        key = (model, version)
        children = self._model_children.get(key)
        if children is None:
            children = (
                self.queue_duration.labels(model, version),
                self.compute_duration.labels(model, version),
                self.batch_size.labels(model, version),
                _RecentKeys(),
            )
            self._model_children[key] = children
        children[0].observe(result.queue_s)
        children[1].observe(result.compute_s)
        rows = result.batch_rows
        if rows > 0:
            batch_key = result.extra.get("batch_id") if result.extra else None
            if batch_key is None:
                batch_key = (result.compute_s, rows)
            if children[3].first_time(batch_key):
                children[2].observe(rows)

    def update_multiprocess_gauges(self) -> None:
        """Copy this worker's scrape-time values into the shared files (multiprocess mode)."""
        for name, version, providers, is_ready, queue in read_models(self.view.repository):
            self.mp_model_ready.labels(name, version, providers).set(1.0 if is_ready else 0.0)
            self.mp_queue_depth.labels(name, version).set(float(queue))

    def exposition(self) -> bytes:
        """The Prometheus text for /metrics (merged across workers in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class _LocalValue:
    """A counter or gauge series: one float, changed on the event loop only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _LocalBuckets:
    """A histogram series: per-bucket counts (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bound >= amount, as Prometheus buckets are "le" (<=).
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _LocalMetric:
    """One metric and its label sets, with prometheus-client's ``labels()`` / ``inc()`` /
    ``observe()`` surface so that ``Metrics`` uses either kind the same way."""

    def __init__(self, kind: str, name: str, doc: str, labelnames: Iterable[str], buckets: tuple[float, ...] = ()) -> None:
        self.kind, self.name, self.doc = kind, name, doc
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._only = self.labels()

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
        series = self.series.get(key)
        if series is None:
            series = _LocalBuckets(self.bounds) if self.kind == "histogram" else _LocalValue()
            self.series[key] = series
        return series

    def inc(self, amount: float = 1.0) -> None:
        self._only.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only.dec(amount)

    def family(self) -> Metric:
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
            for key, value in self.series.items():
                counter.add_metric(key, value.value)
            return counter
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
            for key, value in self.series.items():
                gauge.add_metric(key, value.value)
            return gauge
        histogram = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, buckets in self.series.items():
            cumulative = list(itertools.accumulate(buckets.counts))
            histogram.add_metric(key, list(zip(les, cumulative)), sum_value=buckets.sum)
        return histogram


class LocalCollector(Collector):
    """Counters, gauges and histograms kept as plain Python numbers in one process and
    turned into metric families when scraped. Not thread-safe: updated from the event loop."""

    def __init__(self) -> None:
        self._metrics: list[_LocalMetric] = []

    def _add(self, metric: _LocalMetric) -> _LocalMetric:
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, doc: str, labelnames: Iterable[str] = (), **_: Any) -> _LocalMetric:
        return self._add(_LocalMetric("counter", name, doc, labelnames))

    def gauge(self, name: str, doc: str, labelnames: Iterable[str] = (), **_: Any) -> _LocalMetric:
        return self._add(_LocalMetric("gauge", name, doc, labelnames))

    def histogram(self, name: str, doc: str, labelnames: Iterable[str] = (), *, buckets: Iterable[float], **_: Any) -> _LocalMetric:
        return self._add(_LocalMetric("histogram", name, doc, labelnames, tuple(buckets)))

    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield metric.family()

    def describe(self) -> Iterable[Metric]:
        return []


class _RecentKeys:
    """The last few batch keys seen, to count each batch once."""

    __slots__ = ("_order", "_seen")

    def __init__(self, size: int = 256) -> None:
        self._order: deque[Hashable] = deque(maxlen=size)
        self._seen: set[Hashable] = set()

    def first_time(self, key: Hashable) -> bool:
        if key in self._seen:
            return False
        if len(self._order) == self._order.maxlen:
            self._seen.discard(self._order[0])
        self._order.append(key)
        self._seen.add(key)
        return True


async def run_periodically(fn: Callable[[], None], every_s: float) -> None:
    """Call ``fn`` every ``every_s`` seconds until cancelled (multiprocess gauge updates)."""
    while True:
        fn()
        await asyncio.sleep(every_s)
