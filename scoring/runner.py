"""One ONNX Runtime ``InferenceSession`` per model version, run off the event loop.

``InferenceSession.run`` releases the GIL and is safe to call from several threads at
once, so one session serves ``instance_count`` concurrent batches. Each instance is one
thread of the runner's own pool (as Triton gives each model instance its own thread): at
most ``instance_count`` runs compute at once, and a run handed over while every instance
is busy waits in the pool's queue and starts the moment one is free, in that thread,
without a trip through the event loop. ONNX Runtime's exceptions are translated here, at
the boundary, into ``InvalidInput`` (the input does not fit the graph) or
``InferenceFailed`` (anything else), chained ``from exc``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from scoring.config import ModelConfig
from scoring.errors import InferenceFailed, InvalidInput, ModelLoadError
from scoring.providers import (
    as_ort_providers,
    available_providers,
    check_session_providers,
    choose_providers,
    session_options,
)
from scoring.types import ONNX_TYPE_TO_DATATYPE, TensorSpec

log = logging.getLogger("infergate.scoring")

Arrays = dict[str, np.ndarray]


class Runner(Protocol):
    """What the batcher and ``Model`` need from a model backend (a seam for tests)."""

    async def run(self, inputs: Arrays, output_names: Sequence[str] | None) -> Arrays:
        """Compute ``output_names`` (None: all) for one (possibly batched) input set."""
        ...

    def close(self) -> None:
        """Release what the backend holds (after its last run)."""
        ...


def _spec(arg: Any, model: str) -> TensorSpec:
    datatype = ONNX_TYPE_TO_DATATYPE.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"model '{model}': tensor '{arg.name}' has unsupported type {arg.type}")
    # ORT reports a dynamic dim as a symbol name (str) or None; both become -1.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


class OrtRunner:
    """A loaded ONNX model version: its session, its tensors and the providers it uses."""

    def __init__(self, session: ort.InferenceSession, instances: int, label: str) -> None:
        self.session = session
        self.executor = ThreadPoolExecutor(instances, thread_name_prefix=f"infergate-{_thread_name(label)}")
        self.label = label
        self.inputs = tuple(_spec(a, label) for a in session.get_inputs())
        self.outputs = tuple(_spec(a, label) for a in session.get_outputs())
        self.providers = tuple(session.get_providers())
        self._string_outputs = {s.name for s in self.outputs if s.datatype == "BYTES"}
        self._string_inputs = {s.name for s in self.inputs if s.datatype == "BYTES"}

    @classmethod
    def load(
        cls,
        path: Path,
        config: ModelConfig,
        label: str,
        available: Sequence[str] | None = None,
    ) -> OrtRunner:
        """Create the session (blocking: call it off the event loop).

        Raises ConfigError (provider choice under ``strict_device``) or ModelLoadError.
        """
        offered = list(available) if available is not None else available_providers()
        choice = choose_providers(config, offered)
        if choice.fallback:
            log.warning(
                "%s: device '%s' wanted %s; none is available, running on CPU",
                label, config.device, ", ".join(choice.wanted),
            )
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=session_options(config.session, path.parent, config.instances()),
                providers=as_ort_providers(choice),
            )
        except Exception as exc:  # ORT raises its own pybind types (Fail, InvalidGraph, ...)
            raise ModelLoadError(f"{label}: {path.name}: ONNX Runtime cannot load it: {exc}") from exc
        runner = cls(session, config.instances(), label)
        if check_session_providers(config, choice, runner.providers) and not choice.fallback:
            log.warning(
                "%s: device '%s' wanted %s but the session runs on %s",
                label, config.device, ", ".join(choice.wanted), ", ".join(runner.providers),
            )
        return runner

    def run_sync(self, inputs: Arrays, output_names: Sequence[str] | None) -> Arrays:
        """Blocking run; exceptions translated. Runs in an executor thread."""
        names = list(output_names) if output_names else [s.name for s in self.outputs]
        feed = inputs
        if self._string_inputs:
            feed = {k: (_to_str(v) if k in self._string_inputs else v) for k, v in inputs.items()}
        try:
            values = self.session.run(names, feed)
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
            raise InvalidInput(f"{self.label}: the input does not fit the model: {exc}") from exc
        except Exception as exc:
            raise InferenceFailed(f"{self.label}: ONNX Runtime failed: {exc}") from exc
        out = dict(zip(names, values, strict=True))
        for name in self._string_outputs.intersection(out):
            out[name] = _to_bytes(out[name])
        return out

    async def run(self, inputs: Arrays, output_names: Sequence[str] | None) -> Arrays:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.run_sync, inputs, output_names)

    def close(self) -> None:
        """Let the instance threads exit once idle (a run still computing finishes)."""
        self.executor.shutdown(wait=False, cancel_futures=True)


def _thread_name(label: str) -> str:
    """``model 'mlp' version 1`` -> ``mlp-1`` (thread names show in py-spy and top -H)."""
    return "-".join(part.strip("'") for part in label.split() if part not in ("model", "version"))


def _to_str(a: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as object arrays of bytes; ORT wants str for tensor(string)."""
    flat = [x.decode("utf-8") if isinstance(x, bytes | bytearray) else x for x in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape)


def _to_bytes(a: np.ndarray) -> np.ndarray:
    flat = [x.encode("utf-8") if isinstance(x, str) else x for x in np.asarray(a, dtype=object).reshape(-1)]
    return np.array(flat, dtype=object).reshape(np.shape(a))


__all__ = ["OrtRunner", "Runner"]
