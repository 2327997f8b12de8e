"""NVIDIA Triton through ``nvidia-pytriton`` (which bundles a Triton server binary), with
Triton's dynamic batcher in front of a Python function that runs onnxruntime. Requests go to
Triton's own HTTP front end (C++), which speaks v2 JSON and the binary extension."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.procs import Launch

PEER = "pytriton"
REQUIREMENTS = ("nvidia-pytriton", "onnxruntime", "numpy")
DISTRIBUTION = "nvidia-pytriton"

SERVER = '''\
import json
import os
import sys
import sysconfig

# Triton's Python-backend stub links libpython3.X.so and would pick the system's copy, whose
# C core may be older than this interpreter's stdlib (Debian 3.11.2 vs a newer 3.11.x):
# point the loader at this interpreter's own library first. Triton inherits the variable.
_libdir = sysconfig.get_config_var("LIBDIR") or ""
os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (_libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

opts = json.loads(sys.argv[1])
_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32}


def make_infer(session):
    inp = session.get_inputs()[0]
    outs = session.get_outputs()

    @batch
    def infer(**inputs):
        results = session.run(None, {inp.name: inputs[inp.name]})
        return {o.name: r for o, r in zip(outs, results)}

    return infer


config = TritonConfig(
    http_address="127.0.0.1", http_port=opts["http_port"],
    grpc_address="127.0.0.1", grpc_port=opts["grpc_port"],
    metrics_address="127.0.0.1", metrics_port=opts["metrics_port"],
)
batcher = None
if opts["max_queue_delay_us"] > 0:
    batcher = DynamicBatcher(max_queue_delay_microseconds=opts["max_queue_delay_us"])
with Triton(config=config) as triton:
    for name, path in opts["models"].items():
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        triton.bind(
            model_name=name,
            infer_func=make_infer(session),
            inputs=[Tensor(name=inp.name, dtype=_TYPES[inp.type], shape=tuple(inp.shape[1:]))],
            outputs=[
                Tensor(name=o.name, dtype=_TYPES[o.type], shape=tuple(d if isinstance(d, int) else -1 for d in o.shape[1:]))
                for o in session.get_outputs()
            ],
            config=ModelConfig(max_batch_size=opts["max_batch_size"], batcher=batcher),
            strict=False,
        )
    triton.serve()
'''


def launch(
    python: Path,
    models: dict[str, Path],
    workdir: Path,
    ports: tuple[int, int, int],
    max_batch_size: int = 64,
    max_batch_time_ms: float = 2.0,
) -> Launch:
    """Start Triton with the dynamic batcher; HTTP on ``ports[0]`` (gRPC, metrics next)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "triton_server.py").write_text(SERVER)
    opts = {
        "models": {name: str(path.absolute()) for name, path in models.items()},
        "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2],
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": int(max_batch_time_ms * 1000),
    }
    return Launch(
        name="pytriton",
        argv=(str(python.absolute()), str(workdir / "triton_server.py"), json.dumps(opts)),
        # Server-level readiness can be true before any model is bound: poll the last
        # model's own readiness instead (models load in order).
        ready_url=f"http://127.0.0.1:{ports[0]}/v2/models/{list(models)[-1]}/ready",
        cwd=workdir,
        ready_timeout_s=180.0,
    )
