"""The live page's pure logic: thresholds, the quality window, top lists, the snapshot, SSE."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.timebuckets import HOUR_MS
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
def test_qoe_window_is_the_hours_holding_the_last_5_minutes(now_ms: int) -> None:
    start, end = live.qoe_window(now_ms)
    assert end == now_ms
    assert start % HOUR_MS == 0
    assert start <= now_ms - live.QOE_RANGE_MS < start + HOUR_MS
    assert live.QOE_RANGE_MS <= end - start < live.QOE_RANGE_MS + HOUR_MS


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
        last_beacon_ms=now - 1200,
        thresholds=Thresholds(),
        scope={"playbackId": None, "creatorId": "cr-1"},
        interval_ms=1000,
    )
    assert snap["concurrentViewers"] == 7
    assert [r["playbackId"] for r in snap["topPlaybacks"]] == ["pb-2", "pb-1"]
    assert snap["countries"] == [{"country": None, "viewCount": 7, "errorRate": 1 / 7}]
    assert snap["devices"] == [] and snap["browsers"] == []
    assert snap["qoe"]["from"] == now - now % HOUR_MS and snap["qoe"]["to"] == now
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


def test_snapshot_without_data_is_zero_and_nulls() -> None:
    snap = live.snapshot(
        now_ms=HOUR_MS * 10 + 1,
        total=[],
        breakdowns={},
        qoe_rows=[],
        last_beacon_ms=None,
        thresholds=Thresholds(),
        scope={},
        interval_ms=2000,
    )
    assert snap["concurrentViewers"] == 0 and snap["errorRateNow"] == 0.0
    assert snap["qoe"]["viewCount"] == 0
    assert all(snap["qoe"][name] is None for name in live.QOE_FIELDS)
    assert not any(snap["breaches"].values())


def test_sse_frames_one_event() -> None:
    frame = live.sse("snapshot", {"a": "x\ny"}, retry_ms=2000)
    head, data, end = frame.split(b"\n", 2)[0], frame.split(b"\n")[2], frame[-2:]
    assert head == b"retry: 2000" and end == b"\n\n"
    assert orjson.loads(data.removeprefix(b"data: ")) == {"a": "x\ny"}  # escaped by JSON
    assert live.sse("revoked", "{}") == b"event: revoked\ndata: {}\n\n"
    with pytest.raises(ValueError):
        live.sse("x", "two\nlines")
