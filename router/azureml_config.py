"""Parse the deployment files an AzureML user already has: ``deploymentconfig.json`` and
``inferenceconfig.json``.

Two shapes of the deployment configuration exist and both are accepted:

* the CLI's nested camelCase file (``az ml model deploy --deploy-config-file``), e.g.
  ``autoScaler.minReplicas``, ``containerResourceRequirements.memoryInGB``,
  ``livenessProbeRequirements.periodSeconds``; the mapping follows azureml-core's
  ``deploy_config_dict_to_obj`` (AKS branch) and the "deployment configuration schema" page;
* the SDK's ``AksWebservice.deploy_configuration(...)`` keyword names in snake_case, e.g.
  ``autoscale_min_replicas``, ``memory_gb``, ``period_seconds``.

Both land in one frozen :class:`AksDeploymentConfig` whose defaults are AzureML's. An
unknown key, a wrong type or an out-of-range value raises :class:`AzureMLConfigError`
naming the key as it was written in the file (``autoScaler.minReplicas: must be >= 1,
got 0``). Keys AzureML knows but that have no meaning for infergate (Application
Insights, data collection, conda files...) are accepted and listed in ``ignored`` so the
command can say so. YAML files are accepted too, as the AzureML CLI accepts them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AksDeploymentConfig",
    "AzureMLConfigError",
    "InferenceConfig",
    "ProbeConfig",
    "load_deployment_config",
    "load_inference_config",
    "parse_deployment_config",
    "parse_inference_config",
]


class AzureMLConfigError(ValueError):
    """An AzureML configuration file is unreadable, or a field in it is unknown or invalid."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.field = field_name


@dataclass(frozen=True)
class ProbeConfig:
    """Liveness probe settings; the defaults are AzureML's AKS defaults."""

    period_seconds: int = 10
    initial_delay_seconds: int = 310
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class AksDeploymentConfig:
    """An AKS web service deployment configuration, AzureML's defaults filled in."""

    autoscale_enabled: bool = True
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 10
    autoscale_refresh_seconds: int = 1
    autoscale_target_utilization: int = 70  # percent
    num_replicas: int | None = None
    auth_enabled: bool = True
    token_auth_enabled: bool = False
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    cpu_cores_limit: float | None = None
    memory_gb_limit: float | None = None
    gpu_cores: int = 0
    scoring_timeout_ms: int = 60000
    replica_max_concurrent_requests: int = 1
    max_request_wait_time: int = 500  # ms
    liveness: ProbeConfig = field(default_factory=ProbeConfig)
    namespace: str | None = None
    primary_key: str | None = None
    secondary_key: str | None = None
    # Keys AzureML knows that infergate does not use, as written in the file.
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class InferenceConfig:
    """The parts of an AzureML inference configuration infergate uses.

    ``entry_script`` is resolved against ``source_directory`` (as AzureML does), which is
    resolved against the directory of the inference configuration file.
    """

    entry_script: Path | None = None
    source_directory: Path | None = None
    enable_gpu: bool = False
    environment_name: str | None = None
    ignored: tuple[str, ...] = ()


# --- deployment configuration ------------------------------------------------------------

# Canonical name -> (kind, constraint). Kinds: bool, int, number, str.
_KINDS: dict[str, str] = {
    "compute_type": "str",
    "autoscale_enabled": "bool",
    "autoscale_min_replicas": "int",
    "autoscale_max_replicas": "int",
    "autoscale_refresh_seconds": "int",
    "autoscale_target_utilization": "int",
    "num_replicas": "int",
    "auth_enabled": "bool",
    "token_auth_enabled": "bool",
    "cpu_cores": "number",
    "memory_gb": "number",
    "cpu_cores_limit": "number",
    "memory_gb_limit": "number",
    "gpu_cores": "int",
    "scoring_timeout_ms": "int",
    "replica_max_concurrent_requests": "int",
    "max_request_wait_time": "int",
    "period_seconds": "int",
    "initial_delay_seconds": "int",
    "timeout_seconds": "int",
    "success_threshold": "int",
    "failure_threshold": "int",
    "namespace": "str",
    "primary_key": "str",
    "secondary_key": "str",
}

# CLI (camelCase, nested with dots) -> canonical name. From azureml-core
# `deploy_config_dict_to_obj`, AKS branch. `containerResourceRequirements.gpu` is the REST
# API's spelling of `gpuCores`, accepted as well.
_CAMEL: dict[str, str] = {
    "computeType": "compute_type",
    "autoScaler.autoscaleEnabled": "autoscale_enabled",
    "autoScaler.minReplicas": "autoscale_min_replicas",
    "autoScaler.maxReplicas": "autoscale_max_replicas",
    "autoScaler.refreshPeriodInSeconds": "autoscale_refresh_seconds",
    "autoScaler.targetUtilization": "autoscale_target_utilization",
    "authEnabled": "auth_enabled",
    "tokenAuthEnabled": "token_auth_enabled",
    "containerResourceRequirements.cpu": "cpu_cores",
    "containerResourceRequirements.memoryInGB": "memory_gb",
    "containerResourceRequirements.cpuLimit": "cpu_cores_limit",
    "containerResourceRequirements.memoryInGBLimit": "memory_gb_limit",
    "containerResourceRequirements.gpu": "gpu_cores",
    "gpuCores": "gpu_cores",
    "scoringTimeoutMs": "scoring_timeout_ms",
    "maxConcurrentRequestsPerContainer": "replica_max_concurrent_requests",
    "maxQueueWaitMs": "max_request_wait_time",
    "numReplicas": "num_replicas",
    "keys.primaryKey": "primary_key",
    "keys.secondaryKey": "secondary_key",
    "livenessProbeRequirements.periodSeconds": "period_seconds",
    "livenessProbeRequirements.initialDelaySeconds": "initial_delay_seconds",
    "livenessProbeRequirements.timeoutSeconds": "timeout_seconds",
    "livenessProbeRequirements.successThreshold": "success_threshold",
    "livenessProbeRequirements.failureThreshold": "failure_threshold",
    "namespace": "namespace",
}
# SDK keyword names map to themselves.
_SNAKE: dict[str, str] = {name: name for name in _KINDS}

# Known to AzureML, meaningless here (monitoring, data collection, AzureML compute names,
# descriptive metadata). Objects listed here are ignored whole.
_IGNORED_DEPLOY = frozenset(
    {
        "dataCollection", "appInsightsEnabled", "computeTargetName", "sslEnabled",
        "description", "tags", "properties",
        "collect_model_data", "enable_app_insights", "compute_target_name",
    }
)
_NESTED = frozenset(
    {"autoScaler", "containerResourceRequirements", "keys", "livenessProbeRequirements"}
)
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _load_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AzureMLConfigError(what, f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AzureMLConfigError(what, f"{path} is not valid JSON or YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AzureMLConfigError(what, f"{path} must hold an object, got {type(data).__name__}")
    return data


def _flatten(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Nested camelCase objects -> dotted keys; returns (flat, ignored keys)."""
    flat: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        key = str(key)
        if key in _IGNORED_DEPLOY:
            ignored.append(key)
        elif key in _NESTED:
            if not isinstance(value, dict):
                raise AzureMLConfigError(key, f"must be an object, got {value!r}")
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    return flat, ignored


def _check_kind(name: str, kind: str, value: Any) -> Any:
    # bool is an int subclass in Python: reject it explicitly where a number is expected,
    # and never cast strings ("false" must not become True).
    if kind == "bool":
        if not isinstance(value, bool):
            raise AzureMLConfigError(name, f"must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise AzureMLConfigError(name, f"must be an integer, got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AzureMLConfigError(name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise AzureMLConfigError(name, f"must be a finite number, got {value!r}")
        return float(value)
    elif not isinstance(value, str):
        raise AzureMLConfigError(name, f"must be a string, got {value!r}")
    return value


def parse_deployment_config(data: dict[str, Any]) -> AksDeploymentConfig:
    """Validate a deployment configuration object (either shape) into AksDeploymentConfig."""
    flat, ignored = _flatten(data)
    values: dict[str, Any] = {}
    written: dict[str, str] = {}  # canonical -> key as written, for error messages
    unknown: list[str] = []
    for key, value in flat.items():
        canonical = _CAMEL.get(key) or _SNAKE.get(key)
        if canonical is None:
            unknown.append(key)
            continue
        if canonical in written:
            raise AzureMLConfigError(key, f"duplicates {written[canonical]}")
        written[canonical] = key
        if value is None:  # AzureML writes null for "use the default"
            continue
        values[canonical] = _check_kind(key, _KINDS[canonical], value)
    if unknown:
        known = sorted(set(_CAMEL) | set(_SNAKE))
        raise AzureMLConfigError(
            ", ".join(sorted(unknown)),
            f"unknown field{'s' if len(unknown) > 1 else ''} (known: {', '.join(known)})",
        )

    def where(name: str) -> str:
        return written.get(name, name)

    def at_least(name: str, low: float) -> None:
        if name in values and values[name] < low:
            raise AzureMLConfigError(where(name), f"must be >= {low:g}, got {values[name]!r}")

    compute_type = values.pop("compute_type", "aks")
    if compute_type.lower() != "aks":
        raise AzureMLConfigError(
            where("compute_type"), f"must be 'AKS' (render-k8s targets Kubernetes), got {compute_type!r}"
        )
    for name in (
        "autoscale_min_replicas", "autoscale_max_replicas", "autoscale_refresh_seconds",
        "autoscale_target_utilization", "num_replicas", "scoring_timeout_ms",
        "replica_max_concurrent_requests", "period_seconds", "timeout_seconds",
        "success_threshold", "failure_threshold",
    ):
        at_least(name, 1)
    for name in ("max_request_wait_time", "initial_delay_seconds", "gpu_cores"):
        at_least(name, 0)
    for name in ("cpu_cores", "memory_gb", "cpu_cores_limit", "memory_gb_limit"):
        if name in values and values[name] <= 0:
            raise AzureMLConfigError(where(name), f"must be > 0, got {values[name]!r}")
    if values.get("autoscale_target_utilization", 70) > 100:
        raise AzureMLConfigError(
            where("autoscale_target_utilization"),
            f"must be <= 100 (percent), got {values['autoscale_target_utilization']}",
        )
    low = values.get("autoscale_min_replicas", 1)
    high = values.get("autoscale_max_replicas", 10)
    if low > high:
        raise AzureMLConfigError(
            where("autoscale_min_replicas"),
            f"must be <= {where('autoscale_max_replicas')} ({high}), got {low}",
        )
    for request, limit in (("cpu_cores", "cpu_cores_limit"), ("memory_gb", "memory_gb_limit")):
        if limit in values and values[limit] < values.get(request, 0.0):
            raise AzureMLConfigError(
                where(limit), f"must be >= {where(request)} ({values[request]:g}), got {values[limit]:g}"
            )
    if "namespace" in values and not _NAMESPACE_RE.match(values["namespace"]):
        raise AzureMLConfigError(
            where("namespace"),
            "must be at most 63 lowercase letters, digits or '-', starting and ending with a "
            f"letter or digit, got {values['namespace']!r}",
        )
    # AzureML: autoscaling defaults to on unless numReplicas is given, and refuses both.
    if values.get("autoscale_enabled") is True and "num_replicas" in values:
        raise AzureMLConfigError(
            where("num_replicas"), f"cannot be set when {where('autoscale_enabled')} is true"
        )
    values.setdefault("autoscale_enabled", "num_replicas" not in values)
    probe = ProbeConfig(
        **{
            name: values.pop(name)
            for name in (
                "period_seconds", "initial_delay_seconds", "timeout_seconds",
                "success_threshold", "failure_threshold",
            )
            if name in values
        }
    )
    return AksDeploymentConfig(**values, liveness=probe, ignored=tuple(ignored))


def load_deployment_config(path: Path) -> AksDeploymentConfig:
    """Read and validate a ``deploymentconfig.json`` (or YAML) file."""
    return parse_deployment_config(_load_mapping(path, "--deployment-config"))


# --- inference configuration -------------------------------------------------------------

_INFER_KEYS: dict[str, str] = {
    "entryScript": "entry_script",
    "entry_script": "entry_script",
    "sourceDirectory": "source_directory",
    "source_directory": "source_directory",
    "enableGpu": "enable_gpu",
    "enable_gpu": "enable_gpu",
    "environment": "environment",
}
# The image build options of AzureML: infergate's image carries its own environment.
_IGNORED_INFER = frozenset(
    {
        "runtime", "condaFile", "conda_file", "extraDockerfileSteps", "extra_docker_file_steps",
        "baseImage", "base_image", "baseImageRegistry", "base_image_registry", "cudaVersion",
        "cuda_version", "description", "schemaFile", "schema_file", "dependencies",
    }
)


def parse_inference_config(data: dict[str, Any], base_dir: Path) -> InferenceConfig:
    """Validate an inference configuration object; paths resolve against ``base_dir``."""
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in data.items():
        key = str(key)
        if key in _IGNORED_INFER:
            ignored.append(key)
            continue
        canonical = _INFER_KEYS.get(key)
        if canonical is None:
            unknown.append(key)
            continue
        if canonical in written:
            raise AzureMLConfigError(key, f"duplicates {written[canonical]}")
        written[canonical] = key
        if value is not None:
            values[canonical] = value
    if unknown:
        known = sorted(set(_INFER_KEYS) | _IGNORED_INFER)
        raise AzureMLConfigError(
            ", ".join(sorted(unknown)),
            f"unknown field{'s' if len(unknown) > 1 else ''} (known: {', '.join(known)})",
        )
    source_dir: Path | None = None
    if "source_directory" in values:
        raw = _check_kind(written["source_directory"], "str", values["source_directory"])
        source_dir = (base_dir / raw).resolve()
        if not source_dir.is_dir():
            raise AzureMLConfigError(written["source_directory"], f"not a directory: {source_dir}")
    entry: Path | None = None
    if "entry_script" in values:
        raw = _check_kind(written["entry_script"], "str", values["entry_script"])
        entry = ((source_dir or base_dir) / raw).resolve()
        if not entry.is_file():
            raise AzureMLConfigError(written["entry_script"], f"no such file: {entry}")
        if source_dir is not None and not entry.is_relative_to(source_dir):
            raise AzureMLConfigError(
                written["entry_script"], f"must lie inside the source directory {source_dir}"
            )
    enable_gpu = False
    if "enable_gpu" in values:
        enable_gpu = _check_kind(written["enable_gpu"], "bool", values["enable_gpu"])
    env_name: str | None = None
    if "environment" in values:
        env = values["environment"]
        # An Environment object (name, version, python, docker...) or a registered name.
        if isinstance(env, dict):
            name = env.get("name")
            env_name = name if isinstance(name, str) else None
        elif isinstance(env, str):
            env_name = env
        else:
            raise AzureMLConfigError(
                written["environment"], f"must be an object or a name, got {env!r}"
            )
        ignored.append(written["environment"])
    return InferenceConfig(
        entry_script=entry,
        source_directory=source_dir,
        enable_gpu=enable_gpu,
        environment_name=env_name,
        ignored=tuple(ignored),
    )


def load_inference_config(path: Path) -> InferenceConfig:
    """Read and validate an ``inferenceconfig.json`` (or YAML) file."""
    data = _load_mapping(path, "--inference-config")
    return parse_inference_config(data, path.resolve().parent)
