"""The router's Prometheus metrics, on a registry passed in (served on the admin port).

Counters and the duration histogram are updated on the request path; in-flight and
utilization gauges are read from the live routing table at scrape time, so they cost the
request path nothing and can never drift from the real slot counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Sub-millisecond buckets: scoring a small model through the router takes ~1 ms.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class VersionLoad(Protocol):
    """What the gauges need from one live version."""

    @property
    def endpoint(self) -> str: ...

    @property
    def name(self) -> str: ...

    def inflight(self) -> int: ...

    def utilization(self) -> float: ...


class _LiveGauges(Collector):
    def __init__(self, versions: Callable[[], Iterable[VersionLoad]]) -> None:
        self._versions = versions

    def collect(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily(
            "infergate_router_inflight_requests",
            "Requests sent to a version's replicas and not yet answered.",
            labels=["endpoint", "version"],
        )
        utilization = GaugeMetricFamily(
            "infergate_router_utilization",
            "(in flight + waiting for a slot) / (healthy replicas x replica_max_concurrent_requests).",
            labels=["endpoint", "version"],
        )
        for v in self._versions():
            inflight.add_metric([v.endpoint, v.name], float(v.inflight()))
            utilization.add_metric([v.endpoint, v.name], v.utilization())
        yield inflight
        yield utilization


class RouterMetrics:
    """Every router metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, versions: Callable[[], Iterable[VersionLoad]]) -> None:
        self.registry = registry
        self.requests = Counter(
            "infergate_router_requests_total",
            "Requests answered by the router, by endpoint, version and status code.",
            ["endpoint", "version", "version_type", "code"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "infergate_router_upstream_duration_seconds",
            "Time from sending a request upstream to its last response byte.",
            ["endpoint", "version", "mirror"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "infergate_router_auth_failures_total",
            "Requests refused with 401, by reason.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.mirror_requests = Counter(
            "infergate_router_mirror_requests_total",
            "Mirrored copies, by outcome (a status code, 'error', or 'dropped' when the mirror was busy).",
            ["endpoint", "version", "outcome"],
            registry=registry,
        )
        self.ejections = Counter(
            "infergate_router_replica_ejections_total",
            "Replicas taken out of rotation after refusing a connection.",
            ["replica"],
            registry=registry,
        )
        self.reloads = Counter(
            "infergate_router_config_reloads_total",
            "Configuration reloads (SIGHUP or admin API), by result.",
            ["result"],
            registry=registry,
        )
        registry.register(_LiveGauges(versions))
        # Label children cached per label set (names from the config, status codes): .labels()
        # takes a lock and builds a tuple on every call, and these two run on every request.
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._upstream_children: dict[tuple[str, str, str], Any] = {}

    def count_request(self, endpoint: str, version: str, version_type: str, status: int) -> None:
        """``infergate_router_requests_total`` += 1."""
        key = (endpoint, version, version_type, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(endpoint, version, version_type, str(status))
        child.inc()

    def observe_upstream(self, endpoint: str, version: str, mirror: str, seconds: float) -> None:
        """One ``infergate_router_upstream_duration_seconds`` sample."""
        key = (endpoint, version, mirror)
        child = self._upstream_children.get(key)
        if child is None:
            child = self._upstream_children[key] = self.upstream_duration.labels(endpoint, version, mirror)
        child.observe(seconds)
