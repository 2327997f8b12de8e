"""``build_app``: the scoring server's ASGI application, assembled from explicit parts.

    RequestMiddleware (request id, errors -> status table, metrics, span, access log)
      -> ScoringRouter(ROUTES, lifespan): POST .../infer straight to its endpoint,
         everything else through Starlette's route table

No Starlette ``Starlette`` wrapper and no BaseHTTPMiddleware on the inference path: the
router is wrapped by one plain ASGI middleware. Everything with state (repository,
metrics registry, tracer) is passed in or built in lifespan, so each test gets its own.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from server.config import ServerConfig
from server.lifespan import RepositoryFactory, build_repository, lifespan_for
from server.metrics import Metrics
from server.middleware import RequestMiddleware
from server.routes import ROUTES, ScoringRouter
from server.state import Lifecycle, ServerState
from server.tracing import Tracing, provider_from_env


def build_app(
    config: ServerConfig,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    repository_factory: RepositoryFactory = build_repository,
    lifecycle: Lifecycle | None = None,
) -> ASGIApp:
    """The ASGI app; its lifespan builds and starts the repository from ``config``.

    ``tracer_provider`` None: OTLP export when OTEL_EXPORTER_OTLP_* is set, else no tracing.
    """
    owned = tracer_provider is None
    provider = tracer_provider if tracer_provider is not None else provider_from_env()
    server = ServerState(
        config=config,
        metrics=Metrics(registry if registry is not None else CollectorRegistry()),
        tracing=Tracing(provider, owned=owned),
        lifecycle=lifecycle or Lifecycle(),
    )
    router = ScoringRouter(routes=ROUTES, lifespan=lifespan_for(server, repository_factory))
    return RequestMiddleware(router, server.metrics, server.tracing, config.access_log)
