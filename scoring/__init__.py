"""infergate's scoring runtime: model repository, execution providers, micro-batching,
entry scripts. Numpy in, numpy out; no HTTP in this package.

    repo = ModelRepository(Path("models"), ScoringConfig())
    await repo.start()                      # loads off the loop; failures land in repo.index()
    model = repo.get("demo")                # newest READY version
    result = await model.infer(InferRequest({"input": np.ones((1, 4), np.float32)}))
    await repo.close()

Configuration reference: docs/scoring.md.
"""

from scoring.config import (
    BatchingConfig,
    ModelConfig,
    ScoringConfig,
    SessionConfig,
    VersionPolicy,
)
from scoring.entry_script import EntryScriptResponse, RawRequest
from scoring.errors import (
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
from scoring.model import Model
from scoring.repository import ModelRepository
from scoring.types import (
    DATATYPE_TO_NUMPY,
    NUMPY_TO_DATATYPE,
    InferRequest,
    InferResult,
    ModelId,
    ModelMetadata,
    ModelStatus,
    TensorSpec,
)

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
