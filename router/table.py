"""The live routing table: the validated config joined with its replica sets, built once per
config change and swapped in whole, so a request reads one consistent table from start to end
(in-flight requests finish on the table they started with)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from router.auth import AuthPolicy
from router.config import EndpointConfig, RouterConfig, VersionConfig
from router.splits import draw_table
from router.upstream import ReplicaSet, UpstreamPool


@dataclass(frozen=True, eq=False)
class VersionRoute:
    """One version as the proxy sees it."""

    endpoint: str
    name: str
    config: VersionConfig
    replicas: ReplicaSet
    name_header: bytes  # the azureml-model-deployment response header value, encoded once

    @property
    def version_type(self) -> str:
        return self.config.version_type

    def inflight(self) -> int:
        return self.replicas.outstanding()

    def utilization(self) -> float:
        return self.replicas.utilization()


@dataclass(frozen=True, eq=False)
class EndpointRoute:
    """One endpoint as the proxy sees it: auth policy, versions, the 100 precomputed draws."""

    config: EndpointConfig
    policy: AuthPolicy
    versions: dict[str, VersionRoute]
    draws: tuple[VersionRoute, ...]
    mirror: VersionRoute | None
    timeout: aiohttp.ClientTimeout
    wait_s: float
    sticky_header: bytes | None

    @property
    def open(self) -> bool:
        return not self.policy.auth_enabled and not self.policy.token_auth_enabled


@dataclass(frozen=True, eq=False)
class RoutingTable:
    config: RouterConfig
    endpoints: dict[str, EndpointRoute]

    def versions(self) -> list[VersionRoute]:
        return [v for e in self.endpoints.values() for v in e.versions.values()]

    def replica_sets(self) -> list[ReplicaSet]:
        return [v.replicas for v in self.versions()]


def policy_for(endpoint: EndpointConfig) -> AuthPolicy:
    return AuthPolicy(
        endpoint=endpoint.name,
        auth_enabled=endpoint.auth_enabled,
        token_auth_enabled=endpoint.token_auth_enabled,
        issuers=endpoint.jwt_issuers,
    )


async def build_table(config: RouterConfig, pool: UpstreamPool) -> RoutingTable:
    endpoints: dict[str, EndpointRoute] = {}
    for ep in config.endpoints:
        versions: dict[str, VersionRoute] = {}
        for v in ep.versions:
            replicas = await pool.replica_set(v.upstreams, ep.replica_max_concurrent_requests)
            versions[v.name] = VersionRoute(ep.name, v.name, v, replicas, v.name.encode("ascii"))
        splits = [(v.name, v.traffic_percentile) for v in ep.versions]
        draws = tuple(versions[name] for name in draw_table(splits, ep.default_version.name))
        endpoints[ep.name] = EndpointRoute(
            config=ep,
            policy=policy_for(ep),
            versions=versions,
            draws=draws,
            mirror=versions[ep.mirror.version] if ep.mirror is not None else None,
            timeout=aiohttp.ClientTimeout(total=ep.scoring_timeout_ms / 1000, sock_connect=5.0),
            wait_s=ep.max_request_wait_time / 1000,
            sticky_header=ep.stickiness_header.encode("latin-1") if ep.stickiness_header else None,
        )
    return RoutingTable(config=config, endpoints=endpoints)
