"""benchmarks/setups.py against the real `infergate` command: every protocol the benchmark
measures on infergate (directly and through the router) answers the right outputs, so a
server change that breaks the benchmark's request shapes fails here, not mid-benchmark.
Peers are not started here: they install into their own venvs on first use (make bench)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import payloads
from benchmarks.procs import cpu_seconds, http_post
from benchmarks.run import reference_outputs, verify
from benchmarks.setups import Setup, serve

MISSING = [m for m in ("server.__main__", "router.__main__", "scoring.model_zoo") if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING), reason=f"infergate serve/route not on this branch yet: {MISSING}"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> payloads.ModelInfo:
    root = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(root), "tiny"], check=True, capture_output=True)
    return payloads.read_model_info("tiny", root / "tiny" / "1" / "model.onnx")


@pytest.mark.parametrize(
    "setup",
    [
        Setup("infergate", "infergate", ("v2-json", "v2-binary", "score"), batching=True),
        Setup("infergate-router", "router", ("v2-json", "score"), batching=False),
    ],
    ids=lambda s: s.name,
)
def test_infergate_answers_every_benchmarked_protocol_correctly(setup: Setup, tiny: payloads.ModelInfo,
                                                               tmp_path: Path) -> None:
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        for rows in (1, 3):
            inputs = payloads.make_inputs(tiny, rows)
            expected = reference_outputs(tiny, inputs)
            for protocol in setup.protocols:
                verify(served.urls[protocol], protocol, payloads.build_request(protocol, tiny, inputs),
                       served.headers, tiny, expected)


def test_router_rejects_the_benchmark_request_without_its_key(tiny: payloads.ModelInfo, tmp_path: Path) -> None:
    setup = Setup("infergate-router", "router", ("v2-json",), batching=False)
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        inputs = payloads.make_inputs(tiny, 1)
        with pytest.raises(payloads.ResponseMismatch, match="HTTP 401"):
            verify(served.urls["v2-json"], "v2-json", payloads.build_request("v2-json", tiny, inputs), (), tiny, None)


def test_null_reference_answers_200(tiny: payloads.ModelInfo, tmp_path: Path) -> None:
    setup = Setup("null-starlette", "null", ("v2-json",))
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        assert not served.checks_outputs
        request = payloads.build_request("v2-json", tiny, payloads.make_inputs(tiny, 1))
        verify(served.urls["v2-json"], "v2-json", request, (), tiny, None)


def test_floor_reference_reads_the_tensors_and_echoes_them(tiny: payloads.ModelInfo, tmp_path: Path) -> None:
    setup = Setup("floor-starlette", "floor", ("v2-json",))
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        assert not served.checks_outputs  # it answers its inputs, not the model's outputs
        inputs = payloads.make_inputs(tiny, 3)
        status, _, body = http_post(served.urls["v2-json"], payloads.build_request("v2-json", tiny, inputs).body,
                                    (("Content-Type", "application/json"),))
        assert status == 200
        (echo,) = json.loads(body)["outputs"]
        ((name, sent),) = inputs.items()
        assert (echo["name"], echo["datatype"], echo["shape"]) == (name, "FP32", [3, 4])
        np.testing.assert_array_equal(np.asarray(echo["data"], np.float32).reshape(3, 4), sent)
        # benchmarks/floors.py reads the serving process's CPU time through its pid.
        assert served.pid is not None and cpu_seconds(served.pid) > 0


def test_floor_inline_reference_answers_the_models_outputs(tiny: payloads.ModelInfo, tmp_path: Path) -> None:
    setup = Setup("floor-inline", "floor-inline", ("v2-json",))
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        assert served.checks_outputs
        inputs = payloads.make_inputs(tiny, 2)
        verify(served.urls["v2-json"], "v2-json", payloads.build_request("v2-json", tiny, inputs), (), tiny,
               reference_outputs(tiny, inputs))


def test_a_server_answering_2xx_with_wrong_outputs_is_not_measured(tiny: payloads.ModelInfo, tmp_path: Path) -> None:
    # The null app answers 200 with no outputs: checked as if it were a model server, it fails.
    setup = Setup("null-starlette", "null", ("v2-json",))
    with serve(setup, tiny, tmp_path / "work", tmp_path / "logs") as served:
        inputs = payloads.make_inputs(tiny, 1)
        with pytest.raises(payloads.ResponseMismatch, match="missing"):
            verify(served.urls["v2-json"], "v2-json", payloads.build_request("v2-json", tiny, inputs), (), tiny,
                   reference_outputs(tiny, inputs))
