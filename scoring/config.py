"""Typed, frozen configuration of the scoring runtime.

``ScoringConfig`` is what the server passes down; ``ModelConfig`` is one model's
``<repo>/<model>/config.yaml`` (or ``config.json``) laid over the defaults held in
``ScoringConfig.model_defaults``. Every field is documented in ``docs/scoring.md``.

Parsing is strict: unknown keys fail, values are type-checked (no ``bool("false")``),
and every error is a ``ConfigError`` whose message reads ``field: problem, got value``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from scoring.errors import ConfigError

Device = Literal["cpu", "gpu", "fpga", "auto"]
GraphOptimizationLevel = Literal["disable", "basic", "extended", "all"]
ExecutionMode = Literal["sequential", "parallel"]
ProviderOptionValue = str | int | float | bool

CONFIG_FILENAMES = ("config.yaml", "config.yml", "config.json")
DEFAULT_ONNX_INSTANCES = 2


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime ``SessionOptions`` for one model."""

    # 0: CPU cores / instance_count (at least 1), so that instance_count concurrent runs
    # share the cores instead of each spinning a pool as large as the machine.
    intra_op_threads: int = 0
    inter_op_threads: int = 0  # 0: ONNX Runtime decides; only used in parallel mode
    execution_mode: ExecutionMode = "sequential"
    graph_optimization_level: GraphOptimizationLevel = "all"
    # When set, ONNX Runtime writes the optimized graph here (a cache for faster reloads);
    # relative paths are taken from the model folder.
    optimized_model_path: str | None = None

    def __post_init__(self) -> None:
        _check_min("session.intra_op_threads", self.intra_op_threads, 0)
        _check_min("session.inter_op_threads", self.inter_op_threads, 0)
        _check_choice("session.execution_mode", self.execution_mode, ExecutionMode)
        _check_choice(
            "session.graph_optimization_level",
            self.graph_optimization_level,
            GraphOptimizationLevel,
        )


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic micro-batching of one model version (see ``scoring/batcher.py``)."""

    # None: on when dim 0 of every input and output is dynamic, else off.
    enabled: bool | None = None
    # Rows per executed batch. None: settled when the model loads (32, or up to 256 for small
    # models on small rows: ``scoring.batching.auto_max_batch_size``).
    max_batch_size: int | None = None
    # How long the oldest queued request may wait for company. 0 (Triton's default too): a
    # free instance takes whatever is queued at once; under load batches still fill while the
    # instances are busy, and a lone request never waits (see benchmarks/RESULTS.md).
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()  # close a batch at once on reaching the largest
    max_queue_size: int = 1024  # queued requests; past it submissions fail with Overloaded
    queue_timeout_ms: float | None = None  # a request queued longer than this times out

    def rows_limit(self, auto_rows: int) -> int:
        """``max_batch_size`` as set, else ``auto_rows`` (raised to the largest preferred
        batch size, if that is larger)."""
        if self.max_batch_size is not None:
            return self.max_batch_size
        return max((auto_rows, *self.preferred_batch_sizes))

    def __post_init__(self) -> None:
        if self.max_batch_size is not None:
            _check_min("batching.max_batch_size", self.max_batch_size, 1)
        _check_min("batching.max_queue_delay_ms", self.max_queue_delay_ms, 0)
        _check_min("batching.max_queue_size", self.max_queue_size, 1)
        if self.queue_timeout_ms is not None:
            _check_min("batching.queue_timeout_ms", self.queue_timeout_ms, 0)
        for i, size in enumerate(self.preferred_batch_sizes):
            _check_min(f"batching.preferred_batch_sizes[{i}]", size, 1)
            if self.max_batch_size is not None and size > self.max_batch_size:
                raise ConfigError(
                    f"batching.preferred_batch_sizes[{i}]",
                    f"must be <= max_batch_size ({self.max_batch_size})",
                    size,
                )


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: ``{latest: N}``, ``all`` or ``{specific: [..]}``."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "latest":
            _check_min("version_policy.latest", self.latest, 1)
        if self.kind == "specific":
            if not self.versions:
                raise ConfigError("version_policy.specific", "must list at least one version")
            for i, v in enumerate(self.versions):
                _check_min(f"version_policy.specific[{i}]", v, 1)

    def select(self, available: list[int]) -> list[int]:
        """The versions (ascending) this policy serves out of ``available``."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "latest":
            return ordered[-self.latest :]
        return [v for v in ordered if v in self.versions]

    def describe(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "latest":
            return f"latest: {self.latest}"
        return f"specific: {list(self.versions)}"


@dataclass(frozen=True)
class ModelConfig:
    """One model's configuration (all versions share it)."""

    device: Device = "auto"
    strict_device: bool = False  # True: a missing accelerator fails the load instead of using CPU
    tensorrt: bool = False  # gpu/auto: try TensorrtExecutionProvider before CUDA
    openvino: bool = False  # fpga/auto: also try OpenVINOExecutionProvider
    # Provider name (or short alias: cuda, tensorrt, cpu, vitisai, openvino, rocm, dml) ->
    # options passed to ONNX Runtime unchanged, e.g. {cuda: {device_id: 0}}.
    provider_options: Mapping[str, Mapping[str, ProviderOptionValue]] = field(
        default_factory=dict
    )
    session: SessionConfig = field(default_factory=SessionConfig)
    # Batches (or unbatched requests, or entry-script calls) one version runs at once.
    # None: 2 for ONNX models (one batch computes while the next is formed), 1 for entry
    # scripts (AzureML runs one run() at a time per worker).
    instance_count: int | None = None
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    batching: BatchingConfig = field(default_factory=BatchingConfig)

    def __post_init__(self) -> None:
        _check_choice("device", self.device, Device)
        if self.instance_count is not None:
            _check_min("instance_count", self.instance_count, 1)

    def instances(self, entry_script: bool = False) -> int:
        """``instance_count`` with its default resolved."""
        if self.instance_count is not None:
            return self.instance_count
        return 1 if entry_script else DEFAULT_ONNX_INSTANCES


@dataclass(frozen=True)
class ScoringConfig:
    """Runtime-wide settings, passed down by the server."""

    # Shared thread pool for entry scripts and model loads. None: 16 (threads are started on
    # demand; each model's instance_count bounds how many it keeps busy). ONNX models run
    # on instance_count threads of their own.
    executor_threads: int | None = None
    # What a model gets for every field its own config file leaves out.
    model_defaults: ModelConfig = field(default_factory=ModelConfig)
    # Seconds close() waits for queued and in-flight requests before failing them.
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.executor_threads is not None:
            _check_min("executor_threads", self.executor_threads, 1)
        _check_min("drain_timeout_s", self.drain_timeout_s, 0)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ScoringConfig:
        """Build from parsed YAML/JSON; ``model_defaults`` takes the model config keys."""
        _check_mapping("scoring", data)
        _reject_unknown("", data, {"executor_threads", "model_defaults", "drain_timeout_s"})
        executor_threads = data.get("executor_threads")
        if executor_threads is not None:
            executor_threads = _int("executor_threads", executor_threads)
        defaults = ModelConfig()
        if "model_defaults" in data:
            defaults = parse_model_config(data["model_defaults"], defaults, prefix="model_defaults.")
        drain = _number("drain_timeout_s", data.get("drain_timeout_s", 30.0))
        return cls(executor_threads=executor_threads, model_defaults=defaults, drain_timeout_s=drain)


# --------------------------------------------------------------------------- parsing


def find_config_file(model_dir: Path) -> Path | None:
    """The model's config file, or None. Two of them at once is an error."""
    found = [model_dir / n for n in CONFIG_FILENAMES if (model_dir / n).is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError("config", f"several config files ({names}); keep one")
    return found[0] if found else None


def read_config_file(path: Path) -> Any:
    """Parse YAML or JSON; a syntax error becomes a ConfigError naming the line."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError("(file)", f"not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc


def load_model_config(model_dir: Path, defaults: ModelConfig) -> ModelConfig:
    """The config of the model in ``model_dir`` (defaults when it has no config file)."""
    path = find_config_file(model_dir)
    if path is None:
        return defaults
    data = read_config_file(path)
    if data is None:  # an empty file
        return defaults
    return parse_model_config(data, defaults)


_MODEL_KEYS = {f.name for f in fields(ModelConfig)}


def parse_model_config(data: Any, defaults: ModelConfig, prefix: str = "") -> ModelConfig:
    """Lay ``data`` (a parsed config file) over ``defaults``, field by field."""
    _check_mapping(prefix.rstrip(".") or "config", data)
    _reject_unknown(prefix, data, _MODEL_KEYS)
    changes: dict[str, Any] = {}
    p = prefix
    if "device" in data:
        changes["device"] = _choice(p + "device", data["device"], Device)
    for key in ("strict_device", "tensorrt", "openvino"):
        if key in data:
            changes[key] = _bool(p + key, data[key])
    if "instance_count" in data:
        changes["instance_count"] = _int(p + "instance_count", data["instance_count"], 1)
    if "provider_options" in data:
        changes["provider_options"] = _provider_options(p + "provider_options", data["provider_options"])
    if "session" in data:
        changes["session"] = _session(p + "session", data["session"], defaults.session)
    if "version_policy" in data:
        changes["version_policy"] = _version_policy(p + "version_policy", data["version_policy"])
    if "batching" in data:
        changes["batching"] = _batching(p + "batching", data["batching"], defaults.batching)
    try:
        return replace(defaults, **changes)
    except ConfigError as exc:  # cross-field checks in __post_init__
        raise ConfigError(p + exc.field, exc.message.split(": ", 1)[-1]) from None


def _session(where: str, data: Any, base: SessionConfig) -> SessionConfig:
    _check_mapping(where, data)
    _reject_unknown(where + ".", data, {f.name for f in fields(SessionConfig)})
    changes: dict[str, Any] = {}
    for key in ("intra_op_threads", "inter_op_threads"):
        if key in data:
            changes[key] = _int(f"{where}.{key}", data[key], 0)
    if "execution_mode" in data:
        changes["execution_mode"] = _choice(f"{where}.execution_mode", data["execution_mode"], ExecutionMode)
    if "graph_optimization_level" in data:
        changes["graph_optimization_level"] = _choice(
            f"{where}.graph_optimization_level", data["graph_optimization_level"], GraphOptimizationLevel
        )
    if "optimized_model_path" in data:
        value = data["optimized_model_path"]
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.optimized_model_path", "must be a path string", value)
        changes["optimized_model_path"] = value
    return replace(base, **changes)


def _batching(where: str, data: Any, base: BatchingConfig) -> BatchingConfig:
    _check_mapping(where, data)
    _reject_unknown(where + ".", data, {f.name for f in fields(BatchingConfig)})
    changes: dict[str, Any] = {}
    if "enabled" in data:
        value = data["enabled"]
        changes["enabled"] = None if value is None else _bool(f"{where}.enabled", value)
    if "max_batch_size" in data:
        value = data["max_batch_size"]
        changes["max_batch_size"] = None if value is None else _int(f"{where}.max_batch_size", value, 1)
    if "max_queue_size" in data:
        changes["max_queue_size"] = _int(f"{where}.max_queue_size", data["max_queue_size"], 1)
    if "max_queue_delay_ms" in data:
        changes["max_queue_delay_ms"] = _number(f"{where}.max_queue_delay_ms", data["max_queue_delay_ms"], 0)
    if "queue_timeout_ms" in data:
        value = data["queue_timeout_ms"]
        changes["queue_timeout_ms"] = None if value is None else _number(f"{where}.queue_timeout_ms", value, 0)
    if "preferred_batch_sizes" in data:
        value = data["preferred_batch_sizes"]
        if not isinstance(value, list):
            raise ConfigError(f"{where}.preferred_batch_sizes", "must be a list of integers", value)
        changes["preferred_batch_sizes"] = tuple(
            _int(f"{where}.preferred_batch_sizes[{i}]", v, 1) for i, v in enumerate(value)
        )
    try:
        return replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(where + exc.field.removeprefix("batching"), exc.message.split(": ", 1)[-1]) from None


def _version_policy(where: str, data: Any) -> VersionPolicy:
    if data == "all":
        return VersionPolicy(kind="all")
    if isinstance(data, Mapping) and len(data) == 1:
        ((key, value),) = data.items()
        if key == "latest":
            return VersionPolicy(kind="latest", latest=_int(f"{where}.latest", value, 1))
        if key == "specific":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{where}.specific", "must be a non-empty list of versions", value)
            versions = tuple(_int(f"{where}.specific[{i}]", v, 1) for i, v in enumerate(value))
            return VersionPolicy(kind="specific", versions=versions)
    raise ConfigError(where, "must be 'all', {latest: N} or {specific: [versions]}", data)


_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
}


def provider_name(alias: str) -> str:
    """Full ONNX Runtime provider name for a short alias (names pass unchanged)."""
    return _PROVIDER_ALIASES.get(alias.lower(), alias)


def _provider_options(where: str, data: Any) -> dict[str, dict[str, ProviderOptionValue]]:
    _check_mapping(where, data)
    out: dict[str, dict[str, ProviderOptionValue]] = {}
    for key, options in data.items():
        if not isinstance(key, str) or not (key.lower() in _PROVIDER_ALIASES or key.endswith("ExecutionProvider")):
            known = ", ".join(sorted(_PROVIDER_ALIASES))
            raise ConfigError(f"{where}.{key}", f"unknown provider (use {known} or a full *ExecutionProvider name)")
        _check_mapping(f"{where}.{key}", options)
        opts: dict[str, ProviderOptionValue] = {}
        for name, value in options.items():
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(f"{where}.{key}.{name}", "must be a string, number or boolean", value)
            opts[str(name)] = value
        out[provider_name(key)] = opts
    return out


# --------------------------------------------------------------------------- checks


def _check_mapping(where: str, data: Any) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(where, "must be a mapping", data)


def _reject_unknown(prefix: str, data: Mapping[str, Any], known: set[str]) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, "must be true or false", value)
    return value


def _int(where: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, "must be an integer", value)
    if minimum is not None:
        _check_min(where, value, minimum)
    return value


def _number(where: str, value: Any, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, "must be a number", value)
    if minimum is not None:
        _check_min(where, value, minimum)
    return float(value)


def _choice(where: str, value: Any, choices: Any) -> Any:
    _check_choice(where, value, choices)
    return value


def _check_choice(where: str, value: Any, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ConfigError(where, f"must be one of {', '.join(allowed)}", value)


def _check_min(where: str, value: float, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, "must be a number", value)
    if value < minimum:
        raise ConfigError(where, f"must be >= {minimum:g}", value)


__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "ScoringConfig",
    "SessionConfig",
    "VersionPolicy",
    "load_model_config",
    "parse_model_config",
    "provider_name",
]
