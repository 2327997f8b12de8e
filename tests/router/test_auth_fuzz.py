"""Whatever arrives in the Authorization header, verify answers a Principal or AuthFailed with a
known reason: never another exception (a 500), never an accepted forgery."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.auth import AUTH_FAILURE_REASONS, Authenticator, AuthFailed, AuthPolicy, JwtIssuer
from router.jwks import JwksCache
from router.keys import KeyStore
from router.tokens import TokenService

NOW = 1_800_000_000.0
ISS = "https://login.example.com/tenant/"


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Authenticator, AuthPolicy]]:
    # Module-scoped state (hypothesis re-runs the body many times within one test); the
    # directory is removed when the module's tests are done.
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        keys = KeyStore(state)
        keys.ensure("demo")
        tokens = TokenService(state)
        tokens.ensure("demo")
        jwks = state / "jwks.json"
        jwks.write_text(
            json.dumps(
                {
                    "keys": [
                        {
                            "kty": "EC",
                            "crv": "P-256",
                            "kid": "k1",
                            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                        }
                    ]
                }
            )
        )
        issuer = JwtIssuer(ISS, "api://demo", str(jwks), ("ES256", "RS256"))
        policy = AuthPolicy("demo", True, True, (issuer,))
        yield Authenticator(keys, tokens, JwksCache()), policy


def _segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["none", "HS256", "RS256", "ES256", "PS256", "EdDSA", "", "xx"]) | json_values,
        "kid": st.sampled_from(["k1", "k2"]) | json_values,
        "typ": json_values,
        "crit": json_values,
        "b64": json_values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISS, "infergate", "other"]) | json_values,
        "aud": st.sampled_from(["demo", "api://demo"]) | json_values,
        "exp": st.integers(0, 4_000_000_000) | json_values,
        "nbf": st.integers(0, 4_000_000_000) | json_values,
        "iat": st.integers(0, 4_000_000_000) | json_values,
        "sub": json_values,
    },
)
jwt_like = st.builds(
    lambda h, c, sig: f"{_segment(h)}.{_segment(c)}.{_segment(sig)}",
    headers | json_values,
    claims | json_values,
    st.binary(max_size=80),
)
authorization = (
    st.none()
    | st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))  # what ASGI hands over
    | st.builds(lambda c: f"Bearer {c}", jwt_like)
    | st.builds(lambda c: f"Bearer {c}", st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126)))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=authorization)
def test_any_header_is_refused_cleanly(setup: tuple[Authenticator, AuthPolicy], header: str | None) -> None:
    auth, policy = setup
    try:
        principal = auth.verify(header, policy, NOW)
    except AuthFailed as exc:
        assert exc.reason in AUTH_FAILURE_REASONS
        return
    # Nothing random is a valid key (256-bit) or carries a valid signature.
    raise AssertionError(f"accepted as {principal}")
