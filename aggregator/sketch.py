"""A mergeable quantile sketch for TTFF, stored as plain bucket counts.

The state is `dict[int, int]`: bucket index -> count. Merging adds counts, so
`merge(build(a), build(b)) == build(a + b)` exactly, and the state can live in Redis hash
fields that are summed at query time. Buckets follow DDSketch's logarithmic mapping
(`ddsketch.mapping.LogarithmicMapping`, relative accuracy 1%): bucket `k` holds the values in
`(gamma**(k-1), gamma**k]` with `gamma = 1.01/0.99`, and reads back as a value within 1% of
every value in it. Zero has its own bucket, `ZERO_BUCKET`, and reads back as exactly 0 (so do
values below ~2.2e-308, which the mapping cannot index).

Bucket indices are persisted, so the mapping must never change: `tests/aggregator/test_sketch.py`
pins known indices, so a `ddsketch` upgrade that changed them would fail the tests (3.0.1 tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

from ddsketch.mapping import LogarithmicMapping

from aggregator.definitions import TTFF_RELATIVE_ACCURACY

ZERO_BUCKET: Final = -(2**31)
"""Bucket for the value 0 (below every index the mapping produces, about -37 220)."""

_MAPPING: Final = LogarithmicMapping(TTFF_RELATIVE_ACCURACY)


def bucket_of(value_ms: float) -> int:
    """The bucket index of a non-negative, finite value. Raises `ValueError` otherwise."""
    if not math.isfinite(value_ms) or value_ms < 0:
        raise ValueError(f"sketch values must be finite and >= 0, got {value_ms!r}")
    if value_ms < _MAPPING.min_possible:
        return ZERO_BUCKET
    return int(_MAPPING.key(value_ms))


def value_of(bucket: int) -> float:
    """The representative value of a bucket (within 1% of everything in it)."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return float(_MAPPING.value(bucket))


def build(values_ms: Iterable[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values_ms:
        bucket = bucket_of(value)
        counts[bucket] = counts.get(bucket, 0) + 1
    return counts


def merge(*many: Mapping[int, int]) -> dict[int, int]:
    """The bucket-wise sum. Zero counts are dropped, so equal sketches compare equal.

    Counts may be negative (a retraction delta from the session reducer); the sum of all
    deltas of a stored bucket is never negative.
    """
    out: dict[int, int] = {}
    for counts in many:
        for bucket, count in counts.items():
            total = out.get(bucket, 0) + count
            if total:
                out[bucket] = total
            else:
                out.pop(bucket, None)
    return out


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The `q`-quantile (0 <= q <= 1), or None when the sketch is empty.

    Estimates the lower empirical quantile: the value at index `floor(q * (n - 1))` of the
    sorted values (DDSketch's rank rule), within 1% relative error. Raises `ValueError` on a
    negative count.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    if any(count < 0 for count in counts.values()):
        raise ValueError("sketch counts must be >= 0")
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    running = 0
    for bucket in sorted(counts):
        running += counts[bucket]
        if running > rank:
            return value_of(bucket)
    return value_of(max(counts))  # pragma: no cover - running reaches total > rank


def quantiles(counts: Mapping[int, int], qs: tuple[float, ...]) -> tuple[float | None, ...]:
    """`quantile(counts, q)` for each of `qs` (ascending), in one pass over the sorted buckets:
    what the readers compute for every row. Trusts its caller (counts >= 0, qs in [0, 1])."""
    total = sum(counts.values())
    if total == 0:
        return (None,) * len(qs)
    ranks = [q * (total - 1) for q in qs]
    out: list[float | None] = []
    running = 0
    for bucket in sorted(counts):
        running += counts[bucket]
        while len(out) < len(ranks) and running > ranks[len(out)]:
            out.append(value_of(bucket))
        if len(out) == len(ranks):
            break
    return tuple(out)
