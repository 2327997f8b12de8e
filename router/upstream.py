"""The proxy's way to the scoring replicas: one pooled keep-alive client, balancing, ejection.

- One ``aiohttp.ClientSession`` per process (created in ``start``, on the serving loop) with
  explicit connection limits and timeouts; aiohttp rather than httpx because it was measured
  to proxy several times faster on loopback (numbers in docs/router.md).
- A version's replicas form a ``ReplicaSet``; a request goes to the healthy replica with the
  fewest outstanding requests, at most ``replica_max_concurrent_requests`` per replica; a
  request waits at most ``max_request_wait_time`` for a free slot, then ``ReplicaBusy`` (503).
- An upstream given by DNS name becomes one replica per address it resolves to (a headless
  Kubernetes Service), re-resolved every ``dns_refresh_s``.
- A replica that refuses a connection or fails a readiness check (``GET /v2/health/ready``
  every ``health_check_interval_s``, and at once after a request to it timed out: a draining
  replica answers 503 while it still serves, a hung one not at all) is ejected and re-probed
  until it answers 200. Checks and probes have a session of their own: on the data path's
  they waited behind proxied requests for a connection when the pool was full, and ejected
  replicas that were busy, not down.
- Retries, once, on another replica when available: a request that could not connect, and a
  request whose connection broke before any response byte came back (a stale keep-alive
  connection, a replica killed mid-request) when its body can be sent again (bytes, or a
  stream never read). Scoring is idempotent, so a replayed request is safe; a timeout is not
  retried (the client has waited the whole ``scoring_timeout_ms`` already).
- aiohttp's errors are translated here, chained ``from exc``: connect failures ->
  ``UpstreamUnavailable`` (502) or ``NoHealthyReplica`` (503), timeouts -> ``UpstreamTimeout``
  (504). Upstream 4xx/5xx are responses, passed through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from router.errors import NoHealthyReplica, ReplicaBusy, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("infergate.router.upstream")

# RFC 9110 section 7.6.1 hop-by-hop headers, plus those the client library sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
HEALTH_PATH = "/v2/health/ready"

Resolver = Callable[[str, int], Awaitable[list[str]]]
Body = bytes | AsyncIterator[bytes] | None


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), deduplicated, in resolver order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True)
class ClientLimits:
    """Explicit limits of the pooled client (aiohttp's defaults are 100 connections, 5 min)."""

    max_connections: int = 1024
    keepalive_s: float = 30.0
    connect_timeout_s: float = 5.0
    probe_interval_s: float = 0.5
    probe_max_interval_s: float = 5.0
    dns_refresh_s: float = 30.0
    # Readiness of healthy replicas, checked in the background: a draining replica (SIGTERM,
    # readiness 503 for its drain delay) leaves the rotation before its socket closes.
    health_check_interval_s: float = 1.0
    health_check_timeout_s: float = 2.0


class Replica:
    """One scoring replica: its base URL, outstanding requests and health."""

    __slots__ = ("url", "host_header", "outstanding", "healthy", "probe")

    def __init__(self, url: str, host_header: str | None) -> None:
        self.url = url
        self.host_header = host_header  # the DNS name, when the URL holds a resolved address
        self.outstanding = 0
        self.healthy = True
        self.probe: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Replica({self.url}, outstanding={self.outstanding}, healthy={self.healthy})"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ReplicaSet:
    """The replicas behind one version, with least-outstanding choice and a bounded wait."""

    def __init__(self, upstreams: Iterable[str], limit: int) -> None:
        self.upstreams = tuple(upstreams)
        self.limit = limit  # replica_max_concurrent_requests; updated on table swaps
        self.replicas: list[Replica] = []
        self.waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._next = 0  # rotates ties so that light load still spreads across replicas
        self.needs_dns = False
        for upstream in self.upstreams:
            host = urlsplit(upstream).hostname or ""
            if _is_ip(host) or host == "localhost":
                # "localhost" is kept as a name: resolving it would add ::1, where servers
                # bound to 127.0.0.1 refuse.
                self.replicas.append(Replica(upstream, None))
            else:
                self.needs_dns = True

    # -- addresses --------------------------------------------------------------------------

    async def refresh(self, resolver: Resolver) -> None:
        """Re-resolve DNS names; keeps the state of replicas whose address stays."""
        if not self.needs_dns:
            return
        current = {r.url: r for r in self.replicas}
        fresh: list[Replica] = []
        for upstream in self.upstreams:
            parts = urlsplit(upstream)
            host = parts.hostname or ""
            if _is_ip(host) or host == "localhost":
                fresh.append(current.get(upstream) or Replica(upstream, None))
                continue
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                addresses = await resolver(host, port)
            except OSError as exc:
                log.warning("cannot resolve upstream %s: %s", upstream, exc)
                # Keep what we had for this name rather than dropping live replicas.
                fresh += [r for r in self.replicas if r.host_header == parts.netloc]
                continue
            for address in addresses:
                shown = f"[{address}]" if ":" in address else address
                url = f"{parts.scheme}://{shown}:{port}{parts.path}"
                fresh.append(current.get(url) or Replica(url, parts.netloc))
        for gone in set(current) - {r.url for r in fresh}:
            probe = current[gone].probe
            if probe is not None:
                probe.cancel()
        self.replicas = fresh
        self._wake()

    # -- slots ------------------------------------------------------------------------------

    def healthy_count(self) -> int:
        return sum(1 for r in self.replicas if r.healthy)

    def outstanding(self) -> int:
        return sum(r.outstanding for r in self.replicas)

    def utilization(self) -> float:
        """(in flight + waiting) / (healthy replicas x slots per replica): the autoscaling signal."""
        capacity = self.healthy_count() * self.limit
        demand = self.outstanding() + self.waiting
        if capacity == 0:
            return 1.0 if demand else 0.0
        return demand / capacity

    def _pick(self, exclude: Replica | None) -> Replica | None:
        best: Replica | None = None
        replicas = self.replicas
        n = len(replicas)
        start = self._next
        for i in range(n):
            r = replicas[(start + i) % n]
            if not r.healthy or r is exclude or r.outstanding >= self.limit:
                continue
            if best is None or r.outstanding < best.outstanding:
                best = r
        if best is not None:
            self._next = (start + 1) % n
        return best

    async def acquire(self, wait_s: float, exclude: Replica | None = None) -> Replica:
        """Take a slot on the least busy healthy replica, waiting at most ``wait_s``."""
        replica = self._pick(exclude)
        if replica is not None:
            replica.outstanding += 1
            return replica
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self.waiting += 1
        try:
            while True:
                if not any(r.healthy and r is not exclude for r in self.replicas):
                    raise NoHealthyReplica(
                        "no healthy replica for this version", retry_after_s=max(1.0, wait_s)
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ReplicaBusy(
                        f"every replica is at replica_max_concurrent_requests ({self.limit}) "
                        f"after waiting max_request_wait_time ({round(wait_s * 1000)} ms)",
                        retry_after_s=1.0,
                    )
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    pass
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                replica = self._pick(exclude)
                if replica is not None:
                    replica.outstanding += 1
                    return replica
        finally:
            self.waiting -= 1

    def release(self, replica: Replica) -> None:
        replica.outstanding -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        for r in self.replicas:
            if r.probe is not None:
                r.probe.cancel()


class UpstreamResponse:
    """An upstream answer: status, filtered headers, and the body as it arrives."""

    __slots__ = ("status", "headers", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        raw = response.raw_headers
        dropped = HOP_BY_HOP
        if "Connection" in response.headers:  # case-insensitive
            dropped = HOP_BY_HOP | _connection_tokens(raw)
        self.headers = [(k.lower(), v) for k, v in raw if k.lower() not in dropped]

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc) from exc


def _connection_tokens(raw: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers named by ``Connection:`` are hop-by-hop too."""
    tokens: set[bytes] = set()
    for k, v in raw:
        if k.lower() == b"connection":
            tokens.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(tokens)


def filter_request_headers(raw: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """The client's headers (lower-case names, as ASGI gives them) minus hop-by-hop ones,
    ``Host`` and whatever ``drop`` names."""
    dropped = HOP_BY_HOP | drop | {b"host"}
    if any(k == b"connection" for k, _ in raw):
        dropped |= _connection_tokens(raw)
    return [(k, v) for k, v in raw if k not in dropped]


def _translate(exc: BaseException) -> Exception:
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout("the upstream did not answer within scoring_timeout_ms")
    return UpstreamUnavailable(f"upstream connection failed: {type(exc).__name__}")


class UpstreamPool:
    """The process's one pooled client and the replica sets that share it."""

    def __init__(self, limits: ClientLimits | None = None, resolver: Resolver = resolve_host) -> None:
        self.limits = limits or ClientLimits()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._health_session: aiohttp.ClientSession | None = None
        self._sets: dict[tuple[str, ...], ReplicaSet] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dns_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self.on_eject: Callable[[Replica], None] | None = None

    async def start(self) -> None:
        limits = self.limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_s,
            enable_cleanup_closed=False,
            ttl_dns_cache=max(1, int(limits.dns_refresh_s)),
        )
        self._session = _client_session(
            connector,
            # Bodies pass through byte for byte (gzip stays gzip).
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=limits.connect_timeout_s),
        )
        # Readiness checks and probes never wait for a connection behind proxied requests.
        # No limit of its own: at most one periodic check per replica at a time, plus one
        # per request that timed out, each bounded by its timeout.
        self._health_session = _client_session(
            aiohttp.TCPConnector(
                limit=0, keepalive_timeout=limits.keepalive_s, ttl_dns_cache=max(1, int(limits.dns_refresh_s))
            )
        )
        self._dns_task = asyncio.create_task(self._refresh_dns_forever())
        if limits.health_check_interval_s > 0:
            self._health_task = asyncio.create_task(self._check_health_forever())

    async def close(self) -> None:
        for background in (self._dns_task, self._health_task):
            if background is not None:
                background.cancel()
        for replica_set in self._sets.values():
            replica_set.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(t for t in (self._dns_task, self._health_task) if t is not None), return_exceptions=True)
        for session in (self._session, self._health_session):
            if session is not None:
                await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamPool.start() was not awaited")
        return self._session

    @property
    def health_session(self) -> aiohttp.ClientSession:
        """The readiness checks' own client (see the module docstring)."""
        if self._health_session is None:
            raise RuntimeError("UpstreamPool.start() was not awaited")
        return self._health_session

    # -- replica sets -----------------------------------------------------------------------

    async def replica_set(self, upstreams: tuple[str, ...], limit: int) -> ReplicaSet:
        """The set for these upstreams, shared across table swaps so health and counts carry over."""
        replica_set = self._sets.get(upstreams)
        if replica_set is None:
            replica_set = ReplicaSet(upstreams, limit)
            await replica_set.refresh(self._resolver)
            self._sets[upstreams] = replica_set
        replica_set.limit = limit
        return replica_set

    def retain_only(self, keep: Iterable[ReplicaSet]) -> None:
        """Forget sets no table uses any more (in-flight requests still hold their own)."""
        wanted = {id(s) for s in keep}
        for key, replica_set in list(self._sets.items()):
            if id(replica_set) not in wanted:
                replica_set.close()
                del self._sets[key]

    async def _refresh_dns_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.dns_refresh_s)
            for replica_set in list(self._sets.values()):
                await replica_set.refresh(self._resolver)

    async def _check_health_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.health_check_interval_s)
            checks = [
                self._check_health(replica_set, replica)
                for replica_set in list(self._sets.values())
                for replica in replica_set.replicas
                if replica.healthy
            ]
            await asyncio.gather(*checks)

    async def _readiness(self, replica: Replica, timeout: aiohttp.ClientTimeout) -> int:
        """The status of the replica's readiness route; raises aiohttp.ClientError or TimeoutError."""
        headers = {"Host": replica.host_header} if replica.host_header else None
        async with self.health_session.get(replica.url + HEALTH_PATH, timeout=timeout, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def _check_health(self, replica_set: ReplicaSet, replica: Replica) -> None:
        try:
            status = await self._readiness(replica, aiohttp.ClientTimeout(total=self.limits.health_check_timeout_s))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.eject(replica_set, replica, f"readiness check failed ({type(exc).__name__})")
            return
        if status != 200:
            self.eject(replica_set, replica, f"readiness answered {status}")

    # -- ejection ---------------------------------------------------------------------------

    def eject(self, replica_set: ReplicaSet, replica: Replica, reason: str = "refused a connection") -> None:
        if not replica.healthy:
            return
        replica.healthy = False
        log.warning("replica ejected: %s %s; probing %s", replica.url, reason, HEALTH_PATH)
        if self.on_eject is not None:
            self.on_eject(replica)
        # Waiters may now have no healthy replica at all: let them see it.
        replica_set._wake_all()
        replica.probe = asyncio.create_task(self._probe(replica_set, replica))
        self._tasks.add(replica.probe)
        replica.probe.add_done_callback(self._tasks.discard)

    async def _probe(self, replica_set: ReplicaSet, replica: Replica) -> None:
        interval = self.limits.probe_interval_s
        timeout = aiohttp.ClientTimeout(total=max(1.0, interval * 2))
        while not replica.healthy:
            await asyncio.sleep(interval)
            try:
                status = await self._readiness(replica, timeout)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 200:
                replica.healthy = True
                log.info("replica back: %s", replica.url)
                replica_set._wake()
                break
            interval = min(interval * 2, self.limits.probe_max_interval_s)
        replica.probe = None

    # -- requests ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def request(
        self,
        replica_set: ReplicaSet,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        timeout: aiohttp.ClientTimeout,
        wait_s: float,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send one request to the version's least busy replica and yield its response.

        The replica's slot is held until the caller leaves the block (the body streamed).
        ``body`` bytes may be retried on another replica after a connect failure; a stream may
        be retried only if it was never read from.
        """
        session = self.session
        stream = _TrackedStream(body) if body is not None and not isinstance(body, bytes) else None
        data: object = stream if stream is not None else body
        str_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        replica = await replica_set.acquire(wait_s)
        tried: Replica | None = None
        try:
            while True:
                hdrs = str_headers
                if replica.host_header is not None:
                    hdrs = [*str_headers, ("Host", replica.host_header)]
                try:
                    response = await session.request(
                        method,
                        replica.url + path,
                        headers=hdrs,
                        data=data,
                        timeout=timeout,
                        allow_redirects=False,
                        compress=None,
                    )
                except aiohttp.ClientConnectorError as exc:
                    self.eject(replica_set, replica)
                    retryable = stream is None or not stream.started
                    if tried is not None or not retryable:
                        raise UpstreamUnavailable(f"cannot connect to a replica: {exc.os_error}") from exc
                    tried = replica
                    replica_set.release(replica)
                    replica = None  # type: ignore[assignment]
                    try:
                        replica = await replica_set.acquire(wait_s, exclude=tried)
                    except NoHealthyReplica as busy:
                        raise NoHealthyReplica(busy.message, busy.retry_after_s) from exc
                    continue
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientConnectionResetError) as exc:
                    # The connection broke before any response byte: a stale keep-alive
                    # connection, or the replica died holding the request. Replay it once,
                    # elsewhere when there is an elsewhere (scoring is idempotent).
                    retryable = isinstance(body, bytes) or body is None or (stream is not None and not stream.started)
                    if tried is not None or not retryable:
                        raise _translate(exc) from exc
                    tried = replica
                    replica_set.release(replica)
                    replica = None  # type: ignore[assignment]
                    # The only healthy replica may take it again, on a fresh connection.
                    exclude = tried if replica_set.healthy_count() > 1 else None
                    try:
                        replica = await replica_set.acquire(wait_s, exclude=exclude)
                    except NoHealthyReplica as busy:
                        raise NoHealthyReplica(busy.message, busy.retry_after_s) from exc
                    continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)) and replica.healthy:
                        # One slow answer is not a dead replica, a hung one (SIGSTOP, stuck
                        # loop) is: check its readiness now, ejecting it if that fails too.
                        check = asyncio.create_task(self._check_health(replica_set, replica))
                        self._tasks.add(check)
                        check.add_done_callback(self._tasks.discard)
                    raise _translate(exc) from exc
                break
            try:
                yield UpstreamResponse(response)
            finally:
                response.release()
        finally:
            if replica is not None:
                replica_set.release(replica)


def _client_session(connector: aiohttp.BaseConnector, **options: Any) -> aiohttp.ClientSession:
    """A session that adds no headers of its own and keeps no cookies (a proxy's client)."""
    return aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
        **options,
    )


class _TrackedStream:
    """An async body stream that remembers whether the client library began reading it."""

    __slots__ = ("_source", "started")

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self.started = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self._source:
            yield chunk
