"""deploy/kubernetes/: every overlay renders (with the kustomize subset in
deploy_kustomize.py) into objects valid against the Kubernetes schemas and KEDA's CRD,
and the objects fit together (selectors, ports, probes, drain, autoscaling)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from router.keys import KeyStore
from deploy_kustomize import (
    KEDA_SCHEMA,
    KUBE_DIR,
    KustomizeError,
    reference_base,
    render_kustomization,
    strategic_merge,
    validate_objects,
)

OVERLAYS = ("sidecar/cpu", "sidecar/gpu", "sidecar/hpa", "router/cpu", "router/gpu")
Manifest = dict[str, Any]


def _by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _pod_containers(deployment: Manifest) -> dict[str, Manifest]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, render_kustomization(KUBE_DIR / request.param)


def test_overlay_objects_are_valid(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    validate_objects(objects)


def test_selectors_ports_and_references_fit(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    deployments = _by_kind(objects, "Deployment")
    configmaps = {o["metadata"]["name"] for o in _by_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in _by_kind(objects, "Secret")}
    for deployment in deployments:
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
    for service in _by_kind(objects, "Service"):
        selected = [
            d for d in deployments
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {
            p["name"] for c in _pod_containers(selected[0]).values() for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for pdb in _by_kind(objects, "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1
        assert any(
            pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments
        )
    for scaler in _by_kind(objects, "ScaledObject") + _by_kind(objects, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]["name"]
        deployment = _one(objects, "Deployment", target)
        assert "scoring" in _pod_containers(deployment)


def test_scoring_probes_use_azureml_defaults_and_drain_fits(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    for deployment in _by_kind(objects, "Deployment"):
        containers = _pod_containers(deployment)
        if "scoring" not in containers:
            continue
        scoring = containers["scoring"]
        live, ready = scoring["livenessProbe"], scoring["readinessProbe"]
        assert live["httpGet"] == {"path": "/v2/health/live", "port": 8001}
        assert ready["httpGet"] == {"path": "/v2/health/ready", "port": 8001}
        # AzureML's AKS defaults: period 10, initial delay 310, timeout 2, success 1, failure 3.
        assert (live["periodSeconds"], live["initialDelaySeconds"], live["timeoutSeconds"],
                live["successThreshold"], live["failureThreshold"]) == (10, 310, 2, 1, 3)
        args = scoring["args"]
        drain = int(args[args.index("--drain-delay-s") + 1])
        graceful = int(args[args.index("--graceful-timeout-s") + 1])
        scoring_timeout_s = int(args[args.index("--scoring-timeout-ms") + 1]) / 1000
        assert graceful >= scoring_timeout_s
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain + graceful
        assert scoring["resources"]["requests"]["cpu"] == "1"
        assert scoring["resources"]["requests"]["memory"] == "2048Mi"


def test_sidecar_router_talks_to_localhost_and_outlives_scoring(tmp_path: Path) -> None:
    objects = render_kustomization(KUBE_DIR / "sidecar/cpu")
    deployment = _one(objects, "Deployment", "demo")
    spec = deployment["spec"]["template"]["spec"]
    router = next(c for c in spec["initContainers"] if c["name"] == "router")
    # Native sidecar: starts before, stops after the scoring container.
    assert router["restartPolicy"] == "Always"
    config = yaml.safe_load(_one(objects, "ConfigMap", "demo-router")["data"]["router.yaml"])
    (endpoint,) = config["endpoints"]
    assert endpoint["versions"][0]["upstreams"] == ["http://127.0.0.1:8001"]
    assert endpoint["replica_max_concurrent_requests"] == 32
    env = {e["name"]: e for e in router["env"]}
    assert env["INFERGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "demo-router", "key": "admin-token"}
    secret = _one(objects, "Secret", "demo-router")
    # The seeded keys.json is what the router's KeyStore reads.
    (tmp_path / "keys.json").write_text(secret["stringData"]["keys.json"])
    keys = KeyStore(tmp_path).get("demo")
    assert keys.primary and keys.secondary


def test_router_layout_finds_scoring_through_headless_service() -> None:
    objects = render_kustomization(KUBE_DIR / "router/cpu")
    headless = _one(objects, "Service", "demo-v1")
    assert headless["spec"]["clusterIP"] == "None"
    config = yaml.safe_load(_one(objects, "ConfigMap", "demo-router")["data"]["router.yaml"])
    assert config["endpoints"][0]["versions"][0]["upstreams"] == ["http://demo-v1:8001"]
    router = _one(objects, "Deployment", "demo")
    (container,) = router["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    scaler = _one(objects, "ScaledObject", "demo-v1")
    assert scaler["spec"]["triggers"][0]["metadata"]["query"].startswith("sum(infergate_router_utilization{")


@pytest.mark.parametrize("name", ["sidecar/gpu", "router/gpu"])
def test_gpu_overlays_request_a_gpu_and_tolerate_gpu_nodes(name: str) -> None:
    objects = render_kustomization(KUBE_DIR / name)
    cpu_objects = render_kustomization(KUBE_DIR / name.replace("gpu", "cpu"))
    for deployment in _by_kind(objects, "Deployment"):
        containers = _pod_containers(deployment)
        if "scoring" not in containers:
            assert deployment == _one(cpu_objects, "Deployment", deployment["metadata"]["name"])
            continue
        scoring = containers["scoring"]
        assert scoring["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert scoring["image"] == "infergate:gpu"
        # The merge kept the base's fields (args, probes, the memory limit).
        assert scoring["args"][0] == "serve" and "livenessProbe" in scoring
        assert "memory" in scoring["resources"]["limits"]
        tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_autoscalers_map_azureml_defaults() -> None:
    keda = _one(render_kustomization(KUBE_DIR / "sidecar/cpu"), "ScaledObject", "demo")
    spec = keda["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (1, 10, 1)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "0.7"
    hpa = _one(render_kustomization(KUBE_DIR / "sidecar/hpa"), "HorizontalPodAutoscaler", "demo")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "infergate_router_utilization"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "700m"}


@pytest.mark.parametrize("layout", ["sidecar", "router"])
def test_bases_are_render_k8s_output(layout: str) -> None:
    expected = reference_base(layout)
    directory = KUBE_DIR / layout / "base"
    actual = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.yaml")}
    assert actual == expected, "regenerate with: python tests/deploy/deploy_kustomize.py"


# --- the checks can fail ----------------------------------------------------------------


def test_validation_rejects_an_unknown_field_and_a_wrong_type() -> None:
    objects = render_kustomization(KUBE_DIR / "sidecar/cpu")
    deployment = copy.deepcopy(_one(objects, "Deployment", "demo"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_objects([deployment])
    service = copy.deepcopy(_one(objects, "Service", "demo"))
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_objects([service])


def test_keda_schema_rejects_a_numeric_threshold_and_a_typo() -> None:
    scaler = _one(render_kustomization(KUBE_DIR / "sidecar/cpu"), "ScaledObject", "demo")
    bad = copy.deepcopy(scaler)
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 0.7  # KEDA metadata is map[string]string
    with pytest.raises(jsonschema.ValidationError):
        validate_objects([bad])
    typo = copy.deepcopy(scaler)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        validate_objects([typo])
    assert json.loads(KEDA_SCHEMA.read_text())["properties"]["kind"] == {"const": "ScaledObject"}


def test_strategic_merge_merges_named_lists_and_replaces_others() -> None:
    base = {"containers": [{"name": "a", "image": "x", "args": ["1", "2"]}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k"}]}
    patch = {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}],
             "tolerations": [{"key": "other"}]}
    merged = strategic_merge(base, patch)
    assert merged["containers"] == [
        {"name": "a", "image": "x", "args": ["1", "2"]}, {"name": "b", "image": "z"}, {"name": "c", "image": "w"},
    ]
    assert merged["tolerations"] == [{"key": "other"}]


def test_renderer_refuses_features_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render_kustomization(tmp_path)


@pytest.mark.skipif(shutil.which("kustomize") is None, reason="no kustomize binary here")
@pytest.mark.parametrize("name", OVERLAYS)
def test_real_kustomize_agrees(name: str) -> None:  # pragma: no cover - only where installed
    out = subprocess.run(["kustomize", "build", str(KUBE_DIR / name)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    real = sorted((o["kind"], o["metadata"]["name"], json.dumps(o, sort_keys=True))
                  for o in yaml.safe_load_all(out) if o)
    ours = sorted((o["kind"], o["metadata"]["name"], json.dumps(o, sort_keys=True))
                  for o in render_kustomization(KUBE_DIR / name))
    assert real == ours
