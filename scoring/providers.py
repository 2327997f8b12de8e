"""Execution-provider choice and ``SessionOptions``.

``choose_providers`` is a pure function of the model config and the providers this
ONNX Runtime build offers, so it is unit-tested against given lists:

- ``cpu``  -> CPU
- ``gpu``  -> TensorRT (only with ``tensorrt: true``), CUDA, then CPU
- ``fpga`` -> Vitis AI, OpenVINO (only with ``openvino: true``), then CPU
- ``auto`` -> the best available of all the above, then CPU

When none of the wanted accelerators is available the choice falls back to CPU and says
so (``fallback``); with ``strict_device: true`` that is an error instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from scoring.config import ModelConfig, ProviderOptionValue, SessionConfig
from scoring.errors import ConfigError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
ROCM = "ROCMExecutionProvider"
VITISAI = "VitisAIExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"

ProviderList = list[tuple[str, dict[str, ProviderOptionValue]]]


@dataclass(frozen=True)
class ProviderChoice:
    """Providers to ask ONNX Runtime for, in priority order, each with its options."""

    providers: tuple[tuple[str, dict[str, ProviderOptionValue]], ...]
    wanted: tuple[str, ...]  # accelerators the device asked for, best first
    fallback: bool  # none of ``wanted`` is available: running on CPU instead

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.providers)


def wanted_providers(config: ModelConfig) -> tuple[str, ...]:
    """Accelerators ``config.device`` asks for, best first (CPU is always appended later)."""
    gpu = ((TENSORRT,) if config.tensorrt else ()) + (CUDA,)
    fpga = (VITISAI,) + ((OPENVINO,) if config.openvino else ())
    if config.device == "cpu":
        return ()
    if config.device == "gpu":
        return gpu
    if config.device == "fpga":
        return fpga
    return gpu + (ROCM,) + fpga  # auto


def choose_providers(config: ModelConfig, available: Sequence[str]) -> ProviderChoice:
    """Pick providers for ``config`` among ``available`` (``ort.get_available_providers()``).

    Raises ConfigError when ``strict_device`` is set and a wanted accelerator is missing
    (for ``auto``, when none is available).
    """
    wanted = wanted_providers(config)
    present = [p for p in wanted if p in available]
    if config.strict_device and config.device != "cpu":
        missing = [p for p in wanted if p not in available]
        if (config.device == "auto" and not present) or (config.device != "auto" and missing):
            raise ConfigError(
                "strict_device",
                f"device '{config.device}' needs {', '.join(missing or wanted)} but this "
                f"ONNX Runtime offers only {', '.join(available) or 'nothing'}",
            )
    names = present + [CPU]
    options: Mapping[str, Mapping[str, ProviderOptionValue]] = config.provider_options
    providers = tuple((name, dict(options.get(name, {}))) for name in names)
    # ``auto`` on a CPU-only build is not a fallback: CPU *is* the best available there.
    fallback = config.device in ("gpu", "fpga") and not present
    return ProviderChoice(providers=providers, wanted=wanted, fallback=fallback)


def check_session_providers(config: ModelConfig, choice: ProviderChoice, used: Sequence[str]) -> bool:
    """After the session exists: did it really get an accelerator? Raises under strict.

    ONNX Runtime silently drops a provider it cannot initialise (no driver, no device), so
    the list the session reports is the truth. Returns True when running on CPU only
    although an accelerator was wanted.
    """
    if not choice.wanted or (config.device == "auto" and not choice.fallback and len(choice.providers) == 1):
        return False
    got = [p for p in used if p in choice.wanted]
    if config.strict_device and not got:
        raise ConfigError(
            "strict_device",
            f"device '{config.device}' wanted {', '.join(choice.wanted)} but the session "
            f"runs on {', '.join(used)}",
        )
    return not got


_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def intra_op_threads(config: SessionConfig, instances: int, cpus: int | None = None) -> int:
    """Threads per run: as configured, else the cores shared out among the instances."""
    if config.intra_op_threads:
        return config.intra_op_threads
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, instances))


def session_options(config: SessionConfig, model_dir: Path | None = None, instances: int = 1) -> ort.SessionOptions:
    """``SessionOptions`` for one model (relative cache paths are taken from ``model_dir``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads(config, instances)
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if config.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    opts.graph_optimization_level = _OPT_LEVELS[config.graph_optimization_level]
    if config.optimized_model_path:
        path = Path(config.optimized_model_path)
        if not path.is_absolute() and model_dir is not None:
            path = model_dir / path
        opts.optimized_model_filepath = str(path)
    # Warnings only: ORT's info-level chatter would flood the server log.
    opts.log_severity_level = 2
    return opts


def available_providers() -> list[str]:
    """What this ONNX Runtime build offers."""
    return list(ort.get_available_providers())


def as_ort_providers(choice: ProviderChoice) -> list[Any]:
    """The ``providers=`` argument for ``InferenceSession``."""
    # Values pass through unchanged: ONNX Runtime's Python binding stringifies them itself
    # (its docs pass ``{"trt_fp16_enable": True}``).
    return [(name, dict(opts)) for name, opts in choice.providers]
