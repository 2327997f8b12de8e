"""The servers under test, each started from its command line and reached only over HTTP.

A ``Setup`` names one server configuration (infergate with batching on, the router in front
of it, MLServer, ...). ``serve(setup, model, ...)`` starts it for one model and yields a
``Served``: the URL and headers to use for each wire protocol it speaks. Nothing here
imports infergate's packages: infergate is driven through ``infergate serve`` and
``infergate route`` like any peer.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.payloads import ModelInfo, Protocol
from benchmarks.peers import azureml, floor_app, kserve, mlserver, null_app, pytriton
from benchmarks.peers.venv import ensure_venv, package_version
from benchmarks.procs import Launch, free_port, http_get, running, running_all

Kind = Literal["null", "floor", "floor-inline", "infergate", "router", "azureml", "mlserver", "pytriton", "kserve"]

#: Same micro-batching policy for every server that batches, so none is tuned better. 256
#: rows is what infergate picks by itself for mlp's 1 KiB rows (``batching.max_batch_size``
#: unset); 1-row requests at c<=128 never fill it, 32-row requests can share a batch.
MAX_BATCH_SIZE = 256
MAX_BATCH_DELAY_MS = 2


@dataclass(frozen=True)
class Setup:
    """One server configuration and the protocols to load it with."""

    name: str
    kind: Kind
    protocols: tuple[Protocol, ...]
    batching: bool = True
    workers: int = 1
    #: The models it serves; empty: every model of the run.
    models: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        if self.kind in ("null", "floor", "floor-inline"):
            return "reference"
        return {"infergate": "infergate", "router": "infergate"}.get(self.kind, "peer")


@dataclass(frozen=True)
class Served:
    """A running server: where each protocol's requests go, and headers to add."""

    urls: dict[Protocol, str]
    headers: tuple[tuple[str, str], ...] = ()
    #: The reference answers without computing: only its status is checked.
    checks_outputs: bool = True
    commands: tuple[str, ...] = field(default_factory=tuple)
    #: The process that serves every request, where there is just one (for its CPU time).
    pid: int | None = None


def default_setups(quick: bool) -> list[Setup]:
    """The matrix `make bench` runs; `make bench-quick` keeps the essential rows."""
    setups = [
        Setup("null-starlette", "null", ("v2-json",)),
        Setup("infergate", "infergate", ("v2-json", "v2-binary", "score"), batching=True),
        Setup("infergate-nobatch", "infergate", ("v2-json",) if quick else ("v2-json", "v2-binary"), batching=False),
        Setup("infergate-router", "router", ("v2-json",) if quick else ("v2-json", "score"), batching=True),
    ]
    if not quick:
        # What the least v2 handler costs on the same stack (benchmarks/peers/floor_app.py).
        # The echo is as large as tiny's answer, but 256x larger than mlp's: tiny only.
        setups[1:1] = [
            Setup("floor-starlette", "floor", ("v2-json",), models=("tiny",)),
            Setup("floor-inline", "floor-inline", ("v2-json",)),
        ]
        setups.append(Setup("infergate-w2", "infergate", ("v2-json", "v2-binary"), batching=True, workers=2))
        setups.append(Setup("azureml-w1", "azureml", ("score",), workers=1))
    setups += [
        Setup("azureml-w2", "azureml", ("score",), workers=2),
        Setup("mlserver", "mlserver", ("v2-json",)),
        Setup("pytriton", "pytriton", ("v2-json", "v2-binary")),
        Setup("kserve", "kserve", ("v2-json",)),
    ]
    return setups


def infergate_command() -> list[str]:
    """``infergate`` from the environment running the benchmark (the project's venv)."""
    found = Path(sys.executable).parent / "infergate"
    if found.exists():
        return [str(found)]
    which = shutil.which("infergate")
    if which:
        return [which]
    return [sys.executable, "-m", "server.cli"]


def write_repository(root: Path, model: ModelInfo, batching: bool) -> Path:
    """A one-model repository: <root>/<model>/1/model.onnx plus the batching config."""
    version_dir = root / model.name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.path, version_dir / "model.onnx")
    (root / model.name / "config.yaml").write_text(
        "batching:\n"
        f"  enabled: {'true' if batching else 'false'}\n"
        f"  max_batch_size: {MAX_BATCH_SIZE}\n"
        f"  max_queue_delay_ms: {MAX_BATCH_DELAY_MS}\n"
    )
    return root


def _v2_urls(base: str, model: str, protocols: tuple[Protocol, ...]) -> dict[Protocol, str]:
    urls: dict[Protocol, str] = {}
    for protocol in protocols:
        urls[protocol] = f"{base}/score" if protocol == "score" else f"{base}/v2/models/{model}/infer"
    return urls


def infergate_launch(name: str, repo: Path, workers: int = 1) -> tuple[Launch, int]:
    """``infergate serve`` on ``repo`` at a free loopback port: (launch, port)."""
    port = free_port()
    # --drain-delay-s 0: the benchmark stops servers between runs and has no load balancer
    # to tell; everything else is infergate's default.
    argv = [*infergate_command(), "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
            "--port", str(port), "--drain-delay-s", "0"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    launch = Launch(
        name=name,
        argv=tuple(argv),
        ready_url=f"http://127.0.0.1:{port}/v2/health/ready",
    )
    return launch, port


ROUTER_ENDPOINT = "bench"


def router_launch(workdir: Path, upstream_port: int, admin_token: str,
                  endpoint: str = ROUTER_ENDPOINT) -> tuple[Launch, int, int]:
    """``infergate route`` with one keyed endpoint in front of one upstream: (launch, port, admin port)."""
    port, admin_port = free_port(), free_port()
    config = {
        "endpoints": [{
            "name": endpoint,
            "auth_enabled": True,
            # Enough slots that the router never queues in front of the batcher.
            "replica_max_concurrent_requests": 512,
            "versions": [{
                "name": "blue",
                "upstreams": [f"http://127.0.0.1:{upstream_port}"],
                "traffic_percentile": 100,
                "is_default": True,
            }],
        }]
    }
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "router.yaml"
    # JSON is valid YAML; the router accepts either.
    config_path.write_text(json.dumps(config, indent=2))
    state = workdir / "router-state"
    state.mkdir(parents=True, exist_ok=True)
    launch = Launch(
        name="router",
        argv=(
            *infergate_command(), "route", "--config", str(config_path), "--host", "127.0.0.1",
            "--port", str(port), "--admin-port", str(admin_port), "--state-dir", str(state),
        ),
        # The admin port's /metrics needs no credential: it answers once the router is up.
        ready_url=f"http://127.0.0.1:{admin_port}/metrics",
        env={"INFERGATE_ADMIN_TOKEN": admin_token},
    )
    return launch, port, admin_port


def router_key(admin_port: int, admin_token: str, endpoint: str = ROUTER_ENDPOINT) -> str:
    """The endpoint's primary key, read through the admin API."""
    status, body = http_get(
        f"http://127.0.0.1:{admin_port}/admin/endpoints/{endpoint}/keys",
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if status != 200:
        raise RuntimeError(f"router admin API answered {status} for the keys of {endpoint!r}: {body[:200]!r}")
    return str(json.loads(body)["primaryKey"])


@contextlib.contextmanager
def serve(setup: Setup, model: ModelInfo, workdir: Path, log_dir: Path) -> Iterator[Served]:
    """Start ``setup`` serving ``model`` on 127.0.0.1; stop it (and its workers) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    if setup.kind == "null":
        port = free_port()
        launch = null_app.launch(workdir, port)
        with running(launch, log_dir) as proc:
            yield Served({p: f"http://127.0.0.1:{port}/infer" for p in setup.protocols},
                         checks_outputs=False, commands=(" ".join(launch.argv),), pid=proc.pid)
        return
    if setup.kind in ("floor", "floor-inline"):
        port = free_port()
        inline = setup.kind == "floor-inline"
        launch = floor_app.launch(workdir, port, model.path if inline else None)
        with running(launch, log_dir) as proc:
            # floor-inline answers the model's outputs, checked like a server's; floor-starlette
            # echoes the inputs, so only its status is.
            yield Served({p: f"http://127.0.0.1:{port}/infer" for p in setup.protocols},
                         checks_outputs=inline, commands=(" ".join(launch.argv),), pid=proc.pid)
        return
    if setup.kind == "infergate":
        repo = write_repository(workdir / "repository", model, setup.batching)
        launch, port = infergate_launch(f"{setup.name}-{model.name}", repo, setup.workers)
        with running(launch, log_dir) as proc:
            yield Served(_v2_urls(f"http://127.0.0.1:{port}", model.name, setup.protocols),
                         commands=(" ".join(launch.argv),), pid=proc.pid if setup.workers == 1 else None)
        return
    if setup.kind == "router":
        repo = write_repository(workdir / "repository", model, setup.batching)
        upstream, upstream_port = infergate_launch(f"{setup.name}-{model.name}", repo, setup.workers)
        token = secrets.token_urlsafe(24)
        router, port, admin_port = router_launch(workdir, upstream_port, token)
        with running_all([upstream, router], log_dir):
            key = router_key(admin_port, token)
            base = f"http://127.0.0.1:{port}/api/v1/service/{ROUTER_ENDPOINT}"
            yield Served(_v2_urls(base, model.name, setup.protocols),
                         headers=(("Authorization", f"Bearer {key}"),),
                         commands=(" ".join(upstream.argv), " ".join(router.argv)))
        return
    if setup.kind == "azureml":
        python = ensure_venv(azureml.PEER, azureml.REQUIREMENTS)
        port = free_port()
        launch = azureml.launch(python, model.path, workdir, port, workers=setup.workers)
        with running(launch, log_dir):
            yield Served({"score": f"http://127.0.0.1:{port}/score"}, commands=(" ".join(launch.argv),))
        return
    if setup.kind in ("mlserver", "pytriton"):
        peer = mlserver if setup.kind == "mlserver" else pytriton
        python = ensure_venv(peer.PEER, peer.REQUIREMENTS)
        ports = (free_port(), free_port(), free_port())
        launch = peer.launch(python, {model.name: model.path}, workdir, ports,
                             max_batch_size=MAX_BATCH_SIZE, max_batch_time_ms=MAX_BATCH_DELAY_MS)
        with running(launch, log_dir):
            yield Served(_v2_urls(f"http://127.0.0.1:{ports[0]}", model.name, setup.protocols),
                         commands=(" ".join(launch.argv),))
        return
    if setup.kind == "kserve":
        python = ensure_venv(kserve.PEER, kserve.REQUIREMENTS)
        port = free_port()
        launch = kserve.launch(python, {model.name: model.path}, workdir, port)
        with running(launch, log_dir):
            yield Served(_v2_urls(f"http://127.0.0.1:{port}", model.name, setup.protocols),
                         commands=(" ".join(launch.argv),))
        return
    raise ValueError(f"setup.kind: unknown {setup.kind!r}")


def versions() -> dict[str, str]:
    """Versions of everything measured (peers only where their venv exists)."""
    import importlib.metadata as md

    found: dict[str, str] = {"python": sys.version.split()[0]}
    for dist in ("infergate", "onnxruntime", "starlette", "uvicorn"):
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            found[dist] = "not installed"
    for peer in (azureml, mlserver, pytriton, kserve):
        python = Path(__file__).resolve().parent / ".cache" / "venvs" / peer.PEER / "bin" / "python"
        if python.exists():
            found[peer.DISTRIBUTION] = package_version(python, peer.DISTRIBUTION)
            found[f"onnxruntime ({peer.PEER} venv)"] = package_version(python, "onnxruntime")
    return found
