"""The reference model on hand-written logs (numbers worked out by hand) and on a generated fleet."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from aggregator.definitions import CLOCK_SKEW_FUTURE_MS, CLOCK_SKEW_PAST_MS
from aggregator.reference import (
    HASHED_VIEWER,
    Step,
    bucket_start_ms,
    concurrent_now,
    event_time_ms,
    expected,
    sessions,
    usage,
)
from ingest.fleet import BehaviourMix, FleetSpec, schedule


def ms(text: str) -> int:
    """'2025-03-10T10:00:00.250' (UTC) -> epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


T0 = ms("2025-03-10T10:00:00")  # a Monday
SEC, MIN, HOUR = 1_000, 60_000, 3_600_000


def hb(event_id: str | None, at: int, **counters: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "heartbeat", "timestamp": at, **counters}
    if event_id is not None:
        event["id"] = event_id
    return event


def ev(event_id: str, kind: str, at: int, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "timestamp": at, **extra}


def line(
    session_id: str,
    server_ts: int,
    events: Sequence[dict[str, Any]],
    *,
    status: int | None = 200,
    rejected: Sequence[int] = (),
    playback_id: str = "pb-1",
    creator_id: str = "creator-1",
    uid: str | None = "u-1",
    domain: str = "watch.example",
    country: str | None = "US",
    client_ip: str = "203.0.113.7",
    **truth: Any,
) -> dict[str, Any]:
    """One log record in `ingest.simulate`'s format."""
    envelope: dict[str, Any] = {
        "session_id": session_id,
        "playback_id": playback_id,
        "protocol": "application/vnd.apple.mpegurl",
        "source_url": f"https://cdn.example/hls/{playback_id}/index.m3u8",
        "player": "hls",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0 (test)",
        "domain": domain,
        "events": list(events),
    }
    if uid is not None:
        envelope["uid"] = uid
    response: dict[str, Any] | None = None
    if status is not None and 200 <= status < 300:
        response = {
            "accepted": len(events) - len(rejected),
            "rejected": [{"index": i, "errors": ["events[i]: bad"]} for i in rejected],
            "server_timestamp": server_ts,
        }
    elif status is not None and status != 503:
        response = {"errors": ["bad"]}
    return {
        "sent_at_ms": server_ts,
        "attempt": 1,
        "kind": "heartbeat",
        "offset_ms": 0,
        "status": status,
        "response": response,
        "error": None if status is not None else "ClientConnectorError: refused",
        "headers": {},
        "envelope": envelope,
        "truth": {
            "sessionId": session_id,
            "viewerKey": "viewer-7",
            "viewerId": uid,
            "playbackId": playback_id,
            "creatorId": creator_id,
            "clientIp": client_ip,
            "continent": "NA" if country in ("US", None) else "EU",
            "country": country,
            "subdivision": None,
            "timezone": None,
            "deviceType": "desktop",
            "uaRow": "windows-chrome",
            **truth,
        },
    }


def row(timestamp: int, **fields: Any) -> dict[str, Any]:
    """A row with no data, overridden by `fields`."""
    return {
        "timestamp": timestamp,
        "viewCount": 0,
        "playtimeMins": 0.0,
        "ttffMs": None,
        "rebufferRatio": None,
        "errorRate": None,
        "exitsBeforeStart": None,
        "exitsBeforeStartCount": 0,
        "ttffP50Ms": None,
        "ttffP95Ms": None,
        "uniqueViewers": 0,
        **fields,
    }


# A normal session, an exit before start, a start failure and a session that never played.
MIXED = [
    line(
        "s-normal",
        T0 + 5 * SEC,
        [
            ev("n1", "play", T0 + 1_000),
            ev("n2", "first-frame", T0 + 1_500),
            hb(
                "n3",
                T0 + 5_000,
                time_playing_ms=3_000,
                time_waiting_ms=500,
                errors=0,
                play_to_first_frame_ms=500,
            ),
        ],
    ),
    line(
        "s-normal",
        T0 + 10 * SEC,
        [hb("n4", T0 + 10_000, time_playing_ms=4_000, time_stalled_ms=1_000)],
    ),
    line(
        "s-ebvs",
        T0 + 20 * SEC,
        [ev("e1", "play", T0 + 16_000), hb("e2", T0 + 20_000, time_waiting_ms=4_000)],
        uid="u-2",
    ),
    line("s-ebvs", T0 + 22 * SEC, [hb("e3", T0 + 22_000, time_waiting_ms=2_000)], uid="u-2"),
    line(
        "s-fail",
        T0 + 30 * SEC,
        [
            ev("f1", "play", T0 + 25_000),
            ev("f2", "error", T0 + 27_000, message="Failed to load the HLS manifest"),
            hb("f3", T0 + 30_000, time_waiting_ms=2_000, errors=1),
        ],
        uid="u-3",
    ),
    line(
        "s-noplay",
        T0 + 40 * SEC,
        [ev("x1", "can-play", T0 + 35_000), hb("x2", T0 + 40_000, time_playing_ms=0)],
        uid=None,
    ),
]
# By hand: 4 sessions, 3 views (all but s-noplay), 1 error session (s-fail), 1 EBVS (s-ebvs),
# one TTFF (500), playing 3000 + 4000, buffer 500 + 1000 + 4000 + 2000 + 2000 = 9500.
MIXED_FIGURES = {
    "viewCount": 3,
    "playtimeMins": 7_000 / 60_000,
    "ttffMs": 500,
    "rebufferRatio": 9_500 / 16_500,
    "errorRate": 1 / 4,
    "exitsBeforeStart": 1 / 3,
    "exitsBeforeStartCount": 1,
    "ttffP50Ms": 500,
    "ttffP95Ms": 500,
    "uniqueViewers": 3,
}


@pytest.mark.parametrize(
    ("step", "start"),
    [
        ("minute", "2025-03-10T10:00:00"),
        ("hour", "2025-03-10T10:00:00"),
        ("day", "2025-03-10T00:00:00"),
        ("week", "2025-03-10T00:00:00"),
        ("month", "2025-03-01T00:00:00"),
        ("year", "2025-01-01T00:00:00"),
    ],
)
def test_mixed_sessions_in_one_bucket(step: Step, start: str) -> None:
    assert expected(MIXED, step=step) == [row(ms(start), **MIXED_FIGURES)]


def test_session_facts() -> None:
    facts = {s.session_id: s for s in sessions(MIXED)}
    flags = {
        sid: (s.view, s.first_frame, s.error, s.fatal_error, s.exit_before_start, s.ttff_ms)
        for sid, s in facts.items()
    }
    assert flags == {  # view, first frame, error, fatal, exit before start, TTFF
        "s-normal": (True, True, False, False, False, 500),
        "s-ebvs": (True, False, False, False, True, None),
        "s-fail": (True, False, True, True, False, None),
        "s-noplay": (False, False, False, False, False, None),
    }
    normal, noplay = facts["s-normal"], facts["s-noplay"]
    assert normal.anchor_ms == T0 + 1_000
    assert noplay.dims["viewerId"] == HASHED_VIEWER
    assert normal.dims == {
        "playbackId": "pb-1",
        "creatorId": "creator-1",
        "viewerId": "u-1",
        "deviceType": "desktop",
        "continent": "NA",
        "country": "US",
        "subdivision": None,
        "timezone": None,
    }


def test_dimensions_of_the_first_envelope() -> None:
    log = [
        line("s", T0 + 5 * SEC, [ev("a", "play", T0)], deviceType="tv", uaRow="tizen-tv"),
        line("s", T0 + 10 * SEC, [ev("b", "pause", T0)], playback_id="pb-9", country="FR"),
    ]
    [s] = sessions(log, dims_of=lambda envelope, truth: {"os": truth["uaRow"], "country": "XX"})
    assert (s.dims["deviceType"], s.dims["playbackId"]) == ("smarttv", "pb-1")
    assert (s.dims["os"], s.dims["country"]) == ("tizen-tv", "XX")  # dims_of has the last word


def test_non_fatal_error_before_first_frame_is_an_exit_before_start() -> None:
    log = [
        line(
            "s",
            T0 + 5 * SEC,
            [
                ev("a", "play", T0 + 1_000),
                ev("b", "error", T0 + 2_000, fatal=False),
                hb("c", T0 + 5_000, time_waiting_ms=1_000),
            ],
        )
    ]
    [s] = sessions(log)
    assert (s.error, s.fatal_error, s.exit_before_start) == (True, False, True)
    assert expected(log, step="hour") == [
        row(
            T0,
            viewCount=1,
            rebufferRatio=1.0,
            errorRate=1.0,
            exitsBeforeStart=1.0,
            exitsBeforeStartCount=1,
            uniqueViewers=1,
        )
    ]


def test_heartbeat_errors_alone_make_an_error_session_and_a_view() -> None:
    log = [line("s", T0 + 5 * SEC, [hb("a", T0 + 5_000, errors=2)])]
    [s] = sessions(log)
    assert (s.view, s.error, s.fatal_error, s.exit_before_start) == (True, True, False, True)


@pytest.mark.parametrize(
    ("events", "ttff", "first_frame"),
    [
        # the report wins over the events
        (
            [
                ev("p", "play", T0),
                ev("f", "first-frame", T0 + 900),
                hb("h", T0 + 5_000, play_to_first_frame_ms=300),
            ],
            300,
            True,
        ),
        # no report: first frame minus play, both the earliest
        (
            [
                ev("p", "play", T0 + 100),
                ev("p2", "play", T0 + 3_000),
                ev("f", "first-frame", T0 + 800),
                ev("f2", "first-frame", T0 + 4_000),
            ],
            700,
            True,
        ),
        # a first frame before any play: unknown, but started
        ([ev("f", "first-frame", T0), ev("p", "play", T0 + 100)], None, True),
        ([ev("f", "first-frame", T0)], None, True),
        ([ev("p", "play", T0)], None, False),
        # the earliest report by event time wins, whatever the list order
        (
            [
                hb("h2", T0 + 9_000, play_to_first_frame_ms=9_999),
                hb("h1", T0 + 4_000, play_to_first_frame_ms=250),
            ],
            250,
            True,
        ),
        # same time: the smaller id
        ([hb("b", T0, play_to_first_frame_ms=2), hb("a", T0, play_to_first_frame_ms=1)], 1, True),
        # a reported TTFF of 0 is a TTFF (and play intent)
        ([hb("h", T0, play_to_first_frame_ms=0)], 0, True),
    ],
)
def test_ttff(events: list[dict[str, Any]], ttff: int | None, first_frame: bool) -> None:
    [s] = sessions([line("s", T0 + 10 * SEC, events)])
    assert (s.ttff_ms, s.first_frame, s.view) == (ttff, first_frame, True)


def test_ttff_mean_and_exact_quantiles() -> None:
    reported = [1_000, 100, 400, 200, 300]
    log = [
        line(f"s{i}", T0 + 10 * SEC, [hb(f"h{i}", T0 + 5_000, play_to_first_frame_ms=v)])
        for i, v in enumerate(reported)
    ]
    [only] = expected(log, step="hour")
    # sorted 100 200 300 400 1000: mean 2000/5; p50 at index 4*50//100 = 2, p95 at 4*95//100 = 3
    assert (only["ttffMs"], only["ttffP50Ms"], only["ttffP95Ms"]) == (400, 300, 400)
    log.append(line("s-ev", T0 + 10 * SEC, [ev("p", "play", T0), ev("f", "first-frame", T0 + 700)]))
    log.append(line("s-noplay", T0 + 10 * SEC, [ev("f", "first-frame", T0)]))
    [only] = expected(log, step="hour")
    # sorted 100 200 300 400 700 1000: mean 2700/6; p50 at 5*50//100 = 2, p95 at 5*95//100 = 4
    assert (only["ttffMs"], only["ttffP50Ms"], only["ttffP95Ms"]) == (450, 300, 700)
    assert (only["viewCount"], only["exitsBeforeStartCount"]) == (7, 0)


def test_duplicates_count_once() -> None:
    first = [
        ev("p1", "play", T0 + 1_000),
        ev("p2", "first-frame", T0 + 1_400),
        hb("p3", T0 + 5_000, time_playing_ms=3_000, play_to_first_frame_ms=400),
    ]
    log = [
        line("s", T0 + 5 * SEC, first),
        line("s", T0 + 6 * SEC, first),  # the same envelope POSTed twice
        # a re-send: the old events again, with a new heartbeat
        line("s", T0 + 10 * SEC, [*first, hb("p4", T0 + 10_000, time_playing_ms=5_000)]),
        # events without an id cannot be deduplicated
        line("s", T0 + 12 * SEC, [hb(None, T0 + 12_000, time_playing_ms=1_000)]),
        line("s", T0 + 13 * SEC, [hb(None, T0 + 12_000, time_playing_ms=1_000)]),
    ]
    assert expected(log, step="hour") == [
        row(
            T0,
            viewCount=1,
            playtimeMins=10_000 / 60_000,
            ttffMs=400,
            rebufferRatio=0.0,
            errorRate=0.0,
            exitsBeforeStart=0.0,
            ttffP50Ms=400,
            ttffP95Ms=400,
            uniqueViewers=1,
        )
    ]


def test_the_first_accepted_copy_of_an_event_decides_its_time() -> None:
    beat = hb("h", T0, time_playing_ms=2_000)  # the client clock says 10:00:00
    log = [
        line("s", T0 + 2 * MIN, [beat], status=503),  # not accepted
        line("s", T0 + 6 * MIN, [beat]),  # clamped to 10:01:00
        line("s", T0 + 70 * MIN, [beat]),  # would be 11:05:00, but a duplicate
    ]
    assert expected(log, step="hour") == [
        row(
            T0,
            viewCount=1,
            playtimeMins=2_000 / 60_000,
            rebufferRatio=0.0,
            errorRate=0.0,
            exitsBeforeStart=1.0,
            exitsBeforeStartCount=1,
            uniqueViewers=1,
        )
    ]


def test_only_accepted_events_count() -> None:
    log = [
        line("s", T0 + 5 * SEC, [hb("a", T0, time_playing_ms=60_000)], status=503),
        line("s", T0 + 6 * SEC, [hb("b", T0, time_playing_ms=60_000)], status=None),
        line("s", T0 + 7 * SEC, [hb("c", T0, time_playing_ms=60_000)], status=400),
        line(
            "s",
            T0 + 8 * SEC,
            [hb("d", T0, time_playing_ms=60_000), hb("e", T0 + 1, time_playing_ms=1_000)],
            rejected=[0],
        ),
    ]
    [only] = expected([orjson.dumps(r) for r in log], step="hour")  # bytes lines, as logged
    assert (only["playtimeMins"], only["viewCount"]) == (1_000 / 60_000, 1)


@pytest.mark.parametrize(
    ("timestamp", "server_ts", "event_ms"),
    [
        (T0, T0, T0),
        (T0 - CLOCK_SKEW_PAST_MS, T0, T0 - CLOCK_SKEW_PAST_MS),
        (T0 - CLOCK_SKEW_PAST_MS - 1, T0, T0 - CLOCK_SKEW_PAST_MS),
        (T0 + CLOCK_SKEW_FUTURE_MS, T0, T0 + CLOCK_SKEW_FUTURE_MS),
        (T0 + CLOCK_SKEW_FUTURE_MS + 1, T0, T0 + CLOCK_SKEW_FUTURE_MS),
        (T0 + 2 * HOUR, T0, T0 + 5_000),
        (T0 - 2 * HOUR, T0, T0 - 300_000),
        (T0 + 0.75, T0, T0),
        (None, T0, T0),
        ("soon", T0, T0),
        (True, T0, T0),
    ],
)
def test_event_time(timestamp: Any, server_ts: int, event_ms: int) -> None:
    assert event_time_ms({"type": "play", "timestamp": timestamp}, server_ts) == event_ms


def test_skewed_clocks_are_clamped_into_other_hours() -> None:
    log = [
        # the client is 40 s ahead: 11:00:30 becomes 10:59:55 (server 10:59:50 + 5 s)
        line(
            "ahead",
            T0 + 59 * MIN + 50 * SEC,
            [
                ev("a1", "play", T0 + HOUR + 30 * SEC),
                hb("a2", T0 + HOUR + 30 * SEC, time_playing_ms=2_000),
            ],
        ),
        # the client is 66 min behind: 10:00:00 becomes 11:01:00 (server 11:06:00 - 5 min)
        line(
            "behind",
            T0 + 66 * MIN,
            [ev("b1", "play", T0), hb("b2", T0, time_playing_ms=3_000)],
            uid="u-2",
        ),
    ]
    assert [s.anchor_ms for s in sessions(log)] == [T0 + 59 * MIN + 55 * SEC, T0 + 61 * MIN]
    common = {
        "viewCount": 1,
        "rebufferRatio": 0.0,
        "errorRate": 0.0,
        "uniqueViewers": 1,
        "exitsBeforeStart": 1.0,
        "exitsBeforeStartCount": 1,
    }
    assert expected(log, step="hour") == [
        row(T0, playtimeMins=2_000 / 60_000, **common),
        row(T0 + HOUR, playtimeMins=3_000 / 60_000, **common),
    ]


def test_a_heartbeat_after_the_hour_puts_its_playtime_in_the_next_hour() -> None:
    log = [
        line(
            "s",
            T0 + HOUR + 3_100,
            [
                ev("p", "play", T0 + 59 * MIN + 58 * SEC),
                ev("f", "first-frame", T0 + 59 * MIN + 59 * SEC),
                hb("h", T0 + HOUR + 3_000, time_playing_ms=4_000, play_to_first_frame_ms=1_000),
            ],
        ),
    ]
    assert expected(log, step="hour") == [
        row(
            T0,
            viewCount=1,
            ttffMs=1_000,
            errorRate=0.0,
            exitsBeforeStart=0.0,
            ttffP50Ms=1_000,
            ttffP95Ms=1_000,
            uniqueViewers=1,
        ),
        row(T0 + HOUR, playtimeMins=4_000 / 60_000, rebufferRatio=0.0),
    ]
    # a zero heartbeat makes no row of its own
    quiet = [line("s", T0 + HOUR + 3_100, [ev("p", "play", T0 + 59 * MIN), hb("h", T0 + HOUR)])]
    assert [r["timestamp"] for r in expected(quiet, step="hour")] == [T0]


def test_weeks_start_on_monday() -> None:
    sunday_last_ms = ms("2025-03-09T23:59:59.999")
    monday = ms("2025-03-10T00:00:00")
    log = [
        line(
            "sun",
            monday + 4_100,
            [ev("a", "play", sunday_last_ms), hb("b", monday + 4_000, time_playing_ms=5_000)],
        ),
        line(
            "mon",
            monday + 5_100,
            [ev("c", "play", monday), hb("d", monday + 5_000, time_playing_ms=5_000)],
            uid="u-2",
        ),
    ]
    common = {"errorRate": 0.0, "exitsBeforeStart": 1.0, "exitsBeforeStartCount": 1}
    assert expected(log, step="week") == [
        row(ms("2025-03-03T00:00:00"), viewCount=1, uniqueViewers=1, **common),
        row(
            monday,
            viewCount=1,
            uniqueViewers=1,
            playtimeMins=10_000 / 60_000,
            rebufferRatio=0.0,
            **common,
        ),
    ]


@pytest.mark.parametrize(
    ("ts", "step", "start"),
    [
        ("2024-02-29T13:45:30.250", "minute", "2024-02-29T13:45:00"),
        ("2024-02-29T23:59:59.999", "hour", "2024-02-29T23:00:00"),
        ("2024-02-29T13:45:30", "day", "2024-02-29T00:00:00"),
        ("2025-03-16T23:59:59.999", "week", "2025-03-10T00:00:00"),
        ("2025-03-17T00:00:00", "week", "2025-03-17T00:00:00"),
        ("1970-01-01T00:00:00", "week", "1969-12-29T00:00:00"),
        ("1969-12-31T23:59:59.999", "day", "1969-12-31T00:00:00"),
        ("2024-02-29T13:45:30", "month", "2024-02-01T00:00:00"),
        ("2024-12-31T23:59:59.999", "year", "2024-01-01T00:00:00"),
    ],
)
def test_bucket_start(ts: str, step: Step, start: str) -> None:
    assert bucket_start_ms(ms(ts), step) == ms(start)


def test_unknown_step() -> None:
    with pytest.raises(ValueError, match="step"):
        bucket_start_ms(T0, "fortnight")  # type: ignore[arg-type]


# Four sessions in one hour: US (pb-1, pb-2), FR (pb-1, creator-2) and an unknown country.
PLACES = [
    line("us1", T0 + 5 * SEC, [hb("a", T0 + 5_000, time_playing_ms=1_000)], uid="u-1"),
    line(
        "us2",
        T0 + 5 * SEC,
        [hb("b", T0 + 5_000, time_playing_ms=2_000)],
        uid="u-2",
        playback_id="pb-2",
    ),
    line(
        "fr",
        T0 + 5 * SEC,
        [hb("c", T0 + 5_000, time_playing_ms=3_000)],
        uid="u-3",
        country="FR",
        creator_id="creator-2",
    ),
    line(
        "nowhere", T0 + 5 * SEC, [hb("d", T0 + 5_000, time_playing_ms=500)], uid="u-4", country=None
    ),
]
PLACE = {"rebufferRatio": 0.0, "errorRate": 0.0, "exitsBeforeStart": 1.0}


def test_breakdown_by_country() -> None:
    assert expected(PLACES, step="hour", breakdown_by=["country"]) == [
        row(
            T0,
            country=None,
            viewCount=1,
            playtimeMins=500 / 60_000,
            exitsBeforeStartCount=1,
            uniqueViewers=1,
            **PLACE,
        ),
        row(
            T0,
            country="FR",
            viewCount=1,
            playtimeMins=3_000 / 60_000,
            exitsBeforeStartCount=1,
            uniqueViewers=1,
            **PLACE,
        ),
        row(
            T0,
            country="US",
            viewCount=2,
            playtimeMins=3_000 / 60_000,
            exitsBeforeStartCount=2,
            uniqueViewers=2,
            **PLACE,
        ),
    ]
    two = expected(PLACES, step="hour", breakdown_by=["country", "playbackId"])
    assert [(r["country"], r["playbackId"], r["viewCount"]) for r in two] == [
        (None, "pb-1", 1),
        ("FR", "pb-1", 1),
        ("US", "pb-1", 1),
        ("US", "pb-2", 1),
    ]


def test_breakdown_needs_known_distinct_dimensions() -> None:
    with pytest.raises(ValueError, match="browser"):
        expected(PLACES, step="hour", breakdown_by=["browser"])
    with pytest.raises(ValueError, match="breakdown"):
        expected(PLACES, step="hour", breakdown_by=["country", "country"])
    rows = expected(
        PLACES,
        step="hour",
        breakdown_by=["browser"],
        dims_of=lambda envelope, truth: {"browser": "Chrome"},
    )
    assert [(r["browser"], r["viewCount"]) for r in rows] == [("Chrome", 4)]


def test_playback_and_creator_filters() -> None:
    [pb1] = expected(PLACES, step="hour", playback_id="pb-1")
    assert (pb1["viewCount"], pb1["playtimeMins"]) == (3, 4_500 / 60_000)
    [c2] = expected(PLACES, step="hour", creator_id="creator-2")
    assert (c2["viewCount"], c2["playtimeMins"]) == (1, 3_000 / 60_000)
    assert expected(PLACES, step="hour", playback_id="pb-1", creator_id="creator-3") == []


def test_time_range_selects_data_at_hour_granularity() -> None:
    log = [
        line(f"s{h}", T0 + h * HOUR + 5 * SEC, [hb(f"h{h}", T0 + h * HOUR, time_playing_ms=1_000)])
        for h in range(3)
    ]

    def starts(**kw: Any) -> list[int]:
        return [r["timestamp"] for r in expected(log, step="hour", **kw)]

    assert starts() == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert starts(from_ms=T0 + HOUR, to_ms=T0 + 2 * HOUR) == [T0 + HOUR]
    # The range is widened to whole hours: from is floored, to is ceiled.
    assert starts(from_ms=T0 + 30 * MIN) == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert starts(from_ms=T0 + HOUR + 1) == [T0 + HOUR, T0 + 2 * HOUR]
    assert starts(to_ms=T0 + 1) == [T0]
    assert starts(to_ms=T0) == []
    # Data, not buckets: a day step over the last two hours keeps only their data, stamped
    # with the day's start (which lies before `from`).
    [day] = expected(log, step="day", from_ms=T0 + HOUR)
    assert day["timestamp"] == T0 - T0 % (24 * HOUR)
    assert day["playtimeMins"] == 2_000 / 60_000


def test_time_range_selects_data_at_minute_granularity_when_asked() -> None:
    """The live page's window: [from, to) widened to whole minutes, one row per minute."""
    log = [
        line(f"s{m}", T0 + m * MIN + 5 * SEC, [hb(f"h{m}", T0 + m * MIN, time_playing_ms=1_000)])
        for m in range(0, 10, 3)  # minutes 0, 3, 6 and 9
    ]

    def starts(**kw: Any) -> list[int]:
        return [r["timestamp"] for r in expected(log, step="minute", grain="minute", **kw)]

    assert starts() == [T0, T0 + 3 * MIN, T0 + 6 * MIN, T0 + 9 * MIN]
    assert starts(from_ms=T0 + 3 * MIN + 59 * SEC, to_ms=T0 + 6 * MIN + 1) == [
        T0 + 3 * MIN,
        T0 + 6 * MIN,
    ]
    assert starts(from_ms=T0 + 3 * MIN + 1, to_ms=T0 + 6 * MIN) == [T0 + 3 * MIN]
    # at hour granularity the same range is the whole hour
    assert len(expected(log, step="minute", from_ms=T0 + 3 * MIN + 1, to_ms=T0 + 6 * MIN)) == 4
    [window] = expected(log, step="hour", grain="minute", from_ms=T0 + 5 * MIN, to_ms=T0 + 9 * MIN)
    assert window["timestamp"] == T0 and window["playtimeMins"] == 1_000 / 60_000


def test_viewers() -> None:
    def watch(session_id: str, **kw: Any) -> dict[str, Any]:
        return line(session_id, T0 + 5 * SEC, [ev(f"{session_id}-p", "play", T0)], **kw)

    log = [
        watch("a", uid=None, domain="a.example"),
        watch("b", uid=None, domain="a.example"),  # the same hash
        watch("c", uid=None, domain="b.example"),  # another hash
        watch("d", uid="", domain="b.example", client_ip="198.51.100.1"),  # empty uid: hashed
        watch("e", uid="u-9"),
        watch("f", uid="u-9"),
        line("g", T0 + 5 * SEC, [hb("g-h", T0)], uid="u-10"),  # not a view: not a viewer
    ]
    [total] = expected(log, step="hour")
    assert (total["viewCount"], total["uniqueViewers"]) == (6, 4)
    by_viewer = expected(log, step="hour", breakdown_by=["viewerId"])
    assert [(r["viewerId"], r["viewCount"], r["uniqueViewers"]) for r in by_viewer] == [
        ("u-10", 0, 0),
        ("u-9", 2, 1),
        (HASHED_VIEWER, 4, 3),
    ]
    keyed = expected(
        log,
        step="hour",
        breakdown_by=["viewerId"],
        viewer_of=lambda envelope, truth: truth["viewerKey"],
    )
    assert [(r["viewerId"], r["viewCount"], r["uniqueViewers"]) for r in keyed] == [
        ("viewer-7", 6, 1)
    ]


NOW = T0 + 30 * MIN


def test_concurrent_now() -> None:
    log = [
        line("old", NOW - 40 * SEC, [hb("a", NOW)]),
        line("old", NOW - 30 * SEC, [hb("b", NOW)]),  # the window is (now - 30 s, now]
        line("us", NOW - 29_999, [hb("c", NOW)], playback_id="pb-2"),
        line("fr", NOW - 50 * SEC, [ev("d", "error", NOW)], country="FR"),  # errored before
        line("fr", NOW, [hb("e", NOW)], country="FR"),
        line("future", NOW + 1, [hb("f", NOW)], country="DE"),
        line("gone", NOW - 60 * SEC, [hb("g", NOW, errors=1)], country="DE"),
        line("gone", NOW + 1, [hb("h", NOW)], country="DE"),
    ]
    assert concurrent_now(log, NOW) == [{"viewCount": 2, "errorRate": 0.5}]
    assert concurrent_now(log, NOW, breakdown_by=["country"]) == [
        {"country": "FR", "viewCount": 1, "errorRate": 1.0},
        {"country": "US", "viewCount": 1, "errorRate": 0.0},
    ]
    assert concurrent_now(log, NOW, playback_id="pb-2") == [{"viewCount": 1, "errorRate": 0.0}]
    assert concurrent_now(log, NOW + 1, breakdown_by=["country"])[0] == {
        "country": "DE",
        "viewCount": 2,
        "errorRate": 0.5,
    }
    assert concurrent_now(log, NOW - HOUR) == [{"viewCount": 0, "errorRate": 0.0}]
    assert concurrent_now(log, NOW - HOUR, breakdown_by=["country"]) == []


def test_usage_per_creator() -> None:
    log = [
        line("a", T0 + 5 * SEC, [hb("a1", T0 + 5_000, time_playing_ms=6_000)]),
        line(
            "b", T0 + 5 * SEC, [hb("b1", T0 + 5_000, time_playing_ms=3_000)], creator_id="creator-2"
        ),
        line(
            "b",
            T0 + HOUR + 5 * SEC,
            [hb("b2", T0 + HOUR, time_playing_ms=1_500)],
            creator_id="creator-2",
        ),
    ]
    assert usage(log, step="hour") == [
        {"TimeInterval": T0, "CreatorID": "creator-1", "DeliveryUsageMins": 0.1},
        {"TimeInterval": T0, "CreatorID": "creator-2", "DeliveryUsageMins": 0.05},
        {"TimeInterval": T0 + HOUR, "CreatorID": "creator-2", "DeliveryUsageMins": 0.025},
    ]
    assert usage(log, step="day", creator_id="creator-2") == [
        {
            "TimeInterval": ms("2025-03-10T00:00:00"),
            "CreatorID": "creator-2",
            "DeliveryUsageMins": 4_500 / 60_000,
        }
    ]


# ---- a generated fleet: invariants rather than hand-made numbers ----------------------------

FLEET_START = ms("2025-03-10T10:58:00")  # the run crosses 11:00


@pytest.fixture(scope="module")
def fleet() -> tuple[list[dict[str, Any]], list[Any]]:
    # more start failures and exits before start than usual, so that each outcome shows up
    mix = BehaviourMix(start_failure_share=0.1, exit_before_start_share=0.1)
    spec = FleetSpec(players=150, duration_s=240.0, mix=mix)
    sends = schedule(spec, seed=11, start_ms=FLEET_START)
    log = []
    for send in sends:
        server_ts = FLEET_START + send.offset_ms  # every send answered 2xx as it is made
        log.append(
            {
                "sent_at_ms": server_ts,
                "attempt": 1,
                "kind": send.kind,
                "offset_ms": send.offset_ms,
                "status": 200,
                "error": None,
                "headers": send.headers,
                "envelope": send.envelope,
                "truth": send.truth.to_json(),
                "response": {
                    "accepted": len(send.envelope["events"]),
                    "rejected": [],
                    "server_timestamp": server_ts,
                },
            }
        )
    return log, sends


def _sums(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[float]]:
    out: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0] * 4)
    for r in rows:
        k = tuple(r[key] for key in keys)
        for i, name in enumerate(
            ("viewCount", "playtimeMins", "exitsBeforeStartCount", "uniqueViewers")
        ):
            out[k][i] += r[name]
    return out


def test_fleet_breakdowns_add_up(fleet: tuple[list[dict[str, Any]], list[Any]]) -> None:
    log, _ = fleet
    total = expected(log, step="hour")
    assert [r["timestamp"] for r in total] == [T0, T0 + HOUR]
    for dim in ("country", "playbackId", "deviceType", "creatorId"):
        split = _sums(expected(log, step="hour", breakdown_by=[dim]), "timestamp")
        for r in total:
            views, minutes, ebvs, viewers = split[(r["timestamp"],)]
            assert (views, ebvs) == (r["viewCount"], r["exitsBeforeStartCount"])
            assert minutes == pytest.approx(r["playtimeMins"], rel=1e-12)
            if dim in ("country", "deviceType"):  # a simulated viewer keeps both
                assert viewers == r["uniqueViewers"]
    [day] = expected(log, step="day")
    hours = _sums(total)[()]
    assert (hours[0], hours[2]) == (day["viewCount"], day["exitsBeforeStartCount"])
    by_minute = _sums(expected(log, step="minute"))[()]
    assert by_minute[1] == pytest.approx(day["playtimeMins"], rel=1e-12)
    assert expected(log, step="week") == expected(log, step="day")  # one Monday
    deliveries = sum(u["DeliveryUsageMins"] for u in usage(log, step="hour"))
    assert deliveries == pytest.approx(day["playtimeMins"], rel=1e-12)


def test_fleet_duplicates_count_once(fleet: tuple[list[dict[str, Any]], list[Any]]) -> None:
    log, sends = fleet
    beats = [e for s in sends for e in s.envelope["events"] if e["type"] == "heartbeat"]
    distinct = {(b["id"]): b["time_playing_ms"] for b in beats}
    assert len(distinct) < len(beats)  # the fleet re-sent some events
    [day] = expected(log, step="day")
    assert day["playtimeMins"] * 60_000 == pytest.approx(sum(distinct.values()), rel=1e-12)


def test_fleet_sessions_match_the_simulated_outcomes(
    fleet: tuple[list[dict[str, Any]], list[Any]],
) -> None:
    log, sends = fleet
    truths = {s.truth.session_id: s.truth for s in sends}
    seen: dict[str, int] = defaultdict(int)
    for s in sessions(log):
        truth = truths[s.session_id]
        assert s.dims["country"] == truth.country
        if truth.closed_by != "page_close":  # the others may miss their last events
            continue
        seen[truth.outcome] += 1
        assert s.view == (truth.outcome != "no_play"), truth
        assert s.exit_before_start == (truth.outcome == "exit_before_start"), truth
        assert (s.fatal_error and s.ttff_ms is None) == (truth.outcome == "start_failure"), truth
        if truth.outcome in ("ended", "left", "error"):
            assert s.ttff_ms is not None and s.first_frame
    assert {"exit_before_start", "start_failure", "ended", "left"} <= set(seen)


def test_fleet_concurrency_adds_up(fleet: tuple[list[dict[str, Any]], list[Any]]) -> None:
    log, _ = fleet
    for now in range(FLEET_START, FLEET_START + 240 * SEC, 20 * SEC):
        [total] = concurrent_now(log, now)
        for dim in ("playbackId", "country", "deviceType"):
            rows = concurrent_now(log, now, breakdown_by=[dim])
            assert sum(r["viewCount"] for r in rows) == total["viewCount"]
    assert max(concurrent_now(log, FLEET_START + t * SEC)[0]["viewCount"] for t in (60, 120)) > 5
