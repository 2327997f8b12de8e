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
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from router.tokens import CLOCK_SKEW_S, ISSUER, MAX_TOKEN_CHARS, TokenRejected, check_times, translate
from scoring import ConfigError

__all__ = ["ALLOWED_ALGORITHMS", "JwksCache", "JwksError", "JwtIssuer", "fetch_https", "parse_jwks"]

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT_S = 5.0

# Which JWK key types can verify which algorithm family; a key of another type is never tried,
# whatever the token's header says.
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class JwksError(Exception):
    """A JWKS could not be fetched or parsed; the message names the source, not key material."""


def fetch_https(url: str) -> bytes:
    """GET an https URL with a timeout and a size cap (blocking)."""
    if not url.startswith("https://"):
        raise JwksError(f"{url}: only https URLs are fetched")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (https only)
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
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
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
            raise ConfigError(f"{where}.issuer", f"'{ISSUER}' is reserved for the router's own tokens", issuer)
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
        if jwks.startswith("http://"):
            raise ConfigError(f"{where}.jwks", "must be an https URL or a file", jwks)
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


def _is_url(source: str) -> bool:
    return source.startswith("https://")


@dataclass
class _Entry:
    keys: PyJWKSet | None
    fetched_at: float  # clock() of the last successful fetch
    tried_at: float  # clock() of the last attempt, successful or not


class JwksCache:
    """Key sets by source, cached for ``ttl_s`` seconds of ``clock`` time."""

    def __init__(
        self,
        ttl_s: float = 300.0,
        *,
        min_refetch_s: float = 30.0,
        max_stale_s: float = 3600.0,
        fetch: Callable[[str], bytes] = fetch_https,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.max_stale_s = max_stale_s
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def _read(self, source: str) -> PyJWKSet:
        raw = self._fetch(source) if _is_url(source) else self._read_file(source)
        return parse_jwks(raw, source)

    @staticmethod
    def _read_file(source: str) -> bytes:
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise JwksError(f"{source}: cannot read ({exc.strerror})") from None

    def _load(self, source: str, force: bool) -> PyJWKSet | None:
        """The key set for ``source``, (re)fetching when stale, or when ``force`` and allowed.

        Held under one lock: concurrent callers wait for one fetch instead of each fetching.
        """
        with self._lock:
            now = self._clock()
            entry = self._entries.get(source)
            if entry is not None:
                age = now - entry.fetched_at
                if entry.keys is not None and age < self.ttl_s and not force:
                    return entry.keys
                if now - entry.tried_at < self.min_refetch_s:
                    # Tried recently (and failed, or a forced re-fetch): don't hammer the source.
                    return entry.keys if age < self.ttl_s + self.max_stale_s else None
            try:
                keys = self._read(source)
            except JwksError:
                if entry is None:
                    self._entries[source] = _Entry(None, float("-inf"), now)
                    return None
                self._entries[source] = _Entry(entry.keys, entry.fetched_at, now)
                # The source is down: keep the last good set for a while (availability), but
                # not forever (a key the provider revoked must stop working eventually).
                return entry.keys if now - entry.fetched_at < self.ttl_s + self.max_stale_s else None
            self._entries[source] = _Entry(keys, now, now)
            return keys

    def is_fresh(self, issuer: JwtIssuer) -> bool:
        """True when ``verify`` for this issuer would not need to fetch."""
        entry = self._entries.get(issuer.jwks)
        return entry is not None and entry.keys is not None and self._clock() - entry.fetched_at < self.ttl_s

    async def refresh(self, issuer: JwtIssuer) -> None:
        """Warm or refresh the issuer's key set in a worker thread (never blocks the loop)."""
        await asyncio.to_thread(self._load, issuer.jwks, False)

    def _candidates(self, keys: PyJWKSet, kid: str | None, alg: str) -> list[PyJWK]:
        kty = _KTY_FOR_ALG_PREFIX.get(alg[:2])
        return [
            key
            for key in keys.keys
            if key.key_type == kty and (kid is None or key.key_id == kid)
        ]

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


_OPTIONS: Mapping[str, Any] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": True,
    "require": ["exp", "aud", "iss"],
}
