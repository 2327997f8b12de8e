"""OpenTelemetry: one server span per request, with child spans for queue wait and compute.

Tracing is on when a ``TracerProvider`` is given (tests pass one with an in-memory
exporter) or when an ``OTEL_EXPORTER_OTLP_*`` variable is set (spans then go over
OTLP/HTTP, batched off the request path). Otherwise ``Tracing.enabled`` is False and
the middleware never calls in here: no span objects, no header parsing.

An incoming W3C ``traceparent`` (and ``tracestate``) makes the request span a child of
the caller's span. Queue and compute spans are created after the fact from the timings
scoring reports in ``InferResult`` (they are measured there, not here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

OTLP_ENV_PREFIX = "OTEL_EXPORTER_OTLP_"


class _HeaderGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An OTLP-exporting provider when OTEL_EXPORTER_OTLP_* is set, else None."""
    env = os.environ if environ is None else environ
    if not any(key.startswith(OTLP_ENV_PREFIX) for key in env):
        return None
    # Imported only when used: the exporter pulls in requests and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = env.get("OTEL_SERVICE_NAME", "infergate-server")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Tracing:
    """Starts and ends request spans; a no-op object when ``provider`` is None."""

    def __init__(self, provider: TracerProvider | None, owned: bool = False) -> None:
        self.provider = provider
        self._owned = owned  # shut the provider down with the server (made from env)
        self.enabled = provider is not None
        self._tracer = provider.get_tracer("infergate.server") if provider is not None else None
        self._propagator = TraceContextTextMapPropagator()

    def start_request(self, scope: Mapping[str, Any]) -> Span | None:
        if self._tracer is None:
            return None
        carrier: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            if key in (b"traceparent", b"tracestate"):
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        parent = self._propagator.extract(carrier, getter=_GETTER) if carrier else None
        method = scope.get("method", "")
        path = scope.get("path", "")
        return self._tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )

    def record_phases(self, span: Span | None, started_ns: int, queue_s: float, compute_s: float) -> None:
        """Child spans 'queue' and 'compute' laid end to end from ``started_ns``."""
        if self._tracer is None or span is None:
            return
        ctx = trace.set_span_in_context(span)
        queue_end = started_ns + int(queue_s * 1e9)
        compute_end = queue_end + int(compute_s * 1e9)
        self._tracer.start_span("queue", context=ctx, start_time=started_ns).end(end_time=queue_end)
        self._tracer.start_span("compute", context=ctx, start_time=queue_end).end(end_time=compute_end)

    def end_request(self, span: Span, status: int, attributes: Mapping[str, Any]) -> None:
        span.set_attribute("http.response.status_code", status)
        for key, value in attributes.items():
            span.set_attribute(key, value)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        if self.provider is not None and self._owned:
            self.provider.shutdown()


def now_ns() -> int:
    return time.time_ns()
