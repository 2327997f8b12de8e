"""infergate's scoring runtime: model repository, execution providers, micro-batching,
entry scripts. Numpy in, numpy out; no HTTP in this package.

    repo = ModelRepository(Path("models"), ScoringConfig())
    await repo.start()                      # loads off the loop; failures land in repo.index()
    model = repo.get("demo")                # newest READY version
    result = await model.infer(InferRequest({"input": np.ones((1, 4), np.float32)}))
    await repo.close()

Configuration reference: docs/scoring.md.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

# ONNX Runtime's official wheels send usage telemetry on Linux too since 1.29 (1DS events
# to mobile.events.data.microsoft.com: seen here as DNS lookups ~10 s after `import
# onnxruntime`). A serving runtime in someone else's cluster must not call out unasked, so
# it is off unless the operator set ORT_DISABLE_TELEMETRY (0 allows it). It is read once,
# when ONNX Runtime initializes: this runs before any module of ours imports it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from scoring.config import (  # noqa: E402
    BatchingConfig,
    ModelConfig,
    ScoringConfig,
    SessionConfig,
    VersionPolicy,
)
from scoring.errors import (  # noqa: E402
    ConfigError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ScoringError,
    VersionNotFound,
)
from scoring.types import (  # noqa: E402
    DATATYPE_TO_NUMPY,
    NUMPY_TO_DATATYPE,
    InferRequest,
    InferResult,
    ModelId,
    ModelMetadata,
    ModelStatus,
    TensorSpec,
)

if TYPE_CHECKING:
    from scoring.entry_script import EntryScriptResponse, RawRequest
    from scoring.model import Model
    from scoring.repository import ModelRepository

# Imported on first use: they pull in ONNX Runtime (and entry-script support), which the
# router, a user of the config and error types only, never needs to load.
_LAZY = {
    "Model": "scoring.model",
    "ModelRepository": "scoring.repository",
    "EntryScriptResponse": "scoring.entry_script",
    "RawRequest": "scoring.entry_script",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scoring' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DATATYPE_TO_NUMPY",
    "NUMPY_TO_DATATYPE",
    "BatchingConfig",
    "Model",
    "ModelConfig",
    "ModelRepository",
    "ScoringConfig",
    "SessionConfig",
    "VersionPolicy",
    "ConfigError",
    "DeadlineExceeded",
    "EntryScriptResponse",
    "InferRequest",
    "InferResult",
    "InferenceFailed",
    "InvalidInput",
    "ModelId",
    "ModelLoadError",
    "ModelMetadata",
    "ModelNotFound",
    "ModelNotReady",
    "ModelStatus",
    "Overloaded",
    "RawRequest",
    "ScoringError",
    "TensorSpec",
    "VersionNotFound",
]
