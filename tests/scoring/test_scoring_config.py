"""ScoringConfig / ModelConfig parsing: defaults, overrides, strict errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring import BatchingConfig, ConfigError, ModelConfig, ScoringConfig, VersionPolicy
from scoring.config import load_model_config, parse_model_config


def test_defaults_need_no_config() -> None:
    cfg = ModelConfig()
    assert cfg.device == "auto"
    assert cfg.version_policy.select([1, 2, 3]) == [3]
    assert cfg.batching.enabled is None
    assert cfg.batching.max_queue_size > 0  # bounded by default


def test_full_config_parses() -> None:
    data = {
        "device": "gpu",
        "strict_device": True,
        "tensorrt": True,
        "provider_options": {"cuda": {"device_id": 1, "gpu_mem_limit": 1024}, "TensorrtExecutionProvider": {"trt_fp16_enable": True}},
        "session": {"intra_op_threads": 2, "graph_optimization_level": "basic", "optimized_model_path": "opt.onnx"},
        "instance_count": 2,
        "version_policy": {"specific": [1, 3]},
        "batching": {"enabled": True, "max_batch_size": 64, "max_queue_delay_ms": 5, "preferred_batch_sizes": [16, 32],
                     "max_queue_size": 10, "queue_timeout_ms": 100},
    }
    cfg = parse_model_config(data, ModelConfig())
    assert cfg.device == "gpu" and cfg.strict_device and cfg.tensorrt
    assert cfg.provider_options == {
        "CUDAExecutionProvider": {"device_id": 1, "gpu_mem_limit": 1024},
        "TensorrtExecutionProvider": {"trt_fp16_enable": True},
    }
    assert cfg.session.intra_op_threads == 2 and cfg.session.graph_optimization_level == "basic"
    assert cfg.instance_count == 2
    assert cfg.version_policy.select([1, 2, 3, 4]) == [1, 3]
    assert cfg.batching == BatchingConfig(True, 64, 5.0, (16, 32), 10, 100.0)


def test_file_overrides_only_what_it_names() -> None:
    defaults = ModelConfig(instance_count=3, batching=BatchingConfig(max_batch_size=8, max_queue_size=7))
    cfg = parse_model_config({"batching": {"max_batch_size": 4}}, defaults)
    assert cfg.instance_count == 3
    assert cfg.batching.max_batch_size == 4 and cfg.batching.max_queue_size == 7


def test_max_batch_size_unset_is_settled_per_model() -> None:
    cfg = parse_model_config({"batching": {"max_batch_size": None, "preferred_batch_sizes": [512]}}, ModelConfig())
    assert cfg.batching.max_batch_size is None  # settled when the model's inputs are known
    assert cfg.batching.rows_limit(256) == 512  # a preferred size above the automatic one wins
    assert BatchingConfig().rows_limit(64) == 64
    assert BatchingConfig(max_batch_size=8).rows_limit(64) == 8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batching": {"max_queue_delay_ms": -5}}, "batching.max_queue_delay_ms: must be >= 0, got -5"),
        ({"devise": "cpu"}, "devise: unknown key"),
        ({"batching": {"max_batch": 3}}, "batching.max_batch: unknown key"),
        ({"device": "tpu"}, "device: must be one of cpu, gpu, fpga, auto, got 'tpu'"),
        ({"strict_device": "false"}, "strict_device: must be true or false, got 'false'"),
        ({"instance_count": 0}, "instance_count: must be >= 1, got 0"),
        ({"instance_count": 1.5}, "instance_count: must be an integer, got 1.5"),
        ({"version_policy": {"latest": 0}}, "version_policy.latest: must be >= 1, got 0"),
        ({"version_policy": "newest"}, "version_policy: must be 'all', {latest: N} or {specific: [versions]}"),
        ({"version_policy": {"specific": [1, "x"]}}, "version_policy.specific[1]: must be an integer"),
        ({"batching": {"preferred_batch_sizes": [64], "max_batch_size": 32}}, "batching.preferred_batch_sizes[0]: must be <= max_batch_size (32), got 64"),
        ({"session": {"graph_optimization_level": "max"}}, "session.graph_optimization_level: must be one of"),
        ({"provider_options": {"quantum": {}}}, "provider_options.quantum: unknown provider"),
        ({"provider_options": {"cuda": {"device_id": [0]}}}, "provider_options.cuda.device_id: must be a string, number or boolean"),
        ([1, 2], "config: must be a mapping"),
    ],
)
def test_errors_name_field_and_value(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config(data, ModelConfig())
    assert str(info.value).startswith(message)


def test_version_policies() -> None:
    assert VersionPolicy("all").select([3, 1, 2]) == [1, 2, 3]
    assert VersionPolicy("latest", latest=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("specific", versions=(1, 5)).select([1, 2, 3]) == [1]


def test_load_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("instance_count: 2\nbatching:\n  enabled: false\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text('{"device": "cpu"}')
    (tmp_path / "c").mkdir()
    assert load_model_config(tmp_path / "a", ModelConfig()).batching.enabled is False
    assert load_model_config(tmp_path / "b", ModelConfig()).device == "cpu"
    assert load_model_config(tmp_path / "c", ModelConfig()) == ModelConfig()


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("batching: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model_config(tmp_path, ModelConfig())


def test_scoring_config_from_mapping() -> None:
    cfg = ScoringConfig.from_mapping({"executor_threads": 4, "model_defaults": {"instance_count": 2}})
    assert cfg.executor_threads == 4 and cfg.model_defaults.instance_count == 2
    with pytest.raises(ConfigError, match=r"^model_defaults\.batching\.max_queue_size: must be >= 1, got 0"):
        ScoringConfig.from_mapping({"model_defaults": {"batching": {"max_queue_size": 0}}})
    with pytest.raises(ConfigError, match="^threads: unknown key"):
        ScoringConfig.from_mapping({"threads": 4})
    with pytest.raises(ConfigError, match="^executor_threads: must be >= 1, got 0"):
        ScoringConfig(executor_threads=0)
