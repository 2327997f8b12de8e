"""Which version of an endpoint serves a request: pure functions, no I/O, no randomness.

A request draws a percentile in 0..99 (at random, or from a hash of its stickiness header);
the versions claim consecutive ranges of that line in their configured order, each as wide as
its ``traffic_percentile``; whatever no version claims (100 minus the sum) goes to the default
version, as AzureML's AKS front end does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

PERCENTILES = 100


def choose_version(draw: int, splits: Sequence[tuple[str, int]], default: str) -> str:
    """The version that percentile ``draw`` (0..99) lands on.

    ``splits`` lists ``(version, traffic_percentile)`` in configured order; the percentiles sum
    to at most 100 (the config guarantees it). Draws past the sum go to ``default``.
    """
    if not 0 <= draw < PERCENTILES:
        raise ValueError(f"draw: must be in 0..99, got {draw}")
    upper = 0
    for version, percentile in splits:
        upper += percentile
        if draw < upper:
            return version
    return default


def draw_table(splits: Sequence[tuple[str, int]], default: str) -> tuple[str, ...]:
    """``choose_version`` for every draw, precomputed so a request costs one index."""
    return tuple(choose_version(draw, splits, default) for draw in range(PERCENTILES))


def sticky_draw(value: str) -> int:
    """A stable percentile for a stickiness value (e.g. a user id).

    A keyed-free cryptographic hash rather than ``hash()``, whose per-process salt would send
    the same user to different versions on different router replicas and after restarts.
    """
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % PERCENTILES
