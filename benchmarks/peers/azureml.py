"""The AzureML inference server (``azmlinfsrv``: Flask under gunicorn, sync workers) with
the entry script an AzureML user writes for an ONNX model: parse ``{"data": ...}``, run
onnxruntime, return a list. This is what AzureML's AKS deployments run today."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.procs import Launch

PEER = "azureml"
REQUIREMENTS = ("azureml-inference-server-http", "onnxruntime", "numpy")
DISTRIBUTION = "azureml-inference-server-http"

ENTRY_SCRIPT = '''\
import json
import os

import numpy as np
import onnxruntime as ort

_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def init():
    global session, input_name, input_dtype
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    input_name, input_dtype = spec.name, _TYPES[spec.type]


def run(raw_data):
    data = np.asarray(json.loads(raw_data)["data"], dtype=input_dtype)
    return session.run(None, {input_name: data})[0].tolist()
'''

# azmlinfsrv hard-codes 0.0.0.0; the benchmark only listens on loopback, so this launcher
# sets the module's bind host before handing over to the server's own run().
LAUNCHER = '''\
import sys
from azureml_inference_server_http import amlserver
amlserver.DEFAULT_HOST = "127.0.0.1"
sys.argv[0] = "azmlinfsrv"
sys.exit(amlserver.run())
'''


def launch(python: Path, model_file: Path, workdir: Path, port: int, workers: int = 1) -> Launch:
    """Write the entry script and model folder; start ``workers`` gunicorn workers."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model"
    model_dir.mkdir(exist_ok=True)
    shutil.copyfile(model_file, model_dir / "model.onnx")
    (workdir / "score.py").write_text(ENTRY_SCRIPT)
    (workdir / "launch_azmlinfsrv.py").write_text(LAUNCHER)
    return Launch(
        name=f"azureml-w{workers}",
        argv=(
            str(python.absolute()), str(workdir / "launch_azmlinfsrv.py"),
            "--entry_script", str(workdir / "score.py"),
            "--model_dir", str(model_dir),
            "--port", str(port),
            "--worker_count", str(workers),
        ),
        # GET / answers 200 "Healthy" only once the entry script's init() ran (the server
        # loads it at start-up in each worker).
        ready_url=f"http://127.0.0.1:{port}/",
        cwd=workdir,
    )
