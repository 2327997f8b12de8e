"""GPU check: run the ``mlp`` benchmark model on CUDA, compare with CPU, print throughput.

Needs onnxruntime-gpu (``pip install -e '.[gpu]'``) and a CUDA device. Exits 2 with a
clear message when ONNX Runtime offers no CUDAExecutionProvider, and 1 when the CUDA
results do not match the CPU ones.

Usage: python benchmarks/gpu_check.py [--seconds 1] [--device-id 0] [--tensorrt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring import ModelConfig  # noqa: E402
from scoring import model_zoo  # noqa: E402
from scoring.providers import CUDA, as_ort_providers, choose_providers  # noqa: E402

import onnxruntime as ort  # noqa: E402 -- after scoring, which turns its telemetry off first

BATCHES = (1, 8, 32, 128, 512, 2048)
RTOL, ATOL = 1e-3, 1e-5  # TF32/cuBLAS vs MLAS: close, not bit-equal


class NoCuda(RuntimeError):
    """ONNX Runtime here has no CUDAExecutionProvider (CPU wheel, or no CUDA libraries)."""


def cuda_providers(available: Sequence[str], device_id: int = 0, tensorrt: bool = False) -> list[object]:
    """The providers argument for a CUDA session; NoCuda when CUDA is not offered."""
    if CUDA not in available:
        raise NoCuda(
            "CUDAExecutionProvider is not available (ONNX Runtime offers: "
            f"{', '.join(available) or 'nothing'}). Install onnxruntime-gpu "
            "(pip install -e '.[gpu]') on a machine with an NVIDIA GPU and CUDA."
        )
    config = ModelConfig(
        device="gpu",
        strict_device=True,
        tensorrt=tensorrt,
        provider_options={CUDA: {"device_id": device_id}},
    )
    return as_ort_providers(choose_providers(config, available))


def compare(cpu: np.ndarray, gpu: np.ndarray) -> tuple[bool, float]:
    """(all close, largest absolute difference)."""
    diff = float(np.max(np.abs(cpu.astype(np.float64) - gpu.astype(np.float64)))) if cpu.size else 0.0
    return bool(np.allclose(cpu, gpu, rtol=RTOL, atol=ATOL)), diff


def throughput(session: ort.InferenceSession, batch: int, seconds: float) -> float:
    x = np.random.default_rng(batch).standard_normal((batch, 256)).astype(np.float32)
    session.run(None, {"input": x})
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"input": x})
        rows += batch
    return rows / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per batch size")
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--tensorrt", action="store_true", help="try TensorRT before CUDA")
    args = parser.parse_args(argv)
    try:
        providers = cuda_providers(ort.get_available_providers(), args.device_id, args.tensorrt)
    except NoCuda as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = model_zoo.write(Path(tmp), ["mlp"])
        cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        gpu = ort.InferenceSession(str(path), providers=providers)
    used = gpu.get_providers()
    print(f"onnxruntime {ort.__version__}; session providers: {', '.join(used)}")
    if CUDA not in used:
        print("gpu_check: the session fell back to CPU (CUDA could not be initialised)", file=sys.stderr)
        return 2
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    ok, diff = compare(cpu.run(None, {"input": x})[0], gpu.run(None, {"input": x})[0])
    print(f"CUDA vs CPU on 64 rows: {'match' if ok else 'MISMATCH'} (max abs diff {diff:.2e}, rtol {RTOL}, atol {ATOL})")
    if not ok:
        return 1
    print("| batch rows | CPU rows/s | CUDA rows/s |\n|---:|---:|---:|")
    for batch in BATCHES:
        c = throughput(cpu, batch, args.seconds) if batch <= 512 else float("nan")
        g = throughput(gpu, batch, args.seconds)
        print(f"| {batch} | {c:,.0f} | {g:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
