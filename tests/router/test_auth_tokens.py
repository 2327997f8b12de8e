"""The router's own HS256 tokens: issue, verify, every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from router.tokens import MAX_TOKEN_CHARS, TokenRejected, TokenService, check_times

NOW = 1_800_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], key: bytes | None) -> str:
    """A JWT built by hand, so the tests can make ones PyJWT would refuse to make."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


@pytest.fixture
def service(tmp_path: Path) -> TokenService:
    return TokenService(tmp_path, ttl_s=3600)


def _reason(service: TokenService, token: str, endpoint: str = "demo", now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        service.verify(token, endpoint, now)
    # The message is the reason, nothing of the token.
    assert str(info.value) == info.value.reason
    assert info.value.__cause__ is None
    return info.value.reason


def test_issue_shape_and_claims(service: TokenService) -> None:
    answer = service.issue("demo", NOW)
    assert set(answer) == {"accessToken", "tokenType", "expiryOn", "refreshAfter"}
    assert answer["tokenType"] == "Bearer"
    assert answer["expiryOn"] == int(NOW) + 3600
    assert answer["refreshAfter"] == int(NOW) + 1800
    token = answer["accessToken"]
    assert isinstance(token, str)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "demo" and claims["iss"] == "infergate"
    assert claims["iat"] == claims["nbf"] == int(NOW) and claims["exp"] == int(NOW) + 3600


def test_verify_accepts_own_token(service: TokenService) -> None:
    token = str(service.issue("demo", NOW)["accessToken"])
    claims = service.verify(token, "demo", NOW + 10)
    assert claims["aud"] == "demo"


def test_secret_persists_0600_across_instances(tmp_path: Path) -> None:
    token = str(TokenService(tmp_path).issue("demo", NOW)["accessToken"])
    assert TokenService(tmp_path).verify(token, "demo", NOW)["aud"] == "demo"
    path = tmp_path / "token-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [".token-secrets.json.lock", "token-secrets.json"]


def test_secret_made_by_another_process_is_adopted(tmp_path: Path) -> None:
    a, b = TokenService(tmp_path), TokenService(tmp_path)
    a.ensure("demo")
    b.ensure("demo")  # re-reads under the file lock: adopts a's secret instead of overwriting it
    token = str(a.issue("demo", NOW)["accessToken"])
    assert b.verify(token, "demo", NOW)["aud"] == "demo"
    c = TokenService(tmp_path)
    a.rotate("demo")
    assert _reason(a, token) == "invalid_token"
    assert c.verify(token, "demo", NOW)  # c still holds the old secret in memory...
    c.reload()
    assert _reason(c, token) == "invalid_token"  # ...until it reloads


def test_token_of_another_endpoint_refused(service: TokenService) -> None:
    service.issue("demo", NOW)
    other = str(service.issue("other", NOW)["accessToken"])
    assert _reason(service, other, "demo") == "invalid_token"  # other secret: signature fails


def test_no_secret_yet_refused(service: TokenService) -> None:
    issued_elsewhere = str(TokenService(service._dir / "x").issue("demo", NOW)["accessToken"])
    assert _reason(service, issued_elsewhere) == "invalid_token"


def test_expired_and_clock_skew(service: TokenService) -> None:
    token = str(service.issue("demo", NOW)["accessToken"])
    exp = int(NOW) + 3600
    assert service.verify(token, "demo", exp + 29)  # within the 30 s leeway
    assert _reason(service, token, now=exp + 30) == "expired"
    assert _reason(service, token, now=exp + 86400) == "expired"


def test_not_yet_valid(service: TokenService) -> None:
    token = str(service.issue("demo", NOW + 3600)["accessToken"])
    assert _reason(service, token, now=NOW) == "not_yet_valid"


def test_tampered_payload_refused(service: TokenService) -> None:
    token = str(service.issue("demo", NOW)["accessToken"])
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["exp"] = claims["exp"] + 10**6
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"
    assert _reason(service, tampered) == "invalid_token"


def test_bad_signature_refused(service: TokenService) -> None:
    token = str(service.issue("demo", NOW)["accessToken"])
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert _reason(service, f"{head}.{payload}.{flipped}") == "invalid_token"


def test_alg_none_refused(service: TokenService) -> None:
    service.issue("demo", NOW)
    claims = {"iss": "infergate", "aud": "demo", "iat": int(NOW), "exp": int(NOW) + 60}
    for alg in ("none", "None", "NONE"):
        assert _reason(service, _forge({"alg": alg, "typ": "JWT"}, claims, None)) == "invalid_token"


def test_other_algorithms_refused_even_with_right_secret(service: TokenService) -> None:
    service.issue("demo", NOW)
    secret = service._secrets["demo"]
    claims = {"iss": "infergate", "aud": "demo", "iat": int(NOW), "exp": int(NOW) + 60}
    assert _reason(service, jwt.encode(claims, secret, algorithm="HS512")) == "invalid_token"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _reason(service, jwt.encode(claims, rsa_key, algorithm="RS256")) == "invalid_token"


def test_wrong_claims_with_valid_signature(service: TokenService) -> None:
    service.issue("demo", NOW)
    secret = service._secrets["demo"]
    base = {"iss": "infergate", "aud": "demo", "iat": int(NOW), "exp": int(NOW) + 60}
    assert (
        _reason(service, jwt.encode({**base, "aud": "other"}, secret, algorithm="HS256")) == "wrong_audience"
    )
    assert (
        _reason(service, jwt.encode({**base, "iss": "someone"}, secret, algorithm="HS256")) == "wrong_issuer"
    )
    no_exp = {k: v for k, v in base.items() if k != "exp"}
    assert _reason(service, jwt.encode(no_exp, secret, algorithm="HS256")) == "invalid_token"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "...", "eyJ.eyJ.x", "ü.ü.ü"])
def test_garbage_is_malformed(service: TokenService, garbage: str) -> None:
    service.issue("demo", NOW)
    assert _reason(service, garbage) == "malformed"


def test_huge_token_refused_before_parsing(service: TokenService, monkeypatch: pytest.MonkeyPatch) -> None:
    service.issue("demo", NOW)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a huge token")

    monkeypatch.setattr(jwt, "decode", never)
    assert _reason(service, "a" * (MAX_TOKEN_CHARS + 1)) == "too_large"


def test_rotate_and_remove_invalidate_tokens(service: TokenService) -> None:
    token = str(service.issue("demo", NOW)["accessToken"])
    service.rotate("demo")
    assert _reason(service, token) == "invalid_token"
    token = str(service.issue("demo", NOW)["accessToken"])
    service.remove("demo")
    assert _reason(service, token) == "invalid_token"


def test_check_times_rejects_non_numeric() -> None:
    with pytest.raises(TokenRejected):
        check_times({"exp": "tomorrow"}, NOW)
    with pytest.raises(TokenRejected):
        check_times({"exp": True}, NOW)


def test_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        TokenService(tmp_path, ttl_s=0)
