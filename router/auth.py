"""Who is calling: ``Authorization: Bearer <key-or-jwt>`` -> Principal, or AuthFailed.

Checked before any byte of the request goes upstream. One endpoint's policy says which
credentials it takes:

- ``auth_enabled``: the endpoint's primary or secondary key (compared in constant time, always
  against both keys);
- ``token_auth_enabled``: a JWT, either the router's own (HS256, per-endpoint secret, ``aud`` =
  endpoint, issued by the admin API) or one from a configured external issuer (its JWKS, its
  pinned asymmetric algorithms, its ``iss`` and ``aud``);
- both: either credential; neither: an open endpoint (anonymous principal).

Which JWT verifier gets a token is chosen by its unverified ``iss`` claim. That is safe: each
verifier pins its own algorithms and keys, so a forged ``iss`` only picks who rejects the token.

``AuthFailed.reason`` is a small fixed vocabulary (``AUTH_FAILURE_REASONS``), used as the
``reason`` label of ``infergate_router_auth_failures_total``; the credential itself never appears
in a message, a repr or a chained exception.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from router.jwks import ALLOWED_ALGORITHMS, JwksCache, JwtIssuer
from router.keys import KeyStore, UnknownEndpoint
from router.tokens import (
    ISSUER,
    MAX_TOKEN_CHARS,
    TokenRejected,
    TokenService,
    unverified_issuer,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AUTH_FAILURE_REASONS",
    "MAX_AUTHORIZATION_CHARS",
    "AuthFailed",
    "AuthPolicy",
    "Authenticator",
    "JwtIssuer",
    "Principal",
    "admin_authorized",
]

# Longer Authorization headers are refused before any parsing (the JWT cap plus "Bearer ").
MAX_AUTHORIZATION_CHARS = MAX_TOKEN_CHARS + 16

AUTH_FAILURE_REASONS: tuple[str, ...] = (
    "missing",  # no Authorization header, or an empty one
    "malformed",  # not "Bearer <credential>", or a credential that cannot be a key or a JWT
    "too_large",  # header longer than MAX_AUTHORIZATION_CHARS
    "invalid_key",  # not one of the endpoint's keys
    "invalid_token",  # bad signature, algorithm not allowed, unknown key, missing claims
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",  # a JWT from an issuer this endpoint does not trust
    "jwks_unavailable",  # the issuer's key set could not be fetched
)


class AuthFailed(Exception):
    """The request is not authenticated (401 with ``WWW-Authenticate: Bearer``).

    ``reason`` is one of AUTH_FAILURE_REASONS; the message is the reason and nothing else.
    """

    def __init__(self, reason: str) -> None:
        if reason not in AUTH_FAILURE_REASONS:
            # A programming error; the bad value is not echoed (it might be a credential).
            raise ValueError("AuthFailed: reason must be one of AUTH_FAILURE_REASONS")
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuthPolicy:
    """What one endpoint accepts. Both flags false: an open endpoint."""

    endpoint: str
    auth_enabled: bool
    token_auth_enabled: bool
    issuers: tuple[JwtIssuer, ...] = ()


@dataclass(frozen=True)
class Principal:
    """Who a request was authenticated as.

    ``subject``: ``"primary"``/``"secondary"`` for keys, the JWT's ``sub`` claim (if a string) for
    tokens, None for anonymous requests.
    """

    endpoint: str
    kind: Literal["key", "token", "anonymous"]
    subject: str | None = None


def _is_visible_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2


def _parse_bearer(authorization: str | None) -> str:
    """The credential of ``Bearer <credential>``; AuthFailed otherwise."""
    if authorization is None:
        raise AuthFailed("missing")
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise AuthFailed("too_large")
    if not authorization.strip():
        raise AuthFailed("missing")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    # RFC 7235: the scheme is case-insensitive.
    if scheme.lower() != "bearer" or not credential or not _is_visible_ascii(credential):
        raise AuthFailed("malformed")
    return credential


class Authenticator:
    """Verifies credentials against an endpoint's policy. Pure apart from the stores it reads
    (and a JWKS fetch when an issuer's cache is cold; see ``router.jwks``)."""

    def __init__(self, keys: KeyStore, tokens: TokenService, jwks: JwksCache) -> None:
        self._keys = keys
        self._tokens = tokens
        self._jwks = jwks

    def verify(self, authorization: str | None, policy: AuthPolicy, now: float) -> Principal:
        """The principal for this ``Authorization`` header value; raises AuthFailed.

        ``now`` is epoch seconds (``time.time()``), used for ``exp``/``nbf``/``iat``.
        """
        if not policy.auth_enabled and not policy.token_auth_enabled:
            return Principal(policy.endpoint, "anonymous")
        credential = _parse_bearer(authorization)
        if policy.auth_enabled:
            try:
                which = self._keys.get(policy.endpoint).which(credential)
            except UnknownEndpoint:
                which = None  # no keys stored: fail closed
            if which is not None:
                return Principal(policy.endpoint, "key", which)
            if not policy.token_auth_enabled or not _looks_like_jwt(credential):
                raise AuthFailed("invalid_key")
        elif not _looks_like_jwt(credential):
            raise AuthFailed("malformed")
        try:
            claims = self._verify_token(credential, policy, now)
        except TokenRejected as exc:
            raise AuthFailed(exc.reason) from None
        sub = claims.get("sub")
        return Principal(policy.endpoint, "token", sub if isinstance(sub, str) else None)

    def _verify_token(self, token: str, policy: AuthPolicy, now: float) -> dict[str, object]:
        iss = unverified_issuer(token)
        if iss == ISSUER:
            return self._tokens.verify(token, policy.endpoint, now)
        # Several entries may share an issuer (one per accepted audience): the first that
        # verifies wins; if none does, the first one's reason is reported.
        first: TokenRejected | None = None
        for issuer in policy.issuers:
            if iss == issuer.issuer:
                try:
                    return self._jwks.verify(token, issuer, now)
                except TokenRejected as exc:
                    first = first or exc
        raise first or TokenRejected("wrong_issuer")

    def external_issuers_fresh(self, policy: AuthPolicy) -> bool:
        """True when verifying for ``policy`` needs no JWKS fetch (see ``JwksCache.refresh``)."""
        return all(self._jwks.is_fresh(issuer) for issuer in policy.issuers)

    async def refresh_issuers(self, policy: AuthPolicy) -> None:
        """Fetch stale external key sets in worker threads, off the event loop."""
        for issuer in policy.issuers:
            if not self._jwks.is_fresh(issuer):
                await self._jwks.refresh(issuer)


def admin_authorized(authorization: str | None, admin_token: str) -> bool:
    """True if ``authorization`` is ``Bearer <admin_token>`` (constant-time comparison).

    Data-plane keys and tokens are different secrets, so they never pass here.
    """
    try:
        credential = _parse_bearer(authorization)
    except AuthFailed:
        return False
    return hmac.compare_digest(credential.encode(), admin_token.encode())
