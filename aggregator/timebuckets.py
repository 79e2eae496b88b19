"""UTC time buckets on integer epoch milliseconds.

A bucket is the half-open interval `[start_ms, next_start(start_ms, step))`. Weeks start on
Monday 00:00 UTC (ISO 8601, BigQuery `TIMESTAMP_TRUNC(..., WEEK(MONDAY))`); months and years
follow the Gregorian calendar. Month and year math is valid for years 1..9999 (the range of
`datetime.date`); other timestamps raise `ValueError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Final, Literal, get_args

Step = Literal["minute", "hour", "day", "week", "month", "year"]
STEPS: Final[tuple[Step, ...]] = get_args(Step)

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
WEEK_MS: Final = 7 * DAY_MS

_FIXED_MS: Final[dict[str, int]] = {
    "minute": MINUTE_MS,
    "hour": HOUR_MS,
    "day": DAY_MS,
    "week": WEEK_MS,
}
_MONDAY_BEFORE_EPOCH_MS: Final = -3 * DAY_MS  # 1970-01-01 was a Thursday
_EPOCH: Final = dt.date(1970, 1, 1)

# (coarse, fine) pairs where every `coarse` boundary is also a `fine` boundary.
_NESTS: Final = frozenset(
    {
        ("hour", "minute"),
        ("day", "minute"),
        ("day", "hour"),
        ("week", "minute"),
        ("week", "hour"),
        ("week", "day"),
        ("month", "minute"),
        ("month", "hour"),
        ("month", "day"),
        ("year", "minute"),
        ("year", "hour"),
        ("year", "day"),
        ("year", "month"),
    }
)


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")


def _to_date(ts_ms: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=ts_ms // DAY_MS)


def _from_date(day: dt.date) -> int:
    return (day - _EPOCH).days * DAY_MS


def floor(ts_ms: int, step: Step) -> int:
    """The start of the `step` bucket that contains `ts_ms`."""
    _check_step(step)
    if step == "week":
        offset = ts_ms - _MONDAY_BEFORE_EPOCH_MS
        return ts_ms - offset % WEEK_MS
    if step in _FIXED_MS:
        return ts_ms - ts_ms % _FIXED_MS[step]
    day = _to_date(ts_ms)
    if step == "month":
        return _from_date(day.replace(day=1))
    return _from_date(day.replace(month=1, day=1))


def next_start(start_ms: int, step: Step) -> int:
    """The start of the bucket after the one that contains `start_ms`."""
    start_ms = floor(start_ms, step)
    if step in _FIXED_MS:
        return start_ms + _FIXED_MS[step]
    day = _to_date(start_ms)
    if step == "month":
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return _from_date(dt.date(year, month, 1))
    return _from_date(dt.date(day.year + 1, 1, 1))


def steps(from_ms: int, to_ms: int, step: Step) -> Iterator[int]:
    """Starts of the `step` buckets that intersect `[from_ms, to_ms)`, ascending.

    Empty when `from_ms >= to_ms`. The first start may precede `from_ms`.
    """
    if from_ms >= to_ms:
        return
    start = floor(from_ms, step)
    while start < to_ms:
        yield start
        start = next_start(start, step)


def ceil(ts_ms: int, step: Step) -> int:
    """The smallest `step` boundary that is `>= ts_ms`."""
    start = floor(ts_ms, step)
    return start if start == ts_ms else next_start(start, step)


def cover(
    from_ms: int,
    to_ms: int,
    grains: Sequence[Step] = ("day", "hour", "minute"),
) -> list[tuple[Step, int]]:
    """The fewest stored buckets whose union is exactly `[from_ms, to_ms)`.

    `grains` are the granularities that are stored, coarsest first; each must nest in the
    previous one (every coarse boundary is a fine boundary), so `("month", "week")` is refused.
    The result is `(grain, start_ms)` pairs in time order, coarse buckets in the middle and
    finer ones at the edges: a 30-day range aligned to the minute reads about 30 day buckets,
    up to 46 hour buckets and up to 118 minute buckets.

    Unaligned ends are widened to the finest grain: `from_ms` is floored and `to_ms` is ceiled,
    so the cover is the smallest finest-grain-aligned superset of the range (a query ending at
    12:00:30 includes the whole 12:00 minute). Empty when `from_ms >= to_ms`.
    """
    if not grains:
        raise ValueError("grains must not be empty")
    for grain in grains:
        _check_step(grain)
    for coarse, fine in pairwise(grains):
        if (coarse, fine) not in _NESTS:
            raise ValueError(f"grain {fine!r} does not nest in {coarse!r}; list coarsest first")
    if from_ms >= to_ms:
        return []
    finest = grains[-1]
    cursor = floor(from_ms, finest)
    end = ceil(to_ms, finest)
    out: list[tuple[Step, int]] = []
    while cursor < end:
        for grain in grains:
            if floor(cursor, grain) == cursor:
                stop = next_start(cursor, grain)
                if stop <= end:
                    out.append((grain, cursor))
                    cursor = stop
                    break
        else:  # pragma: no cover - unreachable: the finest grain always fits
            raise AssertionError("cover made no progress")
    return out
