"""infergate's scoring runtime: model repository, execution providers, micro-batching,
entry scripts. Numpy in, numpy out; no HTTP in this package."""

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
    "ConfigError",
    "DeadlineExceeded",
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
    "ScoringError",
    "TensorSpec",
    "VersionNotFound",
]
