"""The live page's pure logic: thresholds, the quality window, top lists, the snapshot, SSE."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.timebuckets import HOUR_MS, MINUTE_MS
from api import live
from api.live import Thresholds
from api.settings import ApiSettings


def test_thresholds_parse_over_the_defaults() -> None:
    t = Thresholds.parse(" ttffMs=1500, errorRate=0.02 ,")
    assert t.ttffMs == 1500 and t.errorRate == 0.02
    assert t.rebufferRatio == Thresholds().rebufferRatio
    assert Thresholds.parse("") == Thresholds()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ttff=100", "expected name=value"),
        ("ttffMs", "expected name=value"),
        ("ttffMs=fast", "is not a number"),
        ("errorRate=-0.1", "must be finite and >= 0"),
        ("errorRate=nan", "must be finite and >= 0"),
    ],
)
def test_thresholds_refuse_what_they_cannot_use(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Thresholds.parse(text)


def test_settings_read_live_options_and_bound_the_interval() -> None:
    s = ApiSettings.from_env(
        {"PLAYPULSE_LIVE_INTERVAL_S": "2", "PLAYPULSE_LIVE_THRESHOLDS": "ttffP95Ms=3000"}
    )
    assert s.live_interval_s == 2.0 and s.live_thresholds.ttffP95Ms == 3000
    with pytest.raises(ValueError, match="PLAYPULSE_LIVE_INTERVAL_S"):
        ApiSettings.from_env({"PLAYPULSE_LIVE_INTERVAL_S": "5"})


def test_breaches_flag_at_or_over_and_never_missing_data() -> None:
    t = Thresholds(ttffMs=1000, errorRate=0.05)
    got = t.breaches({"ttffMs": 1000.0, "errorRate": 0.049, "rebufferRatio": None})
    assert got == {
        "ttffMs": True,
        "ttffP95Ms": False,
        "rebufferRatio": False,
        "errorRate": False,
        "exitsBeforeStart": False,
    }


@given(st.integers(min_value=live.QOE_RANGE_MS, max_value=4_000_000_000_000))
def test_qoe_window_is_the_minutes_holding_the_last_5_minutes(now_ms: int) -> None:
    start, end = live.qoe_window(now_ms)
    assert end == now_ms
    assert start % MINUTE_MS == 0
    assert start <= now_ms - live.QOE_RANGE_MS < start + MINUTE_MS
    assert live.QOE_RANGE_MS <= end - start < live.QOE_RANGE_MS + MINUTE_MS


rows = st.lists(
    st.fixed_dictionaries(
        {
            "country": st.one_of(st.none(), st.sampled_from(["DE", "FR", "US", "BR", "JP"])),
            "viewCount": st.integers(1, 1000),
            "errorRate": st.floats(0, 1),
        }
    ),
    max_size=30,
    unique_by=lambda r: r["country"],
)


@given(rows, st.integers(1, 10))
def test_top_keeps_the_most_watched_most_first(given_rows: list[dict[str, Any]], n: int) -> None:
    got = live.top(given_rows, "country", n)
    assert len(got) == min(n, len(given_rows))
    counts = [r["viewCount"] for r in got]
    assert counts == sorted(counts, reverse=True)
    left_out = [r for r in given_rows if r not in got]
    assert all(r["viewCount"] <= min(counts) for r in left_out) if got else not given_rows


def test_snapshot_names_its_window_scope_and_breaches() -> None:
    now = 1_795_441_630_000  # 10:27:10 UTC
    snap = live.snapshot(
        now_ms=now,
        total=[{"viewCount": 7, "errorRate": 1 / 7}],
        breakdowns={
            "playbackId": [
                {"playbackId": "pb-1", "viewCount": 2, "errorRate": 0.0},
                {"playbackId": "pb-2", "viewCount": 5, "errorRate": 0.2},
            ],
            "country": [{"country": None, "viewCount": 7, "errorRate": 1 / 7}],
        },
        qoe_rows=[
            {
                "viewCount": 12,
                "playtimeMins": 3.0,
                "ttffMs": 2500.0,
                "ttffP95Ms": 4000.0,
                "rebufferRatio": 0.0,
                "errorRate": 0.25,
                "exitsBeforeStart": None,
            }
        ],
        minute_peaks=[
            {"timestamp": now - now % MINUTE_MS - MINUTE_MS, "peakConcurrentViewers": 9},
            {"timestamp": now - now % MINUTE_MS, "peakConcurrentViewers": 7},
        ],
        last_beacon_ms=now - 1200,
        thresholds=Thresholds(),
        scope={"playbackId": None, "creatorId": "cr-1"},
        interval_ms=1000,
    )
    assert snap["concurrentViewers"] == 7
    assert [r["playbackId"] for r in snap["topPlaybacks"]] == ["pb-2", "pb-1"]
    assert snap["countries"] == [{"country": None, "viewCount": 7, "errorRate": 1 / 7}]
    assert snap["devices"] == [] and snap["browsers"] == []
    assert snap["qoe"]["from"] == now - now % MINUTE_MS - 5 * MINUTE_MS  # 10:22:00
    assert snap["qoe"]["to"] == now
    assert snap["qoe"]["viewCount"] == 12 and "playtimeMins" not in snap["qoe"]
    assert snap["breaches"] == {
        "ttffMs": True,
        "ttffP95Ms": False,
        "rebufferRatio": False,
        "errorRate": True,
        "exitsBeforeStart": False,
    }
    assert snap["scope"] == {"playbackId": None, "creatorId": "cr-1"}
    assert snap["lastBeaconMs"] == now - 1200
    first = now - now % MINUTE_MS - MINUTE_MS
    assert snap["lastHour"] == {
        "from": first,
        "stepMs": MINUTE_MS,
        "peaks": [9, 7],
        "peak": {"timestamp": first, "peakConcurrentViewers": 9},
    }


def test_snapshot_without_data_is_zero_and_nulls() -> None:
    snap = live.snapshot(
        now_ms=HOUR_MS * 10 + 1,
        total=[],
        breakdowns={},
        qoe_rows=[],
        minute_peaks=[{"timestamp": HOUR_MS * 10, "peakConcurrentViewers": 0}],
        last_beacon_ms=None,
        thresholds=Thresholds(),
        scope={},
        interval_ms=2000,
    )
    assert snap["concurrentViewers"] == 0 and snap["errorRateNow"] == 0.0
    assert snap["qoe"]["viewCount"] == 0
    assert all(snap["qoe"][name] is None for name in live.QOE_FIELDS)
    assert not any(snap["breaches"].values())
    assert snap["lastHour"]["peaks"] == [0] and snap["lastHour"]["peak"] is None


@given(
    st.integers(0, 40_000_000).map(lambda m: m * MINUTE_MS),
    st.lists(st.integers(0, 50), max_size=61),
)
def test_chart_marks_the_first_minute_of_the_largest_peak(start: int, peaks: list[int]) -> None:
    rows = [
        {"timestamp": start + i * MINUTE_MS, "peakConcurrentViewers": p}
        for i, p in enumerate(peaks)
    ]
    got = live.chart(rows)
    assert got["peaks"] == peaks and got["stepMs"] == MINUTE_MS
    assert got["from"] == (start if peaks else None)
    if not any(peaks):
        assert got["peak"] is None  # nobody watched: nothing to mark
        return
    at = peaks.index(max(peaks))
    assert got["peak"] == {"timestamp": start + at * MINUTE_MS, "peakConcurrentViewers": max(peaks)}


@pytest.mark.parametrize("gap", [0, 2 * MINUTE_MS, -MINUTE_MS, 30_000])
def test_chart_refuses_rows_that_are_not_consecutive_minutes(gap: int) -> None:
    rows = [
        {"timestamp": HOUR_MS, "peakConcurrentViewers": 1},
        {"timestamp": HOUR_MS + gap, "peakConcurrentViewers": 2},
    ]
    with pytest.raises(ValueError, match="consecutive minutes"):
        live.chart(rows)


def test_sse_frames_one_event() -> None:
    frame = live.sse("snapshot", {"a": "x\ny"}, retry_ms=2000)
    head, data, end = frame.split(b"\n", 2)[0], frame.split(b"\n")[2], frame[-2:]
    assert head == b"retry: 2000" and end == b"\n\n"
    assert orjson.loads(data.removeprefix(b"data: ")) == {"a": "x\ny"}  # escaped by JSON
    assert live.sse("revoked", "{}") == b"event: revoked\ndata: {}\n\n"
    with pytest.raises(ValueError):
        live.sse("x", "two\nlines")
