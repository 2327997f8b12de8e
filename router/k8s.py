"""``infergate render-k8s``: Kubernetes manifests from an AzureML user's deployment files.

    infergate render-k8s --deployment-config deploymentconfig.json \\
        --inference-config inferenceconfig.json --model NAME:VERSION --out DIR \\
        [--layout sidecar|router] [--gpu] [--autoscaler keda|hpa] [--name NAME]

The rendering functions map (configs, options) to a list of manifest dicts; they read the
entry script's source directory (to embed it) but write nothing, and take the secret
generator as an argument; only :func:`main` writes files. The manifests are the ones under deploy/kubernetes/
(see docs/deploy.md), specialised:

* ``sidecar`` layout: one Deployment whose pods run the scoring server and the router as a
  native sidecar (an init container with ``restartPolicy: Always``: it starts first and,
  on shutdown, stops only after the scoring container has drained). The router reaches
  the scoring server on 127.0.0.1.
* ``router`` layout: a router Deployment in front of a scoring Deployment per version,
  found through a headless Service (the router's upstream is its DNS name).

Autoscaling is Kubernetes': a KEDA ScaledObject (AKS's add-on) with the Prometheus scaler,
or an autoscaling/v2 HorizontalPodAutoscaler on a Pods metric served by prometheus-adapter.
Both feed the HPA ``desired = ceil(current * utilization / target)``, AzureML's formula.
"""

from __future__ import annotations

import argparse
import base64
import math
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import yaml

from router.keys import EndpointKeys, keys_document
from router.azureml_config import (
    AksDeploymentConfig,
    AzureMLConfigError,
    InferenceConfig,
    load_deployment_config,
    load_inference_config,
)

__all__ = ["RenderOptions", "RenderError", "main", "parse_model", "render", "render_files"]

Manifest = dict[str, Any]
_T = TypeVar("_T")
Layout = Literal["sidecar", "router"]
Autoscaler = Literal["keda", "hpa"]

SCORING_PORT = 8001
ROUTER_PORT = 8000
ADMIN_PORT = 8002
MODELS_DIR = "/models"
SOURCE_DIR = "/var/lib/infergate/source"
STATE_DIR = "/var/lib/infergate/state"
SECRET_DIR = "/etc/infergate/secret"
ROUTER_CONFIG_DIR = "/etc/infergate/router"
UID = 10001
# The scoring server's own drain (readiness 503 while still serving), and the margin the
# kubelet gets on top before SIGKILL. The router, after its preStop sleep, drains for its
# default --drain-delay-s (2 s, Connection: close while serving) plus at most 1 s for its
# accept queue: inside GRACE_MARGIN_S.
DRAIN_DELAY_S = 5
GRACEFUL_TIMEOUT_S = 30
GRACE_MARGIN_S = 10
# A ConfigMap holds at most 1 MiB; leave room for keys and metadata.
MAX_SOURCE_BYTES = 900 * 1024
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")


class RenderError(ValueError):
    """A command-line value cannot be rendered; the message names the option."""


@dataclass(frozen=True)
class RenderOptions:
    """Everything besides the AzureML files that shapes the manifests."""

    name: str
    model_name: str
    model_version: int
    layout: Layout = "sidecar"
    gpu: bool = False
    autoscaler: Autoscaler = "keda"
    image: str = "infergate:cpu"
    gpu_image: str = "infergate:gpu"
    prometheus_url: str = "http://prometheus-server.monitoring.svc.cluster.local:80"
    models_claim: str | None = None  # PVC holding /models; default "<name>-models"


def parse_model(value: str) -> tuple[str, int]:
    """``NAME:VERSION`` -> (name, version); AzureML model versions are integers >= 1."""
    name, sep, version = value.rpartition(":")
    if not sep or not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", name):
        raise RenderError(f"--model: expected NAME:VERSION, got {value!r}")
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise RenderError(f"--model: VERSION must be an integer >= 1, got {version!r}")
    return name, int(version)


def default_service_name(model_name: str) -> str:
    """A DNS-1123 name from a model name (AzureML allows '_' and '.' in model names)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:52].strip("-")
    return name or "infergate"


# --- small builders ----------------------------------------------------------------------


def _cpu(cores: float) -> str:
    millis = max(1, round(cores * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _memory(gb: float) -> str:
    # AzureML's memory_gb is GiB-sized in practice (0.5 -> 512Mi).
    return f"{max(1, math.ceil(gb * 1024))}Mi"


def _labels(opts: RenderOptions, component: str, version: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "infergate",
        "app.kubernetes.io/instance": opts.name,
        "app.kubernetes.io/component": component,
    }
    if version is not None:
        labels["infergate.io/version"] = version
    return labels


def _meta(name: str, labels: dict[str, str], namespace: str | None) -> Manifest:
    meta: Manifest = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def version_name(opts: RenderOptions) -> str:
    return f"v{opts.model_version}"


def graceful_timeout_s(cfg: AksDeploymentConfig) -> int:
    """Let an in-flight request run to its scoring timeout before the server gives up."""
    return max(GRACEFUL_TIMEOUT_S, math.ceil(cfg.scoring_timeout_ms / 1000))


def termination_grace_s(cfg: AksDeploymentConfig) -> int:
    """drain delay (readiness 503, still serving) + in-flight drain + margin."""
    return DRAIN_DELAY_S + graceful_timeout_s(cfg) + GRACE_MARGIN_S


# --- router configuration ----------------------------------------------------------------


def router_config(cfg: AksDeploymentConfig, opts: RenderOptions, upstream: str) -> Manifest:
    """The router.yaml for one endpoint with one version taking all traffic."""
    return {
        "endpoints": [
            {
                "name": opts.name,
                "auth_enabled": cfg.auth_enabled,
                "token_auth_enabled": cfg.token_auth_enabled,
                "scoring_timeout_ms": cfg.scoring_timeout_ms,
                "replica_max_concurrent_requests": cfg.replica_max_concurrent_requests,
                "max_request_wait_time": cfg.max_request_wait_time,
                "versions": [
                    {
                        "name": version_name(opts),
                        "upstreams": [upstream],
                        "traffic_percentile": 100,
                        "is_default": True,
                        "version_type": "control",
                    }
                ],
            }
        ]
    }


def _router_configmap(cfg: AksDeploymentConfig, opts: RenderOptions, upstream: str) -> Manifest:
    text = yaml.safe_dump(router_config(cfg, opts, upstream), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{opts.name}-router", _labels(opts, "router"), cfg.namespace),
        "data": {"router.yaml": text},
    }


def _random_token() -> str:
    return secrets.token_urlsafe(32)


def _secret(cfg: AksDeploymentConfig, opts: RenderOptions, token: Callable[[], str]) -> Manifest:
    # keys.json seeds the router's state dir: the endpoint's two keys, taken from the
    # AzureML file when it sets them (keys.primaryKey / primary_key), generated otherwise.
    keys = {
        opts.name: EndpointKeys(
            primary=cfg.primary_key or token(), secondary=cfg.secondary_key or token()
        )
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(f"{opts.name}-router", _labels(opts, "router"), cfg.namespace),
        "type": "Opaque",
        "stringData": {
            "admin-token": token(),
            "keys.json": keys_document(keys).decode(),
        },
    }


def _source_configmap(
    cfg: AksDeploymentConfig, opts: RenderOptions, inference: InferenceConfig
) -> tuple[Manifest, list[Manifest]]:
    """The entry script (and its source directory) as a ConfigMap plus its volume items."""
    assert inference.entry_script is not None
    root = inference.source_directory or inference.entry_script.parent
    files = (
        sorted(
            p for p in root.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if inference.source_directory is not None
        else [inference.entry_script]
    )
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items: list[Manifest] = []
    total = 0
    for index, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        total += len(raw)
        # ConfigMap keys cannot hold '/': flatten, and restore the tree through items.
        key = f"f{index}-" + re.sub(r"[^-._a-zA-Z0-9]", "_", path.name)
        try:
            data[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(raw).decode("ascii")
        items.append({"key": key, "path": rel})
    if total > MAX_SOURCE_BYTES:
        field = "sourceDirectory" if inference.source_directory else "entryScript"
        raise RenderError(
            f"--inference-config: {field}: {total} bytes do not fit a ConfigMap "
            f"(max {MAX_SOURCE_BYTES}); build an image FROM infergate with the sources instead"
        )
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{opts.name}-source", _labels(opts, "scoring"), cfg.namespace),
        "data": data,
    }
    if binary:
        manifest["binaryData"] = binary
    return manifest, items


# --- containers --------------------------------------------------------------------------


def _probe(path: str, port: int, cfg: AksDeploymentConfig, initial_delay: int) -> Manifest:
    p = cfg.liveness
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": p.period_seconds,
        "timeoutSeconds": p.timeout_seconds,
        "successThreshold": 1 if path.endswith("/live") else p.success_threshold,
        "failureThreshold": p.failure_threshold,
    }


def _scoring_container(
    cfg: AksDeploymentConfig, opts: RenderOptions, inference: InferenceConfig, gpu: bool
) -> Manifest:
    model_dir = f"{MODELS_DIR}/{opts.model_name}/{opts.model_version}"
    args = ["serve", "--host", "0.0.0.0", "--port", str(SCORING_PORT)]
    env: list[Manifest] = [{"name": "AZUREML_MODEL_DIR", "value": model_dir}]
    if inference.entry_script is not None:
        root = inference.source_directory or inference.entry_script.parent
        script = f"{SOURCE_DIR}/{inference.entry_script.relative_to(root).as_posix()}"
        args += ["--entry-script", script, "--model-dir", model_dir]
    else:
        args += ["--model-repository", MODELS_DIR]
    args += [
        "--scoring-timeout-ms", str(cfg.scoring_timeout_ms),
        "--drain-delay-s", str(DRAIN_DELAY_S),
        "--graceful-timeout-s", str(graceful_timeout_s(cfg)),
    ]
    requests: Manifest = {"cpu": _cpu(cfg.cpu_cores), "memory": _memory(cfg.memory_gb)}
    # Memory limit = request unless AzureML's limit says more: the kubelet OOM-kills on the
    # limit, and a request-sized limit makes eviction predictable. CPU gets no limit unless
    # asked for (CFS throttling hurts tail latency more than sharing idle cores does).
    limits: Manifest = {"memory": _memory(cfg.memory_gb_limit or cfg.memory_gb)}
    if cfg.cpu_cores_limit is not None:
        limits["cpu"] = _cpu(cfg.cpu_cores_limit)
    if gpu:
        limits["nvidia.com/gpu"] = max(1, cfg.gpu_cores)
    mounts: list[Manifest] = [
        {"name": "models", "mountPath": f"{MODELS_DIR}/{opts.model_name}",
         "subPath": opts.model_name, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if inference.entry_script is not None:
        mounts.append({"name": "source", "mountPath": SOURCE_DIR, "readOnly": True})
    return {
        "name": "scoring",
        "image": opts.gpu_image if gpu else opts.image,
        "args": args,
        "env": env,
        "ports": [{"name": "scoring", "containerPort": SCORING_PORT, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        "livenessProbe": _probe("/v2/health/live", SCORING_PORT, cfg, cfg.liveness.initial_delay_seconds),
        # Readiness gates traffic, so it starts at once instead of after the liveness delay.
        "readinessProbe": _probe("/v2/health/ready", SCORING_PORT, cfg, 0),
        "volumeMounts": mounts,
        "securityContext": _container_security(),
    }


def _state_init_container(opts: RenderOptions, image: str) -> Manifest:
    # The router persists admin changes to its config file and keys to its state dir:
    # both must be writable, so the ConfigMap and Secret are copied into an emptyDir.
    script = (
        "import os, shutil\n"
        f"shutil.copyfile('{ROUTER_CONFIG_DIR}/router.yaml', '{STATE_DIR}/router.yaml')\n"
        f"shutil.copyfile('{SECRET_DIR}/keys.json', '{STATE_DIR}/keys.json')\n"
        f"os.chmod('{STATE_DIR}/keys.json', 0o600)\n"
    )
    return {
        "name": "state-init",
        "image": image,
        "command": ["python", "-c", script],
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "router-config", "mountPath": ROUTER_CONFIG_DIR, "readOnly": True},
            {"name": "router-secret", "mountPath": SECRET_DIR, "readOnly": True},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": _container_security(),
    }


def _router_container(opts: RenderOptions, image: str, sidecar: bool) -> Manifest:
    container: Manifest = {
        "name": "router",
        "image": image,
        "args": [
            "route", "--config", f"{STATE_DIR}/router.yaml", "--host", "0.0.0.0",
            "--port", str(ROUTER_PORT), "--admin-port", str(ADMIN_PORT),
            "--state-dir", STATE_DIR,
        ],
        "env": [
            {
                "name": "INFERGATE_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": f"{opts.name}-router", "key": "admin-token"}},
            }
        ],
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        # The admin port's /metrics needs no credential: a cheap, honest liveness check.
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": ADMIN_PORT},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
        },
        "readinessProbe": {"tcpSocket": {"port": ROUTER_PORT}, "periodSeconds": 5},
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _container_security(),
    }
    if sidecar:
        # Native sidecar (Kubernetes >= 1.29): started before the scoring container and
        # stopped after it, so the router outlives the scoring server's drain.
        container["restartPolicy"] = "Always"
    else:
        # Its own Deployment: keep accepting while Services and load balancers drop the
        # endpoint, then the router drains (grace period covers the scoring timeout).
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(DRAIN_DELAY_S)]}}}
    return container


def _prometheus_annotations() -> dict[str, str]:
    # The community Prometheus chart's `kubernetes-pods` job scrapes these; the router's
    # admin port serves the utilization metric autoscaling reads.
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ADMIN_PORT),
        "prometheus.io/path": "/metrics",
    }


def _gpu_pod_fields() -> Manifest:
    return {
        # AKS GPU node pools are commonly tainted sku=gpu:NoSchedule; the NVIDIA device
        # plugin's own taint is nvidia.com/gpu.
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        ]
    }


def _volumes(
    opts: RenderOptions, with_models: bool, with_router: bool, with_source: list[Manifest] | None
) -> list[Manifest]:
    """The pod's volumes; ``with_source`` is the source ConfigMap's items, if any."""
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    if with_models:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {
                    "claimName": opts.models_claim or f"{opts.name}-models",
                    "readOnly": True,
                },
            }
        )
    if with_source is not None:
        volumes.append(
            {"name": "source", "configMap": {"name": f"{opts.name}-source", "items": with_source}}
        )
    if with_router:
        volumes += [
            {"name": "state", "emptyDir": {}},
            {"name": "router-config", "configMap": {"name": f"{opts.name}-router"}},
            {"name": "router-secret", "secret": {"secretName": f"{opts.name}-router", "defaultMode": 0o440}},
        ]
    return volumes


def _deployment(
    name: str, labels: dict[str, str], namespace: str | None, replicas: int, pod_spec: Manifest,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    template_meta: Manifest = {"labels": dict(labels)}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, labels, namespace),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def _service(
    name: str, labels: dict[str, str], selector: dict[str, str], namespace: str | None,
    ports: list[Manifest], headless: bool = False,
) -> Manifest:
    spec: Manifest = {"selector": dict(selector), "ports": ports}
    if headless:
        # DNS returns one A record per ready pod; the router balances across them.
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = False
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, labels, namespace), "spec": spec}


def _pdb(name: str, labels: dict[str, str], namespace: str | None) -> Manifest:
    # maxUnavailable rather than minAvailable: with one replica, minAvailable: 1 would
    # block every node drain.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, labels, namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(labels)}},
    }


def _initial_replicas(cfg: AksDeploymentConfig) -> int:
    if cfg.autoscale_enabled:
        return cfg.autoscale_min_replicas
    return cfg.num_replicas or 1


def utilization_query(opts: RenderOptions, namespace: str | None, aggregate: str) -> str:
    """PromQL over the routers' utilization gauge for this endpoint/version."""
    selector = f'endpoint="{opts.name}",version="{version_name(opts)}"'
    if namespace:
        selector = f'namespace="{namespace}",' + selector
    return f"{aggregate}(infergate_router_utilization{{{selector}}})"


def _autoscaler(
    cfg: AksDeploymentConfig, opts: RenderOptions, target: str, labels: dict[str, str], aggregate: str
) -> Manifest:
    target_ratio = cfg.autoscale_target_utilization / 100
    if opts.autoscaler == "keda":
        # metricType Value: the HPA KEDA creates computes
        #   desired = ceil(current * value / threshold)
        # with value = the utilization (a ratio) and threshold = target / 100.
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": _meta(target, labels, cfg.namespace),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "pollingInterval": cfg.autoscale_refresh_seconds,
                "minReplicaCount": cfg.autoscale_min_replicas,
                "maxReplicaCount": cfg.autoscale_max_replicas,
                "triggers": [
                    {
                        "type": "prometheus",
                        "metricType": "Value",
                        "metadata": {
                            "serverAddress": opts.prometheus_url,
                            "query": utilization_query(opts, cfg.namespace, aggregate),
                            "threshold": f"{target_ratio:g}",
                        },
                    }
                ],
            },
        }
    # prometheus-adapter serves the gauge per pod (docs/deploy.md has the rule); a Pods
    # metric averages it over the target's pods: desired = ceil(current * avg / target).
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(target, labels, cfg.namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": cfg.autoscale_min_replicas,
            "maxReplicas": cfg.autoscale_max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "infergate_router_utilization"},
                        "target": {"type": "AverageValue", "averageValue": f"{round(target_ratio * 1000)}m"},
                    },
                }
            ],
        },
    }


# --- layouts -----------------------------------------------------------------------------


def render(
    cfg: AksDeploymentConfig, inference: InferenceConfig, opts: RenderOptions,
    token: Callable[[], str] = _random_token,
) -> list[Manifest]:
    """All manifests for one model version, in apply order. ``token`` makes the admin
    token and any key the AzureML file does not set."""
    if not _NAME_RE.match(opts.name):
        raise RenderError(
            f"--name: must be 1-52 lowercase letters, digits or '-', starting and ending with "
            f"a letter or digit, got {opts.name!r}"
        )
    if opts.autoscaler == "hpa" and opts.layout == "router":
        raise RenderError(
            "--autoscaler: 'hpa' needs per-pod utilization, which only the sidecar layout "
            "has; use 'keda' with --layout router"
        )
    gpu = opts.gpu or inference.enable_gpu or cfg.gpu_cores > 0
    image = opts.gpu_image if gpu else opts.image
    ns = cfg.namespace
    manifests: list[Manifest] = []
    source_items: list[Manifest] | None = None
    if inference.entry_script is not None:
        source_cm, source_items = _source_configmap(cfg, opts, inference)
        manifests.append(source_cm)
    scoring = _scoring_container(cfg, opts, inference, gpu)
    grace = termination_grace_s(cfg)

    if opts.layout == "sidecar":
        labels = _labels(opts, "scoring", version_name(opts))
        manifests += [
            _router_configmap(cfg, opts, f"http://127.0.0.1:{SCORING_PORT}"),
            _secret(cfg, opts, token),
        ]
        pod: Manifest = {
            "securityContext": _pod_security(),
            "terminationGracePeriodSeconds": grace,
            "initContainers": [
                _state_init_container(opts, image),
                _router_container(opts, image, sidecar=True),
            ],
            "containers": [scoring],
            "volumes": _volumes(opts, True, True, source_items),
        }
        if gpu:
            pod.update(_gpu_pod_fields())
        manifests += [
            _deployment(opts.name, labels, ns, _initial_replicas(cfg), pod, _prometheus_annotations()),
            _service(opts.name, _labels(opts, "router"), labels, ns,
                     [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
            _service(f"{opts.name}-admin", _labels(opts, "router"), labels, ns,
                     [{"name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"}]),
            _pdb(opts.name, labels, ns),
        ]
        if cfg.autoscale_enabled:
            manifests.append(_autoscaler(cfg, opts, opts.name, labels, "avg"))
        return manifests

    # router layout: the router Deployment + one scoring Deployment per version.
    version = version_name(opts)
    scoring_name = f"{opts.name}-{version}"
    scoring_labels = _labels(opts, "scoring", version)
    router_labels = _labels(opts, "router")
    upstream = (
        f"http://{scoring_name}.{ns}.svc.cluster.local:{SCORING_PORT}" if ns
        else f"http://{scoring_name}:{SCORING_PORT}"
    )
    router_pod: Manifest = {
        "securityContext": _pod_security(),
        # preStop sleep + the longest request the router may still be proxying + margin.
        "terminationGracePeriodSeconds": DRAIN_DELAY_S + math.ceil(cfg.scoring_timeout_ms / 1000) + GRACE_MARGIN_S,
        "initContainers": [_state_init_container(opts, opts.image)],
        "containers": [_router_container(opts, opts.image, sidecar=False)],
        "volumes": _volumes(opts, False, True, None),
    }
    scoring_pod: Manifest = {
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": grace,
        "containers": [scoring],
        "volumes": _volumes(opts, True, False, source_items),
    }
    if gpu:
        scoring_pod.update(_gpu_pod_fields())
    scoring_annotations = _prometheus_annotations() | {"prometheus.io/port": str(SCORING_PORT)}
    manifests += [
        _router_configmap(cfg, opts, upstream),
        _secret(cfg, opts, token),
        _deployment(opts.name, router_labels, ns, 2, router_pod, _prometheus_annotations()),
        _service(opts.name, router_labels, router_labels, ns,
                 [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
        _service(f"{opts.name}-admin", router_labels, router_labels, ns,
                 [{"name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"}]),
        _pdb(opts.name, router_labels, ns),
        _deployment(scoring_name, scoring_labels, ns, _initial_replicas(cfg), scoring_pod, scoring_annotations),
        _service(scoring_name, scoring_labels, scoring_labels, ns,
                 [{"name": "scoring", "port": SCORING_PORT, "targetPort": "scoring", "protocol": "TCP"}],
                 headless=True),
        _pdb(scoring_name, scoring_labels, ns),
    ]
    if cfg.autoscale_enabled:
        # Each router divides its own load by the same capacity, so the routers' gauges
        # add up to the version's utilization.
        manifests.append(_autoscaler(cfg, opts, scoring_name, scoring_labels, "sum"))
    return manifests


def render_files(manifests: list[Manifest]) -> dict[str, str]:
    """File name -> YAML text, plus a kustomization.yaml listing them in apply order."""
    files: dict[str, str] = {}
    for manifest in manifests:
        kind = manifest["kind"].lower()
        name = f"{kind}-{manifest['metadata']['name']}.yaml"
        files[name] = yaml.safe_dump(manifest, sort_keys=False)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files["kustomization.yaml"] = yaml.safe_dump(kustomization, sort_keys=False)
    return files


# --- command -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infergate render-k8s",
        description="Render Kubernetes manifests from AzureML deploymentconfig.json and "
        "inferenceconfig.json (see docs/deploy.md).",
    )
    parser.add_argument("--deployment-config", type=Path, required=True,
                        help="AzureML deployment configuration (CLI camelCase or SDK snake_case)")
    parser.add_argument("--inference-config", type=Path,
                        help="AzureML inference configuration (entryScript, sourceDirectory)")
    parser.add_argument("--model", required=True, help="NAME:VERSION, served from /models/NAME/VERSION")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the manifests into")
    parser.add_argument("--layout", choices=("sidecar", "router"), default="sidecar")
    parser.add_argument("--gpu", action="store_true", help="request nvidia.com/gpu and use the GPU image")
    parser.add_argument("--autoscaler", choices=("keda", "hpa"), default="keda")
    parser.add_argument("--name", help="service (endpoint) name; default: from the model name")
    parser.add_argument("--image", default="infergate:cpu", help="CPU image reference")
    parser.add_argument("--gpu-image", default="infergate:gpu", help="GPU image reference")
    parser.add_argument("--prometheus-url", default=RenderOptions.prometheus_url,
                        help="Prometheus server KEDA queries")
    parser.add_argument("--models-claim", help="PersistentVolumeClaim holding /models (default NAME-models)")
    return parser


def _load(loader: Callable[[Path], _T], path: Path, option: str) -> _T:
    """Run a loader, turning its field error into one that also names the file's option."""
    try:
        return loader(path)
    except AzureMLConfigError as exc:
        message = str(exc)
        if not message.startswith(option):
            message = f"{option}: {message}"
        raise RenderError(message) from exc


def main(argv: list[str]) -> int:
    """Entry point of ``infergate render-k8s``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        model_name, model_version = parse_model(args.model)
        cfg = _load(load_deployment_config, args.deployment_config, "--deployment-config")
        inference = (
            _load(load_inference_config, args.inference_config, "--inference-config")
            if args.inference_config is not None else InferenceConfig()
        )
        opts = RenderOptions(
            name=args.name or default_service_name(model_name),
            model_name=model_name,
            model_version=model_version,
            layout=args.layout,
            gpu=args.gpu,
            autoscaler=args.autoscaler,
            image=args.image,
            gpu_image=args.gpu_image,
            prometheus_url=args.prometheus_url,
            models_claim=args.models_claim,
        )
        files = render_files(render(cfg, inference, opts))
    except RenderError as exc:
        print(f"infergate render-k8s: {exc}", file=sys.stderr)
        return 2
    for key in cfg.ignored + inference.ignored:
        print(f"infergate render-k8s: note: '{key}' has no effect on infergate, ignored", file=sys.stderr)
    if cfg.replica_max_concurrent_requests == 1:
        print(
            "infergate render-k8s: note: replica_max_concurrent_requests is 1 (AzureML's "
            "default); infergate micro-batches, raise it (e.g. 32-64) for throughput",
            file=sys.stderr,
        )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = args.out / name
            path.write_text(text, encoding="utf-8")
            if name.startswith("secret-"):
                path.chmod(0o600)  # it holds the keys and the admin token
    except OSError as exc:
        print(f"infergate render-k8s: --out: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
