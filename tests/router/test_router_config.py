"""RouterConfig: loading, validation errors naming the field, persistence, admin edits."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from router import config as cfg
from scoring import ConfigError

BASE: dict[str, Any] = {
    "endpoints": [
        {
            "name": "myservice",
            "auth_enabled": True,
            "token_auth_enabled": False,
            "scoring_timeout_ms": 60000,
            "replica_max_concurrent_requests": 64,
            "max_request_wait_time": 500,
            "versions": [
                {
                    "name": "versiona",
                    "upstreams": ["http://127.0.0.1:8001"],
                    "traffic_percentile": 20,
                    "is_default": True,
                    "version_type": "control",
                },
                {"name": "versionb", "upstreams": ["http://127.0.0.1:8011"], "traffic_percentile": 10, "version_type": "treatment"},
                {"name": "versionc", "upstreams": ["http://127.0.0.1:8021"], "traffic_percentile": 0},
            ],
            "stickiness_header": "x-user-id",
            "mirror": {"version": "versionc", "percent": 10},
        }
    ]
}


def _parse(doc: dict[str, Any], base: Path = Path("/")) -> cfg.RouterConfig:
    return cfg.parse_config(doc, base_dir=base)


def _bad(edit: Any) -> str:
    doc = copy.deepcopy(BASE)
    edit(doc["endpoints"][0])
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    return str(info.value)


def test_issue_example_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    import yaml

    path.write_text(yaml.safe_dump(BASE))
    config = cfg.load_config(path)
    ep = config.endpoints[0]
    assert ep.default_version.name == "versiona"
    assert ep.version("versionc") is not None and ep.version("versionc").version_type == "treatment"  # type: ignore[union-attr]
    assert ep.mirror == cfg.MirrorConfig("versionc", 10)
    assert config.path == path


def test_json_is_accepted_too(tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    path.write_text(json.dumps(BASE))
    assert cfg.load_config(path).endpoints[0].name == "myservice"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda e: e["versions"].clear(), "endpoints[0].versions: must have 1 to 6 versions, got 0"),
        (
            lambda e: e["versions"].extend({"name": f"v{i}", "upstreams": ["http://h:1"]} for i in range(4)),
            "endpoints[0].versions: must have 1 to 6 versions, got 7",
        ),
        (lambda e: e["versions"][1].update(name="versiona"), "endpoints[0].versions[1].name: must be unique"),
        (lambda e: e["versions"][1].update(is_default=True), "exactly one version must have is_default"),
        (lambda e: e["versions"][0].update(is_default=False), "exactly one version must have is_default"),
        (lambda e: e["versions"][1].update(version_type="control"), "at most one version may have version_type: control"),
        (lambda e: e["versions"][1].update(traffic_percentile=81), "must sum to at most 100, got 101"),
        (lambda e: e["versions"][1].update(traffic_percentile=150), "endpoints[0].versions[1].traffic_percentile: must be between 0 and 100, got 150"),
        (lambda e: e["versions"][1].update(traffic_percentile=-1), "traffic_percentile: must be between 0 and 100, got -1"),
        (lambda e: e["versions"][1].update(traffic_percentile=True), "traffic_percentile: must be an integer, got True"),
        (lambda e: e["versions"][1].update(traffic_percentile="10"), "traffic_percentile: must be an integer, got '10'"),
        (lambda e: e["versions"][1].update(version_type="canary"), "endpoints[0].versions[1].version_type: must be 'control' or 'treatment'"),
        (lambda e: e["versions"][1].update(colour="blue"), "endpoints[0].versions[1].colour: unknown key"),
        (lambda e: e.update(replicas=3), "endpoints[0].replicas: unknown key"),
        (lambda e: e["versions"][1].update(upstreams=[]), "endpoints[0].versions[1].upstreams: must be a non-empty list"),
        (lambda e: e["versions"][1].update(upstreams=["ftp://x"]), "endpoints[0].versions[1].upstreams[0]: must be an http:// or https:// URL"),
        (lambda e: e["versions"][1].pop("upstreams"), "endpoints[0].versions[1].upstreams: is required"),
        (lambda e: e.update(mirror={"version": "versionc", "percent": 51}), "endpoints[0].mirror.percent: must be between 1 and 50, got 51"),
        (lambda e: e.update(mirror={"version": "versionc", "percent": 0}), "endpoints[0].mirror.percent: must be between 1 and 50, got 0"),
        (lambda e: e.update(mirror={"version": "versionb", "percent": 5}), "endpoints[0].mirror.version: must name a version with traffic_percentile 0"),
        (lambda e: e.update(mirror={"version": "nope", "percent": 5}), "endpoints[0].mirror.version: must name a version of this endpoint"),
        (lambda e: e.update(scoring_timeout_ms=0), "endpoints[0].scoring_timeout_ms: must be >= 1, got 0"),
        (lambda e: e.update(replica_max_concurrent_requests=0), "endpoints[0].replica_max_concurrent_requests: must be >= 1, got 0"),
        (lambda e: e.update(max_request_wait_time=-5), "endpoints[0].max_request_wait_time: must be >= 0, got -5"),
        (lambda e: e.update(auth_enabled="false"), "endpoints[0].auth_enabled: must be true or false, got 'false'"),
        (lambda e: e.update(name="bad/name"), "endpoints[0].name: may hold only"),
        (lambda e: e.update(jwt_issuers=[{"issuer": "https://i/", "audience": "a", "jwks": "missing.json"}]), "endpoints[0].jwt_issuers[0].jwks"),
    ],
)
def test_validation_names_the_field(edit: Any, expected: str) -> None:
    assert expected in _bad(edit)


def test_top_level_errors() -> None:
    with pytest.raises(ConfigError, match="endpoints: must be a non-empty list"):
        _parse({"endpoints": []})
    with pytest.raises(ConfigError, match="routes: unknown key"):
        _parse({**BASE, "routes": []})
    doc = {"endpoints": [BASE["endpoints"][0], BASE["endpoints"][0]]}
    with pytest.raises(ConfigError, match=r"endpoints\[1\].name: must be unique"):
        _parse(doc)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.load_config(bad)


def test_relative_jwks_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"}]}))
    doc = copy.deepcopy(BASE)
    doc["endpoints"][0]["token_auth_enabled"] = True
    doc["endpoints"][0]["jwt_issuers"] = [{"issuer": "https://login.example.com/t/", "audience": "api://x", "jwks": "jwks.json", "algorithms": ["RS256"]}]
    path = sub / "router.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a different working directory must not matter
    try:
        ep = cfg.load_config(path).endpoints[0]
    finally:
        os.chdir(cwd)
    assert ep.jwt_issuers[0].jwks == str((sub / "jwks.json").resolve())


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_round_trips_atomically(tmp_path: Path, suffix: str) -> None:
    config = _parse(BASE)
    path = tmp_path / f"router{suffix}"
    cfg.save_config(config, path)
    assert cfg.load_config(path) == config
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_create_version_demotes_previous_default_and_control() -> None:
    config = _parse(BASE)
    new = cfg.VersionConfig("versiond", ("http://127.0.0.1:9000",), 5, is_default=True, version_type="control")
    out = cfg.with_version_added(config, "myservice", new).endpoints[0]
    assert out.default_version.name == "versiond"
    assert out.version("versiona").version_type == "treatment"  # type: ignore[union-attr]
    assert not out.version("versiona").is_default  # type: ignore[union-attr]
    with pytest.raises(cfg.VersionConflict):
        cfg.with_version_added(config, "myservice", cfg.VersionConfig("versionb", ("http://h:1",)))
    with pytest.raises(ConfigError, match="must sum to at most 100"):
        cfg.with_version_added(config, "myservice", cfg.VersionConfig("big", ("http://h:1",), 71))
    with pytest.raises(cfg.EndpointNotFound):
        cfg.with_version_added(config, "nope", new)


def test_update_version_semantics() -> None:
    config = _parse(BASE)
    out = cfg.with_version_updated(config, "myservice", "versionb", {"is_default": True, "version_type": "control"})
    ep = out.endpoints[0]
    assert ep.default_version.name == "versionb"
    assert ep.version("versiona").version_type == "treatment"  # type: ignore[union-attr]
    with pytest.raises(cfg.VersionConflict, match="is the default"):
        cfg.with_version_updated(config, "myservice", "versiona", {"is_default": False})
    with pytest.raises(ConfigError, match="must sum to at most 100"):
        cfg.with_version_updated(config, "myservice", "versionb", {"traffic_percentile": 90})
    with pytest.raises(cfg.EndpointNotFound):
        cfg.with_version_updated(config, "myservice", "nope", {"traffic_percentile": 1})
    with pytest.raises(ConfigError, match="name: unknown key"):
        cfg.parse_version_patch({"name": "x"})


def test_delete_version_rules() -> None:
    config = _parse(BASE)
    with pytest.raises(cfg.VersionConflict, match="default"):
        cfg.with_version_deleted(config, "myservice", "versiona")
    with pytest.raises(cfg.VersionConflict, match="mirror"):
        cfg.with_version_deleted(config, "myservice", "versionc")
    out = cfg.with_version_deleted(config, "myservice", "versionb")
    assert [v.name for v in out.endpoints[0].versions] == ["versiona", "versionc"]
    single = cfg.with_endpoint_patched(out, "myservice", {"mirror": None})
    single = cfg.with_version_deleted(single, "myservice", "versionc")
    with pytest.raises(cfg.VersionConflict, match="only version"):
        cfg.with_version_deleted(single, "myservice", "versiona")


def test_endpoint_patch() -> None:
    config = _parse(BASE)
    changes = cfg.parse_endpoint_patch({"scoring_timeout_ms": 100, "mirror": None, "stickiness_header": "X-Tenant"}, Path("/"))
    ep = cfg.with_endpoint_patched(config, "myservice", changes).endpoints[0]
    assert (ep.scoring_timeout_ms, ep.mirror, ep.stickiness_header) == (100, None, "x-tenant")
    with pytest.raises(ConfigError, match="versions: unknown key"):
        cfg.parse_endpoint_patch({"versions": []}, Path("/"))
    with pytest.raises(ConfigError, match="mirror.percent"):
        cfg.parse_endpoint_patch({"mirror": {"version": "versionc", "percent": 80}}, Path("/"))
