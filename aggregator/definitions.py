"""The product's metric definitions as constants.

The streaming path and the independent reference model both import this module, so a rule
changes in one place. Every duration is integer milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

CONCURRENCY_WINDOW_MS = 30_000
"""A session is "currently watching" if it sent any beacon in the last 30 s (6x the 5 s
heartbeat; Livepeer's original `/views/now` rule, metrics.md section 4)."""

CONCURRENCY_SAMPLE_MS = 5_000
"""The concurrent-viewers series samples the same rule at instants `k * 5 s` (epoch-aligned):
concurrent(t) = sessions with a beacon (server receive time) in (t - 30 s, t]. A minute's peak
is the largest of its 12 samples, an hour's the largest of its 720. `CONCURRENCY_WINDOW_MS` must
be a multiple of it, and a minute too."""

SESSION_TIMEOUT_MS = 60_000
"""A session with no beacon (by server receive time) for this long is closed."""

REOPEN_WINDOW_MS = 3_600_000
"""A closed session seen again within this long after its last beacon reopens as the same view
(Mux's one-hour rule). Later than that it starts a new view."""

CLOCK_SKEW_PAST_MS = 300_000
"""An event's client timestamp may lag its envelope's server receive time by at most 5 min;
older timestamps are clamped up to `server_ts - 5 min`. This keeps a player with a wrong clock
(or a buffer re-sent after a long outage) from writing into long-closed buckets."""

CLOCK_SKEW_FUTURE_MS = 5_000
"""An event's client timestamp may lead its envelope's server receive time by at most 5 s;
later timestamps are clamped down to `server_ts + 5 s`."""

ALLOWED_LATENESS_MS = 600_000
"""Within one session, an event whose (clamped) event time is more than 10 min older than the
newest event time already accepted is dropped as late. Event ids are remembered for this long,
so deduplication is exact inside the window (up to 64-bit hash collisions, see
`aggregator.sessions` rule 2). Because it is at least
`CLOCK_SKEW_PAST_MS + CLOCK_SKEW_FUTURE_MS`, nothing is dropped as late unless two collectors'
clocks disagree by minutes. It also bounds how far a view's anchor (its earliest event time,
where its session-level facts are counted) can move: only late events inside this window move
it, so facts are never retracted from a bucket older than this behind the watermark."""

MAX_SEEN_EVENT_IDS = 1_024
"""Upper bound on remembered event ids per session (10 min of 5 s heartbeats is 120). If a
session exceeds it, the oldest ids are forgotten and events at or before their time are dropped."""

TTFF_RELATIVE_ACCURACY = 0.01
"""Relative accuracy of the TTFF quantile sketch (DDSketch logarithmic mapping)."""

PLAY_INTENT_EVENTS = frozenset({"play", "playing", "first-frame"})
"""Event types that show play intent by themselves (metrics.md section 6)."""

FIRST_FRAME_EVENTS = frozenset({"first-frame"})
"""Event types that show the first frame was rendered."""

FATAL_ERROR_EVENT = "error"
"""An `error` event is fatal unless its payload says `"fatal": false`."""

ENDED_EVENT = "ended"

HEARTBEAT_EVENT = "heartbeat"

BREAKDOWN_DIMENSIONS = (
    "playbackId",
    "deviceType",
    "device",
    "cpu",
    "os",
    "browser",
    "browserEngine",
    "continent",
    "country",
    "subdivision",
    "timezone",
    "geohash",
    "viewerId",
    "creatorId",
)
"""The `breakdownBy[]` values accepted by Livepeer's `/data/views/query`."""


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The tunable session rules, defaulting to the constants above."""

    timeout_ms: int = SESSION_TIMEOUT_MS
    reopen_window_ms: int = REOPEN_WINDOW_MS
    clock_skew_past_ms: int = CLOCK_SKEW_PAST_MS
    clock_skew_future_ms: int = CLOCK_SKEW_FUTURE_MS
    allowed_lateness_ms: int = ALLOWED_LATENESS_MS
    max_seen_event_ids: int = MAX_SEEN_EVENT_IDS

    def __post_init__(self) -> None:
        for name in (
            "timeout_ms",
            "reopen_window_ms",
            "clock_skew_past_ms",
            "clock_skew_future_ms",
            "allowed_lateness_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.allowed_lateness_ms >= 2**32:
            raise ValueError("allowed_lateness_ms must be below 2**32 (49 days)")
        if self.max_seen_event_ids < 1:
            raise ValueError("max_seen_event_ids must be >= 1")
        if self.allowed_lateness_ms < self.clock_skew_past_ms + self.clock_skew_future_ms:
            raise ValueError(
                "allowed_lateness_ms must cover clock_skew_past_ms + clock_skew_future_ms, "
                "or re-sent events inside the clock tolerance could be dropped as late"
            )


DEFAULT_POLICY = SessionPolicy()
