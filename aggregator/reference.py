"""The reference model the end-to-end tests compare the streaming aggregator against.

A plain function from the simulator's JSONL log (`ingest.simulate`; only the events the collector
answered 2xx, via `accepted_events`) to the expected metrics per bucket and breakdown, written
for obviousness rather than speed. It shares no code with the streaming path: only the metric
definitions' constants (`aggregator.definitions`). The rules, which the streaming path must match:

1. Sessions are the accepted events grouped by `session_id`. An event whose `id` was already
   accepted in the session counts once (the first accepted copy in log order wins); events
   without an `id` always count.
2. Event time = `clamp(timestamp, server_ts - CLOCK_SKEW_PAST_MS, server_ts + CLOCK_SKEW_FUTURE_MS)`
   with the `server_timestamp` of the 2xx answer to that envelope; a missing or non-numeric
   timestamp uses server_ts.
3. A session's anchor is its earliest event time. Session facts (session, view, error session,
   TTFF, exit before start, unique viewer) land in the anchor's bucket; heartbeat activity
   (`time_playing_ms`; `time_stalled_ms + time_waiting_ms` as buffer) in the bucket of that
   heartbeat's event time. Nothing is dropped as late: tests keep their events within
   `ALLOWED_LATENESS_MS`. Counters are read from `heartbeat` events only.
4. Play intent: a `play`/`playing`/`first-frame` event, or heartbeat playing, stalled, waiting
   or `errors` > 0, or a reported `play_to_first_frame_ms`. Views are sessions with play intent.
   First frame: a `first-frame` event or a reported `play_to_first_frame_ms`.
5. TTFF: the `play_to_first_frame_ms` of the earliest event (by event time, then id) reporting
   it; else the earliest `first-frame` minus the earliest `play` event time, unknown when
   negative or either is missing.
6. Error session: a heartbeat with `errors` > 0 or any `error` event. An `error` event is fatal
   unless it says `"fatal": false`. Exit before start: play intent, no first frame, no fatal
   error, and closed: every session is closed at the end of the log.
7. One `session_id` is one view: no reopening (the simulator never reuses a session id).
8. Dimensions come from the session's first accepted envelope and its `truth`: `playbackId`
   (envelope), `creatorId` and geography (truth; every catalogue playback is assumed
   registered), `deviceType` (truth, the simulator's `tv` named `smarttv` as the collector's
   parser names it), `viewerId`, plus whatever `dims_of(envelope, truth)` returns.
9. Viewers. The collector's `viewer_hash` is a salted HMAC the reference cannot recompute, so by
   default `viewerId` is the `uid` when given, else the marker `HASHED_VIEWER`: compare
   `viewerId` breakdowns only on uid rows, or pass `viewer_of(envelope, truth)` (e.g. calling
   `ingest.enrich.viewer_hash` with the run's salt). `uniqueViewers` counts the views in a
   bucket by distinct viewer: `viewer_of` when given, else the uid, else the triple the hash is
   made of (domain, user agent, truth's client IP), which is distinct exactly when the hash is.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard, get_args

from aggregator.definitions import (
    CLOCK_SKEW_FUTURE_MS,
    CLOCK_SKEW_PAST_MS,
    CONCURRENCY_SAMPLE_MS,
    CONCURRENCY_WINDOW_MS,
    FATAL_ERROR_EVENT,
    FIRST_FRAME_EVENTS,
    HEARTBEAT_EVENT,
    PLAY_INTENT_EVENTS,
)
from ingest.simulate import AcceptedEvent, accepted_events

Step = Literal["minute", "hour", "day", "week", "month", "year"]
STEPS: tuple[Step, ...] = get_args(Step)
LogLines = Iterable[str | bytes | Mapping[str, Any]]
# (envelope without its events, truth) -> extra dimensions / the viewer's id
DimsOf = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]
ViewerOf = Callable[[Mapping[str, Any], Mapping[str, Any]], Hashable]

HASHED_VIEWER = "viewer_hash"  # the default `viewerId` of a viewer without uid
PLAY_EVENT = "play"  # the start of the TTFF computed from events
# the simulator names device types as the collector does, but for "tv"
_DEVICE_TYPES: dict[str | None, str] = {"tv": "smarttv"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


HOUR_MS = 3_600_000
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Activity:
    event_ms: int
    playing_ms: float
    buffer_ms: float


@dataclass(frozen=True, slots=True)
class Session:
    """What one session contributes, as the reference sees it."""

    session_id: str
    anchor_ms: int
    dims: Mapping[str, Any]
    viewer: Hashable  # the identity `uniqueViewers` counts
    view: bool
    error: bool
    first_frame: bool
    fatal_error: bool
    ttff_ms: float | None
    exit_before_start: bool
    activity: tuple[Activity, ...]  # one per heartbeat, zeros included


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counter(event: Mapping[str, Any], name: str) -> float:
    value = event.get(name)
    return value if _number(value) else 0


def event_time_ms(event: Mapping[str, Any], server_ts_ms: int) -> int:
    timestamp = event.get("timestamp")
    if not _number(timestamp):
        return server_ts_ms
    low, high = server_ts_ms - CLOCK_SKEW_PAST_MS, server_ts_ms + CLOCK_SKEW_FUTURE_MS
    return min(max(math.floor(timestamp), low), high)


def bucket_start_ms(ts_ms: int, step: Step) -> int:
    """Start of the UTC bucket holding `ts_ms`; weeks start on Monday."""
    t = _EPOCH + ts_ms * _MS
    if step == "minute":
        start = t.replace(second=0, microsecond=0)
    elif step == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
    elif step == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif step == "week":
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
    elif step == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif step == "year":
        start = t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"step must be one of {STEPS}, got {step!r}")
    return (start - _EPOCH) // _MS


def _is_error(event: Mapping[str, Any]) -> bool:
    if event.get("type") == FATAL_ERROR_EVENT:
        return True
    return event.get("type") == HEARTBEAT_EVENT and _counter(event, "errors") > 0


def _dims(
    first: AcceptedEvent, dims_of: DimsOf | None, viewer_of: ViewerOf | None
) -> tuple[dict[str, Any], Hashable]:
    envelope, truth = first.envelope, first.truth
    uid = envelope.get("uid") or None  # the collector hashes an empty uid too
    if viewer_of is not None:
        viewer_id: Any = viewer_of(envelope, truth)
        viewer: Hashable = viewer_id
    else:
        viewer_id = uid if uid is not None else HASHED_VIEWER
        hashed = (envelope.get("domain"), envelope.get("user_agent"), truth.get("clientIp"))
        viewer = uid if uid is not None else (HASHED_VIEWER, *hashed)
    device_type = truth.get("deviceType")
    dims = {
        "playbackId": envelope.get("playback_id"),
        "creatorId": truth.get("creatorId"),
        "viewerId": viewer_id,
        "deviceType": _DEVICE_TYPES.get(device_type, device_type),
        "continent": truth.get("continent"),
        "country": truth.get("country"),
        "subdivision": truth.get("subdivision"),
        "timezone": truth.get("timezone"),
    }
    if dims_of is not None:
        dims.update(dims_of(envelope, truth))
    return dims, viewer


def _session(
    session_id: str,
    events: Sequence[tuple[int, Mapping[str, Any]]],
    dims: Mapping[str, Any],
    viewer: Hashable,
) -> Session:
    """`events`: (event time, event) of the session's distinct accepted events."""
    beats = [(t, e) for t, e in events if e.get("type") == HEARTBEAT_EVENT]
    types = {e.get("type") for _, e in events}
    reports = sorted(
        (t, str(e.get("id") or ""), e["play_to_first_frame_ms"])
        for t, e in events
        if _number(e.get("play_to_first_frame_ms"))
    )
    first_frames = [t for t, e in events if e.get("type") in FIRST_FRAME_EVENTS]
    plays = [t for t, e in events if e.get("type") == PLAY_EVENT]
    errors = [e for _, e in events if e.get("type") == FATAL_ERROR_EVENT]

    ttff_ms: float | None = None
    if reports:
        ttff_ms = reports[0][2]
    elif first_frames and plays and min(first_frames) - min(plays) >= 0:
        ttff_ms = min(first_frames) - min(plays)
    first_frame = bool(first_frames or reports)
    fatal = any(e.get("fatal") is not False for e in errors)
    counters = ("time_playing_ms", "time_stalled_ms", "time_waiting_ms", "errors")
    view = bool(
        types & PLAY_INTENT_EVENTS
        or any(_counter(e, name) > 0 for _, e in beats for name in counters)
        or reports
    )
    activity = tuple(
        Activity(
            t,
            _counter(e, "time_playing_ms"),
            _counter(e, "time_stalled_ms") + _counter(e, "time_waiting_ms"),
        )
        for t, e in beats
    )
    return Session(
        session_id=session_id,
        anchor_ms=min(t for t, _ in events),
        dims=dims,
        viewer=viewer,
        view=view,
        error=any(_is_error(e) for _, e in events),
        first_frame=first_frame,
        fatal_error=fatal,
        ttff_ms=ttff_ms,
        exit_before_start=view and not first_frame and not fatal,
        activity=activity,
    )


def sessions(
    log_lines: LogLines, *, dims_of: DimsOf | None = None, viewer_of: ViewerOf | None = None
) -> list[Session]:
    """Every session of the log, in the order of its first accepted envelope."""
    first: dict[str, AcceptedEvent] = {}
    seen_ids: dict[str, set[Any]] = {}
    events: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for accepted in accepted_events(log_lines):
        session_id = accepted.envelope["session_id"]
        first.setdefault(session_id, accepted)
        event_id = accepted.event.get("id")
        if event_id is not None:
            if event_id in seen_ids.setdefault(session_id, set()):
                continue
            seen_ids[session_id].add(event_id)
        when = event_time_ms(accepted.event, accepted.server_timestamp_ms)
        events.setdefault(session_id, []).append((when, accepted.event))
    return [
        _session(session_id, events[session_id], *_dims(accepted, dims_of, viewer_of))
        for session_id, accepted in first.items()
    ]


@dataclass(slots=True)
class _Totals:
    sessions: int = 0
    views: int = 0
    error_sessions: int = 0
    exits_before_start: int = 0
    ttffs_ms: list[float] = field(default_factory=list)
    playing_ms: float = 0
    buffer_ms: float = 0
    viewers: set[Hashable] = field(default_factory=set)


def _quantile(sorted_values: Sequence[float], percent: int) -> float | None:
    """The sample at index floor(percent/100 * (n-1)), in integer arithmetic."""
    if not sorted_values:
        return None
    return sorted_values[percent * (len(sorted_values) - 1) // 100]


def _row(timestamp: int, dims: Mapping[str, Any], t: _Totals) -> dict[str, Any]:
    ttffs = sorted(t.ttffs_ms)
    watched = t.playing_ms + t.buffer_ms
    return {
        "timestamp": timestamp,
        **dims,
        "viewCount": t.views,
        "playtimeMins": t.playing_ms / 60_000,
        "ttffMs": sum(ttffs) / len(ttffs) if ttffs else None,
        "rebufferRatio": t.buffer_ms / watched if watched else None,
        "errorRate": t.error_sessions / t.sessions if t.sessions else None,
        "exitsBeforeStart": t.exits_before_start / t.views if t.views else None,
        "exitsBeforeStartCount": t.exits_before_start,
        "ttffP50Ms": _quantile(ttffs, 50),
        "ttffP95Ms": _quantile(ttffs, 95),
        "uniqueViewers": len(t.viewers),
    }


def _sort_key(values: Iterable[Any]) -> tuple[tuple[bool, Any], ...]:
    """None sorts before any value."""
    return tuple((v is not None, "" if v is None else v) for v in values)


def _selected(
    log_lines: LogLines,
    breakdown_by: Sequence[str],
    playback_id: str | None,
    creator_id: str | None,
    dims_of: DimsOf | None,
    viewer_of: ViewerOf | None,
) -> list[Session]:
    if len(set(breakdown_by)) != len(breakdown_by) or "timestamp" in breakdown_by:
        raise ValueError(f"bad breakdown {list(breakdown_by)}")
    chosen = []
    for s in sessions(log_lines, dims_of=dims_of, viewer_of=viewer_of):
        missing = [name for name in breakdown_by if name not in s.dims]
        if missing:
            raise ValueError(f"session {s.session_id} has no dimension {missing}: see dims_of")
        if playback_id is not None and s.dims["playbackId"] != playback_id:
            continue
        if creator_id is not None and s.dims["creatorId"] != creator_id:
            continue
        chosen.append(s)
    return chosen


def expected(
    log_lines: LogLines,
    *,
    step: Step,
    breakdown_by: Sequence[str] = (),
    playback_id: str | None = None,
    creator_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    dims_of: DimsOf | None = None,
    viewer_of: ViewerOf | None = None,
    grain: Literal["hour", "minute"] = "hour",
) -> list[dict[str, Any]]:
    """Livepeer `viewership-metric` rows per (bucket, breakdown values), sorted by both.

    A (bucket, values) pair has a row when a session is anchored in it or a heartbeat with
    playing or buffer time falls in it. `from_ms`/`to_ms` select the data, not the buckets,
    like Livepeer's `timestamp_trunc` over events in [from, to): a session's facts count when
    its anchor is in the range, a heartbeat's time when its event time is, both with the range
    widened to whole `grain` buckets (from floored, to ceiled): hours, the finest grain the
    queries read, or minutes, the grain of the live page's window (which has no breakdown). A
    row's `timestamp` is its step's start, which may lie before `from`.
    """
    width = HOUR_MS if grain == "hour" else MINUTE_MS
    lo = None if from_ms is None else from_ms - from_ms % width
    hi = None if to_ms is None else -(-to_ms // width) * width

    def inside(ts_ms: int) -> bool:
        return (lo is None or ts_ms >= lo) and (hi is None or ts_ms < hi)

    totals: dict[tuple[int, tuple[Any, ...]], _Totals] = {}
    chosen = _selected(log_lines, breakdown_by, playback_id, creator_id, dims_of, viewer_of)
    for s in chosen:
        values = tuple(s.dims[name] for name in breakdown_by)
        if inside(s.anchor_ms):
            t = totals.setdefault((bucket_start_ms(s.anchor_ms, step), values), _Totals())
            t.sessions += 1
            t.views += s.view
            t.error_sessions += s.error
            t.exits_before_start += s.exit_before_start
            if s.ttff_ms is not None:
                t.ttffs_ms.append(s.ttff_ms)
            if s.view:
                t.viewers.add(s.viewer)
        for a in s.activity:
            if (a.playing_ms or a.buffer_ms) and inside(a.event_ms):
                t = totals.setdefault((bucket_start_ms(a.event_ms, step), values), _Totals())
                t.playing_ms += a.playing_ms
                t.buffer_ms += a.buffer_ms
    rows = [
        _row(bucket, dict(zip(breakdown_by, values, strict=True)), t)
        for (bucket, values), t in totals.items()
    ]
    return sorted(rows, key=lambda r: (r["timestamp"], _sort_key(r[n] for n in breakdown_by)))


def concurrent_now(
    log_lines: LogLines,
    now_ms: int,
    *,
    breakdown_by: Sequence[str] = (),
    playback_id: str | None = None,
    creator_id: str | None = None,
    dims_of: DimsOf | None = None,
) -> list[dict[str, Any]]:
    """Livepeer `realtime-viewership-metric` rows: `viewCount` = distinct sessions with an
    accepted envelope whose server_timestamp is in (now - CONCURRENCY_WINDOW_MS, now];
    `errorRate` = the share of them that had an error in any envelope received by now (0 when
    none is active). Without a breakdown there is always exactly one row; with one, a row per
    tuple of the breakdown's values (any number of dimensions, in the order given) that has
    someone watching, sorted by the values (None first)."""
    lines = list(log_lines)
    chosen = {
        s.session_id: s
        for s in _selected(lines, breakdown_by, playback_id, creator_id, dims_of, None)
    }
    active: set[str] = set()
    errored: set[str] = set()
    for accepted in accepted_events(lines):
        session_id = accepted.envelope["session_id"]
        if session_id not in chosen or accepted.server_timestamp_ms > now_ms:
            continue
        if accepted.server_timestamp_ms > now_ms - CONCURRENCY_WINDOW_MS:
            active.add(session_id)
        if _is_error(accepted.event):
            errored.add(session_id)
    groups: dict[tuple[Any, ...], list[str]] = {} if breakdown_by else {(): []}
    for session_id in active:
        values = tuple(chosen[session_id].dims[name] for name in breakdown_by)
        groups.setdefault(values, []).append(session_id)
    rows = []
    for values, members in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        errors = sum(m in errored for m in members)
        rows.append(
            {
                **dict(zip(breakdown_by, values, strict=True)),
                "viewCount": len(members),
                "errorRate": errors / len(members) if members else 0.0,
            }
        )
    return rows


def concurrent_series(
    log_lines: LogLines,
    *,
    step: Literal["minute", "hour"],
    from_ms: int,
    to_ms: int,
    playback_id: str | None = None,
    creator_id: str | None = None,
    until_ms: int | None = None,
) -> list[dict[str, Any]]:
    """The concurrent-viewers series: one row `{"timestamp", "peakConcurrentViewers"}` per
    minute (or hour) that intersects [from_ms, to_ms), zeros included. At each instant
    t = k * CONCURRENCY_SAMPLE_MS, the concurrent viewers are the distinct sessions with an
    accepted envelope whose server_timestamp is in (t - CONCURRENCY_WINDOW_MS, t] (the rule of
    `concurrent_now`); a step's peak is the largest of those counts over its instants (only
    instants at or before `until_ms`, when given), 0 when it has none."""
    lines = list(log_lines)
    chosen = {s.session_id for s in _selected(lines, (), playback_id, creator_id, None, None)}
    beacons: dict[str, list[int]] = {}
    for accepted in accepted_events(lines):
        session_id = accepted.envelope["session_id"]
        if session_id in chosen:
            beacons.setdefault(session_id, []).append(accepted.server_timestamp_ms)
    for times in beacons.values():
        times.sort()

    def watching(times: list[int], t: int) -> bool:
        """Is there a beacon time s with t - window < s <= t?"""
        after = bisect.bisect_right(times, t)  # times[after - 1] is the latest s <= t
        return after > 0 and times[after - 1] > t - CONCURRENCY_WINDOW_MS

    length_ms = MINUTE_MS if step == "minute" else HOUR_MS
    rows = []
    start = bucket_start_ms(from_ms, step)
    while start < to_ms:
        peak = 0
        for t in range(start, start + length_ms, CONCURRENCY_SAMPLE_MS):
            if until_ms is not None and t > until_ms:
                break
            peak = max(peak, sum(watching(times, t) for times in beacons.values()))
        rows.append({"timestamp": start, "peakConcurrentViewers": peak})
        start += length_ms
    return rows


def usage(
    log_lines: LogLines,
    *,
    step: Step,
    creator_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Livepeer `usage-metric` rows per (bucket, creator): delivered minutes = playtime minutes.

    The same rows, in the same order, as `expected(..., breakdown_by=("creatorId",))`.
    """
    rows = expected(
        log_lines,
        step=step,
        breakdown_by=("creatorId",),
        creator_id=creator_id,
        from_ms=from_ms,
        to_ms=to_ms,
    )
    return [
        {
            "TimeInterval": r["timestamp"],
            "CreatorID": r["creatorId"],
            "DeliveryUsageMins": r["playtimeMins"],
        }
        for r in rows
    ]
