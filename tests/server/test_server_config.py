"""server/config.py: flags, INFERGATE_* variables, errors naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring import ConfigError
from server.config import OPTIONS, ServerConfig, load_config


def test_defaults_and_flags(tmp_path: Path) -> None:
    config = load_config(["--model-repository", str(tmp_path)], environ={})
    assert config == ServerConfig(model_repository=tmp_path)
    assert (config.host, config.port, config.workers, config.scoring_timeout_ms) == ("127.0.0.1", 8001, 1, 60000)
    config = load_config(
        ["--model-repository", str(tmp_path), "--port", "0", "--drain-delay-s", "0.5", "--access-log", "true"],
        environ={},
    )
    assert config.port == 0 and config.drain_delay_s == 0.5 and config.access_log is True


def test_environment_under_flags(tmp_path: Path) -> None:
    env = {"INFERGATE_MODEL_REPOSITORY": str(tmp_path), "INFERGATE_PORT": "9000", "INFERGATE_WORKERS": "2"}
    config = load_config(["--port", "9100"], environ=env)
    assert config.port == 9100 and config.workers == 2 and config.model_repository == tmp_path


def test_every_option_has_a_flag_and_a_variable() -> None:
    fields = set(ServerConfig.__dataclass_fields__)
    assert {o.field for o in OPTIONS} == fields
    assert all(o.env == "INFERGATE_" + o.field.upper() for o in OPTIONS)


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--port", "http"], {}, "--port"),
        (["--port", "70000"], {}, "--port (INFERGATE_PORT)"),
        ([], {"INFERGATE_WORKERS": "many"}, "INFERGATE_WORKERS"),
        (["--workers", "0"], {}, "--workers"),
        (["--scoring-timeout-ms", "-5"], {}, "--scoring-timeout-ms"),
        (["--drain-delay-s", "nan"], {}, "--drain-delay-s"),
        (["--access-log", "maybe"], {}, "--access-log"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--gil-switch-interval-ms", "0"], {}, "--gil-switch-interval-ms (INFERGATE_GIL_SWITCH_INTERVAL_MS)"),
        ([], {"INFERGATE_GIL_SWITCH_INTERVAL_MS": "fast"}, "INFERGATE_GIL_SWITCH_INTERVAL_MS"),
        (["--frobnicate", "1"], {}, "unrecognized arguments: --frobnicate"),
    ],
)
def test_errors_name_the_option(tmp_path: Path, argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["--model-repository", str(tmp_path), *argv], environ=env)
    assert names in str(info.value)


def test_exactly_one_source_of_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        load_config([], environ={})
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(["--model-repository", str(tmp_path), "--entry-script", "s.py"], environ={})
    with pytest.raises(ConfigError, match="--model-dir"):
        load_config(["--model-repository", str(tmp_path), "--model-dir", str(tmp_path)], environ={})


def test_check_paths_names_the_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-repository .*no such directory.*nope"):
        load_config(["--model-repository", str(tmp_path / "nope")], environ={}).check_paths()
    with pytest.raises(ConfigError, match="--entry-script .*no such file"):
        load_config(["--entry-script", str(tmp_path / "score.py")], environ={}).check_paths()


def test_bad_scoring_config_file_names_flag_file_and_field(tmp_path: Path) -> None:
    from server.lifespan import scoring_config

    bad = tmp_path / "scoring.yaml"
    bad.write_text("model_defaults: {batching: {max_batch_size: 0}}\n")
    config = load_config(["--model-repository", str(tmp_path), "--scoring-config", str(bad)], environ={})
    with pytest.raises(ConfigError, match=r"--scoring-config: .*scoring.yaml: model_defaults.batching.max_batch_size"):
        scoring_config(config)
    bad.write_text("executor_threads: 3\n")
    assert scoring_config(config).executor_threads == 3


def test_the_server_process_runs_with_the_configured_gil_switch_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import sys

    from server import __main__ as server_main

    seen: list[float] = []
    monkeypatch.setattr(server_main.DrainingServer, "run", lambda self, sockets: seen.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    try:
        for ms in (0.5, 2.0):
            config = load_config(["--model-repository", str(tmp_path), "--gil-switch-interval-ms", str(ms)], environ={})
            with socket.socket() as sock:
                server_main.serve(config, sock)
        assert load_config(["--model-repository", str(tmp_path)], environ={}).gil_switch_interval_ms == 0.5
    finally:
        sys.setswitchinterval(before)
    assert seen == pytest.approx([0.0005, 0.002])
