"""Authenticator.verify: the whole attack list of issues 4 and 7, against every policy shape.

Every refusal is an AuthFailed whose reason is in the fixed vocabulary and whose message,
traceback and chained exceptions never contain the credential."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import traceback
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from router.auth import (
    AUTH_FAILURE_REASONS,
    MAX_AUTHORIZATION_CHARS,
    Authenticator,
    AuthFailed,
    AuthPolicy,
    JwtIssuer,
    Principal,
    admin_authorized,
)
from router.jwks import JwksCache
from router.keys import KeyStore
from router.tokens import TokenService

NOW = 1_800_000_000.0
ISS = "https://login.example.com/tenant/"
AUD = "api://demo"


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def issuer(tmp_path: Path, idp_key: rsa.RSAPrivateKey) -> JwtIssuer:
    jwk = {**RSAAlgorithm.to_jwk(idp_key.public_key(), as_dict=True), "kid": "k1"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return JwtIssuer(ISS, AUD, str(path), ("RS256",))


class World:
    def __init__(self, state: Path) -> None:
        self.keys = KeyStore(state)
        self.tokens = TokenService(state)
        self.auth = Authenticator(self.keys, self.tokens, JwksCache())
        self.demo = self.keys.ensure("demo")
        self.other = self.keys.ensure("other")

    def token(self, endpoint: str = "demo", now: float = NOW) -> str:
        return str(self.tokens.issue(endpoint, now)["accessToken"])


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "state")


KEYS = AuthPolicy("demo", auth_enabled=True, token_auth_enabled=False)
TOKENS = AuthPolicy("demo", auth_enabled=False, token_auth_enabled=True)
BOTH = AuthPolicy("demo", auth_enabled=True, token_auth_enabled=True)
OPEN = AuthPolicy("demo", auth_enabled=False, token_auth_enabled=False)


def _refused(world: World, header: str | None, policy: AuthPolicy, now: float = NOW) -> str:
    with pytest.raises(AuthFailed) as info:
        world.auth.verify(header, policy, now)
    exc = info.value
    assert exc.reason in AUTH_FAILURE_REASONS
    rendered = "".join(traceback.format_exception(exc)) + repr(exc)
    if header:
        credential = header.partition(" ")[2].strip()
        if len(credential) >= 8:
            assert credential not in rendered
            assert credential[-8:] not in rendered
    return exc.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _idp_claims(**over: Any) -> dict[str, Any]:
    return {"iss": ISS, "aud": AUD, "sub": "alice", "iat": int(NOW), "exp": int(NOW) + 600, **over}


# --- policies -----------------------------------------------------------------------------


def test_open_endpoint_is_anonymous_whatever_the_header(world: World) -> None:
    for header in (None, "", "Bearer junk", "Basic x"):
        assert world.auth.verify(header, OPEN, NOW) == Principal("demo", "anonymous")


def test_both_keys_work(world: World) -> None:
    assert world.auth.verify(f"Bearer {world.demo.primary}", KEYS, NOW) == Principal("demo", "key", "primary")
    assert world.auth.verify(f"Bearer {world.demo.secondary}", KEYS, NOW) == Principal(
        "demo", "key", "secondary"
    )
    assert (
        world.auth.verify(f"bearer {world.demo.primary}", KEYS, NOW).kind == "key"
    )  # scheme case-insensitive
    assert world.auth.verify(f"  Bearer   {world.demo.primary}  ", KEYS, NOW).kind == "key"


def test_own_token_works_when_token_auth_enabled(world: World) -> None:
    token = world.token()
    assert world.auth.verify(f"Bearer {token}", TOKENS, NOW) == Principal("demo", "token", None)
    assert world.auth.verify(f"Bearer {token}", BOTH, NOW).kind == "token"


def test_both_enabled_accepts_either(world: World) -> None:
    assert world.auth.verify(f"Bearer {world.demo.primary}", BOTH, NOW).kind == "key"
    assert world.auth.verify(f"Bearer {world.token()}", BOTH, NOW).kind == "token"


def test_token_refused_when_only_keys_enabled(world: World) -> None:
    assert _refused(world, f"Bearer {world.token()}", KEYS) == "invalid_key"


def test_key_refused_when_only_tokens_enabled(world: World) -> None:
    assert _refused(world, f"Bearer {world.demo.primary}", TOKENS) == "malformed"


def test_external_issuer_token(world: World, issuer: JwtIssuer, idp_key: rsa.RSAPrivateKey) -> None:
    policy = AuthPolicy("demo", True, True, (issuer,))
    token = jwt.encode(_idp_claims(), idp_key, algorithm="RS256", headers={"kid": "k1"})
    assert world.auth.verify(f"Bearer {token}", policy, NOW) == Principal("demo", "token", "alice")
    # The same token on an endpoint that does not trust this issuer.
    assert _refused(world, f"Bearer {token}", BOTH) == "wrong_issuer"


def test_same_issuer_with_two_audiences(world: World, issuer: JwtIssuer, idp_key: rsa.RSAPrivateKey) -> None:
    second = JwtIssuer(ISS, "api://demo-v2", issuer.jwks, ("RS256",))
    policy = AuthPolicy("demo", False, True, (issuer, second))
    for aud in (AUD, "api://demo-v2"):
        token = jwt.encode(_idp_claims(aud=aud), idp_key, algorithm="RS256", headers={"kid": "k1"})
        assert world.auth.verify(f"Bearer {token}", policy, NOW).subject == "alice"
    token = jwt.encode(_idp_claims(aud="api://nope"), idp_key, algorithm="RS256", headers={"kid": "k1"})
    assert _refused(world, f"Bearer {token}", policy) == "wrong_audience"


# --- header shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("Bearer", "malformed"),
        ("Bearer    ", "malformed"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Token abcdefghijklmnop", "malformed"),
        ("Bearer two parts", "malformed"),
        ("Bearer ключ-ключ-ключ", "malformed"),
        ("Bearer abc\x00def", "malformed"),
    ],
)
@pytest.mark.parametrize("policy", [KEYS, TOKENS, BOTH], ids=["keys", "tokens", "both"])
def test_bad_headers(world: World, policy: AuthPolicy, header: str | None, reason: str) -> None:
    assert _refused(world, header, policy) == reason


@pytest.mark.parametrize("policy", [KEYS, TOKENS, BOTH], ids=["keys", "tokens", "both"])
def test_huge_header_refused_before_any_parsing(
    world: World, policy: AuthPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a huge header")

    monkeypatch.setattr(jwt, "decode", never)
    monkeypatch.setattr(hmac, "compare_digest", never)
    huge = "Bearer " + "a" * MAX_AUTHORIZATION_CHARS
    assert _refused(world, huge, policy) == "too_large"
    assert _refused(world, "Bearer " + "a.b." * 5000, policy) == "too_large"


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [KEYS, BOTH], ids=["keys", "both"])
def test_key_of_another_endpoint_refused(world: World, policy: AuthPolicy) -> None:
    assert _refused(world, f"Bearer {world.other.primary}", policy) == "invalid_key"
    assert _refused(world, f"Bearer {world.other.secondary}", policy) == "invalid_key"


@pytest.mark.parametrize("policy", [KEYS, BOTH], ids=["keys", "both"])
def test_wrong_or_partial_key_refused(world: World, policy: AuthPolicy) -> None:
    assert _refused(world, f"Bearer {world.demo.primary[:-1]}", policy) == "invalid_key"
    assert _refused(world, f"Bearer {world.demo.primary}x", policy) == "invalid_key"
    assert _refused(world, f"Bearer {world.demo.primary.upper()}x", policy) == "invalid_key"


def test_old_key_after_regeneration_refused_other_still_works(world: World) -> None:
    old = world.demo
    world.keys.regenerate("demo", "Primary")
    assert _refused(world, f"Bearer {old.primary}", KEYS) == "invalid_key"
    assert world.auth.verify(f"Bearer {old.secondary}", KEYS, NOW).subject == "secondary"
    new = world.keys.get("demo")
    assert world.auth.verify(f"Bearer {new.primary}", KEYS, NOW).subject == "primary"


def test_endpoint_without_keys_fails_closed(world: World) -> None:
    assert _refused(world, f"Bearer {world.demo.primary}", AuthPolicy("ghost", True, False)) == "invalid_key"


def test_key_check_compares_both_keys(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for candidate in (world.demo.primary, world.demo.secondary, "not-a-key-at-all-000"):
        calls.clear()
        try:
            world.auth.verify(f"Bearer {candidate}", KEYS, NOW)
        except AuthFailed:
            pass
        assert sorted(calls) == sorted([world.demo.primary.encode(), world.demo.secondary.encode()])


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [TOKENS, BOTH], ids=["tokens", "both"])
def test_token_attacks(world: World, policy: AuthPolicy) -> None:
    token = world.token()
    head, payload, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    secret = world.tokens._secrets["demo"]

    none_token = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."
    tampered = f"{head}.{_b64(json.dumps({**claims, 'exp': claims['exp'] + 10**6}).encode())}.{sig}"
    flipped = f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B') + sig[1:]}"
    wrong_aud = jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS256")
    cases = {
        none_token: "invalid_token",
        tampered: "invalid_token",
        flipped: "invalid_token",
        world.token("other"): "invalid_token",  # another endpoint's token (its own secret)
        wrong_aud: "wrong_audience",
        "a.b.c": "malformed",
    }
    for bad, reason in cases.items():
        assert _refused(world, f"Bearer {bad}", policy) == reason, bad
    assert _refused(world, f"Bearer {token}", policy, now=NOW + 3600 + 30) == "expired"
    assert _refused(world, f"Bearer {token}", policy, now=NOW - 3600) == "not_yet_valid"


def test_external_attacks(
    world: World, issuer: JwtIssuer, idp_key: rsa.RSAPrivateKey, attacker_key: rsa.RSAPrivateKey
) -> None:
    policy = AuthPolicy("demo", False, True, (issuer,))
    pem = idp_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = _b64(json.dumps(_idp_claims()).encode())
    confused = f"{head}.{body}.{_b64(hmac.new(pem, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    none_head = _b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    # An attacker claiming to be infergate with an RS256 token goes to the HS256-pinned verifier.
    as_infergate = jwt.encode(
        {"iss": "infergate", "aud": "demo", "iat": int(NOW), "exp": int(NOW) + 60},
        attacker_key,
        algorithm="RS256",
    )

    def signed(**over: Any) -> str:
        return jwt.encode(_idp_claims(**over), idp_key, algorithm="RS256", headers={"kid": "k1"})

    cases = {
        confused: "invalid_token",
        f"{none_head}.{body}.": "invalid_token",
        jwt.encode(_idp_claims(), attacker_key, algorithm="RS256", headers={"kid": "k1"}): "invalid_token",
        as_infergate: "invalid_token",
        signed(aud="api://other"): "wrong_audience",
        signed(iss="https://evil.example.com/"): "wrong_issuer",
        signed(exp=int(NOW) - 3600): "expired",
        signed(nbf=int(NOW) + 3600): "not_yet_valid",
    }
    for bad, reason in cases.items():
        assert _refused(world, f"Bearer {bad}", policy) == reason, reason


# --- admin --------------------------------------------------------------------------------


def test_admin_authorized(world: World) -> None:
    admin = "admin-token-0123456789-abcdef"
    assert admin_authorized(f"Bearer {admin}", admin)
    assert not admin_authorized(None, admin)
    assert not admin_authorized("", admin)
    assert not admin_authorized(admin, admin)  # no scheme
    assert not admin_authorized(f"Bearer {admin}x", admin)
    assert not admin_authorized(f"Bearer {world.demo.primary}", admin)  # data-plane keys refused
    assert not admin_authorized(f"Bearer {world.token()}", admin)
    assert not admin_authorized("Bearer " + "a" * 10000, admin)


def test_auth_failed_vocabulary_is_closed() -> None:
    with pytest.raises(ValueError) as info:
        AuthFailed("the key was abc123")
    assert "abc123" not in str(info.value)
    for reason in AUTH_FAILURE_REASONS:
        assert AuthFailed(reason).reason == reason == str(AuthFailed(reason))


def test_no_credential_reaches_the_logs(
    world: World, issuer: JwtIssuer, idp_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    policy = AuthPolicy("demo", True, True, (issuer,))
    external = jwt.encode(_idp_claims(), idp_key, algorithm="RS256", headers={"kid": "k1"})
    secrets_seen = [world.demo.primary, world.demo.secondary, world.token(), external]
    with caplog.at_level(logging.DEBUG):
        for secret in secrets_seen:
            world.auth.verify(f"Bearer {secret}", policy, NOW)
            for bad in (secret + "x", secret[:-2]):
                with pytest.raises(AuthFailed):
                    world.auth.verify(f"Bearer {bad}", policy, NOW)
        for token in secrets_seen[2:]:
            with pytest.raises(AuthFailed):
                world.auth.verify(f"Bearer {token}", policy, NOW + 10**7)  # expired
        world.keys.regenerate("demo", "Primary")
    for secret in secrets_seen + [world.keys.get("demo").primary]:
        assert secret not in caplog.text
        assert secret[:16] not in caplog.text
