"""KServe's Python model server (``kserve.ModelServer``, FastAPI under uvicorn) with a
model class as KServe's docs show it: load an onnxruntime session, run it in ``predict``.
Spoken to over the v2 REST protocol. KServe has no adaptive batching of its own in the
Python server (batching is a separate agent container in KServe), so none is configured."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.procs import Launch

PEER = "kserve"
REQUIREMENTS = ("kserve", "onnxruntime", "numpy")
DISTRIBUTION = "kserve"

SERVER = '''\
import json
import sys

import uvicorn

# kserve.model_server parses sys.argv when it is imported: set the flags first.
opts = json.loads(sys.argv[1])
sys.argv = [sys.argv[0], "--http_port", str(opts["http_port"]), "--enable_grpc", "false"]

# KServe binds its REST server to 0.0.0.0 with no option to change it; the benchmark only
# listens on loopback, so the host is forced here before kserve builds its uvicorn.Config.
_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config

import onnxruntime as ort  # noqa: E402
from kserve import InferOutput, InferResponse, Model, ModelServer  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class OnnxModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        array = payload.inputs[0].as_numpy()
        results = self.session.run(None, {self.input: array})
        outputs = []
        for name, result in zip(self.outputs, results):
            out = InferOutput(name=name, shape=list(result.shape), datatype="FP32")
            out.set_data_from_numpy(result, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid())


ModelServer().start([OnnxModel(name, path) for name, path in opts["models"].items()])
'''


def launch(python: Path, models: dict[str, Path], workdir: Path, http_port: int) -> Launch:
    """Start one KServe model server process serving ``models`` over REST on ``http_port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kserve_server.py").write_text(SERVER)
    opts = {"models": {name: str(path.absolute()) for name, path in models.items()}, "http_port": http_port}
    return Launch(
        name="kserve",
        argv=(str(python.absolute()), str(workdir / "kserve_server.py"), json.dumps(opts)),
        ready_url=f"http://127.0.0.1:{http_port}/v2/models/{list(models)[-1]}/ready",
        cwd=workdir,
    )
