"""Execution-provider choice against given lists of available providers."""

from __future__ import annotations

import pytest

from scoring import ConfigError, ModelConfig
from scoring.providers import (
    CPU,
    CUDA,
    OPENVINO,
    ROCM,
    TENSORRT,
    VITISAI,
    check_session_providers,
    choose_providers,
    session_options,
)
from scoring.config import SessionConfig

ALL = [TENSORRT, CUDA, ROCM, VITISAI, OPENVINO, CPU]


@pytest.mark.parametrize(
    ("config", "available", "names", "fallback"),
    [
        (ModelConfig(device="cpu"), ALL, (CPU,), False),
        (ModelConfig(device="gpu"), ALL, (CUDA, CPU), False),  # TensorRT only when enabled
        (ModelConfig(device="gpu", tensorrt=True), ALL, (TENSORRT, CUDA, CPU), False),
        (ModelConfig(device="gpu", tensorrt=True), [CUDA, CPU], (CUDA, CPU), False),
        (ModelConfig(device="gpu"), [CPU], (CPU,), True),
        (ModelConfig(device="fpga"), ALL, (VITISAI, CPU), False),
        (ModelConfig(device="fpga", openvino=True), [OPENVINO, CPU], (OPENVINO, CPU), False),
        (ModelConfig(device="fpga"), [CUDA, CPU], (CPU,), True),
        (ModelConfig(device="auto"), ALL, (CUDA, ROCM, VITISAI, CPU), False),
        (ModelConfig(device="auto", tensorrt=True), [TENSORRT, CUDA, CPU], (TENSORRT, CUDA, CPU), False),
        (ModelConfig(device="auto"), [VITISAI, CPU], (VITISAI, CPU), False),
        (ModelConfig(device="auto"), ["AzureExecutionProvider", CPU], (CPU,), False),
    ],
)
def test_choice(config: ModelConfig, available: list[str], names: tuple[str, ...], fallback: bool) -> None:
    choice = choose_providers(config, available)
    assert choice.names == names
    assert choice.fallback is fallback


def test_provider_options_pass_through() -> None:
    cfg = ModelConfig(
        device="gpu",
        tensorrt=True,
        provider_options={TENSORRT: {"trt_fp16_enable": True, "trt_engine_cache_path": "/c"}, CUDA: {"device_id": 1}},
    )
    choice = choose_providers(cfg, ALL)
    assert choice.providers == (
        (TENSORRT, {"trt_fp16_enable": True, "trt_engine_cache_path": "/c"}),
        (CUDA, {"device_id": 1}),
        (CPU, {}),
    )


@pytest.mark.parametrize(
    ("config", "available"),
    [
        (ModelConfig(device="gpu", strict_device=True), [CPU]),
        (ModelConfig(device="gpu", strict_device=True, tensorrt=True), [CUDA, CPU]),
        (ModelConfig(device="fpga", strict_device=True), [CUDA, CPU]),
        (ModelConfig(device="auto", strict_device=True), [CPU]),
    ],
)
def test_strict_device_fails_when_missing(config: ModelConfig, available: list[str]) -> None:
    with pytest.raises(ConfigError, match="^strict_device: device"):
        choose_providers(config, available)


def test_strict_device_ok_when_present() -> None:
    assert choose_providers(ModelConfig(device="gpu", strict_device=True), [CUDA, CPU]).names == (CUDA, CPU)
    assert choose_providers(ModelConfig(device="cpu", strict_device=True), [CPU]).names == (CPU,)


def test_session_that_dropped_the_accelerator() -> None:
    cfg = ModelConfig(device="gpu")
    choice = choose_providers(cfg, [CUDA, CPU])
    # ORT silently fell back (no driver): visible, and an error under strict_device.
    assert check_session_providers(cfg, choice, [CPU]) is True
    assert check_session_providers(cfg, choice, [CUDA, CPU]) is False
    strict = ModelConfig(device="gpu", strict_device=True)
    with pytest.raises(ConfigError, match="runs on CPUExecutionProvider"):
        check_session_providers(strict, choose_providers(strict, [CUDA, CPU]), [CPU])


def test_session_options() -> None:
    opts = session_options(SessionConfig(intra_op_threads=3, graph_optimization_level="basic", optimized_model_path="o.onnx"))
    assert opts.intra_op_num_threads == 3
    assert opts.optimized_model_filepath == "o.onnx"
