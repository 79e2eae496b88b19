from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import sketch
from aggregator.definitions import BREAKDOWN_DIMENSIONS, REOPEN_WINDOW_MS, SESSION_TIMEOUT_MS
from aggregator.metrics import ZERO, Components
from aggregator.partition import (
    PartitionAggregate,
    SessionEntry,
    Touched,
    dims_of,
    minutes_from_json,
    minutes_to_json,
)
from aggregator.rollups import RowId, RowWrite, Values
from aggregator.sessions import SessionState, apply_batch, close, closes_at_ms
from aggregator.timebuckets import HOUR_MS, floor
from aggregator.timebuckets import Step as TimeStep
from ingest.beacon import validate_envelope
from ingest.enrich import Geo, dimensions, parse_user_agent
from ingest.record import envelope_item
from ingest.registry import Playback

H0 = 1_709_208_000_000  # 2024-02-29T12:00:00Z
MIN = 60_000

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
BERLIN = Geo("EU", "DE", "Berlin", "Europe/Berlin", "u33")
DEVICE = parse_user_agent(UA)

Rows = dict[RowId, dict[Values, Components]]


def envelope(
    session_id: str,
    server_ts: int,
    events: Sequence[dict[str, Any]],
    *,
    playback_id: str = "pb-1",
    playback: Playback | None = None,
    viewer: str = "viewer-1",
    geo: Geo = BERLIN,
    **fields: Any,
) -> dict[str, Any]:
    """An enriched envelope as the collector writes it (`ingest.app` -> `envelope_item`)."""
    body = {
        "live": False,
        "session_id": session_id,
        "playback_id": playback_id,
        "protocol": "video/mp4",
        "domain": "example.com",
        "path": "/watch",
        "params": "",
        "hash": "",
        "source_url": f"https://cdn.example.com/hls/{playback_id}/index.m3u8",
        "player": "video",
        "version": "@livepeer/core@3.3.1",
        "user_agent": UA,
        "events": list(events),
        **fields,
    }
    parsed = validate_envelope(body, max_events=100)
    assert not parsed.rejected, parsed.rejected
    item = envelope_item(
        parsed,
        server_ts_ms=server_ts,
        viewer_hash=viewer,
        dims=dimensions(DEVICE, geo),
        playback=playback,
    )
    doc = orjson.loads(item)
    assert isinstance(doc, dict)
    return doc


def ev(event_id: str, kind: str, at: int, **extra: Any) -> dict[str, Any]:
    if kind == "error":
        extra = {"category": "decode", "message": "decode failed", **extra}
    return {"id": event_id, "type": kind, "timestamp": at, **extra}


def hb(event_id: str, at: int, **counters: int) -> dict[str, Any]:
    return ev(event_id, "heartbeat", at, **counters)


def live_rows(part: PartitionAggregate) -> Rows:
    return {row_id: dict(row) for row_id, row in part.rollups.rows.items() if row}


def hour_totals(part: PartitionAggregate) -> dict[int, Components]:
    return {
        row_id.bucket_ms: row[()]
        for row_id, row in live_rows(part).items()
        if row_id.grain == "hour" and row_id.scope_dim is None and row_id.dims == ()
    }


def minute_totals(part: PartitionAggregate) -> dict[int, Components]:
    rows = live_rows(part).items()
    return {r.bucket_ms: row[()] for r, row in rows if r.grain == "minute" and r.scope_dim is None}


def summed(entries: Iterable[SessionEntry]) -> dict[int, Components]:
    out: dict[int, Components] = {}
    for entry in entries:
        for hour, c in entry.totals.items():
            out[hour] = out.get(hour, ZERO) + c
    return {h: c for h, c in out.items() if not c.is_zero()}


class Table:
    """The sessions table as the worker uses it: bytes in, bytes out."""

    def __init__(self, part: PartitionAggregate, data: dict[str, bytes] | None = None) -> None:
        self.part = part
        self.data: dict[str, bytes] = dict(data or {})

    def get(self, session_id: str) -> SessionEntry | None:
        raw = self.data.get(session_id)
        return None if raw is None else SessionEntry.from_bytes(raw)

    def envelope(self, env: dict[str, Any]) -> SessionEntry:
        session_id = env["envelope"]["session_id"]
        entry = self.part.apply_envelope(env, self.get(session_id))
        self.data[session_id] = entry.to_bytes()
        return entry

    def tick(self, now_ms: int) -> list[str]:
        closed = self.part.due(now_ms)
        for session_id in closed:
            entry = self.get(session_id)
            if entry is None:
                continue
            self.data[session_id] = self.part.apply_close(session_id, entry, now_ms).to_bytes()
        return closed

    def entries(self) -> list[tuple[str, SessionEntry]]:
        return [(sid, SessionEntry.from_bytes(raw)) for sid, raw in self.data.items()]


# -- SessionEntry -----------------------------------------------------------------------------


def test_a_fresh_entry_round_trips() -> None:
    entry = SessionEntry(3, dims_of(envelope("s1", H0, [ev("p", "play", H0)])), "viewer-1")
    assert SessionEntry.from_bytes(entry.to_bytes()) == entry


def test_a_full_entry_round_trips() -> None:
    part = PartitionAggregate(0)
    entry = part.apply_envelope(
        envelope(
            "s1",
            H0 + 5_000,
            [
                ev("p", "play", H0),
                ev("f", "first-frame", H0 + 300),
                hb("h1", H0 + 4_000, time_playing_ms=3_000, time_stalled_ms=40, errors=1),
                hb("h2", H0 + 4_500, play_to_first_frame_ms=280),
                ev("e", "error", H0 + 4_800, fatal=False),
            ],
            playback=Playback("pb-1", creator_id="creator-1", asset_id="asset-1"),
        ),
        None,
    )
    part.apply_close("s1", entry, H0 + 5_000 + SESSION_TIMEOUT_MS)
    entry.totals[H0 - HOUR_MS] = -Components(views=1, ttff_buckets=((7, -2),))  # any delta
    entry.minutes[H0 - MIN] = -Components(sessions=1, exits_before_start=2)
    entry.minutes = dict(sorted(entry.minutes.items()))
    assert entry.state is not None and entry.state.closed and entry.state.reported_ttff
    assert entry.minutes[H0].ttff_buckets and len(entry.minutes) == 2
    again = SessionEntry.from_bytes(entry.to_bytes())
    assert again == entry
    assert isinstance(again.state, SessionState)
    assert again.to_bytes() == entry.to_bytes()


@given(
    st.dictionaries(
        st.integers(0, 10**8).map(lambda m: m * MIN),
        st.builds(
            Components,
            *(st.integers(-5, 10**6) for _ in range(8)),
            st.dictionaries(st.integers(-50, 2_000), st.integers(-3, 5)).map(
                lambda d: tuple(sorted((b, c) for b, c in d.items() if c))
            ),
        ),
        max_size=5,
    )
)
def test_minutes_round_trip_compactly(minutes: dict[int, Components]) -> None:
    ordered = dict(sorted(minutes.items()))
    raw = minutes_to_json(ordered)
    assert minutes_from_json(orjson.loads(orjson.dumps(raw))) == ordered
    heartbeats = {H0: Components(playing_ms=60_000)}
    assert minutes_to_json(heartbeats) == [[H0 // MIN, 0, 0, 60_000]]
    activity = {
        H0: Components(playing_ms=5, buffer_ms=3),
        H0 + MIN: Components(buffer_ms=7),
        H0 + 2 * MIN: Components(playing_ms=-4),
    }
    assert minutes_to_json(activity)[1] == [H0 // MIN + 1, 0, 0, 0, 7]
    assert minutes_from_json(minutes_to_json(activity)) == activity


def test_a_long_session_keeps_only_its_last_hour_of_minutes() -> None:
    part = PartitionAggregate(0)  # the default retention: an hour
    entry = part.apply_envelope(envelope("s1", H0, [ev("p", "play", H0)]), None)
    for i in range(1, 3 * 60 * 12):  # three hours of 5 s heartbeats
        at = H0 + i * 5_000
        entry = part.apply_envelope(
            envelope("s1", at, [hb(f"h{i}", at, time_playing_ms=5_000)]), entry
        )
    last = H0 + (3 * 60 * 12 - 1) * 5_000
    assert min(entry.minutes) == floor(last - HOUR_MS, "minute") and len(entry.minutes) == 61
    assert entry.minutes[floor(last, "minute") - MIN] == Components(playing_ms=60_000)
    part.prune_minutes()
    part.rollups.fold()
    assert minute_totals(part) == entry.minutes  # the rows of the retained minutes alone


# -- dims_of ----------------------------------------------------------------------------------


def test_dims_of_an_enriched_envelope() -> None:
    env = envelope(
        "s1",
        H0,
        [ev("p", "play", H0)],
        playback_id="pb-9",
        playback=Playback("pb-9", creator_id="creator-7", stream_id="stream-1"),
        viewer="hash-of-viewer",
        uid="player-uid",
    )
    dims = dims_of(env)
    assert tuple(dims) == BREAKDOWN_DIMENSIONS
    assert dims == {
        "playbackId": "pb-9",
        "deviceType": "desktop",
        "device": None,
        "cpu": "amd64",
        "os": "Linux",
        "browser": "Chrome",
        "browserEngine": "Blink",
        "continent": "EU",
        "country": "DE",
        "subdivision": "Berlin",
        "timezone": "Europe/Berlin",
        "geohash": "u33",
        "viewerId": "hash-of-viewer",
        "creatorId": "creator-7",
    }


@pytest.mark.parametrize(
    ("playback", "expected"),
    [
        pytest.param(Playback("pb-1"), None, id="registered-without-creator"),
        pytest.param(None, None, id="unregistered"),
        pytest.param(Playback("pb-1", creator_id="c"), "c", id="registered"),
    ],
)
def test_dims_of_takes_the_creator_from_the_registry(
    playback: Playback | None, expected: str | None
) -> None:
    env = envelope("s1", H0, [ev("p", "play", H0)], playback=playback)
    assert dims_of(env)["creatorId"] == expected


def test_dims_of_trusts_nothing_the_client_named_like_a_dimension() -> None:
    env = envelope(
        "s1",
        H0,
        [ev("p", "play", H0)],
        viewer="server-hash",
        creatorId="spoofed",
        viewerId="spoofed",
        country="XX",
    )
    env["dims"]["viewerId"] = "spoofed"  # even inside the enrichment
    env["dims"]["creatorId"] = "spoofed"
    env["dims"]["playbackId"] = "spoofed"
    env["dims"]["notADimension"] = "x"
    dims = dims_of(env)
    assert set(dims) == set(BREAKDOWN_DIMENSIONS)
    assert dims["viewerId"] == "server-hash"
    assert dims["creatorId"] is None
    assert dims["playbackId"] == "pb-1"
    assert dims["country"] == "DE"


def test_dims_of_an_envelope_without_playback_or_enrichment() -> None:
    env = envelope("s1", H0, [ev("p", "play", H0)])
    del env["dims"]
    env["playback"] = None
    dims = dims_of(env)
    assert dims == {
        **dict.fromkeys(BREAKDOWN_DIMENSIONS),
        "playbackId": "pb-1",
        "viewerId": "viewer-1",
    }


# -- the session lifecycle --------------------------------------------------------------------


def test_play_without_first_frame_is_an_exit_before_start_after_the_timeout() -> None:
    part = PartitionAggregate(0)
    table = Table(part)
    start = H0 + 59 * MIN  # a session that crosses into the next hour
    table.envelope(envelope("s1", start + 100, [ev("p", "play", start)]))
    table.envelope(envelope("s1", start + 5_100, [hb("h1", start + 5_000, time_waiting_ms=5_000)]))
    last_seen = start + 5_100
    assert table.tick(last_seen + SESSION_TIMEOUT_MS - 1) == []
    assert table.tick(last_seen + SESSION_TIMEOUT_MS) == ["s1"]
    assert table.tick(last_seen + 2 * SESSION_TIMEOUT_MS) == []  # closed once

    entry = table.get("s1")
    assert entry is not None and entry.state is not None and entry.state.closed
    assert entry.totals == {
        H0: Components(views=1, sessions=1, buffer_ms=5_000, exits_before_start=1)
    }
    part.rollups.fold()
    assert hour_totals(part) == entry.totals

    # the first frame arrives after the close, within the reopen window: the exit is retracted
    late = last_seen + SESSION_TIMEOUT_MS + 30_000
    table.envelope(envelope("s1", late, [ev("f", "first-frame", late - 1_000)]))
    entry = table.get("s1")
    assert entry is not None and entry.state is not None and not entry.state.closed
    ttff = late - 1_000 - start
    view = Components.with_ttff_counts(
        {sketch.bucket_of(ttff): 1}, views=1, sessions=1, ttff_sum_ms=ttff, ttff_count=1
    )
    assert entry.totals == {H0: view + Components(buffer_ms=5_000)}
    part.rollups.fold()
    assert hour_totals(part) == entry.totals

    # it is open again, and closing it a second time decides nothing new
    assert table.tick(late + SESSION_TIMEOUT_MS) == ["s1"]
    entry = table.get("s1")
    assert entry is not None and entry.totals == {H0: view + Components(buffer_ms=5_000)}
    part.rollups.fold()
    assert hour_totals(part) == entry.totals


def test_an_ended_session_is_not_due() -> None:
    part = PartitionAggregate(0)
    table = Table(part)
    table.envelope(envelope("s1", H0 + 100, [ev("p", "play", H0), ev("x", "ended", H0 + 50)]))
    assert table.tick(H0 + 10 * SESSION_TIMEOUT_MS) == []
    entry = table.get("s1")
    assert entry is not None and entry.totals[H0].exits_before_start == 1


def test_a_fatal_error_is_not_an_exit_before_start() -> None:
    part = PartitionAggregate(0)
    table = Table(part)
    table.envelope(envelope("s1", H0 + 100, [ev("p", "play", H0), ev("e", "error", H0 + 50)]))
    assert table.tick(H0 + 100 + SESSION_TIMEOUT_MS) == ["s1"]
    entry = table.get("s1")
    assert entry is not None
    assert entry.totals == {H0: Components(views=1, sessions=1, error_sessions=1)}


def test_a_session_seen_after_the_reopen_window_is_a_new_view() -> None:
    part = PartitionAggregate(0)
    table = Table(part)
    table.envelope(envelope("s1", H0 + 100, [ev("p", "play", H0), ev("f", "first-frame", H0)]))
    table.tick(H0 + 100 + SESSION_TIMEOUT_MS)
    later = H0 + 100 + REOPEN_WINDOW_MS + 1
    table.envelope(envelope("s1", later, [ev("p2", "play", later)]))
    entry = table.get("s1")
    assert entry is not None
    assert {h: c.views for h, c in entry.totals.items()} == {H0: 1, floor(later, "hour"): 1}
    part.rollups.fold()
    assert hour_totals(part) == entry.totals


def test_take_touched_reports_the_sessions_seen_since_the_last_take() -> None:
    part = PartitionAggregate(0)
    table = Table(part)
    table.envelope(envelope("s1", H0 + 100, [ev("p", "play", H0)], viewer="v1"))
    table.envelope(
        envelope("s1", H0 + HOUR_MS + 200, [hb("h", H0 + HOUR_MS, time_playing_ms=1)], viewer="x")
    )
    table.envelope(
        envelope("s2", H0 + 300, [ev("c", "can-play", H0 + 250)], viewer="v2", playback_id="pb-2")
    )
    table.envelope(envelope("s3", H0 + 400, [ev("e", "error", H0 + 350, fatal=False)]))
    touched = part.take_touched()
    assert set(touched) == {"s1", "s2", "s3"}
    s1 = table.get("s1")
    assert s1 is not None
    assert touched["s1"] == Touched(s1.dims, "v1", H0 + HOUR_MS + 200, False, (H0,))
    assert touched["s1"].dims["viewerId"] == "v1"  # fixed by the first envelope
    assert touched["s2"].view_hours == ()  # no play intent: a session but not a view
    assert touched["s2"].dims["playbackId"] == "pb-2"
    assert touched["s2"].last_seen_ms == H0 + 300
    assert touched["s3"].has_error and touched["s3"].view_hours == (H0,)
    assert part.take_touched() == {}

    # closing is not a beacon; a duplicate is (the viewer is still there)
    table.tick(H0 + 10 * HOUR_MS)
    assert part.take_touched() == {}
    table.envelope(envelope("s2", H0 + 900, [ev("c", "can-play", H0 + 250)], viewer="v2"))
    assert list(part.take_touched()) == ["s2"]


def test_rebuild_ignores_entries_of_other_partitions() -> None:
    mine, other = PartitionAggregate(0), PartitionAggregate(1)
    mine_table, other_table = Table(mine), Table(other)
    mine_table.envelope(envelope("s1", H0 + 100, [ev("p", "play", H0)]))
    other_table.envelope(envelope("s2", H0 + 200, [ev("p", "play", H0 + 2 * HOUR_MS)]))
    mine.rollups.fold()

    rebuilt = PartitionAggregate(0)
    rebuilt.rebuild([*other_table.entries(), *mine_table.entries()])
    assert live_rows(rebuilt) == live_rows(mine)
    assert rebuilt.stream_time_ms == H0 + 100
    assert rebuilt.due(H0 + HOUR_MS) == ["s1"]
    assert set(rebuilt.take_touched()) == {"s1"}
    writes = rebuilt.rollups.take_dirty()
    assert {w.row: w.values for w in writes} == live_rows(mine)
    assert all(w.deleted == () for w in writes)


def _apply_writes(redis: Rows, writes: Sequence[RowWrite]) -> None:
    for write in writes:
        stored = redis.setdefault(write.row, {})
        stored.update(write.values)
        for values in write.deleted:
            stored.pop(values, None)
        if not stored:
            del redis[write.row]


def _replace_writes(redis: Rows, writes: Sequence[RowWrite]) -> None:
    """The store's replace mode (one partition here): the partition's old rows go first."""
    redis.clear()
    _apply_writes(redis, writes)


def test_a_rebuild_after_unflushed_changes_leaves_redis_exact() -> None:
    """After a rebuild the rollups cannot know which tuples the predecessor wrote, so the
    worker's first flush replaces them all (`RollupWriter.write(..., replace=True)`)."""
    part = PartitionAggregate(0)
    table = Table(part)
    redis: Rows = {}
    start = H0 + HOUR_MS + MIN  # 13:01
    table.envelope(envelope("s1", start, [ev("p1", "play", start)]))
    part.rollups.fold()
    _apply_writes(redis, part.rollups.take_dirty())  # the 13:00 view is in redis
    # a re-sent event from 12:58 moves the view's anchor to the 12:00 hour; then the worker
    # crashes (or loses the partition) before its next flush
    table.envelope(envelope("s1", start + 5_000, [ev("p0", "play", start - 3 * MIN)]))
    entry = table.get("s1")
    assert entry is not None and list(entry.totals) == [H0]

    rebuilt = PartitionAggregate(0)
    rebuilt.rebuild(table.entries())
    writes = rebuilt.rollups.take_dirty()
    plain = {row: dict(values) for row, values in redis.items()}
    _apply_writes(plain, writes)
    assert plain != live_rows(rebuilt)  # plain writes would leave the 13:00 view behind
    _replace_writes(redis, writes)
    assert hour_totals(rebuilt) == {H0: Components(views=1, sessions=1)}
    assert redis == live_rows(rebuilt)


# -- rebuild equals the incremental path (property) -------------------------------------------

SESSION_DIMS = [
    ("pb-1", Playback("pb-1", creator_id="creator-1"), "viewer-1", BERLIN),
    (
        "pb-1",
        Playback("pb-1", creator_id="creator-1"),
        "viewer-2",
        Geo("NA", "US", None, None, None),
    ),
    ("pb-2", None, "viewer-1", BERLIN),  # unregistered: no creator
    ("pb-3", Playback("pb-3"), "viewer-3", Geo(None, None, None, None, None)),
]
KINDS = ["play", "first-frame", "heartbeat", "heartbeat", "error", "ended", "pause", "playing"]


@st.composite
def event_specs(draw: st.DrawFn) -> tuple[str, int, dict[str, Any]]:
    kind = draw(st.sampled_from(KINDS))
    back_ms = draw(st.sampled_from([0, 800, 30_000, 2 * MIN, 4 * MIN, 6 * MIN, 12 * MIN]))
    extra: dict[str, Any] = {}
    if kind == "heartbeat":
        extra = {
            "time_playing_ms": draw(st.sampled_from([0, 1_000, 5_000])),
            "time_stalled_ms": draw(st.sampled_from([0, 250])),
            "errors": draw(st.sampled_from([0, 0, 1])),
        }
        if draw(st.booleans()):
            extra["play_to_first_frame_ms"] = draw(st.integers(0, 3_000))
    if kind == "error":
        extra = {"fatal": draw(st.booleans())}
    return kind, back_ms, extra


Step = tuple[str, int, int, list[tuple[str, int, dict[str, Any]]], list[int]]


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    """(kind, session index, gap to the previous step, events, ids to resend) per step."""
    out: list[Step] = []
    for _ in range(draw(st.integers(1, 14))):
        gap = draw(st.sampled_from([0, 2_000, 30_000, SESSION_TIMEOUT_MS, 5 * MIN, 20 * MIN]))
        if draw(st.integers(0, 3)) == 0:
            out.append(("tick", 0, gap, [], []))
            continue
        session = draw(st.integers(0, 3))
        events = draw(st.lists(event_specs(), min_size=0, max_size=3))
        resend = draw(st.lists(st.integers(0, 30), max_size=2))
        if not events and not resend:
            events = [("heartbeat", 0, {"time_playing_ms": 5_000})]
        out.append(("env", session, gap, events, resend))
    return out


Action = tuple[str, int, Any]


def realise(plan: Sequence[Step]) -> list[Action]:
    """Turns the drawn steps into envelopes and ticks on a clock; some events are re-sent."""
    clock = H0 + 50 * MIN
    counter = itertools.count()
    sent: list[dict[str, Any]] = []
    sent_by_session: dict[int, list[dict[str, Any]]] = {}
    out: list[Action] = []
    for kind, session, gap, specs, resend in plan:
        clock += gap
        if kind == "tick":
            out.append(("tick", clock, None))
            continue
        events = [ev(f"e{next(counter)}", k, clock - back, **extra) for k, back, extra in specs]
        previous = sent_by_session.get(session, [])
        events += [previous[i % len(previous)] for i in resend if previous]
        if not events:
            events = [hb(f"e{next(counter)}", clock, time_playing_ms=5_000)]
        sent_by_session.setdefault(session, []).extend(events)
        sent.extend(events)
        playback_id, playback, viewer, geo = SESSION_DIMS[session]
        env = envelope(
            f"s{session}",
            clock,
            events,
            playback_id=playback_id,
            playback=playback,
            viewer=viewer,
            geo=geo,
        )
        out.append(("env", session, env))
        clock += 50
    return out


def run(table: Table, actions: Iterable[Action], fold_every: int = 0) -> None:
    for i, (kind, arg, env) in enumerate(actions):
        if kind == "tick":
            table.tick(arg)
        else:
            table.envelope(env)
        if fold_every and i % fold_every == 0:
            table.part.prune_minutes()  # as the worker's flush does
            table.part.rollups.fold()
    table.part.prune_minutes()
    table.part.rollups.fold()


def reference_totals(
    actions: Iterable[Action], step: TimeStep = "hour"
) -> dict[str, dict[int, Components]]:
    """Each session's totals per `step` bucket straight from the reducer, without the partition."""
    states: dict[str, SessionState | None] = {}
    totals: dict[str, dict[int, Components]] = {}

    def record(session_id: str, by_hour: dict[int, Components]) -> None:
        mine = totals.setdefault(session_id, {})
        for hour, delta in by_hour.items():
            mine[hour] = mine.get(hour, ZERO) + delta

    for kind, arg, env in actions:
        if kind == "tick":
            for session_id, state in states.items():
                if state is not None and (at := closes_at_ms(state)) is not None and at <= arg:
                    states[session_id], closing = close(state, arg)
                    if closing is not None:
                        record(session_id, closing.by_bucket(step))
            continue
        session_id = env["envelope"]["session_id"]
        state, contribution = apply_batch(
            states.get(session_id), env["server_timestamp"], env["events"]
        )
        states[session_id] = state
        record(session_id, contribution.by_bucket(step))
    return {sid: {h: c for h, c in mine.items() if not c.is_zero()} for sid, mine in totals.items()}


def _other_partition(entries: Sequence[tuple[str, SessionEntry]]) -> list[tuple[str, SessionEntry]]:
    return [(f"other-{sid}", dataclasses.replace(e, partition=1)) for sid, e in entries]


@settings(max_examples=150, deadline=None)
@given(steps(), st.integers(0, 14), st.integers(0, 3), st.sampled_from([10, 25, 60]))
def test_rebuild_gives_the_rollups_of_the_incremental_path(
    plan: list[Step], split: int, fold_every: int, retention_min: int
) -> None:
    actions = realise(plan)
    split = min(split, len(actions))

    def partition() -> PartitionAggregate:
        return PartitionAggregate(0, minute_retention_ms=retention_min * MIN)

    incremental = Table(partition())
    run(incremental, actions[:split], fold_every)
    # a worker that restarts (or takes over the partition) here, from a copy of the table
    resumed = Table(partition(), incremental.data)
    entries = resumed.entries()
    resumed.part.rebuild([*entries, *_other_partition(entries)])
    assert live_rows(resumed.part) == live_rows(incremental.part)
    run(incremental, actions[split:], fold_every)
    run(resumed, actions[split:])

    final = incremental.entries()
    rebuilt = partition()
    rebuilt.rebuild([*_other_partition(final), *final])

    # the same rollups, whichever way they were reached
    assert live_rows(rebuilt) == live_rows(incremental.part)
    assert live_rows(resumed.part) == live_rows(incremental.part)
    # the same sessions, open the same way
    assert {sid: e for sid, e in resumed.entries()} == dict(final)
    far = 10**15
    assert sorted(rebuilt.due(far)) == sorted(incremental.part.due(far))
    assert sorted(resumed.part.due(far)) == sorted(incremental.part.due(far))
    # each session's totals are the sum of its contributions, and the rollups sum the totals
    assert {sid: e.totals for sid, e in final} == reference_totals(actions)
    assert hour_totals(incremental.part) == summed(e for _, e in final)
    for sid, entry in final:
        assert SessionEntry.from_bytes(entry.to_bytes()) == entry, sid
        assert all(c.views >= 0 and c.sessions >= 0 for c in entry.totals.values())
    # minutes: each session keeps exactly its contributions within the retention behind its
    # last beacon, and the minute rows are their sums from the partition's horizon on
    by_minute = reference_totals(actions, "minute")
    for sid, entry in final:
        kept = entry.last_seen_ms - retention_min * MIN
        kept -= kept % MIN
        want = {m: c for m, c in by_minute.get(sid, {}).items() if m >= kept}
        assert entry.minutes == want, sid
        assert list(entry.minutes) == sorted(entry.minutes)
    horizon = incremental.part.minute_horizon_ms()
    assert horizon == rebuilt.minute_horizon_ms()
    everyone: dict[int, Components] = {}
    for mine in by_minute.values():
        for m, c in mine.items():
            if m >= horizon:
                everyone[m] = everyone.get(m, ZERO) + c
    assert minute_totals(incremental.part) == {m: c for m, c in everyone.items() if not c.is_zero()}
