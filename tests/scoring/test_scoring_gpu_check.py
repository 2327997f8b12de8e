"""benchmarks/gpu_check.py: the parts that run without a GPU, and the GPU run itself
(skipped unless ONNX Runtime offers CUDAExecutionProvider)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infergate_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load()
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_no_cuda_is_a_clear_error() -> None:
    with pytest.raises(gpu_check.NoCuda, match="CUDAExecutionProvider is not available .*onnxruntime-gpu"):
        gpu_check.cuda_providers(["CPUExecutionProvider"])


def test_cuda_providers_order_and_options() -> None:
    got = gpu_check.cuda_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], 1, tensorrt=True)
    assert got == [
        ("TensorrtExecutionProvider", {}),
        ("CUDAExecutionProvider", {"device_id": 1}),
        ("CPUExecutionProvider", {}),
    ]


def test_compare() -> None:
    a = np.array([[0.5, 0.5]], np.float32)
    assert gpu_check.compare(a, a + 1e-7)[0]
    ok, diff = gpu_check.compare(a, a + 0.1)
    assert not ok and diff == pytest.approx(0.1, rel=1e-3)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_main_exits_2_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main([]) == 2
    assert "CUDAExecutionProvider is not available" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with CUDAExecutionProvider")
def test_main_on_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--seconds", "0.2"]) == 0
    assert "CUDA vs CPU on 64 rows: match" in capsys.readouterr().out
