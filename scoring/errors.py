"""Errors raised by the scoring runtime.

No HTTP here: the server and the router map these to status codes in one table each
(``server/errors.py``, ``router/errors.py``).

    ScoringError
    ├── ModelNotFound        no model of that name in the repository
    ├── VersionNotFound      the model exists, that version does not (or the policy excludes it)
    ├── InvalidInput         the request does not fit the model (name, datatype, shape, value)
    ├── ModelNotReady        known, but not loaded (loading, unloaded, or failed to load)
    ├── ModelLoadError       a model or its config could not be loaded (names model, version, file, field)
    ├── ConfigError          a configuration value is invalid (names the field and the value)
    ├── Overloaded           the queue is full; retry later
    ├── DeadlineExceeded     the request's deadline passed before it was computed
    └── InferenceFailed      the model (ONNX Runtime or an entry script) raised while computing
"""

from __future__ import annotations


class ScoringError(Exception):
    """Root of every error the scoring runtime raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ModelNotFound(ScoringError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class VersionNotFound(ScoringError):
    def __init__(self, name: str, version: int | str) -> None:
        super().__init__(f"model '{name}' has no version '{version}'")
        self.name = name
        self.version = version


class InvalidInput(ScoringError):
    """The request does not fit the model. ``field`` names the input or field at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelNotReady(ScoringError):
    def __init__(self, name: str, version: int | None = None, reason: str | None = None) -> None:
        what = f"model '{name}'" if version is None else f"model '{name}' version {version}"
        msg = f"{what} is not ready"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)
        self.name = name
        self.version = version
        self.reason = reason


class ModelLoadError(ScoringError):
    """A model version could not be loaded; the message names model, version, file and field."""


class ConfigError(ScoringError):
    """An invalid configuration value; the message reads ``field: problem, got value``."""

    def __init__(self, field: str, problem: str, value: object = ...) -> None:
        msg = f"{field}: {problem}" if value is ... else f"{field}: {problem}, got {value!r}"
        super().__init__(msg)
        self.field = field


class Overloaded(ScoringError):
    """The queue is full. ``retry_after_s`` is a hint for the Retry-After header."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ScoringError):
    pass


class InferenceFailed(ScoringError):
    pass
