"""AzureML-style entry scripts: init/run, inference-schema, @rawhttp, run_batch, errors."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from scoring import (
    EntryScriptResponse,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    ModelRepository,
    RawRequest,
)
from scoring import model_zoo

T = TypeVar("T")

# As the AzureML docs write them: globals set in init(), the model found through
# AZUREML_MODEL_DIR, JSON in and out.
AZUREML_SCORE = '''
import json
import os

import numpy as np
import onnxruntime


def init():
    global session, input_name
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.onnx")
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"], dtype=np.float32)
    if data.ndim != 2:
        raise ValueError("data must be a list of rows")
    result = session.run(None, {input_name: data})
    return result[0].tolist()
'''

SCHEMA_SCORE = '''
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(NumpyParameterType(np.array([10.0])))
def run(data, scale=1.0):
    assert isinstance(data, np.ndarray)
    return data.sum(axis=1) * scale
'''

RAWHTTP_SCORE = '''
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("bad method", 405)
    return AMLResponse({"echo": request.get_data(as_text=True), "q": request.args.get("q")}, 201, {"X-Test": "1"}, json_str=True)
'''

BATCH_SCORE = '''
import json

CALLS = []


def init():
    pass


def run_batch(raw_list):
    CALLS.append(len(raw_list))
    return [json.loads(raw)["x"] * 10 for raw in raw_list]
'''


def write(root: Path, name: str, source: str, version: int = 1, config: str | None = None) -> Path:
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    (folder / "score.py").write_text(textwrap.dedent(source))
    if config:
        (root / name / "config.yaml").write_text(config)
    return folder


def with_repo(repo: ModelRepository, body: Callable[[ModelRepository], Awaitable[T]]) -> T:
    async def go() -> T:
        await repo.start()
        try:
            return await body(repo)
        finally:
            await repo.close()

    return asyncio.run(go())


def test_azureml_score_py_unchanged(tmp_path: Path) -> None:
    folder = write(tmp_path, "iris", AZUREML_SCORE)
    model_zoo.write(tmp_path / "_models", ["demo"])
    (tmp_path / "_models" / "demo" / "1" / "model.onnx").rename(folder / "model.onnx")

    async def body(repo: ModelRepository) -> None:
        assert repo.ready()
        model = repo.get("iris")
        assert model.metadata.entry_script and model.metadata.platform == "azureml_entry_script"
        out = await model.run_entry_script(json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], [6.5, 3.0, 5.5, 2.1]]}).encode())
        assert isinstance(out, list) and len(out) == 2 and out[0][0] > 0.99 and out[1][2] > 0.99
        with pytest.raises(InferenceFailed, match="data must be a list of rows"):
            await model.run_entry_script(b'{"data": [1, 2]}')
        with pytest.raises(InvalidInput):
            from scoring import InferRequest
            await model.infer(InferRequest({}))

    with_repo(ModelRepository(tmp_path), body)


def test_for_entry_script_mode_with_model_dir(tmp_path: Path) -> None:
    script = tmp_path / "src" / "score.py"
    script.parent.mkdir()
    script.write_text(AZUREML_SCORE)
    model_zoo.write(tmp_path / "m", ["demo"])
    model_dir = tmp_path / "m" / "demo" / "1"

    async def body(repo: ModelRepository) -> None:
        assert repo.model_names() == ["default"]
        out = await repo.get("default", 1).run_entry_script(b'{"data": [[5.1, 3.5, 1.4, 0.2]]}')
        assert isinstance(out, list) and out[0][0] > 0.99

    with_repo(ModelRepository.for_entry_script(script, model_dir), body)


def test_init_failure_is_recorded_with_model_version_and_file(tmp_path: Path) -> None:
    write(tmp_path, "bad", "def init():\n    raise RuntimeError('no weights')\n\ndef run(raw):\n    return raw\n")
    write(tmp_path, "good", "def init():\n    pass\n\ndef run(raw):\n    return raw.upper()\n")
    write(tmp_path, "norun", "def init():\n    pass\n")

    async def body(repo: ModelRepository) -> None:
        rows = {r.name: r for r in repo.index()}
        assert rows["bad"].state == "UNAVAILABLE"
        assert rows["bad"].reason == "model 'bad' version 1: score.py: init() failed: RuntimeError: no weights"
        assert "neither run() nor run_batch()" in rows["norun"].reason
        assert await repo.get("good").run_entry_script(b"abc") == "ABC"
        with pytest.raises(ModelNotReady, match="no weights"):
            repo.get("bad")

    with_repo(ModelRepository(tmp_path), body)


def test_inference_schema_params_by_name_and_swagger(tmp_path: Path) -> None:
    write(tmp_path, "schema", SCHEMA_SCORE)

    async def body(repo: ModelRepository) -> None:
        model = repo.get("schema")
        swagger = model.metadata.swagger
        assert swagger is not None
        assert swagger["ServiceInput"]["properties"]["data"]["type"] == "array"
        assert "scale" in swagger["ServiceInput"]["properties"]
        assert swagger["ServiceOutput"]["type"] == "array"
        out = await model.run_entry_script(b'{"data": [[1, 2, 3, 4], [1, 1, 1, 1]], "scale": 2}')
        assert out == [20.0, 8.0]  # numpy result made JSON-serializable
        with pytest.raises(InvalidInput) as info:
            await model.run_entry_script(b'{"data": [[1, 2, 3, 4]], "bogus": 1}')
        assert info.value.field == "bogus"
        with pytest.raises(InvalidInput):
            await model.run_entry_script(b"[1, 2]")

    with_repo(ModelRepository(tmp_path), body)


def test_rawhttp_gets_the_request_object(tmp_path: Path) -> None:
    write(tmp_path, "raw", RAWHTTP_SCORE)

    async def body(repo: ModelRepository) -> None:
        model = repo.get("raw")
        req = RawRequest(data=b"hello", method="POST", args={"q": "7"})
        out = await model.run_entry_script(b"hello", req)
        assert isinstance(out, EntryScriptResponse)
        assert out.status_code == 201 and out.headers == {"X-Test": "1"}
        assert json.loads(out.body) == {"echo": "hello", "q": "7"}
        # Without a request object the body is wrapped in one.
        out = await model.run_entry_script(b"hi")
        assert isinstance(out, EntryScriptResponse) and json.loads(out.body)["echo"] == "hi"
        out = await model.run_entry_script(b"", RawRequest(method="GET"))
        assert isinstance(out, EntryScriptResponse) and out.status_code == 405

    with_repo(ModelRepository(tmp_path), body)


def test_run_batch_micro_batches(tmp_path: Path) -> None:
    write(tmp_path, "batch", BATCH_SCORE, config="batching: {max_batch_size: 8, max_queue_delay_ms: 1000}\n")

    async def body(repo: ModelRepository) -> None:
        model = repo.get("batch")
        assert model.metadata.batched
        results = await asyncio.gather(*(model.run_entry_script(json.dumps({"x": i}).encode()) for i in range(8)))
        assert results == [i * 10 for i in range(8)]
        assert model.entry is not None and model.entry.module.CALLS == [8]

    with_repo(ModelRepository(tmp_path), body)


def test_run_calls_are_one_at_a_time_by_default(tmp_path: Path) -> None:
    write(
        tmp_path,
        "serial",
        """
        import threading
        active = 0
        peak = 0
        lock = threading.Lock()
        entered = threading.Event()
        gate = threading.Event()

        def init():
            pass

        def run(raw):
            global active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            entered.set()
            gate.wait(5)
            with lock:
                active -= 1
            return peak
        """,
    )

    async def body(repo: ModelRepository) -> None:
        model = repo.get("serial")
        assert model.entry is not None
        calls = [asyncio.ensure_future(model.run_entry_script(b"x")) for _ in range(3)]
        assert await asyncio.to_thread(model.entry.module.entered.wait, 5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert model.queue_depth() == 2  # one runs, two wait their turn
        model.entry.module.gate.set()
        assert await asyncio.gather(*calls) == [1, 1, 1]

    with_repo(ModelRepository(tmp_path), body)


def test_azureml_stand_ins_never_hide_an_installed_azureml_package(tmp_path: Path) -> None:
    # An installed azureml-core (the `azureml` namespace package) must stay importable next
    # to the stand-in `azureml.contrib.services.*` modules: old score.py files use both.
    # In a child process, so this test's sys.modules stay clean.
    site = tmp_path / "site"
    (site / "azureml" / "core").mkdir(parents=True)  # a namespace package, like azureml-core's
    (site / "azureml" / "core" / "__init__.py").write_text("MARK = 'real azureml.core'\n")
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from scoring.entry_script import install_azureml_stand_ins
        install_azureml_stand_ins()
        from azureml.contrib.services.aml_request import rawhttp
        import azureml.core
        print(azureml.core.MARK, callable(rawhttp))
        """
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script, str(site)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "real azureml.core True"
