"""The router's configuration: endpoints, their versions, traffic percentiles, auth and limits.

Field names follow AzureML's AKS deploy configuration (``traffic_percentile``, ``is_default``,
``version_type``, ``scoring_timeout_ms``, ``replica_max_concurrent_requests``,
``max_request_wait_time``) so its users recognise them. Loaded from YAML or JSON; every value is
checked here and an error names the field and the value
(``endpoints[0].versions[1].traffic_percentile: must be between 0 and 100, got 150``); unknown
keys fail. The admin API changes the configuration through the pure ``with_*`` functions below,
each of which returns a new, validated object, and ``save_config`` writes it back atomically.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import yaml

from router.auth import JwtIssuer
from router.state_files import atomic_write
from scoring import ConfigError

VersionType = Literal["control", "treatment"]
VERSION_TYPES: tuple[VersionType, ...] = ("control", "treatment")
MAX_VERSIONS = 6
MAX_MIRROR_PERCENT = 50


class VersionConflict(Exception):
    """An admin change that is well formed but conflicts with the current endpoint
    (a duplicate version name, deleting the default while others exist): HTTP 409."""


@dataclass(frozen=True)
class VersionConfig:
    """One version of an endpoint: a set of scoring replicas and its share of traffic."""

    name: str
    upstreams: tuple[str, ...]
    traffic_percentile: int = 0
    is_default: bool = False
    version_type: VersionType = "treatment"  # AzureML's default
    description: str | None = None


@dataclass(frozen=True)
class MirrorConfig:
    """Copy ``percent`` of live (unpinned) requests to ``version`` in the background."""

    version: str
    percent: int


@dataclass(frozen=True)
class EndpointConfig:
    """One scoring endpoint, ``/api/v1/service/<name>/...``."""

    name: str
    versions: tuple[VersionConfig, ...]
    auth_enabled: bool = True
    token_auth_enabled: bool = False
    scoring_timeout_ms: int = 60000
    # AzureML defaults to 1, which starves micro-batching in the scoring server.
    replica_max_concurrent_requests: int = 64
    max_request_wait_time: int = 500  # ms a request may wait for a free replica slot
    stickiness_header: str | None = None
    mirror: MirrorConfig | None = None
    jwt_issuers: tuple[JwtIssuer, ...] = ()

    @property
    def default_version(self) -> VersionConfig:
        return next(v for v in self.versions if v.is_default)

    def version(self, name: str) -> VersionConfig | None:
        return next((v for v in self.versions if v.name == name), None)


@dataclass(frozen=True)
class RouterConfig:
    """Every endpoint the router serves. ``path`` is where it was loaded from (and is saved to)."""

    endpoints: tuple[EndpointConfig, ...]
    path: Path | None = field(default=None, compare=False)

    def endpoint(self, name: str) -> EndpointConfig | None:
        return next((e for e in self.endpoints if e.name == name), None)


# --- reading -------------------------------------------------------------------------------

_VERSION_KEYS = {"name", "upstreams", "traffic_percentile", "is_default", "version_type", "description"}
_ENDPOINT_KEYS = {
    "name",
    "versions",
    "auth_enabled",
    "token_auth_enabled",
    "scoring_timeout_ms",
    "replica_max_concurrent_requests",
    "max_request_wait_time",
    "stickiness_header",
    "mirror",
    "jwt_issuers",
}
# What PATCH /admin/endpoints/{ep} and PATCH .../versions/{v} may change.
ENDPOINT_PATCH_KEYS = _ENDPOINT_KEYS - {"name", "versions"}
VERSION_PATCH_KEYS = {"traffic_percentile", "is_default", "version_type", "description", "upstreams"}


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where or "config", "must be a mapping", type(value).__name__)
    return cast(Mapping[str, Any], value)


def _no_unknown(data: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(_path(where, str(unknown[0])), "unknown key")


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(_path(where, key), "must be a non-empty string", value)
    return value


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ConfigError(_path(where, key), "must be true or false", value)
    return value


def _int(data: Mapping[str, Any], key: str, where: str, low: int, high: int | None = None) -> int:
    value = data[key]
    # bool is an int in Python; `true` is not a percentile.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(_path(where, key), "must be an integer", value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(_path(where, key), f"must be {bound}", value)
    return value


def _name(data: Mapping[str, Any], where: str) -> str:
    if "name" not in data:
        raise ConfigError(_path(where, "name"), "is required")
    name = _str(data, "name", where)
    # The name is a URL path segment and a header value.
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(_path(where, "name"), "may hold only letters, digits, '-', '_' and '.'", name)
    return name


def _upstream(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, "must be a URL string", value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, "must be an http:// or https:// URL with a host", value)
    if parts.query or parts.fragment:
        raise ConfigError(where, "must not have a query or fragment", value)
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise ConfigError(where, "has an invalid port", value) from None
    return value.rstrip("/")


def parse_upstreams(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, "must be a non-empty list of URLs", value)
    upstreams = tuple(_upstream(u, f"{where}[{i}]") for i, u in enumerate(value))
    if len(set(upstreams)) != len(upstreams):
        raise ConfigError(where, "must not repeat a URL", list(value))
    return upstreams


def _version_fields(data: Mapping[str, Any], where: str, keys: Iterable[str]) -> dict[str, Any]:
    """Type-check the version fields present in ``data`` (all optional here)."""
    out: dict[str, Any] = {}
    for key in keys:
        if key not in data:
            continue
        if key == "upstreams":
            out[key] = parse_upstreams(data[key], _path(where, key))
        elif key == "traffic_percentile":
            out[key] = _int(data, key, where, 0, 100)
        elif key == "is_default":
            out[key] = _bool(data, key, where)
        elif key == "version_type":
            value = data[key]
            if value not in VERSION_TYPES:
                raise ConfigError(_path(where, key), "must be 'control' or 'treatment'", value)
            out[key] = value
        elif key == "description":
            value = data[key]
            if value is not None and not isinstance(value, str):
                raise ConfigError(_path(where, key), "must be a string", value)
            out[key] = value
    return out


def parse_version(data: object, where: str = "") -> VersionConfig:
    """One version object, as in the config file and the admin API's create_version body."""
    mapping = _mapping(data, where)
    _no_unknown(mapping, _VERSION_KEYS, where)
    name = _name(mapping, where)
    if "upstreams" not in mapping:
        raise ConfigError(_path(where, "upstreams"), "is required")
    return VersionConfig(name=name, **_version_fields(mapping, where, _VERSION_KEYS - {"name"}))


def parse_version_patch(data: object) -> dict[str, Any]:
    """The fields of an update_version body, type-checked."""
    mapping = _mapping(data, "")
    _no_unknown(mapping, VERSION_PATCH_KEYS, "")
    return _version_fields(mapping, "", VERSION_PATCH_KEYS)


def _mirror(value: object, where: str) -> MirrorConfig | None:
    if value is None:
        return None
    data = _mapping(value, where)
    _no_unknown(data, {"version", "percent"}, where)
    for key in ("version", "percent"):
        if key not in data:
            raise ConfigError(_path(where, key), "is required")
    return MirrorConfig(
        version=_str(data, "version", where),
        percent=_int(data, "percent", where, 1, MAX_MIRROR_PERCENT),
    )


def _endpoint_fields(data: Mapping[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
    """Type-check the endpoint-level fields present in ``data`` (not name or versions)."""
    out: dict[str, Any] = {}
    for key in ("auth_enabled", "token_auth_enabled"):
        if key in data:
            out[key] = _bool(data, key, where)
    if "scoring_timeout_ms" in data:
        out["scoring_timeout_ms"] = _int(data, "scoring_timeout_ms", where, 1)
    if "replica_max_concurrent_requests" in data:
        out["replica_max_concurrent_requests"] = _int(data, "replica_max_concurrent_requests", where, 1)
    if "max_request_wait_time" in data:
        out["max_request_wait_time"] = _int(data, "max_request_wait_time", where, 0)
    if "stickiness_header" in data:
        header = data["stickiness_header"]
        if header is not None:
            header = _str(data, "stickiness_header", where).lower()
            if header == "authorization":
                raise ConfigError(_path(where, "stickiness_header"), "must not be a credential header", header)
        out["stickiness_header"] = header
    if "mirror" in data:
        out["mirror"] = _mirror(data["mirror"], _path(where, "mirror"))
    if "jwt_issuers" in data:
        issuers = data["jwt_issuers"]
        at = _path(where, "jwt_issuers")
        if issuers is None:
            issuers = []
        if not isinstance(issuers, list):
            raise ConfigError(at, "must be a list", issuers)
        out["jwt_issuers"] = tuple(
            JwtIssuer.from_mapping(_mapping(item, f"{at}[{i}]"), f"{at}[{i}]", base_dir)
            for i, item in enumerate(issuers)
        )
    return out


def parse_endpoint_patch(data: object, base_dir: Path) -> dict[str, Any]:
    """The fields of a PATCH /admin/endpoints/{ep} body, type-checked."""
    mapping = _mapping(data, "")
    _no_unknown(mapping, ENDPOINT_PATCH_KEYS, "")
    return _endpoint_fields(mapping, "", base_dir)


def parse_endpoint(data: object, where: str, base_dir: Path) -> EndpointConfig:
    mapping = _mapping(data, where)
    _no_unknown(mapping, _ENDPOINT_KEYS, where)
    name = _name(mapping, where)
    versions = mapping.get("versions")
    if not isinstance(versions, list):
        raise ConfigError(_path(where, "versions"), "must be a list of 1 to 6 versions", versions)
    parsed = tuple(parse_version(v, f"{_path(where, 'versions')}[{i}]") for i, v in enumerate(versions))
    endpoint = EndpointConfig(name=name, versions=parsed, **_endpoint_fields(mapping, where, base_dir))
    validate_endpoint(endpoint, where)
    return endpoint


def validate_endpoint(endpoint: EndpointConfig, where: str = "") -> None:
    """The rules that span fields: version count, names, one default, one control, sums, mirror."""
    at = _path(where, "versions")
    versions = endpoint.versions
    if not 1 <= len(versions) <= MAX_VERSIONS:
        raise ConfigError(at, f"must have 1 to {MAX_VERSIONS} versions", len(versions))
    seen: set[str] = set()
    for i, version in enumerate(versions):
        if version.name in seen:
            raise ConfigError(f"{at}[{i}].name", "must be unique within the endpoint", version.name)
        seen.add(version.name)
    defaults = [v.name for v in versions if v.is_default]
    if len(defaults) != 1:
        raise ConfigError(at, "exactly one version must have is_default: true", defaults)
    controls = [v.name for v in versions if v.version_type == "control"]
    if len(controls) > 1:
        raise ConfigError(at, "at most one version may have version_type: control", controls)
    total = sum(v.traffic_percentile for v in versions)
    if total > 100:
        raise ConfigError(f"{at}[*].traffic_percentile", "must sum to at most 100", total)
    mirror = endpoint.mirror
    if mirror is not None:
        target = endpoint.version(mirror.version)
        mat = _path(where, "mirror.version")
        if target is None:
            raise ConfigError(mat, "must name a version of this endpoint", mirror.version)
        # A mirrored copy to a live version would double-count its traffic; AzureML's
        # managed endpoints have the same rule.
        if target.traffic_percentile != 0 or target.is_default:
            raise ConfigError(mat, "must name a version with traffic_percentile 0 that is not the default", mirror.version)


def parse_config(data: object, base_dir: Path, path: Path | None = None) -> RouterConfig:
    """A whole router config from its parsed YAML/JSON document."""
    mapping = _mapping(data, "")
    _no_unknown(mapping, {"endpoints"}, "")
    endpoints = mapping.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise ConfigError("endpoints", "must be a non-empty list", endpoints)
    parsed = tuple(parse_endpoint(e, f"endpoints[{i}]", base_dir) for i, e in enumerate(endpoints))
    names = [e.name for e in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"endpoints[{i}].name", "must be unique", name)
    return RouterConfig(endpoints=parsed, path=path)


def load_config(path: Path) -> RouterConfig:
    """Read and validate ``path`` (YAML, of which JSON is a subset)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML or JSON: {exc}") from exc
    return parse_config(data, base_dir=path.resolve().parent, path=path)


# --- writing -------------------------------------------------------------------------------


def version_to_dict(version: VersionConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": version.name,
        "upstreams": list(version.upstreams),
        "traffic_percentile": version.traffic_percentile,
        "is_default": version.is_default,
        "version_type": version.version_type,
    }
    if version.description is not None:
        out["description"] = version.description
    return out


def endpoint_to_dict(endpoint: EndpointConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": endpoint.name,
        "auth_enabled": endpoint.auth_enabled,
        "token_auth_enabled": endpoint.token_auth_enabled,
        "scoring_timeout_ms": endpoint.scoring_timeout_ms,
        "replica_max_concurrent_requests": endpoint.replica_max_concurrent_requests,
        "max_request_wait_time": endpoint.max_request_wait_time,
        "versions": [version_to_dict(v) for v in endpoint.versions],
    }
    if endpoint.stickiness_header is not None:
        out["stickiness_header"] = endpoint.stickiness_header
    if endpoint.mirror is not None:
        out["mirror"] = {"version": endpoint.mirror.version, "percent": endpoint.mirror.percent}
    if endpoint.jwt_issuers:
        out["jwt_issuers"] = [i.to_mapping() for i in endpoint.jwt_issuers]
    return out


def config_to_dict(config: RouterConfig) -> dict[str, Any]:
    return {"endpoints": [endpoint_to_dict(e) for e in config.endpoints]}


def save_config(config: RouterConfig, path: Path) -> None:
    """Write ``config`` to ``path`` atomically, as JSON for ``.json`` files and YAML otherwise."""
    data = config_to_dict(config)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    atomic_write(path, text.encode("utf-8"), mode=0o644)


# --- admin changes: pure, each returns a new validated config ------------------------------


def _replace_endpoint(config: RouterConfig, endpoint: EndpointConfig) -> RouterConfig:
    validate_endpoint(endpoint)
    endpoints = tuple(endpoint if e.name == endpoint.name else e for e in config.endpoints)
    return dataclasses.replace(config, endpoints=endpoints)


def _demote_others(versions: Sequence[VersionConfig], keep: VersionConfig) -> list[VersionConfig]:
    """AzureML semantics: a new default or control turns the previous one into a non-default
    or a treatment."""
    out = []
    for v in versions:
        if v.name != keep.name:
            if keep.is_default and v.is_default:
                v = dataclasses.replace(v, is_default=False)
            if keep.version_type == "control" and v.version_type == "control":
                v = dataclasses.replace(v, version_type="treatment")
        out.append(v)
    return out


def with_version_added(config: RouterConfig, endpoint_name: str, version: VersionConfig) -> RouterConfig:
    endpoint = _require_endpoint(config, endpoint_name)
    if endpoint.version(version.name) is not None:
        raise VersionConflict(f"version '{version.name}' already exists in endpoint '{endpoint_name}'")
    if len(endpoint.versions) >= MAX_VERSIONS:
        raise ConfigError("versions", f"an endpoint has at most {MAX_VERSIONS} versions", len(endpoint.versions))
    versions = [*_demote_others(endpoint.versions, version), version]
    return _replace_endpoint(config, dataclasses.replace(endpoint, versions=tuple(versions)))


def with_version_updated(
    config: RouterConfig, endpoint_name: str, version_name: str, changes: Mapping[str, Any]
) -> RouterConfig:
    endpoint = _require_endpoint(config, endpoint_name)
    current = _require_version(endpoint, version_name)
    if changes.get("is_default") is False and current.is_default:
        raise VersionConflict(
            f"version '{version_name}' is the default; make another version the default instead"
        )
    updated = dataclasses.replace(current, **changes)
    versions = [updated if v.name == version_name else v for v in _demote_others(endpoint.versions, updated)]
    return _replace_endpoint(config, dataclasses.replace(endpoint, versions=tuple(versions)))


def with_version_deleted(config: RouterConfig, endpoint_name: str, version_name: str) -> RouterConfig:
    endpoint = _require_endpoint(config, endpoint_name)
    version = _require_version(endpoint, version_name)
    if len(endpoint.versions) == 1:
        raise VersionConflict(f"version '{version_name}' is the only version of endpoint '{endpoint_name}'")
    if version.is_default:
        raise VersionConflict(
            f"version '{version_name}' is the default; make another version the default before deleting it"
        )
    if endpoint.mirror is not None and endpoint.mirror.version == version_name:
        raise VersionConflict(f"version '{version_name}' receives the endpoint's mirror; remove the mirror first")
    versions = tuple(v for v in endpoint.versions if v.name != version_name)
    return _replace_endpoint(config, dataclasses.replace(endpoint, versions=versions))


def with_endpoint_patched(config: RouterConfig, endpoint_name: str, changes: Mapping[str, Any]) -> RouterConfig:
    endpoint = _require_endpoint(config, endpoint_name)
    return _replace_endpoint(config, dataclasses.replace(endpoint, **changes))


class EndpointNotFound(LookupError):
    """No endpoint (or version) of that name: HTTP 404."""


def _require_endpoint(config: RouterConfig, name: str) -> EndpointConfig:
    endpoint = config.endpoint(name)
    if endpoint is None:
        raise EndpointNotFound(f"endpoint '{name}' not found")
    return endpoint


def _require_version(endpoint: EndpointConfig, name: str) -> VersionConfig:
    version = endpoint.version(name)
    if version is None:
        raise EndpointNotFound(f"endpoint '{endpoint.name}' has no version '{name}'")
    return version
