"""The per-session state machine, as a pure reducer over one session's events.

`apply(state, server_ts_ms, event)` folds one event (a dict as the player sent it) into a
`SessionState` and returns the `Contribution` it makes: additive `Components` deltas, each
tagged with the time whose bucket it belongs to. The streaming path floors those times to its
buckets and adds the deltas; it never recomputes anything. `close(state, now_ms)` is the
timeout, driven by an injected clock. The rules, all in `aggregator.definitions`:

1. Event time. `event_ms = clamp(event["timestamp"], server_ts - 5 min, server_ts + 5 s)`,
   using the envelope's server receive time. A missing or non-numeric timestamp uses server_ts.
2. Duplicates. An event whose `id` was already accepted counts once. Events without an `id`
   cannot be deduplicated and always count. Ids are remembered as 64-bit BLAKE2b hashes
   (`id_hash`), which keeps a session's state small; two different ids of one session share a
   hash with probability about n/2^64 per event (n remembered ids, at most
   `MAX_SEEN_EVENT_IDS`), i.e. never in practice, and the second would then be dropped.
3. Lateness. An event more than `ALLOWED_LATENESS_MS` (10 min) older than the newest event time
   accepted in the session (the watermark) is dropped as late (its id may be forgotten). If every
   event of a session is within the lateness of every other (and the session has no more than
   `MAX_SEEN_EVENT_IDS` ids), the order its events arrive in, and repeats of them, change
   nothing the session contributes to any bucket.
4. Anchor. Session-level facts (session, view, error session, TTFF, exit-before-start) all land
   in the bucket of the view's anchor, `first_event_ms`: the earliest event time the view has
   accepted. Facts are recomputed from the state after every event and only the change is
   emitted. While the anchor stays put that is one delta at the anchor, so a fact that changes
   (a late first frame cancels an exit-before-start) is retracted with a negative delta in the
   same bucket. When an accepted event is earlier than the anchor, the anchor moves: the
   contribution retracts the previous facts at the old anchor and adds the current facts at the
   new one. The net per bucket therefore depends only on which events were accepted, never on
   their arrival order. The anchor moves only within the lateness, with no extra rule: an
   accepted event is at most `ALLOWED_LATENESS_MS` older than the watermark, so the anchor can
   move only while the view spans less than the lateness, never ends up more than the lateness
   before the first event applied, and a retraction only touches a bucket within the lateness of
   the watermark. Once a view is older than the lateness its anchor bucket is final.
5. Activity (heartbeat `time_playing_ms`; `time_stalled_ms + time_waiting_ms` as buffer) lands
   in the bucket of that heartbeat's event time.
6. Play intent: a `play`, `playing` or `first-frame` event, or any playing, buffer or error
   time/count, or a reported TTFF. Views are sessions with play intent.
7. TTFF: `play_to_first_frame_ms` of the earliest event (by event time, then id) that reports
   it; else the earliest `first-frame` minus the earliest `play` event time (unknown if
   negative or either is missing). A session that reached a first frame without a known TTFF
   is not an exit before start but is left out of the TTFF mean and sketch.
8. Errors: heartbeat `errors` deltas plus one per `error` event make `error_count`; a session
   with `error_count > 0` is an error session. An `error` event is fatal unless it carries
   `"fatal": false`.
9. Closing: an `ended` event closes the session; so does `close(state, now_ms)` once
   `now_ms - last_seen_ms >= SESSION_TIMEOUT_MS` (server time, never the wall clock).
10. Reopening: a closed session that accepts an event whose server time is within
   `REOPEN_WINDOW_MS` of `last_seen_ms` reopens as the same view (no new view is counted).
   Later than that, the event starts a new view with its own anchor (rule 4); the old view's
   contributions stay where they were, and the new view's anchor is the earliest of its own
   events.
11. Exit before start: once the session has been closed (ever), play intent and no first
   frame and no fatal error. It stays decided across a reopen unless a first frame or fatal
   error arrives, which retracts it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aggregator import sketch
from aggregator.definitions import (
    DEFAULT_POLICY,
    ENDED_EVENT,
    FATAL_ERROR_EVENT,
    FIRST_FRAME_EVENTS,
    HEARTBEAT_EVENT,
    PLAY_INTENT_EVENTS,
    SessionPolicy,
)
from aggregator.metrics import ZERO, Components
from aggregator.timebuckets import Step, floor

Event = Mapping[str, Any]


@dataclass(slots=True)
class SessionState:
    """One view's state. `to_dict`/`from_dict` give a JSON-safe plain dict (for a Faust table).

    Treated as a value: every function here returns a new state and leaves its argument alone,
    except `absorb_steady_heartbeat`, the streaming path's in-place shortcut."""

    first_event_ms: int  # earliest accepted event time of this view: the anchor (rule 4)
    last_event_ms: int  # newest accepted event time; the lateness watermark
    last_seen_ms: int  # newest server receive time of an accepted event
    play_intent: bool = False
    first_play_ms: int | None = None
    first_frame_ms: int | None = None
    reported_ttff: tuple[int, str, int] | None = None  # (event_ms, event id, ttff_ms)
    playing_ms: int = 0
    buffer_ms: int = 0
    error_count: int = 0
    fatal_error: bool = False
    closed: bool = False
    was_closed: bool = False
    # id hash -> event_ms of the accepted ids within the lateness, in event-time order
    seen_ids: dict[int, int] = dataclasses.field(default_factory=dict)
    dedupe_floor_ms: int | None = None  # events at or before this are dropped (ids evicted)

    @property
    def reached_first_frame(self) -> bool:
        return self.first_frame_ms is not None or self.reported_ttff is not None

    @property
    def ttff_ms(self) -> int | None:
        if self.reported_ttff is not None:
            return self.reported_ttff[2]
        if self.first_frame_ms is None or self.first_play_ms is None:
            return None
        derived = self.first_frame_ms - self.first_play_ms
        return derived if derived >= 0 else None

    @property
    def exit_before_start(self) -> bool:
        return (
            self.was_closed
            and self.play_intent
            and not self.reached_first_frame
            and not self.fatal_error
        )

    def facts(self) -> Components:
        """The session-level facts this session contributes to its anchor bucket."""
        ttff = self.ttff_ms
        return Components(
            sessions=1,
            views=int(self.play_intent),
            error_sessions=int(self.error_count > 0),
            exits_before_start=int(self.exit_before_start),
            ttff_sum_ms=ttff or 0,
            ttff_count=int(ttff is not None),
            ttff_buckets=((sketch.bucket_of(ttff), 1),) if ttff is not None else (),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain values. The remembered ids are packed (`_pack_seen`): they were
        most of a session's bytes."""
        out = {f.name: getattr(self, f.name) for f in _STATE_FIELDS}
        out["seen_ids"] = _pack_seen(self.seen_ids, self.last_event_ms)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SessionState:
        values = dict(raw)
        ttff = values.get("reported_ttff")
        values["reported_ttff"] = (
            None if ttff is None else (int(ttff[0]), str(ttff[1]), int(ttff[2]))
        )
        seen = values.get("seen_ids", "")
        if isinstance(seen, list):  # written before ids were hashed: [[event_ms, id], ...]
            values["seen_ids"] = {id_hash(str(i)): int(ms) for ms, i in sorted(seen)}
        else:
            values["seen_ids"] = _unpack_seen(seen, values["last_event_ms"])
        return cls(**{name: values[name] for name in _STATE_NAMES if name in values})


_STATE_FIELDS = dataclasses.fields(SessionState)
_STATE_NAMES = tuple(f.name for f in _STATE_FIELDS)
_AGE = next(code for code in "IL" if array(code).itemsize == 4)  # a 4-byte unsigned int


def _pack_seen(seen: Mapping[int, int], last_event_ms: int) -> str:
    """base64 of the id hashes (8 bytes each, little-endian) then their ages,
    `last_event_ms - event_ms` (4 bytes each: at most the lateness), in the dict's
    (event-time) order: 12 bytes per id."""
    hashes = array("Q", seen)
    ages = array(_AGE, [last_event_ms - ms for ms in seen.values()])
    if sys.byteorder == "big":  # pragma: no cover - the format is little-endian
        hashes.byteswap()
        ages.byteswap()
    return base64.b64encode(hashes.tobytes() + ages.tobytes()).decode()


def _unpack_seen(packed: str, last_event_ms: int) -> dict[int, int]:
    raw = base64.b64decode(packed)
    n = len(raw) // 12
    hashes, ages = array("Q"), array(_AGE)
    hashes.frombytes(raw[: 8 * n])
    ages.frombytes(raw[8 * n :])
    if sys.byteorder == "big":  # pragma: no cover
        hashes.byteswap()
        ages.byteswap()
    return {h: last_event_ms - age for h, age in zip(hashes, ages, strict=True)}


def id_hash(event_id: str) -> int:
    """The 64-bit hash an event id is remembered by (rule 2): stable across processes."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class Contribution:
    """What applying events adds: `(at_ms, delta)` pairs, each for the bucket containing `at_ms`.

    Deltas may be negative (retractions). `duplicates` and `late` count dropped events.
    """

    deltas: tuple[tuple[int, Components], ...] = ()
    duplicates: int = 0
    late: int = 0

    def __add__(self, other: Contribution) -> Contribution:
        return Contribution(
            self.deltas + other.deltas,
            self.duplicates + other.duplicates,
            self.late + other.late,
        )

    def by_bucket(self, step: Step) -> dict[int, Components]:
        """Deltas summed per bucket start; buckets whose deltas cancel are left out."""
        if len(self.deltas) == 1:
            at_ms, delta = self.deltas[0]
            return {} if delta.is_zero() else {floor(at_ms, step): delta}
        out: dict[int, Components] = {}
        for at_ms, delta in self.deltas:
            start = floor(at_ms, step)
            out[start] = out.get(start, ZERO) + delta
        return {start: c for start, c in out.items() if not c.is_zero()}

    def total(self) -> Components:
        return Components.total(delta for _, delta in self.deltas)


def event_time_ms(event: Event, server_ts_ms: int, policy: SessionPolicy = DEFAULT_POLICY) -> int:
    """The event's client timestamp clamped into the server-time tolerance (rule 1)."""
    raw = event.get("timestamp")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return server_ts_ms
    low = server_ts_ms - policy.clock_skew_past_ms
    high = server_ts_ms + policy.clock_skew_future_ms
    return min(max(int(raw), low), high)


def _event_id(event: Event) -> str | None:
    raw = event.get("id")
    return None if raw is None else str(raw)


def _number(event: Event, key: str) -> int | None:
    """A non-negative finite number truncated to int; None if missing, negative or junk."""
    raw = event.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return int(raw) if raw >= 0 else None


def _count(event: Event, key: str) -> int:
    raw = event.get(key)
    if type(raw) is int:  # the usual case, without `_number`'s checks (bool is not int here)
        return raw if raw > 0 else 0
    return _number(event, key) or 0


def _heartbeat_deltas(event: Event) -> tuple[int, int, int]:
    """(playing_ms, buffer_ms, errors) carried by a heartbeat; zeros for other events."""
    if event.get("type") != HEARTBEAT_EVENT:
        return 0, 0, 0
    buffer = _count(event, "time_stalled_ms") + _count(event, "time_waiting_ms")
    return _count(event, "time_playing_ms"), buffer, _count(event, "errors")


def _min(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)


def _is_late(state: SessionState, event_ms: int, policy: SessionPolicy) -> bool:
    if event_ms < state.last_event_ms - policy.allowed_lateness_ms:
        return True
    return state.dedupe_floor_ms is not None and event_ms <= state.dedupe_floor_ms


def _remember(
    state: SessionState, event_ms: int, key: int | None, policy: SessionPolicy
) -> SessionState:
    newest = max(state.last_event_ms, event_ms)
    anchor = min(state.first_event_ms, event_ms)
    seen = _remembered(state, newest, event_ms, key, policy)
    floor_ms = state.dedupe_floor_ms
    if len(seen) > policy.max_seen_event_ids:
        cut = list(seen.values())[len(seen) - policy.max_seen_event_ids - 1]
        seen = {h: ms for h, ms in seen.items() if ms > cut}
        floor_ms = cut if floor_ms is None else max(floor_ms, cut)
    return dataclasses.replace(
        state,
        first_event_ms=anchor,
        last_event_ms=newest,
        seen_ids=seen,
        dedupe_floor_ms=floor_ms,
    )


def _remembered(
    state: SessionState, newest: int, event_ms: int, key: int | None, policy: SessionPolicy
) -> dict[int, int]:
    """A copy of the remembered ids, updated by `_remember_in_place`."""
    seen = dict(state.seen_ids)
    return _remember_in_place(seen, newest, event_ms, key, policy)


def _remember_in_place(
    seen: dict[int, int], newest: int, event_ms: int, key: int | None, policy: SessionPolicy
) -> dict[int, int]:
    """Adds `key` (an `id_hash`) at `event_ms` and forgets the ids older than the lateness
    behind `newest`, keeping event-time order so the oldest come first. Returns `seen`."""
    if key is not None:
        in_order = not seen or event_ms >= next(reversed(seen.values()))
        seen[key] = event_ms
        if not in_order:
            ordered = sorted(seen.items(), key=lambda item: item[1])
            seen.clear()
            seen.update(ordered)
    horizon = newest - policy.allowed_lateness_ms
    while seen:
        oldest = next(iter(seen))
        if seen[oldest] >= horizon:
            break
        del seen[oldest]
    return seen


def _absorb(
    state: SessionState, server_ts_ms: int, event_ms: int, event_id: str | None, event: Event
) -> SessionState:
    kind = event.get("type")
    playing, buffer, errors = _heartbeat_deltas(event)
    fatal = kind == FATAL_ERROR_EVENT and event.get("fatal", True) is not False
    if kind == FATAL_ERROR_EVENT:
        errors += 1
    reported = state.reported_ttff
    reported_ms = _number(event, "play_to_first_frame_ms")
    if reported_ms is not None:
        candidate = (event_ms, event_id or "", reported_ms)
        reported = candidate if reported is None else min(reported, candidate)
    first_play = _min(state.first_play_ms, event_ms) if kind == "play" else state.first_play_ms
    first_frame = state.first_frame_ms
    if kind in FIRST_FRAME_EVENTS:
        first_frame = _min(first_frame, event_ms)
    intent = (
        state.play_intent
        or kind in PLAY_INTENT_EVENTS
        or playing > 0
        or buffer > 0
        or errors > 0
        or reported is not None
    )
    ended = kind == ENDED_EVENT
    return dataclasses.replace(
        state,
        last_seen_ms=max(state.last_seen_ms, server_ts_ms),
        play_intent=intent,
        first_play_ms=first_play,
        first_frame_ms=first_frame,
        reported_ttff=reported,
        playing_ms=state.playing_ms + playing,
        buffer_ms=state.buffer_ms + buffer,
        error_count=state.error_count + errors,
        fatal_error=state.fatal_error or fatal,
        closed=state.closed or ended,
        was_closed=state.was_closed or ended,
    )


def _fact_deltas(
    anchor_before_ms: int, before: Components, state: SessionState
) -> list[tuple[int, Components]]:
    """Move the session's facts from `before` at `anchor_before_ms` to the current ones (rule 4)."""
    after = state.facts()
    if state.first_event_ms == anchor_before_ms:
        delta = after - before
        return [] if delta.is_zero() else [(anchor_before_ms, delta)]
    return [(anchor_before_ms, -before), (state.first_event_ms, after)]


def _steady_activity(
    state: SessionState, event_ms: int, event: Event, policy: SessionPolicy
) -> tuple[int, int] | None:
    """(playing_ms, buffer_ms) of `event` if it is `apply`'s common case for this state: a
    heartbeat of an open view, not before its anchor, that changes none of its facts (no
    errors, no reported TTFF, no new play intent) and does not overflow the remembered ids.
    Such an event moves only the watermark, the remembered ids and the activity sums, and
    contributes its activity alone. None otherwise (the general rule applies)."""
    if state.closed or event_ms < state.first_event_ms or event.get("type") != HEARTBEAT_EVENT:
        return None
    if _count(event, "errors") or _number(event, "play_to_first_frame_ms") is not None:
        return None
    playing = _count(event, "time_playing_ms")
    buffer = _count(event, "time_stalled_ms") + _count(event, "time_waiting_ms")
    if (playing or buffer) and not state.play_intent:
        return None
    if len(state.seen_ids) >= policy.max_seen_event_ids:
        return None  # may need the cap (rule 3): the general rule applies it
    return playing, buffer


def _absorb_steady(
    state: SessionState,
    server_ts: int,
    event_ms: int,
    key: int | None,
    playing: int,
    buffer: int,
    policy: SessionPolicy,
) -> None:
    """Applies a `_steady_activity` event to `state` in place."""
    newest = max(state.last_event_ms, event_ms)
    _remember_in_place(state.seen_ids, newest, event_ms, key, policy)
    state.last_event_ms = newest
    if server_ts > state.last_seen_ms:
        state.last_seen_ms = server_ts
    state.playing_ms += playing
    state.buffer_ms += buffer


def _steady_heartbeat(
    state: SessionState,
    server_ts: int,
    event_ms: int,
    key: int | None,
    event: Event,
    policy: SessionPolicy,
) -> tuple[SessionState, Contribution] | None:
    """`apply` of a `_steady_activity` event, on a copy of `state`."""
    activity = _steady_activity(state, event_ms, event, policy)
    if activity is None:
        return None
    playing, buffer = activity
    new = dataclasses.replace(state, seen_ids=dict(state.seen_ids))
    _absorb_steady(new, server_ts, event_ms, key, playing, buffer, policy)
    if not (playing or buffer):
        return new, Contribution()
    return new, Contribution(((event_ms, Components(playing_ms=playing, buffer_ms=buffer)),))


def absorb_steady_heartbeat(
    state: SessionState, server_ts_ms: int, event: Event, policy: SessionPolicy = DEFAULT_POLICY
) -> tuple[int, int, int] | None:
    """`apply` for the streaming path's common case, in place: when `event` is new (not a
    duplicate, not late) and a `_steady_activity` event, folds it into `state` itself and
    returns (event_ms, playing_ms, buffer_ms), the activity it contributes at event_ms.
    Otherwise changes nothing and returns None: use `apply`. The caller must own `state`."""
    event_ms = event_time_ms(event, server_ts_ms, policy)
    activity = _steady_activity(state, event_ms, event, policy)
    if activity is None:
        return None
    event_id = _event_id(event)
    key = None if event_id is None else id_hash(event_id)
    if (key is not None and key in state.seen_ids) or _is_late(state, event_ms, policy):
        return None
    playing, buffer = activity
    _absorb_steady(state, server_ts_ms, event_ms, key, playing, buffer, policy)
    return event_ms, playing, buffer


def apply(
    state: SessionState | None,
    envelope_server_ts_ms: int,
    event: Event,
    policy: SessionPolicy = DEFAULT_POLICY,
) -> tuple[SessionState, Contribution]:
    """Fold one event into the session (None for a session not seen yet); see the rules above."""
    server_ts = envelope_server_ts_ms
    event_ms = event_time_ms(event, server_ts, policy)
    event_id = _event_id(event)
    key = None if event_id is None else id_hash(event_id)
    if state is not None:
        if key is not None and key in state.seen_ids:
            return state, Contribution(duplicates=1)
        if _is_late(state, event_ms, policy):
            return state, Contribution(late=1)
        steady = _steady_heartbeat(state, server_ts, event_ms, key, event, policy)
        if steady is not None:
            return steady
    return _apply_accepted(state, server_ts, event_ms, event_id, key, event, policy)


def _apply_accepted(
    state: SessionState | None,
    server_ts: int,
    event_ms: int,
    event_id: str | None,
    key: int | None,
    event: Event,
    policy: SessionPolicy,
) -> tuple[SessionState, Contribution]:
    """`apply` of an event that is neither a duplicate nor late, by the rules as written."""
    before = ZERO
    anchor_before = event_ms
    if state is None or (state.closed and server_ts - state.last_seen_ms > policy.reopen_window_ms):
        fresh = SessionState(
            first_event_ms=event_ms, last_event_ms=event_ms, last_seen_ms=server_ts
        )
        if state is not None:  # a new view: keep the dedupe memory, nothing else
            fresh = dataclasses.replace(
                fresh,
                last_event_ms=max(event_ms, state.last_event_ms),
                seen_ids=state.seen_ids,
                dedupe_floor_ms=state.dedupe_floor_ms,
            )
        state = fresh
    else:
        before = state.facts()
        anchor_before = state.first_event_ms
        state = dataclasses.replace(state, closed=False)

    state = _absorb(_remember(state, event_ms, key, policy), server_ts, event_ms, event_id, event)
    deltas = _fact_deltas(anchor_before, before, state)
    playing, buffer, _ = _heartbeat_deltas(event)
    if playing or buffer:
        deltas.append((event_ms, Components(playing_ms=playing, buffer_ms=buffer)))
    return state, Contribution(tuple(deltas))


def apply_batch(
    state: SessionState | None,
    envelope_server_ts_ms: int,
    events: Iterable[Event],
    policy: SessionPolicy = DEFAULT_POLICY,
) -> tuple[SessionState | None, Contribution]:
    """Fold one envelope's events in event-time order (then id); returns None for no events.

    The result does not depend on the order (rule 4), but in this order the anchor is set by the
    envelope's earliest event and never moves within it, so no retractions are emitted.
    """

    def order(event: Event) -> tuple[int, str]:
        return event_time_ms(event, envelope_server_ts_ms, policy), _event_id(event) or ""

    if isinstance(events, list) and len(events) == 1:
        return apply(state, envelope_server_ts_ms, events[0], policy)
    total = Contribution()
    for event in sorted(events, key=order):
        state, contribution = apply(state, envelope_server_ts_ms, event, policy)
        total += contribution
    return state, total


def close(
    state: SessionState, now_ms: int, policy: SessionPolicy = DEFAULT_POLICY
) -> tuple[SessionState, Contribution | None]:
    """Close the session if `now_ms` (server time) is a timeout past its last beacon.

    Returns the contribution of closing (exit-before-start), possibly with no deltas, or None
    when the session is already closed or not yet due.
    """
    due = closes_at_ms(state, policy)
    if due is None or now_ms < due:
        return state, None
    closed = dataclasses.replace(state, closed=True, was_closed=True)
    delta = closed.facts() - state.facts()
    deltas = () if delta.is_zero() else ((state.first_event_ms, delta),)
    return closed, Contribution(deltas)


def closes_at_ms(state: SessionState, policy: SessionPolicy = DEFAULT_POLICY) -> int | None:
    """When `close` will close this session (None if already closed)."""
    return None if state.closed else state.last_seen_ms + policy.timeout_ms


def forget_at_ms(state: SessionState, policy: SessionPolicy = DEFAULT_POLICY) -> int | None:
    """When a closed session's state can be deleted: after this an event starts a new view anyway.

    None while the session is open.
    """
    return state.last_seen_ms + policy.reopen_window_ms if state.closed else None
