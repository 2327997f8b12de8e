"""benchmarks/http_bench.py's closing lines: issue 3's ratios from one run's figures."""

from __future__ import annotations

from benchmarks.http_bench import issue3_ratios


def _run() -> dict[tuple[str, str, int, int], float]:
    return {
        ("v2-json", "identity", 1, 64): 2000.0,
        ("v2-json", "mlp", 1, 64): 1900.0,
        ("v2-json", "mlp_nobatch", 1, 64): 800.0,
        ("v2-binary", "identity", 1, 64): 2400.0,
        ("v2-binary", "mlp", 1, 64): 2160.0,
        ("v2-binary", "mlp_nobatch", 1, 64): 1200.0,
        ("v2-binary", "mlp", 32, 64): 900.0,
    }


def test_ratios_are_taken_within_the_run() -> None:
    lines = [line.strip() for line in issue3_ratios(_run(), limit=40_000.0, c=64)]
    assert "v2-json 1-row: batched / null model 0.95x (>= 0.9), batched / batching off 2.38x (>= 2)" in lines
    assert "v2-binary 1-row: batched / null model 0.90x (>= 0.9), batched / batching off 1.80x (>= 2)" in lines
    assert "v2-binary 32-row: 28,800 rows/s = 0.72x the in-process limit (>= 0.7)" in lines


def test_a_run_that_errored_reads_zero_not_fast() -> None:
    # http_bench stores 0 req/s for a wrk run with errors: the ratio must not look good.
    rps = _run()
    rps[("v2-json", "mlp", 1, 64)] = 0.0
    lines = [line.strip() for line in issue3_ratios(rps, limit=40_000.0, c=64)]
    assert "v2-json 1-row: batched / null model 0.00x (>= 0.9), batched / batching off 0.00x (>= 2)" in lines
