"""OpenTelemetry set-up for the router process.

Spans are recorded only when an exporter is asked for through the standard variable
``OTEL_TRACES_EXPORTER`` (``console`` here; ``otlp`` when the OTLP exporter package is
installed). Without one the router starts no spans and passes ``traceparent`` through as it
came, which costs the hot path nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("infergate.router")


def configure_tracing(env: Mapping[str, str]) -> bool:
    """Install an SDK tracer provider if ``OTEL_TRACES_EXPORTER`` names one; True if tracing."""
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp but opentelemetry-exporter-otlp is not installed; tracing off")
            return False
        exporter = OTLPSpanExporter()
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (console, otlp); tracing off", exporter_name)
        return False
    service = env.get("OTEL_SERVICE_NAME", "infergate-router")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True
