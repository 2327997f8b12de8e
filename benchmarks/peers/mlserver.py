"""MLServer (Seldon) with adaptive batching, through a small custom runtime that runs
onnxruntime (MLServer has no ONNX runtime of its own). The batching knobs are the same as
infergate's and Triton's in the same run: ``max_batch_size`` and ``max_batch_time``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.procs import Launch

PEER = "mlserver"
# uvloop 0.22 made get_event_loop() raise without a running loop, which MLServer 1.7's
# parallel workers call at start-up.
REQUIREMENTS = ("mlserver", "onnxruntime", "numpy", "uvloop<0.22")
DISTRIBUTION = "mlserver"

RUNTIME = '''\
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    """Runs one ONNX model; adaptive batching merges requests before predict()."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        self._session = ort.InferenceSession(uri, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0])
        results = self._session.run(None, {self._input: array})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._outputs, results)],
        )
'''


def launch(
    python: Path,
    models: dict[str, Path],
    workdir: Path,
    ports: tuple[int, int, int],
    max_batch_size: int = 64,
    max_batch_time_ms: float = 2.0,
    parallel_workers: int = 1,
) -> Launch:
    """Write settings, model settings and the runtime; HTTP on ``ports[0]`` (gRPC, metrics next)."""
    http_port, grpc_port, metrics_port = ports
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "onnx_runtime.py").write_text(RUNTIME)
    (workdir / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "debug": False,
        "parallel_workers": parallel_workers,
    }))
    for model_name, model_file in models.items():
        model_dir = workdir / model_name
        model_dir.mkdir(exist_ok=True)
        shutil.copyfile(model_file, model_dir / "model.onnx")
        settings: dict[str, object] = {
            "name": model_name,
            "implementation": "onnx_runtime.OnnxRuntime",
            "parameters": {"uri": "./model.onnx"},
        }
        if max_batch_size > 1:
            settings |= {"max_batch_size": max_batch_size, "max_batch_time": max_batch_time_ms / 1000.0}
        (model_dir / "model-settings.json").write_text(json.dumps(settings))
    return Launch(
        name="mlserver",
        argv=(str(python.absolute().parent / "mlserver"), "start", str(workdir)),
        # Server-level readiness can be true before any model is bound: poll the last
        # model's own readiness instead (models load in order).
        ready_url=f"http://127.0.0.1:{http_port}/v2/models/{list(models)[-1]}/ready",
        cwd=workdir,
        # The runtime module is imported by name from the work folder.
        env={"PYTHONPATH": str(workdir)},
    )
