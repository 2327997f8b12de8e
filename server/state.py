"""What the endpoints share: built by ``build_app``, the repository filled in by lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.config import ServerConfig
from server.metrics import Metrics
from server.tracing import Tracing


@dataclass
class Lifecycle:
    """Process-wide lifecycle flags. ``draining`` turns readiness to 503 (set on SIGTERM)."""

    draining: bool = False


@dataclass
class ServerState:
    """One server's dependencies; endpoints read it from ``request.state.server``."""

    config: ServerConfig
    metrics: Metrics
    tracing: Tracing
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    repository: Any = None  # scoring.ModelRepository, set by lifespan once started
