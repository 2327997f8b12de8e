"""The auth attack suite through a real ``infergate route`` process in front of a counting
upstream (tests/router/test_router_authz.py covers the basic cases in-process): every attack
is a 401 and the upstream's request count does not move; no secret appears in the router's
output, its metrics or any error body; the admin API refuses data-plane keys and is not
served on the data port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from rel_testkit import ADMIN_TOKEN, Router

pytestmark = pytest.mark.e2e

ISSUER = "https://login.example.com/tenant/"
AUDIENCE = "api://svc"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class CountingUpstream:
    """A stand-in replica in a thread: counts every request except readiness checks."""

    def __init__(self) -> None:
        self.hits = 0
        self.authorization_seen = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path != "/v2/health/ready":
                    upstream.hits += 1
                    upstream.authorization_seen += "Authorization" in self.headers
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("auth")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    upstream = CountingUpstream()
    common = {"versions": [{"name": "v1", "upstreams": [upstream.url], "is_default": True, "traffic_percentile": 100}]}
    config = tmp / "router.yaml"
    config.write_text(yaml.safe_dump({"endpoints": [
        {"name": "svc", "auth_enabled": True, "token_auth_enabled": True,
         "jwt_issuers": [{"issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json", "algorithms": ["RS256"]}], **common},
        {"name": "other", "auth_enabled": True, "token_auth_enabled": True, **common},
    ]}))
    router = Router(config, tmp / "state")
    yield router, upstream, private
    router.stop()
    upstream.close()


def test_attacks_are_401_and_never_reach_the_upstream(setup: Any) -> None:
    router, upstream, private = setup
    url = router.scoring_url("svc")
    client = httpx.Client(timeout=15)
    primary, secondary = router.keys("svc")
    other_primary, other_secondary = router.keys("other")
    other_token = client.post(f"{router.admin_url}/admin/endpoints/other/token", headers=ADMIN).json()["accessToken"]
    svc_token = client.post(f"{router.admin_url}/admin/endpoints/svc/token", headers=ADMIN).json()["accessToken"]
    # rotate: the old primary must stop working at once
    old_primary = primary
    primary = client.post(f"{router.admin_url}/admin/endpoints/svc/regenerate-keys", headers=ADMIN,
                          json={"keyType": "Primary"}).json()["primaryKey"]
    assert primary != old_primary

    now = int(time.time())

    def external(**claims: object) -> str:
        base = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600, "sub": "alice"}
        return jwt.encode({**base, **claims}, private, algorithm="RS256", headers={"kid": "k1"})

    good_external = external()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "sub": "mallory"}).encode())
    confused = f"{header}.{payload}." + _b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    none_alg = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."
    h, _, s = good_external.split(".")
    tampered = f"{h}.{_b64(json.dumps({'iss': ISSUER, 'aud': AUDIENCE, 'exp': now + 600, 'sub': 'root'}).encode())}.{s}"
    th, tp, ts = svc_token.split(".")
    tampered_router = f"{th}.{tp[:-2]}{'A' if tp[-2] != 'A' else 'B'}{tp[-1]}.{ts}"

    attacks: list[tuple[str, dict[str, str]]] = [
        ("missing", {}),
        ("empty", {"Authorization": ""}),
        ("bearer only", {"Authorization": "Bearer"}),
        ("bearer dot", {"Authorization": "Bearer ."}),
        ("basic", {"Authorization": f"Basic {primary}"}),
        ("lower-case scheme, two spaces", {"Authorization": f"bearer  {primary}x"}),
        ("two credentials", {"Authorization": f"Bearer {primary}, Bearer {secondary}"}),
        ("key prefix", {"Authorization": f"Bearer {primary[:-1]}"}),
        ("another endpoint's primary", {"Authorization": f"Bearer {other_primary}"}),
        ("another endpoint's secondary", {"Authorization": f"Bearer {other_secondary}"}),
        ("old key after regeneration", {"Authorization": f"Bearer {old_primary}"}),
        ("another endpoint's token", {"Authorization": f"Bearer {other_token}"}),
        ("alg none", {"Authorization": f"Bearer {none_alg}"}),
        ("HS256 with the RSA public key", {"Authorization": f"Bearer {confused}"}),
        ("wrong aud", {"Authorization": f"Bearer {external(aud='api://other')}"}),
        ("wrong iss", {"Authorization": f"Bearer {external(iss='https://evil.example.com/')}"}),
        ("expired", {"Authorization": f"Bearer {external(exp=now - 3600)}"}),
        ("not yet valid", {"Authorization": f"Bearer {external(nbf=now + 3600)}"}),
        ("tampered external", {"Authorization": f"Bearer {tampered}"}),
        ("tampered router token", {"Authorization": f"Bearer {tampered_router}"}),
        ("huge token", {"Authorization": "Bearer " + "A" * 60_000}),
        ("huge jwt", {"Authorization": f"Bearer {h}.{'B' * 30_000}.{s}"}),
        ("admin token as data key", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ]
    before = upstream.hits
    bodies: list[str] = []
    for name, headers in attacks:
        r = client.post(url, headers=headers, content=b'{"data": [[1, 2]]}')
        assert r.status_code in (401, 431), (name, r.status_code, r.text[:200])
        if r.status_code == 401:
            assert r.headers["www-authenticate"].startswith("Bearer"), name
            assert r.json()["error"] == "unauthorized", name
        bodies.append(r.text)
    assert upstream.hits == before, "an attack reached the upstream"

    for name, credential in (("new primary", primary), ("secondary", secondary), ("router token", svc_token),
                             ("external token", good_external)):
        r = client.post(url, headers={"Authorization": f"Bearer {credential}"}, content=b'{"data": [[1, 2]]}')
        assert r.status_code == 200, (name, r.text)
    assert upstream.hits == before + 4 and upstream.authorization_seen == 0  # stripped before forwarding

    # the admin API: refuses data-plane keys and tokens; not served on the data port
    for credential in (primary, secondary, svc_token, good_external):
        r = client.get(f"{router.admin_url}/admin/endpoints", headers={"Authorization": f"Bearer {credential}"})
        assert r.status_code == 401, r.text
        bodies.append(r.text)
    for path in ("/admin/endpoints", "/admin/endpoints/svc/keys", "/metrics"):
        r = client.get(router.url + path, headers=ADMIN)
        assert r.status_code == 404, (path, r.status_code)
        r = client.post(router.url + "/admin/endpoints/svc/regenerate-keys", headers=ADMIN, json={"keyType": "Primary"})
        assert r.status_code in (404, 405), r.status_code
    assert router.keys("svc")[0] == primary

    # secrets never in logs, metrics or error bodies
    metrics = client.get(router.admin_url + "/metrics").text
    assert "infergate_router_auth_failures_total" in metrics
    secrets = [old_primary, primary, secondary, other_primary, other_secondary, ADMIN_TOKEN, svc_token, other_token,
               good_external, confused, tampered, tampered_router]
    output = router.log()
    for secret in secrets:
        for where, text in (("router output", output), ("metrics", metrics), ("error bodies", "\n".join(bodies))):
            assert secret not in text, f"a secret appeared in the {where}"
            assert secret[:24] not in text, f"a secret's prefix appeared in the {where}"
    assert "A" * 1000 not in output
    client.close()
