"""`/data/views/concurrent`'s parameters: defaults, steps and bounds."""

from __future__ import annotations

import pytest

from aggregator.timebuckets import DAY_MS, HOUR_MS
from api.params import ConcurrentQuery, InvalidQuery, concurrent_query

NOW = 1_750_000_000_000


def test_defaults_are_the_last_hour_by_minute() -> None:
    assert concurrent_query([], NOW) == ConcurrentQuery(NOW - HOUR_MS, NOW, "minute")
    q = concurrent_query(
        [("timeStep", "hour"), ("from", "2025-06-01T00:00:00+02:00"), ("playbackId", "pb")], NOW
    )
    assert q == ConcurrentQuery(1_748_728_800_000, NOW, "hour", playback_id="pb")


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ([("from", str(NOW - DAY_MS - 1))], "from: the range spans 1.00 days, more than"),
        ([("timeStep", "hour"), ("from", str(NOW - 31 * DAY_MS - 1))], "from: the range spans"),
        ([("timeStep", "week")], "timeStep: 'week' is not one of minute, hour"),
        ([("from", str(NOW)), ("to", str(NOW))], "to: must be after from"),
        ([("assetId", "a")], "assetId: not supported by /data/views/concurrent"),
        ([("from", "yesterday")], "from: 'yesterday' is neither"),
    ],
)
def test_refusals(pairs: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        concurrent_query(pairs, NOW)
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_the_bounds_are_inclusive() -> None:
    assert concurrent_query([("from", str(NOW - DAY_MS))], NOW).from_ms == NOW - DAY_MS
    hour = concurrent_query([("timeStep", "hour"), ("from", str(NOW - 31 * DAY_MS))], NOW)
    assert hour.from_ms == NOW - 31 * DAY_MS
