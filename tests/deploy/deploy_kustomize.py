"""Test helpers: a minimal kustomize renderer and the schema checks for deploy/kubernetes/.

No kustomize binary is available here (not in Debian bookworm's archive; the PyPI package
named ``kustomize`` is a separate Python reimplementation), so this renders the subset of kustomize that the
overlays in deploy/kubernetes/ use, and nothing more:

* ``resources``: YAML files (one or more documents) and directories holding a
  kustomization.yaml, in order;
* ``patches`` with a ``path``: a strategic-merge patch whose kind and name pick the target.
  Maps merge recursively; lists of maps that all carry ``name`` (containers,
  initContainers, volumes, env, ports, volumeMounts) merge by name, as their Kubernetes
  ``patchMergeKey`` says; any other list is replaced whole, as Kubernetes does for lists
  without a merge key (tolerations, args).

Any other key in a kustomization.yaml is refused, so an overlay cannot silently use a
feature this renderer does not implement. When a real ``kustomize`` is on PATH the tests
also compare its output with this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from router.keys import EndpointKeys, keys_document

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE_DIR = REPO / "deploy" / "kubernetes"
KEDA_SCHEMA = Path(__file__).resolve().parent / "data" / "keda-scaledobject-v1alpha1.schema.json"
# AKS's supported window at the time of writing, plus the newest schema the package ships.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
_SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches"}

Manifest = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization uses something this renderer does not implement, or is broken."""


def _load_documents(path: Path) -> list[Manifest]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise KustomizeError(f"{path}: not a Kubernetes object")
    return docs


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge ``patch`` into ``base`` (both plain YAML values), as described above."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list) and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
        and base and patch
    ):
        merged_list = list(base)
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                i = index[item["name"]]
                merged_list[i] = strategic_merge(merged_list[i], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def render_kustomization(directory: Path) -> list[Manifest]:
    """Render a kustomization directory into its list of objects."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8"))
    unsupported = set(spec) - _SUPPORTED_KEYS
    if unsupported:
        raise KustomizeError(f"{kfile}: unsupported keys {sorted(unsupported)}")
    objects: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render_kustomization(path)
        else:
            # kustomize's default load restrictor: files must lie under the kustomization.
            if not path.is_relative_to(directory.resolve()):
                raise KustomizeError(f"{kfile}: {entry} lies outside the kustomization root")
            objects += _load_documents(path)
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(f"{kfile}: only patches with a path are supported, got {patch_entry}")
        for patch in _load_documents(directory / patch_entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            matches = [i for i, o in enumerate(objects) if (o["kind"], o["metadata"]["name"]) == key]
            if len(matches) != 1:
                raise KustomizeError(f"{kfile}: patch target {key} matched {len(matches)} objects")
            objects[matches[0]] = strategic_merge(objects[matches[0]], patch)
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{directory}: duplicate object {key}")
        seen.add(key)
    return objects


def validate_objects(objects: list[Manifest]) -> None:
    """Validate every object: Kubernetes kinds against the strict upstream schemas, KEDA's
    ScaledObject against the vendored CRD subset. Raises on the first invalid object."""
    keda = json.loads(KEDA_SCHEMA.read_text(encoding="utf-8"))
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(obj, keda)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


# --- the static bases are render-k8s output for a reference configuration ---------------

SECRET_PLACEHOLDERS = {
    "admin-token": "REPLACE-with-a-random-admin-token",
    "keys.json": keys_document({"demo": EndpointKeys("REPLACE-primary", "REPLACE-secondary")}).decode(),
}


def reference_base(layout: str) -> dict[str, str]:
    """The files of deploy/kubernetes/<layout>/base: render-k8s for the demo model with
    AzureML's defaults, except 1 CPU / 2 GB, 32 concurrent requests per replica, and no
    autoscaler (the overlays add KEDA or an HPA); Secret values are placeholders."""
    from router.azureml_config import AksDeploymentConfig, InferenceConfig
    from router.k8s import RenderOptions, render, render_files

    cfg = AksDeploymentConfig(
        autoscale_enabled=False, num_replicas=1, cpu_cores=1.0, memory_gb=2.0,
        replica_max_concurrent_requests=32,
    )
    opts = RenderOptions(name="demo", model_name="demo", model_version=1, layout=layout)  # type: ignore[arg-type]
    manifests = render(cfg, InferenceConfig(), opts)
    for manifest in manifests:
        if manifest["kind"] == "Secret":
            manifest["stringData"] = dict(SECRET_PLACEHOLDERS)
    files = render_files(manifests)
    header = (
        "# Generated by `python tests/deploy/deploy_kustomize.py` (render-k8s for the demo\n"
        "# model); tests/deploy/test_deploy_manifests.py checks it stays in sync.\n"
    )
    return {name: header + text for name, text in files.items()}


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO))
    for layout in ("sidecar", "router"):
        target = KUBE_DIR / layout / "base"
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.yaml"):
            old.unlink()
        for name, text in reference_base(layout).items():
            (target / name).write_text(text, encoding="utf-8")
        print(f"wrote {target}")
