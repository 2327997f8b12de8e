"""choose_version over every draw: consecutive ranges in configured order, remainder to default."""

from __future__ import annotations

import collections

import pytest

from router.splits import PERCENTILES, choose_version, draw_table, sticky_draw


def test_every_draw_with_remainder_to_default() -> None:
    splits = [("a", 20), ("b", 10), ("c", 0)]
    got = [choose_version(d, splits, default="a") for d in range(PERCENTILES)]
    assert got[:20] == ["a"] * 20
    assert got[20:30] == ["b"] * 10
    # 70 unclaimed percentiles go to the default; a 0% version gets nothing.
    assert got[30:] == ["a"] * 70
    assert "c" not in got


def test_remainder_goes_to_a_default_with_zero_percent() -> None:
    splits = [("a", 0), ("b", 25), ("c", 25)]
    counts = collections.Counter(choose_version(d, splits, default="a") for d in range(PERCENTILES))
    assert counts == {"a": 50, "b": 25, "c": 25}


def test_full_allocation_leaves_nothing_for_the_default() -> None:
    splits = [("a", 0), ("b", 60), ("c", 40)]
    counts = collections.Counter(choose_version(d, splits, default="a") for d in range(PERCENTILES))
    assert counts == {"b": 60, "c": 40}


def test_draw_table_matches_choose_version() -> None:
    splits = [("x", 33), ("y", 33), ("z", 1)]
    table = draw_table(splits, "z")
    assert table == tuple(choose_version(d, splits, "z") for d in range(PERCENTILES))
    assert collections.Counter(table) == {"x": 33, "y": 33, "z": 34}


@pytest.mark.parametrize("draw", [-1, 100, 1000])
def test_draw_out_of_range(draw: int) -> None:
    with pytest.raises(ValueError, match="draw"):
        choose_version(draw, [("a", 100)], "a")


def test_sticky_draw_is_stable_and_spread() -> None:
    assert sticky_draw("user-42") == sticky_draw("user-42")
    assert all(0 <= sticky_draw(f"u{i}") < PERCENTILES for i in range(500))
    # A stable hash, not Python's salted hash(): the same user maps the same on every router.
    assert sticky_draw("user-42") == int.from_bytes(__import__("hashlib").blake2b(b"user-42", digest_size=8).digest(), "big") % 100
    buckets = collections.Counter(sticky_draw(f"user-{i}") // 10 for i in range(5000))
    assert len(buckets) == 10 and min(buckets.values()) > 350
