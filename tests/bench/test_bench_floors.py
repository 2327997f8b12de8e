"""benchmarks/floors.py: the round order and the table of ratios to the null app."""

from __future__ import annotations

from benchmarks.floors import REFERENCE, SETUPS, rotated, table


def test_each_server_takes_each_place_in_the_order_once_over_as_many_rounds() -> None:
    names = [s.name for s in SETUPS]
    orders = [rotated(names, rnd) for rnd in range(len(names))]
    assert all(sorted(order) == sorted(names) for order in orders)
    assert {order[0] for order in orders} == set(names)  # none always goes first (or last)
    assert rotated(names, len(names)) == orders[0]


def test_ratios_are_taken_within_each_round_and_their_median_reported() -> None:
    rps = {REFERENCE: [8000.0, 6000.0, 7000.0], "floor-starlette": [6000.0, 5700.0, 6300.0]}
    cpu = {REFERENCE: [120.0, 130.0, 125.0], "floor-starlette": [150.0, 160.0, 140.0]}
    rows = table(rps, cpu).splitlines()
    floor = next(r for r in rows if r.startswith("| floor-starlette "))
    # 6000/8000, 5700/6000, 6300/7000: each against its own round, not against a mean.
    assert "| 0.75, 0.95, 0.90 | **0.90** | 150 | 1.20 |" in floor
    assert rows[2].startswith(f"| {REFERENCE} | 8,000, 6,000, 7,000 | 1.00, 1.00, 1.00 | **1.00** | 125 | 1.00 |")
