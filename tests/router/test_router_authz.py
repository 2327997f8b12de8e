"""Auth on the data plane over real sockets: checked before any byte goes upstream."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client import generate_latest
from router_testkit import ADMIN, admin_url, endpoint, key_header, router, run, scoring_url, upstreams, version


def _failures(server: object, endpoint_name: str, reason: str) -> float:
    registry = server.runtime.registry  # type: ignore[attr-defined]
    value = registry.get_sample_value(
        "infergate_router_auth_failures_total", {"endpoint": endpoint_name, "reason": reason}
    )
    return value or 0.0


def test_key_auth_cases(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url = scoring_url(server, "svc")
                keys = server.runtime.keys.get("svc")
                cases = [
                    ({}, "missing"),
                    ({"Authorization": ""}, "missing"),
                    ({"Authorization": f"Basic {keys.primary}"}, "malformed"),
                    ({"Authorization": "Bearer not-the-key-0123456789"}, "invalid_key"),
                    ({"Authorization": f"Bearer {keys.primary}x"}, "invalid_key"),
                ]
                for headers, reason in cases:
                    async with session.post(url, headers=headers, data=b"secret body") as r:
                        assert r.status == 401, reason
                        assert r.headers["www-authenticate"].startswith("Bearer")
                        body = await r.json()
                        assert body["error"] == "unauthorized" and reason in body["message"]
                        assert keys.primary not in await r.text()
                    assert _failures(server, "svc", reason) >= 1
                # Nothing reached the upstream.
                assert a.hits == 0
                for which in ("primary", "secondary"):
                    async with session.post(url, headers=key_header(server, "svc", which)) as r:
                        assert r.status == 200
                assert a.hits == 2
                assert all("authorization" not in h for h in a.headers)
                metrics = generate_latest(server.runtime.registry).decode()
                assert keys.primary not in metrics

    run(scenario())


def test_regenerating_one_key_leaves_the_other_valid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url = scoring_url(server, "svc")
                old_primary = key_header(server, "svc", "primary")
                secondary = key_header(server, "svc", "secondary")
                async with session.post(admin_url(server, "/admin/endpoints/svc/regenerate-keys"), headers=ADMIN, json={"keyType": "Primary"}) as r:
                    assert r.status == 200
                    new = await r.json()
                async with session.post(url, headers=old_primary) as r:
                    assert r.status == 401
                async with session.post(url, headers=secondary) as r:
                    assert r.status == 200
                async with session.post(url, headers={"Authorization": f"Bearer {new['primaryKey']}"}) as r:
                    assert r.status == 200
                # A chosen value, then the keys as the admin API shows them.
                chosen = "my-own-primary-key-0123456789"
                body = {"keyType": "Primary", "keyValue": chosen}
                async with session.post(admin_url(server, "/admin/endpoints/svc/regenerate-keys"), headers=ADMIN, json=body) as r:
                    assert r.status == 200
                async with session.get(admin_url(server, "/admin/endpoints/svc/keys"), headers=ADMIN) as r:
                    assert (await r.json())["primaryKey"] == chosen
                async with session.post(url, headers={"Authorization": f"Bearer {chosen}"}) as r:
                    assert r.status == 200
                async with session.post(admin_url(server, "/admin/endpoints/svc/regenerate-keys"), headers=ADMIN, json={"keyType": "Tertiary"}) as r:
                    assert r.status == 400
                    assert "keyType" in (await r.json())["message"]
                # Keys are persisted 0600 in the state dir.
                keys_file = tmp_path / "state" / "keys.json"
                assert keys_file.stat().st_mode & 0o777 == 0o600
                assert chosen in keys_file.read_text()

    run(scenario())


def test_tokens_from_the_admin_api(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [
                endpoint("svc", [version("va", a, default=True)], auth_enabled=False, token_auth_enabled=True),
                endpoint("both", [version("vb", a, default=True)], auth_enabled=True, token_auth_enabled=True),
            ]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.post(admin_url(server, "/admin/endpoints/svc/token"), headers=ADMIN) as r:
                    assert r.status == 200
                    token = await r.json()
                assert token["tokenType"] == "Bearer" and token["expiryOn"] > token["refreshAfter"]
                bearer = {"Authorization": f"Bearer {token['accessToken']}"}
                async with session.post(scoring_url(server, "svc"), headers=bearer) as r:
                    assert r.status == 200
                # A key is no credential for a token-only endpoint.
                async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                    assert r.status == 401
                # A token for one endpoint is refused by another (aud).
                async with session.post(scoring_url(server, "both"), headers=bearer) as r:
                    assert r.status == 401
                # With both enabled, either credential works.
                async with session.post(admin_url(server, "/admin/endpoints/both/token"), headers=ADMIN) as r:
                    both_token = (await r.json())["accessToken"]
                for headers in ({"Authorization": f"Bearer {both_token}"}, key_header(server, "both")):
                    async with session.post(scoring_url(server, "both"), headers=headers) as r:
                        assert r.status == 200
                assert a.hits == 3

    run(scenario())


def test_open_endpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("open", [version("va", a, default=True)], auth_enabled=False, token_auth_enabled=False)]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.post(scoring_url(server, "open")) as r:
                    assert r.status == 200
                async with session.post(scoring_url(server, "open"), headers={"Authorization": "Bearer whatever"}) as r:
                    assert r.status == 200
                assert all("authorization" not in h for h in a.headers)

    run(scenario())


def test_external_issuer_tokens_over_the_wire(tmp_path: Path) -> None:
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    issuer = "https://login.example.com/tenant/"

    def token(**claims: object) -> str:
        now = int(time.time())
        base = {"iss": issuer, "aud": "api://svc", "iat": now, "nbf": now, "exp": now + 600, "sub": "alice"}
        return jwt.encode({**base, **claims}, private, algorithm="RS256", headers={"kid": "k1"})

    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [
                endpoint(
                    "svc",
                    [version("va", a, default=True)],
                    auth_enabled=False,
                    token_auth_enabled=True,
                    jwt_issuers=[{"issuer": issuer, "audience": "api://svc", "jwks": "jwks.json", "algorithms": ["RS256"]}],
                )
            ]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url = scoring_url(server, "svc")
                async with session.post(url, headers={"Authorization": f"Bearer {token()}"}) as r:
                    assert r.status == 200
                unsigned = jwt.encode({"iss": issuer, "aud": "api://svc", "exp": int(time.time()) + 60}, None, algorithm="none")
                cases = [
                    (token(aud="api://other"), "wrong_audience"),
                    (token(exp=int(time.time()) - 3600), "expired"),
                    (token(iss="https://evil.example.com/"), "wrong_issuer"),
                    (unsigned, "invalid_token"),
                ]
                for credential, reason in cases:
                    async with session.post(url, headers={"Authorization": f"Bearer {credential}"}) as r:
                        assert r.status == 401, reason
                        assert reason in (await r.json())["message"]
                    assert _failures(server, "svc", reason) >= 1, reason
                assert a.hits == 1

    run(scenario())
