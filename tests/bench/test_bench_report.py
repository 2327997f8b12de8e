"""benchmarks/report.py: ratios and tables that end up in RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.loadgen import LoadResult
from benchmarks.report import (
    Measurement,
    comparison_table,
    plot,
    ratio,
    scenario_table,
    status_text,
    target_checks,
)


def _result(requests: int, p99_ms: float, non_2xx: int = 0, socket_errors: int = 0) -> LoadResult:
    return LoadResult(requests=requests, duration_s=1.0, non_2xx=non_2xx, socket_errors=socket_errors,
                      p50_ms=p99_ms / 4, p90_ms=p99_ms / 2, p99_ms=p99_ms, mean_ms=p99_ms / 4, max_ms=p99_ms * 2,
                      connections=64, last_bad_status=503 if non_2xx else 0)


def _m(setup: str, group: str, protocol: str, result: LoadResult | None, rows: int = 1, c: int = 64,
       error: str | None = None) -> Measurement:
    return Measurement(setup, group, protocol, "mlp", rows, c, result, error)


def test_ratio_formats_and_handles_missing_sides() -> None:
    assert ratio(500, 100) == "5.00x"
    assert ratio(0, 100) == "-"
    assert ratio(100, 0) == "-"


def test_points_with_errors_have_no_throughput() -> None:
    bad = _m("azureml-w2", "peer", "score", _result(1000, 10, non_2xx=5))
    assert not bad.ok
    assert bad.rps == 0.0
    assert status_text(bad) == "ERRORS: 5 non-2xx (last 503)"
    failed = _m("pytriton", "peer", "v2-json", None, error="wrong answer: HTTP 400\nmore")
    assert status_text(failed) == "FAILED: wrong answer: HTTP 400"


def test_rows_per_second_counts_rows_per_request() -> None:
    assert _m("infergate", "infergate", "v2-binary", _result(100, 5), rows=32).rows_per_s == 3200.0


def test_comparison_table_gives_ratio_and_p99_ratio_to_each_peer() -> None:
    points = [
        _m("infergate", "infergate", "v2-json", _result(5000, 10)),
        _m("azureml-w2", "peer", "score", _result(1000, 40)),
        _m("null-starlette", "reference", "v2-json", _result(5000, 5)),
        _m("mlserver", "peer", "v2-json", _result(10, 1, non_2xx=10)),  # erroring: left out
        _m("infergate", "infergate", "v2-json", _result(9999, 1), c=8),  # other concurrency
    ]
    table = comparison_table(points, 64, limit_rows_per_s=10000)
    header, _, row = table.splitlines()
    assert header == "| infergate | req/s | rows/s | x limit | vs null-starlette v2-json | vs azureml-w2 score |"
    assert row == "| infergate v2-json | 5,000 | 5,000 | 0.50x | 1.00x (2.00) | 5.00x (0.25) |"


def test_comparison_without_infergate_says_so() -> None:
    assert "no infergate point" in comparison_table([_m("mlserver", "peer", "v2-json", _result(10, 1))], 64, None)


def test_scenario_table_lists_failures_as_failures() -> None:
    table = scenario_table([
        _m("infergate", "infergate", "v2-json", _result(2000, 8)),
        _m("mlserver", "peer", "v2-json", None, error="mlserver exited with 1"),
    ], limit_rows_per_s=4000)
    lines = table.splitlines()
    assert lines[2] == "| infergate | v2-json | 64 | 2,000 | 2,000 | 2.00 | 4.00 | 8.00 | 0.50x | ok |"
    assert lines[3] == "| mlserver | v2-json | 64 | - | - | - | - | - | - | FAILED: mlserver exited with 1 |"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    points = [_m("infergate", "infergate", "v2-json", _result(1000 * c, 5), c=c) for c in (1, 8, 64)]
    assert plot(points, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _scenario(model: str, rows: int, setup: str, group: str, protocol: str, requests: int, p99: float) -> Measurement:
    return Measurement(setup, group, protocol, model, rows, 64, _result(requests, p99))


def test_targets_are_computed_from_this_runs_points() -> None:
    points = [
        _scenario("mlp", 1, "infergate", "infergate", "v2-json", 5000, 10),
        _scenario("mlp", 1, "azureml-w1", "peer", "score", 400, 50),
        _scenario("mlp", 1, "azureml-w2", "peer", "score", 900, 50),  # the best worker count counts
        _scenario("mlp", 1, "pytriton", "peer", "v2-json", 1000, 5),  # 5x but a lower p99: missed
        _scenario("mlp", 32, "infergate", "infergate", "v2-binary", 250, 10),
        _scenario("tiny", 1, "infergate", "infergate", "v2-json", 4600, 10),
        _scenario("tiny", 1, "null-starlette", "reference", "v2-json", 5000, 10),
        Measurement("infergate", "infergate", "v2-json", "mlp", 32, 64, None, "wrong answer: HTTP 500"),
    ]
    checks = {c.target.split(">=")[1].strip(): c for c in target_checks(points, {"mlp": 10000.0})}
    azure = checks["5x AzureML server (best worker count), lower p99"]
    assert azure.verdict == "met" and azure.measured.startswith("5.56x")
    assert checks["3x Triton (pytriton, v2 JSON), lower p99"].verdict == "missed"
    assert checks["6x MLServer, lower p99"].verdict == "n/a: mlserver v2-json not measured in this run"
    assert checks["1.4x one process"].verdict == "n/a: infergate-w2 v2-json not measured in this run"
    binary = checks["0.7x the in-process limit (rows/s)"]
    assert (binary.verdict, binary.measured.split()[0]) == ("met", "0.80x")
    assert checks["0.9x the bare Starlette null reference"].verdict == "met"
    assert checks["0.4x the in-process limit (rows/s)"].verdict.startswith("n/a")
