"""Everything the router holds while it runs, built on the serving loop and torn down in order.

``RouterRuntime`` owns the pooled upstream client, the key and token stores, the metrics and
the live routing table. Configuration changes (admin API, SIGHUP) go through ``apply``: one
at a time, validated, persisted atomically, then the new table swapped in whole; requests
already in flight keep the table they started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from router.auth import Authenticator
from router.config import RouterConfig, load_config, save_config
from router.jwks import JwksCache
from router.keys import KeyStore, load_admin_token
from router.metrics import RouterMetrics
from router.table import RoutingTable, VersionRoute, build_table
from router.tokens import TokenService
from router.upstream import ClientLimits, Replica, Resolver, UpstreamPool, resolve_host
from scoring import ConfigError

log = logging.getLogger("infergate.router")

MAX_BACKGROUND_TASKS = 1024  # mirrored copies in flight at once; more are dropped, never queued


class RouterRuntime:
    """The router's state for one process. Create, ``await start()``, serve, ``await close()``."""

    def __init__(
        self,
        config: RouterConfig,
        state_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        limits: ClientLimits | None = None,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self._env = os.environ if env is None else env
        self.registry = registry if registry is not None else CollectorRegistry()
        self.pool = UpstreamPool(limits, resolver)
        self.metrics = RouterMetrics(self.registry, self._live_versions)
        self.keys = KeyStore(self.state_dir)
        self.tokens = TokenService(self.state_dir)
        # background=True: a JWKS URL is never fetched on the event loop's thread.
        self.authenticator = Authenticator(self.keys, self.tokens, JwksCache(background=True))
        self.admin_token = ""
        self._table: RoutingTable | None = None
        self._lock: asyncio.Lock | None = None
        self.background: set[asyncio.Task[None]] = set()

    def _live_versions(self) -> list[VersionRoute]:
        return self._table.versions() if self._table is not None else []

    @property
    def table(self) -> RoutingTable:
        if self._table is None:
            raise RuntimeError("RouterRuntime.start() was not awaited")
        return self._table

    async def start(self) -> None:
        self.admin_token = load_admin_token(self.state_dir, self._env)
        self._lock = asyncio.Lock()
        await self.pool.start()
        self.pool.on_eject = self._count_ejection
        for endpoint in self.config.endpoints:
            self.keys.ensure(endpoint.name)
        self._table = await build_table(self.config, self.pool)
        await self._warm_issuers(self._table)

    async def _warm_issuers(self, table: RoutingTable) -> None:
        """Fetch external JWKS before traffic needs them (a failure is logged, not fatal:
        tokens from that issuer answer 401 jwks_unavailable until a background fetch lands)."""
        for route in table.endpoints.values():
            if route.policy.token_auth_enabled and route.policy.issuers:
                try:
                    await self.authenticator.refresh_issuers(route.policy)
                except Exception as exc:  # noqa: BLE001 -- any fetch failure: keep starting
                    log.warning("cannot fetch the JWKS of endpoint %s: %s", route.config.name, type(exc).__name__)

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.pool.close()

    def _count_ejection(self, replica: Replica) -> None:
        self.metrics.ejections.labels(replica.url).inc()

    # -- configuration changes --------------------------------------------------------------

    async def apply(self, config: RouterConfig, persist: bool = True) -> None:
        """Make ``config`` live: persist it (atomically), then swap the routing table."""
        assert self._lock is not None
        async with self._lock:
            await self._apply_locked(config, persist)

    async def change(self, edit: Callable[[RouterConfig], RouterConfig]) -> None:
        """Apply ``edit`` to the current config and make the result live, persisted (admin API).

        ``edit`` runs under the lock, on the config as it is then: concurrent changes compose.
        """
        async with self.lock:
            await self._apply_locked(edit(self.config), persist=True)

    async def _apply_locked(self, config: RouterConfig, persist: bool) -> None:
        # File writes (fsync) go to a worker thread: nothing blocks the loop serving traffic.
        for endpoint in config.endpoints:
            await asyncio.to_thread(self.keys.ensure, endpoint.name)
        table = await build_table(config, self.pool)
        await self._warm_issuers(table)
        if persist and self.config.path is not None:
            await asyncio.to_thread(save_config, config, self.config.path)
        config = RouterConfig(config.endpoints, path=self.config.path)
        self.config = config
        self._table = RoutingTable(config=config, endpoints=table.endpoints)
        self.pool.retain_only(self._table.replica_sets())
        self.metrics.reloads.labels("applied").inc()

    async def reload(self) -> bool:
        """Re-read the config file (SIGHUP). An invalid file is logged and the old config stays."""
        path = self.config.path
        if path is None:
            log.warning("reload requested but the router was not started from a file")
            return False
        try:
            config = load_config(path)
        except ConfigError as exc:
            self.metrics.reloads.labels("rejected").inc()
            log.error("config reload rejected, keeping the running config: %s", exc, extra={"field": exc.field})
            return False
        await self.apply(config, persist=False)
        log.info("config reloaded from %s", path)
        return True

    @property
    def lock(self) -> asyncio.Lock:
        assert self._lock is not None
        return self._lock

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` in the background, tracked; False (and closed) when too many already run."""
        if len(self.background) >= MAX_BACKGROUND_TASKS:
            coro.close()
            return False
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return True
