"""The floor references: what the least a v2 JSON handler must do costs on the same stack
as the null reference (Starlette under uvicorn, uvloop + httptools, no access log).

``floor-starlette`` parses the request with orjson, turns each input into a numpy array of
its datatype and shape, and answers a v2 JSON response that echoes them: the tensor is read
and written, and nothing else happens (no validation past numpy's own, no metrics, no
request ids, no batching, no model). ``floor-inline`` also runs the ONNX model on each
request's tensors, in the handler itself, one request at a time: a bound that no server may
ship (it blocks the event loop for the model's whole run), measured to show what calling
ONNX Runtime per request costs. ``floor-starlette`` is a ceiling for any real scoring path
on this stack, as the null app is for any handler at all; batching can beat ``floor-inline``
(infergate does on mlp). Runs from the project's own environment.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.peers.null_app import uvicorn_launch
from benchmarks.procs import Launch

APP = '''\
import os

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
NAMES = {np.dtype(t): name for name, t in DTYPES.items()}
MODEL = os.environ.get("FLOOR_MODEL", "")
session = None
if MODEL:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]


async def infer(request):
    doc = orjson.loads(await request.body())
    arrays = {
        t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
        for t in doc["inputs"]
    }
    if session is not None:
        arrays = dict(zip(output_names, session.run(output_names, arrays)))
    outputs = [
        {"name": name, "datatype": NAMES[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}
        for name, a in arrays.items()
    ]
    return Response(orjson.dumps({"model_name": "floor", "outputs": outputs}), media_type="application/json")


async def ready(request):
    return Response(b"ok")


app = Starlette(routes=[
    Route("/infer", infer, methods=["POST"]),
    Route("/ready", ready),
])
'''


def launch(workdir: Path, port: int, model: Path | None = None, python: Path | None = None) -> Launch:
    """The floor app on ``port``; with ``model``, ``floor-inline`` running it per request."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "floor_app.py").write_text(APP)
    name = "floor-inline" if model is not None else "floor-starlette"
    env = {"FLOOR_MODEL": str(model)} if model is not None else {}
    return uvicorn_launch(name, "floor_app", workdir, port, python, env)
