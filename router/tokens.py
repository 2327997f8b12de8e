"""The router's own access tokens: HS256 JWTs with a per-endpoint secret.

``POST /admin/endpoints/{ep}/token`` answers what AzureML's ``get_token`` answers:
``{"accessToken", "tokenType": "Bearer", "expiryOn", "refreshAfter"}`` (epoch seconds). Claims:
``iss="infergate"``, ``aud=<endpoint>``, ``iat``, ``nbf``, ``exp``, ``jti``. The algorithm is pinned
to HS256 on verification, so ``alg: none`` and RS/HS confusion are refused by construction.

Secrets (64 random bytes per endpoint) live in ``<state_dir>/token-secrets.json`` (0600, atomic):
tokens survive a router restart, and every router replica sharing the state dir accepts them.

Token failures raise TokenRejected with a reason from a fixed vocabulary (a metric label);
neither the token nor the secret is ever part of a message. Times are checked here against the
caller's ``now`` (not PyJWT's own clock) so that verification is a pure function of its inputs.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import jwt

from router.state_files import (
    StateFileError,
    atomic_write,
    ensure_private_dir,
    exclusive,
    read_json,
    remove_stale_temps,
)

__all__ = [
    "CLOCK_SKEW_S",
    "ISSUER",
    "MAX_TOKEN_CHARS",
    "TokenRejected",
    "TokenService",
    "check_times",
    "unverified_issuer",
]

ISSUER = "infergate"
ALGORITHM = "HS256"
SECRETS_FILE = "token-secrets.json"
# Tolerated clock difference between router replicas (and identity providers) for exp/nbf/iat.
CLOCK_SKEW_S = 30
# A JWT longer than this is refused before it is parsed (a cheap bound on the work an
# unauthenticated client can make us do); real tokens are a few hundred bytes to a few KiB.
MAX_TOKEN_CHARS = 8192


class TokenRejected(Exception):
    """A token did not verify. ``reason`` is one of: ``too_large``, ``malformed``,
    ``invalid_token`` (signature, algorithm, key, missing claims), ``expired``,
    ``not_yet_valid``, ``wrong_audience``, ``wrong_issuer``, ``jwks_unavailable``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("invalid_token")
    return float(value)


def check_times(claims: Mapping[str, Any], now: float, leeway_s: float = CLOCK_SKEW_S) -> None:
    """Check ``exp`` (required), ``nbf`` and ``iat`` (optional) against ``now`` with ``leeway_s``."""
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRejected("invalid_token")
    if now >= exp + leeway_s:
        raise TokenRejected("expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway_s < nbf:
        raise TokenRejected("not_yet_valid")
    iat = _number(claims, "iat")
    if iat is not None and now + leeway_s < iat:
        raise TokenRejected("not_yet_valid")


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim read WITHOUT verifying anything, used only to pick which verifier (with
    its own pinned algorithms and keys) gets the token. Raises TokenRejected("malformed")."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected("too_large")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRejected("malformed") from None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def translate(exc: jwt.PyJWTError) -> TokenRejected:
    """Map a PyJWT error to a reason. No chaining by callers: PyJWT messages may quote input."""
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenRejected("wrong_audience")
    if isinstance(exc, jwt.InvalidIssuerError):
        return TokenRejected("wrong_issuer")
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenRejected("expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return TokenRejected("not_yet_valid")
    if isinstance(exc, jwt.DecodeError) and not isinstance(exc, jwt.InvalidSignatureError):
        return TokenRejected("malformed")
    return TokenRejected("invalid_token")


# Times are checked by check_times against the caller's clock; PyJWT checks the rest.
# Typed Any: PyJWT's own ``Options`` TypedDict only exists in recent releases.
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": True,
    "require": ["exp", "iat", "aud", "iss"],
}


class TokenService:
    """Issues and verifies the router's HS256 tokens, one secret per endpoint."""

    def __init__(self, state_dir: Path, ttl_s: int = 3600) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s: must be > 0, got {ttl_s}")
        self._dir = Path(state_dir)
        self._path = self._dir / SECRETS_FILE
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        if self._dir.is_dir():
            remove_stale_temps(self._path)
        self._secrets: dict[str, bytes] = self._load()

    def reload(self) -> None:
        """Re-read the secrets file (e.g. on SIGHUP, or after another process changed it)."""
        with self._lock:
            self._secrets = self._load()

    def _exclusive(self) -> AbstractContextManager[None]:
        ensure_private_dir(self._dir)
        return exclusive(self._path)

    def _load(self) -> dict[str, bytes]:
        data = read_json(self._path)
        if data is None:
            return {}
        endpoints = data.get("endpoints") if isinstance(data, dict) else None
        if not isinstance(endpoints, dict):
            raise StateFileError(f"{self._path}: expected an object with 'endpoints'")
        table: dict[str, bytes] = {}
        for name, encoded in endpoints.items():
            try:
                secret = base64.urlsafe_b64decode(encoded.encode("ascii"))
            except (AttributeError, ValueError):
                raise StateFileError(f"{self._path}: endpoint '{name}' has an invalid secret") from None
            if len(secret) < 32:
                raise StateFileError(f"{self._path}: endpoint '{name}' has a secret shorter than 32 bytes")
            table[name] = secret
        return table

    def _save(self, table: Mapping[str, bytes]) -> None:
        doc = {
            "version": 1,
            "endpoints": {
                name: base64.urlsafe_b64encode(secret).decode("ascii")
                for name, secret in sorted(table.items())
            },
        }
        atomic_write(self._path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)

    def _secret(self, endpoint: str, create: bool) -> bytes | None:
        secret = self._secrets.get(endpoint)
        if secret is not None or not create:
            return secret
        with self._lock, self._exclusive():
            table = self._load()
            secret = table.get(endpoint)  # another process may have made it meanwhile
            if secret is None:
                secret = secrets.token_bytes(64)
                table[endpoint] = secret
                self._save(table)
            self._secrets = table
            return secret

    def ensure(self, endpoint: str) -> None:
        """Make the endpoint's secret now (at start-up), so that every router process sharing
        the state dir verifies tokens any of them issues."""
        self._secret(endpoint, create=True)

    def issue(self, endpoint: str, now: float) -> dict[str, object]:
        """A fresh token for ``endpoint``: ``{"accessToken", "tokenType", "expiryOn", "refreshAfter"}``.

        ``refreshAfter`` is halfway through the lifetime, so a client refreshing then never holds
        an expired token even with some clock skew.
        """
        secret = self._secret(endpoint, create=True)
        assert secret is not None
        iat = int(now)
        exp = iat + self.ttl_s
        claims = {
            "iss": ISSUER,
            "aud": endpoint,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, secret, algorithm=ALGORITHM)
        return {
            "accessToken": token,
            "tokenType": "Bearer",
            "expiryOn": exp,
            "refreshAfter": iat + self.ttl_s // 2,
        }

    def verify(self, token: str, endpoint: str, now: float) -> dict[str, object]:
        """The verified claims of ``token`` for ``endpoint``; raises TokenRejected."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("too_large")
        secret = self._secret(endpoint, create=False)
        if secret is None:
            # No token was ever issued for this endpoint: nothing can verify.
            raise TokenRejected("invalid_token")
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=endpoint,
                issuer=ISSUER,
                options=_DECODE_OPTIONS,
            )
        except jwt.PyJWTError as exc:
            raise translate(exc) from None
        check_times(claims, now)
        return claims

    def remove(self, endpoint: str) -> None:
        """Forget the endpoint's secret: every token issued for it stops verifying."""
        with self._lock, self._exclusive():
            table = self._load()
            if table.pop(endpoint, None) is not None:
                self._save(table)
            self._secrets = table

    def rotate(self, endpoint: str) -> None:
        """Replace the endpoint's secret: every token issued so far stops verifying."""
        with self._lock, self._exclusive():
            table = self._load()
            table[endpoint] = secrets.token_bytes(64)
            self._save(table)
            self._secrets = table
