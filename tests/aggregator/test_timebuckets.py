from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.timebuckets import STEPS, Step, ceil, cover, floor, next_start, steps


def ms(text: str) -> int:
    """'2024-02-29T13:45:30.250' (UTC) -> epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# 1900-01-01 .. 2200-01-01, covering non-leap 1900 and 2100 and negative epoch ms
TS = st.integers(min_value=ms("1900-01-01T00:00:00"), max_value=ms("2200-01-01T00:00:00"))
STEP = st.sampled_from(STEPS)


@pytest.mark.parametrize(
    ("ts", "step", "start", "following"),
    [
        ("2024-02-29T13:45:30.250", "minute", "2024-02-29T13:45:00", "2024-02-29T13:46:00"),
        ("2024-02-29T23:59:59.999", "hour", "2024-02-29T23:00:00", "2024-03-01T00:00:00"),
        ("2024-02-29T13:45:30", "day", "2024-02-29T00:00:00", "2024-03-01T00:00:00"),
        ("2023-02-28T23:59:59.999", "day", "2023-02-28T00:00:00", "2023-03-01T00:00:00"),
        ("2024-02-29T13:45:30", "month", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("2023-02-15T00:00:00", "month", "2023-02-01T00:00:00", "2023-03-01T00:00:00"),
        ("1900-02-28T12:00:00", "month", "1900-02-01T00:00:00", "1900-03-01T00:00:00"),
        ("2024-01-31T23:59:59.999", "month", "2024-01-01T00:00:00", "2024-02-01T00:00:00"),
        ("2024-04-30T10:00:00", "month", "2024-04-01T00:00:00", "2024-05-01T00:00:00"),
        ("2024-12-31T23:59:59.999", "month", "2024-12-01T00:00:00", "2025-01-01T00:00:00"),
        ("2024-12-31T23:59:59.999", "year", "2024-01-01T00:00:00", "2025-01-01T00:00:00"),
        ("2025-01-01T00:00:00", "year", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
        ("2024-02-29T13:45:30", "year", "2024-01-01T00:00:00", "2025-01-01T00:00:00"),
        # weeks start Monday 00:00 UTC
        ("1970-01-01T00:00:00", "week", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
        ("2024-02-29T13:45:30", "week", "2024-02-26T00:00:00", "2024-03-04T00:00:00"),
        ("2024-03-03T23:59:59.999", "week", "2024-02-26T00:00:00", "2024-03-04T00:00:00"),
        ("2024-03-04T00:00:00", "week", "2024-03-04T00:00:00", "2024-03-11T00:00:00"),
        ("2025-01-01T08:00:00", "week", "2024-12-30T00:00:00", "2025-01-06T00:00:00"),
        ("2021-01-03T08:00:00", "week", "2020-12-28T00:00:00", "2021-01-04T00:00:00"),
        ("1969-12-31T23:59:59.999", "day", "1969-12-31T00:00:00", "1970-01-01T00:00:00"),
        ("1969-12-31T23:59:59.999", "year", "1969-01-01T00:00:00", "1970-01-01T00:00:00"),
    ],
)
def test_floor_and_next_start_table(ts: str, step: Step, start: str, following: str) -> None:
    assert floor(ms(ts), step) == ms(start)
    assert next_start(ms(start), step) == ms(following)
    assert next_start(ms(ts), step) == ms(following)


def test_unknown_step_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown step"):
        floor(0, "fortnight")  # type: ignore[arg-type]


@given(TS, STEP)
def test_floor_is_idempotent_and_brackets_ts(ts: int, step: Step) -> None:
    start = floor(ts, step)
    assert floor(start, step) == start
    assert start <= ts < next_start(start, step)
    assert floor(next_start(start, step), step) == next_start(start, step)


@given(TS, STEP)
def test_week_starts_on_monday(ts: int, step: Step) -> None:
    start = datetime.fromtimestamp(floor(ts, "week") / 1000, UTC)
    assert (start.weekday(), start.hour, start.minute, start.second) == (0, 0, 0, 0)


@given(TS, STEP)
def test_ceil(ts: int, step: Step) -> None:
    up = ceil(ts, step)
    assert floor(up, step) == up
    assert up >= ts
    assert up == ts or floor(ts, step) < ts < up


MAX_SPAN_DAYS = {
    "minute": 3,
    "hour": 60,
    "day": 400,
    "week": 3_000,
    "month": 10_000,
    "year": 40_000,
}


@given(TS, st.floats(min_value=0, max_value=1), STEP)
def test_steps_are_contiguous_and_cover_the_range(frm: int, fraction: float, step: Step) -> None:
    span = int(fraction * MAX_SPAN_DAYS[step] * 86_400_000)
    to = frm + span
    starts = list(steps(frm, to, step))
    if span == 0:
        assert starts == []
        return
    assert starts[0] == floor(frm, step)
    assert all(next_start(a, step) == b for a, b in pairwise(starts))
    assert next_start(starts[-1], step) >= to > starts[-1]


def test_steps_table() -> None:
    got = list(steps(ms("2024-01-31T12:00:00"), ms("2024-04-01T00:00:00"), "month"))
    assert got == [ms("2024-01-01T00:00:00"), ms("2024-02-01T00:00:00"), ms("2024-03-01T00:00:00")]
    assert list(steps(5, 5, "minute")) == []
    assert list(steps(10, 5, "minute")) == []


def _covered(parts: list[tuple[Step, int]]) -> list[tuple[int, int]]:
    return [(start, next_start(start, grain)) for grain, start in parts]


GRAINS: list[tuple[Step, ...]] = [
    ("day", "hour", "minute"),
    ("hour", "minute"),
    ("minute",),
    ("year", "month", "day", "hour", "minute"),
    ("week", "day", "hour"),
    ("month", "day"),
]


@given(
    TS,
    st.integers(min_value=0, max_value=60 * 86_400_000),
    st.sampled_from(GRAINS),
)
def test_cover_partitions_the_widened_range(frm: int, span: int, grains: tuple[Step, ...]) -> None:
    to = frm + span
    parts = cover(frm, to, grains)
    intervals = _covered(parts)
    lo, hi = floor(frm, grains[-1]), ceil(to, grains[-1])
    if span == 0:
        assert parts == []
        return
    assert intervals[0][0] == lo
    assert intervals[-1][1] == hi
    assert all(a[1] == b[0] for a, b in pairwise(intervals))
    for grain, start in parts:
        assert grain in grains
        assert floor(start, grain) == start


@given(
    TS.map(lambda ts: floor(ts, "minute")),
    st.integers(min_value=0, max_value=60 * 86_400_000).map(lambda n: n - n % 60_000),
)
def test_cover_is_exact_for_aligned_ranges(frm: int, span: int) -> None:
    parts = cover(frm, frm + span)
    total = sum(end - start for start, end in _covered(parts))
    assert total == span


@given(
    TS.map(lambda ts: floor(ts, "minute")),
    st.integers(min_value=0, max_value=60 * 86_400_000).map(lambda n: n - n % 60_000),
)
def test_cover_is_small(frm: int, span: int) -> None:
    parts = cover(frm, frm + span)
    kinds = [grain for grain, _ in parts]
    assert kinds.count("minute") <= 2 * 59
    assert kinds.count("hour") <= 2 * 23
    assert kinds.count("day") <= 60
    # coarse in the middle: grain sizes rise then fall
    rank = {"minute": 0, "hour": 1, "day": 2}
    ranks = [rank[k] for k in kinds]
    peak = ranks.index(max(ranks)) if ranks else 0
    assert ranks[:peak] == sorted(ranks[:peak])
    assert ranks[peak:] == sorted(ranks[peak:], reverse=True)


def test_cover_thirty_days_table() -> None:
    parts = cover(ms("2024-02-10T22:58:00"), ms("2024-03-11T01:02:00"))
    kinds = [grain for grain, _ in parts]
    assert kinds == ["minute"] * 2 + ["hour"] + ["day"] * 29 + ["hour"] + ["minute"] * 2
    assert parts[0] == ("minute", ms("2024-02-10T22:58:00"))
    assert parts[2] == ("hour", ms("2024-02-10T23:00:00"))
    assert parts[3] == ("day", ms("2024-02-11T00:00:00"))
    assert ("day", ms("2024-02-29T00:00:00")) in parts
    assert parts[-1] == ("minute", ms("2024-03-11T01:01:00"))


def test_cover_widens_unaligned_ends_to_the_minute() -> None:
    parts = cover(ms("2024-01-01T10:00:30"), ms("2024-01-01T10:02:00.001"))
    assert parts == [
        ("minute", ms("2024-01-01T10:00:00")),
        ("minute", ms("2024-01-01T10:01:00")),
        ("minute", ms("2024-01-01T10:02:00")),
    ]
    assert cover(100, 100) == []
    assert cover(200, 100) == []


def test_cover_uses_months_and_years_when_asked() -> None:
    parts = cover(ms("2023-12-31T00:00:00"), ms("2025-02-02T00:00:00"), ("year", "month", "day"))
    assert parts == [
        ("day", ms("2023-12-31T00:00:00")),
        ("year", ms("2024-01-01T00:00:00")),
        ("month", ms("2025-01-01T00:00:00")),
        ("day", ms("2025-02-01T00:00:00")),
    ]


@pytest.mark.parametrize("grains", [(), ("month", "week"), ("minute", "hour"), ("week", "month")])
def test_cover_refuses_grains_that_do_not_nest(grains: tuple[Step, ...]) -> None:
    with pytest.raises(ValueError):
        cover(0, 86_400_000, grains)
