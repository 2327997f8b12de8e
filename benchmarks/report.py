"""Turn measurements into Markdown tables, ratios and a PNG plot.

Pure functions over ``Measurement`` records (the plot aside), so the arithmetic that ends
up in RESULTS.md is unit-tested. Absolute numbers drift on shared machines; the ratios
(to the in-process limit, to the null reference, to each peer) measured in the same run
are what the targets are stated in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.loadgen import LoadResult

#: A run whose error rate exceeds this is shown as failed, not as a throughput.
MAX_ERROR_RATE = 0.0


@dataclass(frozen=True)
class Measurement:
    """One (server, protocol, model, rows per request, concurrency) point."""

    setup: str
    group: str
    protocol: str
    model: str
    rows: int
    concurrency: int
    result: LoadResult | None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.setup} {self.protocol}"

    @property
    def scenario(self) -> tuple[str, int]:
        return (self.model, self.rows)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None and self.result.errors == 0

    @property
    def rps(self) -> float:
        return self.result.rps if self.ok and self.result else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows


def ratio(a: float, b: float) -> str:
    """``a/b`` as ``1.23x``, or ``-`` when either side is missing."""
    if a <= 0 or b <= 0:
        return "-"
    return f"{a / b:.2f}x"


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def status_text(m: Measurement) -> str:
    """'ok', or why the point does not count (errors are never reported as speed)."""
    if m.error:
        return f"FAILED: {m.error.splitlines()[0][:80]}"
    assert m.result is not None
    if m.result.errors:
        bits = []
        if m.result.non_2xx:
            bits.append(f"{m.result.non_2xx} non-2xx (last {m.result.last_bad_status})")
        if m.result.socket_errors:
            bits.append(f"{m.result.socket_errors} socket errors")
        return "ERRORS: " + ", ".join(bits)
    return "ok"


def scenario_table(measurements: Sequence[Measurement], limit_rows_per_s: float | None) -> str:
    """Markdown table for one (model, rows) scenario: every server at every concurrency."""
    lines = [
        "| server | protocol | c | req/s | rows/s | p50 ms | p90 ms | p99 ms | x limit | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in sorted(measurements, key=lambda m: (m.group != "reference", m.group != "infergate", m.setup, m.protocol, m.concurrency)):
        r = m.result
        if m.ok and r is not None:
            # The null reference computes nothing: a ratio to the model's limit means nothing.
            to_limit = "-" if m.group == "reference" else ratio(m.rows_per_s, limit_rows_per_s or 0.0)
            cells = [_num(r.rps), _num(m.rows_per_s), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", to_limit]
        else:
            cells = ["-"] * 6
        lines.append(f"| {m.setup} | {m.protocol} | {m.concurrency} | " + " | ".join(cells) + f" | {status_text(m)} |")
    return "\n".join(lines)


def best_by_setup(measurements: Iterable[Measurement], concurrency: int) -> dict[str, Measurement]:
    """Per label, the point at ``concurrency`` (only points that count)."""
    return {m.label: m for m in measurements if m.concurrency == concurrency and m.ok}


def comparison_table(measurements: Sequence[Measurement], concurrency: int, limit_rows_per_s: float | None) -> str:
    """Each infergate row against the reference, the limit and every peer, at one concurrency.

    A cell reads ``throughput ratio (p99 ours / p99 theirs)``: ``5.10x (0.20)`` means five
    times the requests/s with a fifth of the p99.
    """
    points = best_by_setup(measurements, concurrency)
    ours = [m for m in points.values() if m.group == "infergate"]
    others = [m for m in points.values() if m.group in ("peer", "reference")]
    if not ours:
        return "_no infergate point without errors at this concurrency_"
    others.sort(key=lambda m: (m.group != "reference", m.label))
    head = "| " + " | ".join(["infergate", "req/s", "rows/s", "x limit", *(f"vs {o.label}" for o in others)]) + " |"
    sep = "|---|---:|---:|---:|" + "---:|" * len(others)
    lines = [head, sep]
    for m in sorted(ours, key=lambda m: m.label):
        assert m.result is not None
        cells = [_num(m.rps), _num(m.rows_per_s), ratio(m.rows_per_s, limit_rows_per_s or 0.0)]
        for o in others:
            assert o.result is not None
            p99 = m.result.p99_ms / o.result.p99_ms if o.result.p99_ms > 0 else 0.0
            cells.append(f"{ratio(m.rps, o.rps)} ({p99:.2f})")
        lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(measurements: Sequence[Measurement], path: Path, title: str) -> bool:
    """Throughput and p99 against concurrency, one line per server, one row per scenario.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = sorted({m.scenario for m in measurements})
    if not scenarios:
        return False
    # One colour per server across every panel, so a line is the same server everywhere.
    all_labels = sorted({m.label for m in measurements}, key=lambda lab: (not lab.startswith("infergate"), lab))
    cmap = plt.get_cmap("tab20")
    colours = {label: cmap(i % 20) for i, label in enumerate(all_labels)}
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(13, 4.2 * len(scenarios)), squeeze=False)
    for row, (model, rows) in enumerate(scenarios):
        points = [m for m in measurements if m.scenario == (model, rows) and m.ok]
        labels = sorted({m.label for m in points}, key=lambda lab: (not lab.startswith("infergate"), lab))
        for label in labels:
            series = sorted((m for m in points if m.label == label), key=lambda m: m.concurrency)
            xs = [m.concurrency for m in series]
            style = "-" if label.startswith("infergate") else "--"
            colour = colours[label]
            axes[row][0].plot(xs, [m.rows_per_s for m in series], style, marker="o", label=label, color=colour)
            axes[row][1].plot(xs, [m.result.p99_ms for m in series if m.result], style, marker="o", label=label,
                              color=colour)
        for col, ylabel in enumerate(("rows/s", "p99 latency (ms)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (connections)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}, {rows}-row requests: {ylabel}")
            ax.grid(True, alpha=0.3)
        # The null reference is an order of magnitude above model-bound servers: log scales.
        axes[row][0].set_yscale("log")
        axes[row][1].set_yscale("log")
    # One legend for the figure, below the panels, so no line is hidden behind it.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[lab], marker="o", linestyle="-" if lab.startswith("infergate") else "--")
               for lab in all_labels]
    fig.legend(handles, all_labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    legend_rows = (len(all_labels) + 3) // 4
    fig.tight_layout(rect=(0, min(0.3, 0.025 * legend_rows + 0.01) / max(1, len(scenarios) / 3), 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


@dataclass(frozen=True)
class TargetCheck:
    """One of issue 5's targets, as measured in this run."""

    target: str
    measured: str
    verdict: str  # "met", "missed", or "n/a: <why>"


def _point(points: dict[str, Measurement], label: str) -> Measurement | None:
    return points.get(label)


def _best(points: dict[str, Measurement], prefix: str, protocol: str) -> Measurement | None:
    """The highest-throughput point among setups named ``prefix*`` (e.g. every azureml-wN)."""
    found = [m for m in points.values() if m.setup.startswith(prefix) and m.protocol == protocol]
    return max(found, key=lambda m: m.rps, default=None)


def _versus(target: str, ours: Measurement | None, theirs: Measurement | None, factor: float,
            need_lower_p99: bool = True, measured_labels: frozenset[str] = frozenset(),
            wanted: tuple[str, str] = ("", "")) -> TargetCheck:
    if ours is None or theirs is None or ours.result is None or theirs.result is None:
        side = wanted[0] if ours is None else wanted[1]
        if side and not any(label.startswith(side) for label in measured_labels):
            return TargetCheck(target, "-", f"n/a: {side} not measured in this run")
        return TargetCheck(target, "-", f"n/a: no error-free point for {side or 'one side'}")
    got = ours.rps / theirs.rps if theirs.rps else 0.0
    p99_ok = ours.result.p99_ms < theirs.result.p99_ms
    measured = f"{got:.2f}x ({ours.label} {ours.rps:,.0f} vs {theirs.label} {theirs.rps:,.0f} req/s"
    measured += f"; p99 {ours.result.p99_ms:.1f} vs {theirs.result.p99_ms:.1f} ms)" if need_lower_p99 else ")"
    met = got >= factor and (p99_ok or not need_lower_p99)
    return TargetCheck(target, measured, "met" if met else "missed")


def target_checks(measurements: Sequence[Measurement], limits: dict[str, float], concurrency: int = 64) -> list[TargetCheck]:
    """Issue 5's targets at ``concurrency``, each computed from points of this run only.

    ``limits`` maps model name to the in-process limit's best rows/s.
    """
    def points(model: str, rows: int) -> dict[str, Measurement]:
        return best_by_setup([m for m in measurements if m.scenario == (model, rows)], concurrency)

    mlp1, mlp32, tiny1 = points("mlp", 1), points("mlp", 32), points("tiny", 1)
    seen = frozenset(m.label for m in measurements)
    ours = _point(mlp1, "infergate v2-json")
    checks = [
        _versus("mlp 1-row v2 JSON >= 5x AzureML server (best worker count), lower p99", ours,
                _best(mlp1, "azureml", "score"), 5.0, True, seen, ("infergate v2-json", "azureml")),
        _versus("mlp 1-row v2 JSON >= 3x Triton (pytriton, v2 JSON), lower p99", ours,
                _point(mlp1, "pytriton v2-json"), 3.0, True, seen, ("infergate v2-json", "pytriton v2-json")),
        _versus("mlp 1-row v2 JSON >= 6x MLServer, lower p99", ours, _point(mlp1, "mlserver v2-json"), 6.0,
                True, seen, ("infergate v2-json", "mlserver v2-json")),
        _versus("mlp 1-row v2 JSON, --workers 2 >= 1.4x one process", _point(mlp1, "infergate-w2 v2-json"), ours,
                1.4, False, seen, ("infergate-w2 v2-json", "infergate v2-json")),
        _versus("tiny 1-row v2 JSON >= 0.9x the bare Starlette null reference", _point(tiny1, "infergate v2-json"),
                _point(tiny1, "null-starlette v2-json"), 0.9, False, seen, ("infergate v2-json", "null-starlette v2-json")),
    ]
    for protocol, factor in (("v2-binary", 0.7), ("v2-json", 0.4)):
        target = f"mlp 32-row {protocol} >= {factor}x the in-process limit (rows/s)"
        m = _point(mlp32, f"infergate {protocol}")
        limit = limits.get("mlp", 0.0)
        if m is None or limit <= 0:
            checks.append(TargetCheck(target, "-", "n/a: no error-free point or no limit"))
            continue
        got = m.rows_per_s / limit
        checks.append(TargetCheck(target, f"{got:.2f}x ({m.rows_per_s:,.0f} of {limit:,.0f} rows/s)",
                                  "met" if got >= factor else "missed"))
    return checks


def targets_table(checks: Sequence[TargetCheck]) -> str:
    lines = ["| target (issue 5) | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c.target} | {c.measured} | {c.verdict} |" for c in checks]
    return "\n".join(lines)
