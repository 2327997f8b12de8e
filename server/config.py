"""ServerConfig: every option of ``infergate serve``, declared once.

Each option is a row of ``OPTIONS``: its field, its flag, its ``INFERGATE_*`` environment
variable, how a string becomes a value, and its help. ``load_config(argv, environ)``
reads the command line first, then the environment, then the defaults, and returns a
frozen ``ServerConfig`` whose ``__post_init__`` checks the values. Every error is a
``scoring.ConfigError`` naming the flag (and its variable) and the value at fault;
library code raises, only ``server.__main__`` exits.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from scoring import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]
ENV_PREFIX = "INFERGATE_"


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one scoring server; see docs/server.md for each option."""

    # Serve every model under this directory (<model>/<version>/model.onnx) ...
    model_repository: Path | None = None
    # ... or an AzureML entry script (init()/run()) alone, with AZUREML_MODEL_DIR=model_dir.
    entry_script: Path | None = None
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8001  # 0: any free port (the chosen one is logged as event "listening")
    workers: int = 1  # server processes sharing the listening socket
    max_request_bytes: int = 64 * 1024 * 1024  # larger bodies answer 413
    scoring_timeout_ms: int = 60_000  # per request, from arrival; past it: 504
    graceful_timeout_s: float = 30.0  # after draining: at most this long for in-flight work
    drain_delay_s: float = 5.0  # after SIGTERM: readiness 503 but still serving, this long
    request_head_timeout_s: float = 10.0  # a request head (line + headers) must arrive within this
    score_model: str | None = None  # the model /score serves when the repository has several
    scoring_config: Path | None = None  # YAML/JSON file for scoring.ScoringConfig
    executor_threads: int | None = None  # entry-script and model-load thread pool size
    log_level: LogLevel = "info"
    access_log: bool = False  # one JSON log line per request (costs throughput)
    # How long the event loop may hold the GIL while an instance thread waits for it
    # (sys.setswitchinterval; Python's default is 5 ms). See docs/server.md.
    gil_switch_interval_ms: float = 0.5

    def __post_init__(self) -> None:
        if (self.model_repository is None) == (self.entry_script is None):
            raise ConfigError(
                "--model-repository / --entry-script", "exactly one of them is required"
            )
        if self.model_dir is not None and self.entry_script is None:
            raise ConfigError("--model-dir", "only applies with --entry-script", str(self.model_dir))
        if not self.host:
            raise ConfigError(_name("host"), "must not be empty", self.host)
        _check_range("port", self.port, 0, 65535)
        _check_range("workers", self.workers, 1, 512)
        _check_range("max_request_bytes", self.max_request_bytes, 1, 2**40)
        _check_range("scoring_timeout_ms", self.scoring_timeout_ms, 1, 86_400_000)
        _check_range("graceful_timeout_s", self.graceful_timeout_s, 0, 86_400)
        _check_range("drain_delay_s", self.drain_delay_s, 0, 86_400)
        _check_range("request_head_timeout_s", self.request_head_timeout_s, 0.001, 3600)
        if self.executor_threads is not None:
            _check_range("executor_threads", self.executor_threads, 1, 1024)
        _check_range("gil_switch_interval_ms", self.gil_switch_interval_ms, 0.01, 1000)
        if self.log_level not in get_args(LogLevel):
            raise ConfigError(_name("log_level"), f"must be one of {get_args(LogLevel)}", self.log_level)

    def check_paths(self) -> None:
        """Check that the files and directories named exist (separate so tests need no files)."""
        for field_name, want_dir in (
            ("model_repository", True),
            ("model_dir", True),
            ("entry_script", False),
            ("scoring_config", False),
        ):
            path: Path | None = getattr(self, field_name)
            if path is None:
                continue
            ok = path.is_dir() if want_dir else path.is_file()
            if not ok:
                kind = "directory" if want_dir else "file"
                raise ConfigError(_name(field_name), f"no such {kind}", str(path))


def _check_range(field_name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(_name(field_name), "must be a number", value)
    if not low <= value <= high:
        raise ConfigError(_name(field_name), f"must be between {low} and {high}", value)


# --------------------------------------------------------------------------- options


def _int(text: str) -> int:
    return int(text.strip(), 10)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _path(text: str) -> Path:
    if not text:
        raise ValueError(text)
    return Path(text)


def _str(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


@dataclass(frozen=True)
class Option:
    """One option: ``field`` of ServerConfig, its flag and variable derive from the name."""

    field: str
    parse: Callable[[str], Any]
    expects: str  # what a valid value looks like, for the error message
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


OPTIONS: tuple[Option, ...] = (
    Option("model_repository", _path, "a directory", "directory of <model>/<version>/model.onnx"),
    Option("entry_script", _path, "a file", "serve an AzureML entry script (init/run) instead"),
    Option("model_dir", _path, "a directory", "AZUREML_MODEL_DIR for --entry-script"),
    Option("host", _str, "a host name or address", "address to bind (default 127.0.0.1)"),
    Option("port", _int, "an integer", "port to bind (default 8001; 0 picks a free one)"),
    Option("workers", _int, "an integer", "server processes (default 1)"),
    Option("max_request_bytes", _int, "an integer", "largest request body (default 64 MiB)"),
    Option("scoring_timeout_ms", _int, "an integer", "per-request deadline (default 60000)"),
    Option("graceful_timeout_s", _float, "a number", "shutdown budget for in-flight work (default 30)"),
    Option("drain_delay_s", _float, "a number", "serve with readiness 503 after SIGTERM (default 5)"),
    Option("request_head_timeout_s", _float, "a number", "close connections whose request head is not in after this (default 10)"),
    Option("score_model", _str, "a model name", "model served by /score when there are several"),
    Option("scoring_config", _path, "a file", "YAML/JSON scoring config (model defaults, threads)"),
    Option("executor_threads", _int, "an integer", "thread pool size for entry scripts and loads"),
    Option("log_level", _str, "debug|info|warning|error", "log level (default info)"),
    Option("access_log", _bool, "true|false", "log every request as JSON (default false)"),
    Option("gil_switch_interval_ms", _float, "a number", "longest GIL hold while another thread waits (default 0.5)"),
)
_BY_FIELD = {option.field: option for option in OPTIONS}


def _name(field_name: str) -> str:
    option = _BY_FIELD.get(field_name)
    return f"{option.flag} ({option.env})" if option else field_name


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing and exiting."""

    def error(self, message: str) -> Any:
        raise ConfigError("command line", message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="infergate serve",
        description="Serve ONNX models over the Open Inference Protocol (v2) and AzureML /score.",
        epilog="Every option can also be set by the environment variable shown in brackets.",
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=None,
            metavar=option.field.split("_")[-1].upper() if option.parse is not _bool else "BOOL",
            help=f"{option.help} [{option.env}]",
        )
    return parser


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Command line over environment over defaults; raises ConfigError naming the option."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = args.get(option.field)
        source = option.flag
        if raw is None:
            raw = env.get(option.env)
            source = option.env
        if raw is None:
            continue
        try:
            values[option.field] = option.parse(raw)
        except ValueError:
            raise ConfigError(source, f"must be {option.expects}", raw) from None
    return ServerConfig(**values)
