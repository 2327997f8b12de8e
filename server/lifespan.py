"""Startup and shutdown of one server process: build and start the repository, then
(after the HTTP server has finished in-flight requests) close it.

The repository is loaded here, before the server reports ready: ONNX Runtime session
creation holds the GIL, so it must not overlap with serving. Load failures are recorded
in the repository index (readiness stays 503), they do not stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from scoring import ConfigError, ModelRepository, ScoringConfig
from server.config import ServerConfig
from server.metrics import run_periodically
from server.state import ServerState

log = logging.getLogger("infergate.server")

RepositoryFactory = Callable[[ServerConfig], Any]


def scoring_config(config: ServerConfig) -> ScoringConfig:
    """ScoringConfig from --scoring-config (YAML/JSON) and --executor-threads."""
    base = ScoringConfig()
    if config.scoring_config is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(config.scoring_config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("--scoring-config", f"cannot read: {exc}", str(config.scoring_config)) from exc
        try:
            base = ScoringConfig.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError("--scoring-config", f"{config.scoring_config}: {exc}") from exc
    if config.executor_threads is not None:
        from dataclasses import replace

        base = replace(base, executor_threads=config.executor_threads)
    return base


def build_repository(config: ServerConfig) -> Any:
    """The real ModelRepository for ``config`` (the default factory)."""
    scfg = scoring_config(config)
    if config.entry_script is not None:
        return ModelRepository.for_entry_script(config.entry_script, config.model_dir, config=scfg)
    assert config.model_repository is not None
    return ModelRepository(config.model_repository, scfg)


def lifespan_for(
    server: ServerState, factory: RepositoryFactory
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        repository = factory(server.config)
        await repository.start()
        server.repository = repository
        server.metrics.view.repository = repository
        for status in repository.index():
            if status.state != "READY":
                log.warning(
                    "model %s version %s is %s: %s", status.name, status.version, status.state, status.reason
                )
        updater: asyncio.Task[None] | None = None
        if server.metrics.multiprocess:
            updater = asyncio.create_task(run_periodically(server.metrics.update_multiprocess_gauges, 1.0))
        log.info("ready" if repository.ready() else "started (some models are not ready)")
        try:
            yield {"server": server}
        finally:
            if updater is not None:
                updater.cancel()
            log.info("closing the model repository")
            await repository.close(timeout_s=server.config.graceful_timeout_s)
            server.tracing.shutdown()

    return lifespan
