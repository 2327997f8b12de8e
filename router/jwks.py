"""Verifying tokens from external identity providers against their JWKS (file or https URL).

Each configured issuer (``JwtIssuer``, re-exported by ``router.auth``) pins its issuer, audience, JWKS source and
asymmetric algorithms. Key sets are cached per source for ``ttl_s``; a token whose ``kid`` is not
in the cached set triggers one early re-fetch (key rotation at the provider), at most once per
``min_refetch_s`` per source, so a flood of made-up ``kid`` values cannot turn into a flood of
fetches. A fetch that fails keeps serving the last good set (if any) and is retried after
``min_refetch_s``.

Fetching a URL blocks; ``verify`` fetches only when the cache is cold or stale. The router warms
the cache off the event loop with ``await cache.refresh(issuer)`` (or checks ``is_fresh`` and
refreshes in a thread before calling ``verify``), so the loop normally never waits on the network.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

import jwt
from jwt import PyJWK, PyJWKSet

from router.tokens import (
    CLOCK_SKEW_S,
    ISSUER,
    MAX_TOKEN_CHARS,
    TokenRejected,
    check_times,
    translate,
)
from scoring import ConfigError

__all__ = ["ALLOWED_ALGORITHMS", "JwksCache", "JwksError", "JwtIssuer", "fetch_https", "parse_jwks"]

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT_S = 5.0

# Which JWK key types can verify which algorithm family; a key of another type is never tried,
# whatever the token's header says.
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class JwksError(Exception):
    """A JWKS could not be fetched or parsed; the message names the source, not key material."""


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to https: a redirect to http would let anyone on the path swap in
    their own keys."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.startswith("https://"):
            raise JwksError(f"{req.full_url}: redirect to a non-https URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_https(url: str) -> bytes:
    """GET an https URL (certificate verified, redirects https-only) with a timeout and a size
    cap. Blocking: call it off the event loop."""
    if not url.startswith("https://"):
        raise JwksError(f"{url}: only https URLs are fetched")
    opener = urllib.request.build_opener(_HttpsOnlyRedirects())
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with opener.open(request, timeout=FETCH_TIMEOUT_S) as response:
            body: bytes = response.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JwksError(f"{url}: fetch failed ({type(exc).__name__})") from exc
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"{url}: larger than {MAX_JWKS_BYTES} bytes")
    return body


def parse_jwks(raw: bytes, source: str) -> PyJWKSet:
    """Parse a JWKS document, keeping only public asymmetric keys."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JwksError(f"{source}: not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"{source}: expected an object with a 'keys' list")
    # Symmetric ("oct") keys have no business in a public key set: drop them so that no HMAC
    # secret can ever come from a JWKS. Private parts ("d") are dropped too.
    public = [
        {k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k")}
        for key in doc["keys"]
        if isinstance(key, dict) and key.get("kty") in ("RSA", "EC", "OKP") and key.get("use", "sig") == "sig"
    ]
    try:
        return PyJWKSet.from_dict({"keys": public})
    except jwt.PyJWTError as exc:
        raise JwksError(f"{source}: no usable keys ({type(exc).__name__})") from None


# Asymmetric only: a JWKS holds public keys, and an HMAC "public key" is no key at all.
ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_ISSUER_FIELDS = ("issuer", "audience", "jwks", "algorithms", "leeway_s")


@dataclass(frozen=True)
class JwtIssuer:
    """An external identity provider an endpoint trusts.

    ``jwks`` is an https URL or an absolute file path (``from_mapping`` resolves relative paths
    against the config file's directory). ``algorithms`` are pinned: a token whose header names
    any other algorithm is refused before a key is even looked up. ``leeway_s`` tolerates clock
    skew on ``exp``/``nbf``/``iat``.
    """

    issuer: str
    audience: str
    jwks: str
    algorithms: tuple[str, ...] = ("RS256",)
    leeway_s: int = CLOCK_SKEW_S

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str, base_dir: Path) -> JwtIssuer:
        """Build from one ``jwt_issuers`` entry; ConfigError names ``{where}.<field>``."""
        if not isinstance(data, Mapping):
            raise ConfigError(where, "must be a mapping", type(data).__name__)
        for key in data:
            if key not in _ISSUER_FIELDS:
                raise ConfigError(f"{where}.{key}", f"unknown field (allowed: {', '.join(_ISSUER_FIELDS)})")
        for name in ("issuer", "audience", "jwks"):
            if name not in data:
                raise ConfigError(f"{where}.{name}", "is required")
            value = data[name]
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.{name}", "must be a non-empty string", value)
        issuer, audience, jwks = str(data["issuer"]), str(data["audience"]), str(data["jwks"])
        if issuer == ISSUER:
            raise ConfigError(
                f"{where}.issuer", f"'{ISSUER}' is reserved for the router's own tokens", issuer
            )
        algorithms = data.get("algorithms", ["RS256"])
        if not isinstance(algorithms, list | tuple) or not algorithms:
            raise ConfigError(f"{where}.algorithms", "must be a non-empty list", algorithms)
        for alg in algorithms:
            if alg not in ALLOWED_ALGORITHMS:
                raise ConfigError(
                    f"{where}.algorithms", f"must be among {', '.join(ALLOWED_ALGORITHMS)}", alg
                )
        leeway = data.get("leeway_s", CLOCK_SKEW_S)
        if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 300:
            raise ConfigError(f"{where}.leeway_s", "must be an integer from 0 to 300", leeway)
        if jwks.startswith("http://") or (_is_url(jwks) and not urllib.parse.urlsplit(jwks).hostname):
            raise ConfigError(f"{where}.jwks", "must be an https URL with a host, or a file", jwks)
        if not _is_url(jwks):
            path = Path(jwks)
            if not path.is_absolute():
                path = Path(base_dir) / path
            try:
                parse_jwks(path.read_bytes(), str(path))
            except OSError as exc:
                raise ConfigError(f"{where}.jwks", f"cannot read file ({exc.strerror})", jwks) from None
            except JwksError as exc:
                raise ConfigError(f"{where}.jwks", str(exc)) from None
            jwks = str(path.resolve())
        return cls(issuer, audience, jwks, tuple(str(a) for a in algorithms), leeway)

    def to_mapping(self) -> dict[str, object]:
        """The config-file form (``from_mapping`` reads it back; ``jwks`` stays absolute)."""
        out: dict[str, object] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "jwks": self.jwks,
            "algorithms": list(self.algorithms),
        }
        if self.leeway_s != CLOCK_SKEW_S:
            out["leeway_s"] = self.leeway_s
        return out


def _is_url(source: str) -> bool:
    return source.startswith("https://")


@dataclass
class _Entry:
    keys: PyJWKSet | None
    fetched_at: float  # clock() of the last successful fetch
    tried_at: float  # clock() of the last attempt, successful or not


class JwksCache:
    """Key sets by source, cached for ``ttl_s`` seconds of ``clock`` time.

    With ``background=True`` (what the router uses) a URL is never fetched on the caller's
    thread: ``verify`` answers from the cache (a stale set within ``max_stale_s`` still counts)
    and starts a fetch in a daemon thread when one is due; a cold cache answers
    ``jwks_unavailable`` until that fetch lands, so warm it at start-up with ``await refresh()``.
    With ``background=False`` (the default; simpler to reason about in tests) the fetch happens
    inline, once, under a lock. Files are always read inline (small and local).
    """

    def __init__(
        self,
        ttl_s: float = 300.0,
        *,
        min_refetch_s: float = 30.0,
        max_stale_s: float = 3600.0,
        fetch: Callable[[str], bytes] = fetch_https,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
    ) -> None:
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.max_stale_s = max_stale_s
        self.background = background
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, threading.Thread] = {}

    def _read(self, source: str) -> PyJWKSet:
        raw = self._fetch(source) if _is_url(source) else self._read_file(source)
        return parse_jwks(raw, source)

    @staticmethod
    def _read_file(source: str) -> bytes:
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise JwksError(f"{source}: cannot read ({exc.strerror})") from None

    def _usable(self, entry: _Entry | None, now: float) -> PyJWKSet | None:
        """The entry's keys unless it is past ``ttl_s + max_stale_s``: a set the source stopped
        confirming keeps working for a while (availability), not forever (revocation)."""
        if entry is None or entry.keys is None or now - entry.fetched_at >= self.ttl_s + self.max_stale_s:
            return None
        return entry.keys

    def _store(self, source: str, keys: PyJWKSet | None, tried_at: float) -> None:
        """Record a fetch attempt (caller holds the lock)."""
        old = self._entries.get(source)
        if keys is not None:
            self._entries[source] = _Entry(keys, tried_at, tried_at)
        else:
            self._entries[source] = _Entry(
                old.keys if old else None, old.fetched_at if old else float("-inf"), tried_at
            )

    def _fetch_in_background(self, source: str) -> None:
        started = self._clock()
        try:
            keys: PyJWKSet | None = self._read(source)
        except JwksError:
            keys = None
        with self._lock:
            self._store(source, keys, started)
            self._inflight.pop(source, None)

    def _load(self, source: str, force: bool, wait: bool = False) -> PyJWKSet | None:
        """The key set for ``source``, (re)fetching when stale, or when ``force`` and allowed.

        A fetch happens at most once per ``min_refetch_s`` per source, whoever asks.
        """
        with self._lock:
            now = self._clock()
            entry = self._entries.get(source)
            if entry is not None:
                fresh = entry.keys is not None and now - entry.fetched_at < self.ttl_s
                if fresh and not force:
                    return entry.keys
                if now - entry.tried_at < self.min_refetch_s or source in self._inflight:
                    return self._usable(entry, now)
            if self.background and not wait and _is_url(source):
                self._store(source, None, now)  # counts as tried: no second thread for a while
                thread = threading.Thread(
                    target=self._fetch_in_background, args=(source,), name="infergate-jwks", daemon=True
                )
                self._inflight[source] = thread
                thread.start()
                return self._usable(entry, now)
            # Inline, under the lock: concurrent callers wait for this one fetch.
            try:
                keys: PyJWKSet | None = self._read(source)
            except JwksError:
                keys = None
            self._store(source, keys, now)
            return keys if keys is not None else self._usable(entry, now)

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for background fetches in flight (tests; shutdown)."""
        for thread in list(self._inflight.values()):
            thread.join(timeout_s)

    def is_fresh(self, issuer: JwtIssuer) -> bool:
        """True when ``verify`` for this issuer would not need to fetch."""
        entry = self._entries.get(issuer.jwks)
        return entry is not None and entry.keys is not None and self._clock() - entry.fetched_at < self.ttl_s

    async def refresh(self, issuer: JwtIssuer) -> None:
        """Warm or refresh the issuer's key set in a worker thread (never blocks the loop)."""
        await asyncio.to_thread(self._load, issuer.jwks, False, True)

    def _candidates(self, keys: PyJWKSet, kid: str | None, alg: str) -> list[PyJWK]:
        kty = _KTY_FOR_ALG_PREFIX.get(alg[:2])
        return [key for key in keys.keys if key.key_type == kty and (kid is None or key.key_id == kid)]

    def verify(self, token: str, issuer: JwtIssuer, now: float) -> dict[str, object]:
        """The verified claims of ``token`` from ``issuer``; raises TokenRejected."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            # Pinned per issuer: "none", HS* (key confusion) and anything unlisted stop here.
            raise TokenRejected("invalid_token")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")
        keys = self._load(issuer.jwks, force=False)
        if keys is None:
            raise TokenRejected("jwks_unavailable")
        candidates = self._candidates(keys, kid, alg)
        if not candidates and kid is not None:
            # Maybe the provider rotated keys since we fetched: one early re-fetch (rate-limited).
            refreshed = self._load(issuer.jwks, force=True)
            if refreshed is not None:
                candidates = self._candidates(refreshed, kid, alg)
        if not candidates:
            raise TokenRejected("invalid_token")
        last: TokenRejected = TokenRejected("invalid_token")
        for key in candidates:
            try:
                claims: dict[str, object] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=issuer.audience,
                    issuer=issuer.issuer,
                    options=_OPTIONS,
                    leeway=0,
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid, several keys may be tried
            except jwt.PyJWTError as exc:
                last = translate(exc)
                break
            except (TypeError, ValueError):
                break  # key and algorithm do not fit together
            check_times(claims, now, issuer.leeway_s)
            return claims
        raise last


# Times are checked by check_times against the caller's clock; PyJWT checks the rest.
_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": True,
    "require": ["exp", "aud", "iss"],
}
