"""``infergate render-k8s``: real-shaped AzureML files in both shapes, field errors, and
rendered manifests that validate against the Kubernetes schemas."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.keys import EndpointKeys, KeyStore
from deploy_kustomize import render_kustomization, validate_objects

from router.azureml_config import (
    AksDeploymentConfig,
    AzureMLConfigError,
    InferenceConfig,
    ProbeConfig,
    parse_deployment_config,
    parse_inference_config,
)
from router.k8s import RenderError, RenderOptions, main, parse_model, render

DATA = Path(__file__).resolve().parent / "data"
Manifest = dict[str, Any]


def _run(tmp_path: Path, *extra: str, deploy: str = "deploymentconfig.json",
         inference: str | None = "inferenceconfig.json", model: str = "resnet_50:3") -> tuple[int, Path]:
    out = tmp_path / "out"
    argv = ["--deployment-config", str(DATA / deploy), "--model", model, "--out", str(out), *extra]
    if inference is not None:
        argv += ["--inference-config", str(DATA / inference)]
    return main(argv), out


def _seeded_keys(secret: Manifest, state_dir: Path, endpoint: str) -> EndpointKeys:
    """Read the Secret's keys.json the way the router does: through its KeyStore."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "keys.json").write_text(secret["stringData"]["keys.json"])
    return KeyStore(state_dir).get(endpoint)


def _objects(out: Path) -> list[Manifest]:
    return render_kustomization(out)


def _get(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


# --- the AzureML CLI shape (nested camelCase) ---------------------------------------------


def test_cli_shape_renders_valid_sidecar_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(tmp_path)
    assert code == 0, capsys.readouterr().err
    objects = _objects(out)
    validate_objects(objects)
    assert {o["metadata"]["namespace"] for o in objects} == {"ml-prod"}
    (deployment,) = _get(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (scoring,) = pod["containers"]
    assert scoring["resources"] == {
        "requests": {"cpu": "1500m", "memory": "2048Mi"},
        "limits": {"memory": "4096Mi", "cpu": "2"},
    }
    live = scoring["livenessProbe"]
    assert (live["periodSeconds"], live["initialDelaySeconds"], live["timeoutSeconds"],
            live["successThreshold"], live["failureThreshold"]) == (15, 120, 3, 1, 5)
    # Entry script mode, with the source directory restored from the ConfigMap.
    args = scoring["args"]
    assert args[args.index("--entry-script") + 1] == "/var/lib/infergate/source/score.py"
    assert args[args.index("--model-dir") + 1] == "/models/resnet_50/3"
    assert args[args.index("--scoring-timeout-ms") + 1] == "90000"
    assert int(args[args.index("--graceful-timeout-s") + 1]) >= 90
    assert pod["terminationGracePeriodSeconds"] >= 5 + 90
    source = next(o for o in _get(objects, "ConfigMap") if o["metadata"]["name"] == "resnet-50-source")
    volume = next(v for v in pod["volumes"] if v["name"] == "source")
    paths = {item["path"]: source["data"][item["key"]] for item in volume["configMap"]["items"]}
    assert set(paths) == {"score.py", "util/helpers.py"}
    assert paths["score.py"] == (DATA / "src" / "score.py").read_text()
    # Autoscaler from autoScaler.*.
    (scaler,) = _get(objects, "ScaledObject")
    spec = scaler["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (2, 8, 5)
    trigger = spec["triggers"][0]
    assert trigger["metadata"]["threshold"] == "0.6"
    assert 'namespace="ml-prod"' in trigger["metadata"]["query"]
    assert deployment["spec"]["replicas"] == 2
    # The router config carries the endpoint settings.
    router_cm = next(o for o in _get(objects, "ConfigMap") if o["metadata"]["name"] == "resnet-50-router")
    endpoint = yaml.safe_load(router_cm["data"]["router.yaml"])["endpoints"][0]
    assert endpoint | {"versions": None} == {
        "name": "resnet-50", "auth_enabled": True, "token_auth_enabled": False,
        "scoring_timeout_ms": 90000, "replica_max_concurrent_requests": 32,
        "max_request_wait_time": 250, "versions": None,
    }
    assert endpoint["versions"][0]["upstreams"] == ["http://127.0.0.1:8001"]
    # Ignored AzureML-only keys are reported, not silently dropped.
    err = capsys.readouterr().err
    for key in ("dataCollection", "appInsightsEnabled", "runtime", "condaFile"):
        assert f"'{key}'" in err


def test_secret_file_is_private_and_keys_are_generated(tmp_path: Path) -> None:
    code, out = _run(tmp_path)
    assert code == 0
    secret_file = out / "secret-resnet-50-router.yaml"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = yaml.safe_load(secret_file.read_text())
    keys = _seeded_keys(secret, tmp_path / "state", "resnet-50")
    assert len(keys.primary) >= 32 and keys.primary != keys.secondary
    assert len(secret["stringData"]["admin-token"]) >= 32


# --- the SDK shape (snake_case) -----------------------------------------------------------


def test_sdk_shape_with_fixed_replicas_gpu_and_keys(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--name", "vision", deploy="deploymentconfig-sdk.json", inference=None)
    assert code == 0
    objects = _objects(out)
    validate_objects(objects)
    assert _get(objects, "ScaledObject") == [] and _get(objects, "HorizontalPodAutoscaler") == []
    (deployment,) = _get(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (scoring,) = pod["containers"]
    # gpu_cores: 1 selects the GPU image and requests the GPU.
    assert scoring["image"] == "infergate:gpu"
    assert scoring["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # No entry script: the model repository is served.
    assert scoring["args"][scoring["args"].index("--model-repository") + 1] == "/models"
    (secret,) = _get(objects, "Secret")
    keys = _seeded_keys(secret, tmp_path / "state", "vision")
    assert keys == EndpointKeys("primary-key-from-azureml", "secondary-key-from-azureml")
    endpoint = yaml.safe_load(_get(objects, "ConfigMap")[0]["data"]["router.yaml"])["endpoints"][0]
    assert (endpoint["auth_enabled"], endpoint["token_auth_enabled"]) == (False, True)


def test_router_layout_renders_valid_manifests(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--layout", "router", "--gpu")
    assert code == 0
    objects = _objects(out)
    validate_objects(objects)
    deployments = {d["metadata"]["name"]: d for d in _get(objects, "Deployment")}
    assert set(deployments) == {"resnet-50", "resnet-50-v3"}
    router_pod = deployments["resnet-50"]["spec"]["template"]["spec"]
    assert "tolerations" not in router_pod  # the router stays on CPU nodes
    scoring_pod = deployments["resnet-50-v3"]["spec"]["template"]["spec"]
    assert scoring_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    endpoint = yaml.safe_load(
        next(o for o in _get(objects, "ConfigMap") if o["metadata"]["name"] == "resnet-50-router")["data"]["router.yaml"]
    )["endpoints"][0]
    assert endpoint["versions"][0]["upstreams"] == ["http://resnet-50-v3.ml-prod.svc.cluster.local:8001"]
    headless = next(s for s in _get(objects, "Service") if s["metadata"]["name"] == "resnet-50-v3")
    assert headless["spec"]["clusterIP"] == "None"
    (scaler,) = _get(objects, "ScaledObject")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "resnet-50-v3"


def test_hpa_autoscaler_renders_a_valid_hpa(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--autoscaler", "hpa")
    assert code == 0
    objects = _objects(out)
    validate_objects(objects)
    (hpa,) = _get(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "600m"


# --- errors name the field ----------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"computeType": "aks", "autoScaler": {"minReplica": 1}}, "autoScaler.minReplica: unknown field"),
        ({"computeType": "aks", "cpuCores": 1}, "cpuCores: unknown field"),
        ({"memory_gib": 1}, "memory_gib: unknown field"),
        ({"computeType": "ACI"}, "computeType: must be 'AKS'"),
        ({"autoScaler": {"minReplicas": 0}}, "autoScaler.minReplicas: must be >= 1, got 0"),
        ({"autoScaler": {"minReplicas": 5, "maxReplicas": 2}}, "autoScaler.minReplicas: must be <= autoScaler.maxReplicas (2), got 5"),
        ({"autoScaler": {"targetUtilization": 170}}, "autoScaler.targetUtilization: must be <= 100"),
        ({"authEnabled": "false"}, "authEnabled: must be true or false, got 'false'"),
        ({"scoring_timeout_ms": True}, "scoring_timeout_ms: must be an integer, got True"),
        ({"containerResourceRequirements": {"cpu": -1}}, "containerResourceRequirements.cpu: must be > 0, got -1.0"),
        ({"containerResourceRequirements": {"memoryInGB": 2, "memoryInGBLimit": 1}}, "containerResourceRequirements.memoryInGBLimit: must be >="),
        ({"containerResourceRequirements": 2}, "containerResourceRequirements: must be an object"),
        ({"livenessProbeRequirements": {"periodSeconds": 0}}, "livenessProbeRequirements.periodSeconds: must be >= 1"),
        ({"namespace": "Prod_NS"}, "namespace: must be at most 63 lowercase"),
        ({"autoScaler": {"autoscaleEnabled": True}, "numReplicas": 2}, "numReplicas: cannot be set when autoScaler.autoscaleEnabled is true"),
        ({"autoScaler": {"minReplicas": 2}, "autoscale_min_replicas": 3}, "duplicates"),
    ],
)
def test_invalid_deployment_config_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, "deploymentconfig.json", config)
    code = main(["--deployment-config", str(path), "--model", "m:1", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--deployment-config: " in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"entryScript": "score.py", "sourceDir": "src"}, "sourceDir: unknown field"),
        ({"entryScript": "missing.py", "sourceDirectory": "src"}, "entryScript: no such file"),
        ({"entryScript": "score.py", "sourceDirectory": "nowhere"}, "sourceDirectory: not a directory"),
        ({"entryScript": "../deploymentconfig.json", "sourceDirectory": "src"}, "entryScript: must lie inside the source directory"),
        ({"entryScript": 3}, "entryScript: must be a string"),
        ({"enableGpu": "yes"}, "enableGpu: must be true or false"),
    ],
)
def test_invalid_inference_config_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], message: str
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init(): pass\ndef run(x): return x\n")
    (tmp_path / "deploymentconfig.json").write_text("{}")
    path = _write(tmp_path, "inferenceconfig.json", config)
    code = main(["--deployment-config", str(DATA / "deploymentconfig.json"), "--inference-config", str(path),
                 "--model", "m:1", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--inference-config: " in err and message in err


@pytest.mark.parametrize("model", ["resnet", "resnet:", ":3", "resnet:zero", "resnet:0", "a b:1"])
def test_bad_model_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str) -> None:
    code, _ = _run(tmp_path, model=model)
    assert code == 2
    assert "--model:" in capsys.readouterr().err


def test_unreadable_and_malformed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--deployment-config", str(tmp_path / "absent.json"), "--model", "m:1", "--out", str(tmp_path)])
    assert code == 2 and "--deployment-config: cannot read" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    code = main(["--deployment-config", str(tmp_path / "bad.json"), "--model", "m:1", "--out", str(tmp_path)])
    assert code == 2 and "not valid JSON or YAML" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    code = main(["--deployment-config", str(tmp_path / "list.json"), "--model", "m:1", "--out", str(tmp_path)])
    assert code == 2 and "must hold an object" in capsys.readouterr().err


def test_hpa_with_router_layout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _run(tmp_path, "--layout", "router", "--autoscaler", "hpa")
    assert code == 2 and "--autoscaler:" in capsys.readouterr().err


# --- parsing units ------------------------------------------------------------------------


def test_defaults_are_azuremls() -> None:
    cfg = parse_deployment_config({"computeType": "AKS"})
    assert cfg == AksDeploymentConfig()
    assert cfg.liveness == ProbeConfig(10, 310, 2, 1, 3)
    assert (cfg.autoscale_enabled, cfg.autoscale_min_replicas, cfg.autoscale_max_replicas,
            cfg.autoscale_refresh_seconds, cfg.autoscale_target_utilization) == (True, 1, 10, 1, 70)
    assert (cfg.cpu_cores, cfg.memory_gb, cfg.scoring_timeout_ms, cfg.replica_max_concurrent_requests,
            cfg.max_request_wait_time) == (0.1, 0.5, 60000, 1, 500)
    # numReplicas turns autoscaling off by default, as in AzureML.
    assert parse_deployment_config({"numReplicas": 2}).autoscale_enabled is False


def test_both_shapes_parse_to_the_same_config() -> None:
    camel = parse_deployment_config({
        "computeType": "aks",
        "autoScaler": {"autoscaleEnabled": True, "minReplicas": 2, "maxReplicas": 5,
                       "refreshPeriodInSeconds": 3, "targetUtilization": 50},
        "containerResourceRequirements": {"cpu": 2, "memoryInGB": 4, "cpuLimit": 3, "memoryInGBLimit": 6},
        "gpuCores": 1, "authEnabled": False, "tokenAuthEnabled": True, "scoringTimeoutMs": 1000,
        "maxConcurrentRequestsPerContainer": 16, "maxQueueWaitMs": 100,
        "keys": {"primaryKey": "p", "secondaryKey": "s"},
        "livenessProbeRequirements": {"periodSeconds": 5, "initialDelaySeconds": 30, "timeoutSeconds": 1,
                                      "successThreshold": 1, "failureThreshold": 2},
        "namespace": "ns",
    })
    snake = parse_deployment_config({
        "autoscale_enabled": True, "autoscale_min_replicas": 2, "autoscale_max_replicas": 5,
        "autoscale_refresh_seconds": 3, "autoscale_target_utilization": 50,
        "cpu_cores": 2, "memory_gb": 4, "cpu_cores_limit": 3, "memory_gb_limit": 6,
        "gpu_cores": 1, "auth_enabled": False, "token_auth_enabled": True, "scoring_timeout_ms": 1000,
        "replica_max_concurrent_requests": 16, "max_request_wait_time": 100,
        "primary_key": "p", "secondary_key": "s",
        "period_seconds": 5, "initial_delay_seconds": 30, "timeout_seconds": 1,
        "success_threshold": 1, "failure_threshold": 2, "namespace": "ns",
    })
    assert camel == snake
    assert camel.cpu_cores_limit == 3.0 and camel.liveness.initial_delay_seconds == 30


def test_nulls_mean_defaults_and_yaml_is_accepted(tmp_path: Path) -> None:
    assert parse_deployment_config({"numReplicas": None, "autoScaler": {"minReplicas": None}}) == AksDeploymentConfig()
    path = tmp_path / "deploymentconfig.yml"
    path.write_text("computeType: AKS\nautoScaler:\n  maxReplicas: 4\n")
    from router.azureml_config import load_deployment_config

    assert load_deployment_config(path).autoscale_max_replicas == 4


def test_inference_config_snake_case_and_environment(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): pass\n")
    cfg = parse_inference_config(
        {"entry_script": "score.py", "environment": {"name": "AzureML-onnx", "version": "3"}, "enable_gpu": True},
        tmp_path,
    )
    assert cfg.entry_script == (tmp_path / "score.py").resolve()
    assert cfg.environment_name == "AzureML-onnx" and cfg.enable_gpu is True
    assert cfg.ignored == ("environment",)
    with pytest.raises(AzureMLConfigError) as info:
        parse_inference_config({"entryScript": "score.py", "entry_script": "score.py"}, tmp_path)
    assert info.value.field == "entry_script"


def test_parse_model_and_render_errors() -> None:
    assert parse_model("my.model_v2:12") == ("my.model_v2", 12)
    with pytest.raises(RenderError, match="--name"):
        render(AksDeploymentConfig(), InferenceConfig(),
               RenderOptions(name="Bad_Name", model_name="m", model_version=1))


def test_oversized_source_directory_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text("def init(): pass\n")
    (src / "blob.bin").write_bytes(b"\0" * (1024 * 1024))
    inference = parse_inference_config({"entryScript": "score.py", "sourceDirectory": "src"}, tmp_path)
    with pytest.raises(RenderError, match="sourceDirectory: .* do not fit a ConfigMap"):
        render(AksDeploymentConfig(), inference, RenderOptions(name="m", model_name="m", model_version=1))


def test_infergate_command_dispatches_render_k8s(tmp_path: Path) -> None:
    from server.cli import main as infergate

    out = tmp_path / "out"
    code = infergate(["render-k8s", "--deployment-config", str(DATA / "deploymentconfig-sdk.json"),
                      "--model", "vision:1", "--out", str(out)])
    assert code == 0
    assert (out / "kustomization.yaml").is_file()


def test_render_is_deterministic_given_the_token_source(tmp_path: Path) -> None:
    counter = iter(range(100))

    def token() -> str:
        return f"token-{next(counter)}"

    cfg = AksDeploymentConfig(primary_key="given")
    opts = RenderOptions(name="m", model_name="m", model_version=1)
    (secret,) = [m for m in render(cfg, InferenceConfig(), opts, token=token) if m["kind"] == "Secret"]
    assert _seeded_keys(secret, tmp_path, "m") == EndpointKeys("given", "token-0")
    assert secret["stringData"]["admin-token"] == "token-1"
    first = render(AksDeploymentConfig(), InferenceConfig(), opts, token=lambda: "x")
    assert first == render(AksDeploymentConfig(), InferenceConfig(), opts, token=lambda: "x")


def test_binary_source_files_go_to_binary_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "assets").mkdir(parents=True)
    (src / "score.py").write_text("def init(): pass\n")
    (src / "assets" / "labels.bin").write_bytes(b"\xff\x00\xfe")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\0")
    (src / ".env").write_text("SECRET=1\n")
    inference = parse_inference_config({"entryScript": "score.py", "sourceDirectory": "src"}, tmp_path)
    manifests = render(AksDeploymentConfig(), inference, RenderOptions(name="m", model_name="m", model_version=1))
    source = next(m for m in manifests if m["metadata"]["name"] == "m-source")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "source")
    paths = {item["path"]: item["key"] for item in volume["configMap"]["items"]}
    assert set(paths) == {"score.py", "assets/labels.bin"}
    assert source["binaryData"][paths["assets/labels.bin"]] == "/wD+"
    validate_objects(manifests)
