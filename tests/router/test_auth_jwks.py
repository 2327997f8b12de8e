"""External identity providers: JwtIssuer config, JWKS from a file or an https URL (fetch faked,
no network), the cache's TTL on an injected clock, and every token that must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from router.jwks import JwksCache, JwtIssuer
from router.tokens import TokenRejected
from scoring import ConfigError

NOW = 1_800_000_000.0
ISS = "https://login.example.com/tenant/"
AUD = "api://myservice"
URL = "https://login.example.com/tenant/discovery/keys"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(public: Any, kid: str) -> dict[str, Any]:
    algo = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    jwk: dict[str, Any] = algo.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def _jwks(*entries: tuple[Any, str]) -> bytes:
    return json.dumps({"keys": [_jwk(key.public_key(), kid) for key, kid in entries]}).encode()


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_bytes(_jwks((rsa_key, "rsa-1"), (ec_key, "ec-1")))
    return path


@pytest.fixture
def issuer(jwks_file: Path) -> JwtIssuer:
    return JwtIssuer(ISS, AUD, str(jwks_file), ("RS256", "ES256"))


def _claims(**over: Any) -> dict[str, Any]:
    return {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        **over,
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _reason(cache: JwksCache, token: str, issuer: JwtIssuer, now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        cache.verify(token, issuer, now)
    assert str(info.value) == info.value.reason
    return info.value.reason


# --- JwtIssuer.from_mapping -------------------------------------------------------------


def test_from_mapping_resolves_relative_file(tmp_path: Path, jwks_file: Path) -> None:
    got = JwtIssuer.from_mapping(
        {"issuer": ISS, "audience": AUD, "jwks": "jwks.json", "algorithms": ["RS256"]},
        "endpoints[0].jwt_issuers[0]",
        tmp_path,
    )
    assert got == JwtIssuer(ISS, AUD, str(jwks_file.resolve()), ("RS256",))


def test_from_mapping_url_and_defaults(tmp_path: Path) -> None:
    got = JwtIssuer.from_mapping({"issuer": ISS, "audience": AUD, "jwks": URL}, "w", tmp_path)
    assert got.jwks == URL and got.algorithms == ("RS256",) and got.leeway_s == 30


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"algorithms": ["none"]}, "w.algorithms"),
        ({"algorithms": ["HS256"]}, "w.algorithms"),
        ({"algorithms": ["RS256", "HS512"]}, "w.algorithms"),
        ({"algorithms": []}, "w.algorithms"),
        ({"algorithms": "RS256"}, "w.algorithms"),
        ({"jwks": "http://login.example.com/keys"}, "w.jwks"),
        ({"jwks": "https:///keys"}, "w.jwks"),
        ({"jwks": "missing.json"}, "w.jwks"),
        ({"jwks": "bad.json"}, "w.jwks"),
        ({"issuer": ""}, "w.issuer"),
        ({"issuer": "infergate"}, "w.issuer"),
        ({"audience": 5}, "w.audience"),
        ({"leeway_s": -1}, "w.leeway_s"),
        ({"surprise": 1}, "w.surprise"),
    ],
)
def test_from_mapping_errors_name_the_field(
    tmp_path: Path, jwks_file: Path, change: dict[str, Any], field: str
) -> None:
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    data = {"issuer": ISS, "audience": AUD, "jwks": "jwks.json", "algorithms": ["RS256"], **change}
    with pytest.raises(ConfigError) as info:
        JwtIssuer.from_mapping(data, "w", tmp_path)
    assert info.value.field == field


def test_to_mapping_round_trips(tmp_path: Path, jwks_file: Path) -> None:
    data = {"issuer": ISS, "audience": AUD, "jwks": "jwks.json", "algorithms": ["ES256"], "leeway_s": 5}
    got = JwtIssuer.from_mapping(data, "w", tmp_path)
    assert JwtIssuer.from_mapping(got.to_mapping(), "w", Path("/elsewhere")) == got
    assert "leeway_s" not in JwtIssuer(ISS, AUD, URL).to_mapping()


def test_from_mapping_missing_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        JwtIssuer.from_mapping({"issuer": ISS, "jwks": URL}, "w", tmp_path)
    assert info.value.field == "w.audience"


# --- verification ---------------------------------------------------------------------------


def test_rs256_and_es256_accepted(
    issuer: JwtIssuer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    cache = JwksCache()
    rs = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert cache.verify(rs, issuer, NOW)["sub"] == "user-1"
    assert cache.verify(es, issuer, NOW)["sub"] == "user-1"
    no_kid = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert cache.verify(no_kid, issuer, NOW)["sub"] == "user-1"
    aud_list = jwt.encode(_claims(aud=["other", AUD]), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert cache.verify(aud_list, issuer, NOW)["sub"] == "user-1"


def test_algorithm_not_pinned_for_issuer_refused(jwks_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    rs_only = JwtIssuer(ISS, AUD, str(jwks_file), ("RS256",))
    es = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert _reason(JwksCache(), es, rs_only) == "invalid_token"


def test_alg_none_refused(issuer: JwtIssuer) -> None:
    head = _b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    assert _reason(JwksCache(), f"{head}.{body}.", issuer) == "invalid_token"


def test_hs256_signed_with_rsa_public_key_refused(issuer: JwtIssuer, rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic key-confusion attack: HMAC keyed with the public key the verifier holds."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{_b64(sig)}"
    assert _reason(JwksCache(), token, issuer) == "invalid_token"
    # Even an issuer misconfigured to list an HMAC algorithm could not be built.
    with pytest.raises(ConfigError):
        JwtIssuer.from_mapping(
            {"issuer": ISS, "audience": AUD, "jwks": URL, "algorithms": ["HS256"]}, "w", Path(".")
        )


def test_bad_signature_refused(issuer: JwtIssuer, rsa_key2: rsa.RSAPrivateKey) -> None:
    forged = jwt.encode(_claims(), rsa_key2, algorithm="RS256", headers={"kid": "rsa-1"})
    assert _reason(JwksCache(), forged, issuer) == "invalid_token"
    forged_no_kid = jwt.encode(_claims(), rsa_key2, algorithm="RS256")
    assert _reason(JwksCache(), forged_no_kid, issuer) == "invalid_token"


def test_tampered_payload_refused(issuer: JwtIssuer, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    head, _, sig = token.split(".")
    body = _b64(json.dumps(_claims(sub="admin")).encode())
    assert _reason(JwksCache(), f"{head}.{body}.{sig}", issuer) == "invalid_token"


@pytest.mark.parametrize(
    ("claims", "now", "reason"),
    [
        (_claims(aud="api://other"), NOW, "wrong_audience"),
        (_claims(iss="https://evil.example.com/"), NOW, "wrong_issuer"),
        (_claims(), NOW + 600 + 30, "expired"),
        (_claims(), NOW - 31, "not_yet_valid"),
        ({k: v for k, v in _claims().items() if k != "exp"}, NOW, "invalid_token"),
        ({k: v for k, v in _claims().items() if k != "aud"}, NOW, "invalid_token"),
    ],
)
def test_claims_checked(
    issuer: JwtIssuer, rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any], now: float, reason: str
) -> None:
    token = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert _reason(JwksCache(), token, issuer, now) == reason


def test_leeway_tolerates_small_skew(issuer: JwtIssuer, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert JwksCache().verify(token, issuer, NOW - 29)
    assert JwksCache().verify(token, issuer, NOW + 600 + 29)


def test_malformed_and_huge(issuer: JwtIssuer) -> None:
    assert _reason(JwksCache(), "not-a-jwt", issuer) == "malformed"
    assert _reason(JwksCache(), "x" * 9000, issuer) == "too_large"


def test_jwks_with_symmetric_key_only_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}')
    secret_token = jwt.encode(_claims(), b"secret" * 6, algorithm="HS256", headers={"kid": "k"})
    issuer = JwtIssuer(ISS, AUD, str(path), ("RS256",))
    assert _reason(JwksCache(), secret_token, issuer) == "invalid_token"


# --- URL source, cache TTL, rotation ---------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeFetch:
    """Serves JWKS documents from memory and counts fetches (no network)."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        from router.jwks import JwksError

        self.urls.append(url)
        if self.body is None:
            raise JwksError(f"{url}: fetch failed (ConnectionRefusedError)")
        return self.body


def _url_setup(rsa_key: rsa.RSAPrivateKey) -> tuple[JwksCache, FakeFetch, FakeClock, JwtIssuer]:
    fetch = FakeFetch(_jwks((rsa_key, "rsa-1")))
    clock = FakeClock()
    cache = JwksCache(ttl_s=300, min_refetch_s=30, max_stale_s=3600, fetch=fetch, clock=clock)
    return cache, fetch, clock, JwtIssuer(ISS, AUD, URL, ("RS256",))


def _token(key: rsa.RSAPrivateKey, kid: str) -> str:
    return jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": kid})


def test_url_fetched_once_and_cached_for_ttl(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, clock, issuer = _url_setup(rsa_key)
    token = _token(rsa_key, "rsa-1")
    assert not cache.is_fresh(issuer)
    cache.verify(token, issuer, NOW)
    cache.verify(token, issuer, NOW)
    assert fetch.urls == [URL]
    assert cache.is_fresh(issuer)
    clock.t += 299
    cache.verify(token, issuer, NOW)
    assert len(fetch.urls) == 1
    clock.t += 1  # TTL reached
    assert not cache.is_fresh(issuer)
    cache.verify(token, issuer, NOW)
    assert len(fetch.urls) == 2


def test_unknown_kid_refetches_once_rate_limited(
    rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    cache, fetch, clock, issuer = _url_setup(rsa_key)
    cache.verify(_token(rsa_key, "rsa-1"), issuer, NOW)
    # The provider rotates in a new key: the first token with its kid triggers one re-fetch.
    fetch.body = _jwks((rsa_key, "rsa-1"), (rsa_key2, "rsa-2"))
    clock.t += 31
    assert cache.verify(_token(rsa_key2, "rsa-2"), issuer, NOW)["sub"] == "user-1"
    assert len(fetch.urls) == 2
    # A flood of made-up kids within min_refetch_s causes no further fetches.
    for i in range(20):
        assert _reason(cache, _token(rsa_key2, f"made-up-{i}"), issuer) == "invalid_token"
    assert len(fetch.urls) == 2


def test_fetch_failure_serves_stale_then_gives_up(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, clock, issuer = _url_setup(rsa_key)
    token = _token(rsa_key, "rsa-1")
    cache.verify(token, issuer, NOW)
    fetch.body = None  # the provider goes down
    clock.t += 400  # stale
    assert cache.verify(token, issuer, NOW)["sub"] == "user-1"  # last good set still used
    assert len(fetch.urls) == 2
    clock.t += 10
    cache.verify(token, issuer, NOW)
    assert len(fetch.urls) == 2  # failed recently: not retried before min_refetch_s
    clock.t += 300 + 3600  # beyond ttl + max_stale
    assert _reason(cache, token, issuer) == "jwks_unavailable"


def test_fetch_failure_when_cold_is_unavailable(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, clock, issuer = _url_setup(rsa_key)
    fetch.body = None
    assert _reason(cache, _token(rsa_key, "rsa-1"), issuer) == "jwks_unavailable"
    fetch.body = b"not json"
    clock.t += 31
    assert _reason(cache, _token(rsa_key, "rsa-1"), issuer) == "jwks_unavailable"


def test_refresh_warms_cache_off_the_loop(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, _, issuer = _url_setup(rsa_key)
    asyncio.run(cache.refresh(issuer))
    assert fetch.urls == [URL] and cache.is_fresh(issuer)
    cache.verify(_token(rsa_key, "rsa-1"), issuer, NOW)
    assert fetch.urls == [URL]


def test_file_source_reread_after_ttl(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(_jwks((rsa_key, "rsa-1")))
    clock = FakeClock()
    fetch: Callable[[str], bytes] = FakeFetch(b"")
    cache = JwksCache(ttl_s=300, fetch=fetch, clock=clock)
    issuer = JwtIssuer(ISS, AUD, str(path), ("RS256",))
    cache.verify(_token(rsa_key, "rsa-1"), issuer, NOW)
    path.write_bytes(_jwks((rsa_key2, "rsa-2")))
    clock.t += 300
    assert cache.verify(_token(rsa_key2, "rsa-2"), issuer, NOW)["sub"] == "user-1"
    assert _reason(cache, _token(rsa_key, "rsa-1"), issuer) == "invalid_token"  # removed key is gone
    assert fetch.urls == []  # type: ignore[attr-defined]


def test_fetch_https_refuses_plain_http() -> None:
    from router.jwks import JwksError, fetch_https

    with pytest.raises(JwksError):
        fetch_https("http://127.0.0.1:1/keys")


def test_redirect_to_plain_http_refused() -> None:
    import io
    import urllib.request
    from http.client import HTTPMessage

    from router.jwks import JwksError, _HttpsOnlyRedirects

    handler = _HttpsOnlyRedirects()
    req = urllib.request.Request(URL)
    with pytest.raises(JwksError):
        handler.redirect_request(req, io.BytesIO(), 302, "Found", HTTPMessage(), "http://evil.example.com/k")
    followed = handler.redirect_request(
        req, io.BytesIO(), 302, "Found", HTTPMessage(), "https://cdn.example.com/k"
    )
    assert followed is not None and followed.full_url == "https://cdn.example.com/k"


class _FakeResponse(io.BytesIO):
    pass


class _FakeOpener:
    def __init__(self, body: bytes | None) -> None:
        self.body = body
        self.requests: list[tuple[str, float]] = []

    def open(self, request: urllib.request.Request, timeout: float) -> _FakeResponse:
        self.requests.append((request.full_url, timeout))
        if self.body is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return _FakeResponse(self.body)


def _patch_opener(monkeypatch: pytest.MonkeyPatch, body: bytes | None) -> _FakeOpener:
    opener = _FakeOpener(body)
    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: opener)
    return opener


def test_default_fetch_over_https_url_path(
    monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The real fetch_https code path, with the opener faked (no network)."""
    opener = _patch_opener(monkeypatch, _jwks((rsa_key, "rsa-1")))
    cache = JwksCache()  # default fetch: fetch_https
    issuer = JwtIssuer(ISS, AUD, URL, ("RS256",))
    assert cache.verify(_token(rsa_key, "rsa-1"), issuer, NOW)["sub"] == "user-1"
    assert opener.requests == [(URL, 5.0)]


def test_fetch_https_caps_size_and_hides_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.jwks import MAX_JWKS_BYTES, JwksError, fetch_https

    _patch_opener(monkeypatch, b"x" * (MAX_JWKS_BYTES + 1))
    with pytest.raises(JwksError, match="larger than"):
        fetch_https(URL)
    _patch_opener(monkeypatch, None)
    with pytest.raises(JwksError, match="ConnectionRefusedError"):
        fetch_https(URL)


class GatedFetch(FakeFetch):
    """A fetch that blocks until the test opens the gate: proves callers do not wait on it."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.gate = threading.Event()

    def __call__(self, url: str) -> bytes:
        assert self.gate.wait(30), "gate never opened"
        return super().__call__(url)


def _background_setup(rsa_key: rsa.RSAPrivateKey) -> tuple[JwksCache, GatedFetch, FakeClock, JwtIssuer]:
    fetch = GatedFetch(_jwks((rsa_key, "rsa-1")))
    clock = FakeClock()
    cache = JwksCache(ttl_s=300, min_refetch_s=30, fetch=fetch, clock=clock, background=True)
    return cache, fetch, clock, JwtIssuer(ISS, AUD, URL, ("RS256",))


def test_background_cold_cache_answers_unavailable_without_waiting(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, _, issuer = _background_setup(rsa_key)
    token = _token(rsa_key, "rsa-1")
    # The fetch is blocked on the gate; verify must not be.
    assert _reason(cache, token, issuer) == "jwks_unavailable"
    assert _reason(cache, token, issuer) == "jwks_unavailable"  # one fetch in flight, not two
    fetch.gate.set()
    cache.join()
    assert cache.verify(token, issuer, NOW)["sub"] == "user-1"
    assert fetch.urls == [URL]


def test_background_stale_set_keeps_serving_while_refetching(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, clock, issuer = _background_setup(rsa_key)
    fetch.gate.set()
    asyncio.run(cache.refresh(issuer))  # warm-up, as the router does at start-up
    assert fetch.urls == [URL]
    fetch.gate.clear()
    clock.t += 301  # stale
    token = _token(rsa_key, "rsa-1")
    assert cache.verify(token, issuer, NOW)["sub"] == "user-1"  # answered while the fetch waits
    assert not cache.is_fresh(issuer)
    fetch.gate.set()
    cache.join()
    assert len(fetch.urls) == 2 and cache.is_fresh(issuer)


def test_background_unknown_kid_flood_fetches_once(rsa_key: rsa.RSAPrivateKey) -> None:
    cache, fetch, clock, issuer = _background_setup(rsa_key)
    fetch.gate.set()
    asyncio.run(cache.refresh(issuer))
    clock.t += 31
    for i in range(20):
        assert _reason(cache, _token(rsa_key, f"made-up-{i}"), issuer) == "invalid_token"
    cache.join()
    assert len(fetch.urls) == 2
