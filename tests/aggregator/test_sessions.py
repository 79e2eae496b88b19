from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import sessions as sessions_module
from aggregator import sketch
from aggregator.definitions import (
    ALLOWED_LATENESS_MS,
    CLOCK_SKEW_FUTURE_MS,
    CLOCK_SKEW_PAST_MS,
    DEFAULT_POLICY,
    REOPEN_WINDOW_MS,
    SESSION_TIMEOUT_MS,
    SessionPolicy,
)
from aggregator.metrics import ZERO, Components
from aggregator.sessions import (
    Contribution,
    SessionState,
    absorb_steady_heartbeat,
    apply,
    apply_batch,
    close,
    closes_at_ms,
    event_time_ms,
    forget_at_ms,
    id_hash,
)
from aggregator.timebuckets import Step, floor

T0 = 1_709_208_000_000  # 2024-02-29T12:00:00Z
MIN = 60_000
HOUR = 60 * MIN


def hb(i: int, at: int, **counters: Any) -> dict[str, Any]:
    return {"id": f"hb{i}", "type": "heartbeat", "timestamp": at, **counters}


def ev(i: int, kind: str, at: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"{kind}{i}", "type": kind, "timestamp": at, **extra}


def run(
    events: list[dict[str, Any]], delay_ms: int = 200, state: SessionState | None = None
) -> tuple[SessionState, Contribution]:
    """Apply events one by one, each received `delay_ms` after its timestamp."""
    total = Contribution()
    for event in events:
        state, contribution = apply(state, event["timestamp"] + delay_ms, event)
        total += contribution
    assert state is not None
    return state, total


def finish(state: SessionState, total: Contribution) -> tuple[SessionState, Contribution]:
    state, closing = close(state, state.last_seen_ms + SESSION_TIMEOUT_MS)
    return state, total + (closing or Contribution())


def test_a_normal_session() -> None:
    events = [
        ev(1, "play", T0),
        ev(1, "first-frame", T0 + 1_200),
        hb(1, T0 + 5_000, time_playing_ms=3_000, time_waiting_ms=1_000),
        hb(2, T0 + 70_000, time_playing_ms=5_000, time_stalled_ms=250),
        ev(1, "ended", T0 + 71_000),
    ]
    state, total = run(events)
    assert state.closed and state.ttff_ms == 1_200
    assert total.by_bucket("minute") == {
        T0: Components.with_ttff_counts(
            {sketch.bucket_of(1_200): 1},
            sessions=1,
            views=1,
            ttff_sum_ms=1_200,
            ttff_count=1,
            playing_ms=3_000,
            buffer_ms=1_000,
        ),
        T0 + MIN: Components(playing_ms=5_000, buffer_ms=250),
    }
    assert close(state, T0 + 10 * MIN) == (state, None)


def test_reported_ttff_wins_over_event_times() -> None:
    events = [
        ev(1, "play", T0),
        ev(1, "first-frame", T0 + 1_200),
        hb(1, T0 + 5_000, play_to_first_frame_ms=900),
        hb(2, T0 + 4_000, play_to_first_frame_ms=950),
    ]
    state, _ = run(events)
    assert state.ttff_ms == 950  # from the earliest report by event time
    state, _ = run(events[:3])
    assert state.ttff_ms == 900


def test_first_frame_without_play_has_no_ttff_and_is_not_an_exit() -> None:
    state, total = finish(*run([ev(1, "first-frame", T0)]))
    assert state.ttff_ms is None
    assert total.total() == Components(sessions=1, views=1)


def test_negative_derived_ttff_is_unknown() -> None:
    state, _ = run([ev(1, "first-frame", T0), ev(1, "play", T0 + 500)])
    assert state.ttff_ms is None and state.reached_first_frame


def test_a_repeated_event_counts_once() -> None:
    beat = hb(1, T0, time_playing_ms=4_000)
    state, first = apply(None, T0, beat)
    again, second = apply(state, T0 + 9_000, beat)
    assert again == state
    assert second == Contribution(duplicates=1)
    assert first.total() == Components(sessions=1, views=1, playing_ms=4_000)


def test_events_without_id_are_not_deduplicated() -> None:
    beat = {"type": "heartbeat", "timestamp": T0, "time_playing_ms": 1_000}
    _, total = run([beat, beat])
    assert total.total().playing_ms == 2_000


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (T0, T0),
        (T0 - CLOCK_SKEW_PAST_MS, T0 - CLOCK_SKEW_PAST_MS),
        (T0 - CLOCK_SKEW_PAST_MS - 1, T0 - CLOCK_SKEW_PAST_MS),
        (T0 - 86_400_000, T0 - CLOCK_SKEW_PAST_MS),
        (T0 + CLOCK_SKEW_FUTURE_MS, T0 + CLOCK_SKEW_FUTURE_MS),
        (T0 + CLOCK_SKEW_FUTURE_MS + 1, T0 + CLOCK_SKEW_FUTURE_MS),
        (T0 + 1.7, T0 + 1),
        (None, T0),
        ("2024-02-29", T0),
        (True, T0),
        (float("nan"), T0),
    ],
)
def test_client_clock_is_clamped_to_server_time(timestamp: Any, expected: int) -> None:
    assert event_time_ms({"type": "heartbeat", "timestamp": timestamp}, T0) == expected


def test_timeout_closes_and_decides_exit_before_start() -> None:
    state, _ = run([ev(1, "play", T0), hb(1, T0 + 5_000, time_waiting_ms=5_000)], delay_ms=0)
    assert closes_at_ms(state) == T0 + 5_000 + SESSION_TIMEOUT_MS
    assert close(state, T0 + 5_000 + SESSION_TIMEOUT_MS - 1) == (state, None)
    closed, contribution = close(state, T0 + 5_000 + SESSION_TIMEOUT_MS)
    assert closed.closed and closed.exit_before_start
    assert contribution is not None
    assert contribution.by_bucket("minute") == {T0: Components(exits_before_start=1)}
    assert forget_at_ms(closed) == T0 + 5_000 + REOPEN_WINDOW_MS
    assert forget_at_ms(state) is None and closes_at_ms(closed) is None


@pytest.mark.parametrize(
    ("event", "facts"),
    [
        (
            ev(1, "error", T0 + 1_000, message="boom"),
            Components(sessions=1, views=1, error_sessions=1),
        ),
        (
            ev(1, "error", T0 + 1_000, fatal=False),
            Components(sessions=1, views=1, error_sessions=1, exits_before_start=1),
        ),
        (
            hb(1, T0 + 1_000, errors=2),
            Components(sessions=1, views=1, error_sessions=1, exits_before_start=1),
        ),
        (ev(1, "pause", T0 + 1_000), Components(sessions=1, views=1, exits_before_start=1)),
    ],
)
def test_errors_and_exit_before_start(event: dict[str, Any], facts: Components) -> None:
    state, total = finish(*run([ev(1, "play", T0), event]))
    assert total.total() == facts
    assert state.facts() == facts


def test_no_play_intent_is_a_session_but_not_a_view() -> None:
    state, total = finish(*run([hb(1, T0), hb(2, T0 + 5_000), ev(1, "pause", T0 + 6_000)]))
    assert not state.play_intent
    assert total.total() == Components(sessions=1)


def test_reopen_within_the_window_is_the_same_view_and_retracts_the_exit() -> None:
    state, total = finish(*run([ev(1, "play", T0)]))
    assert total.total().exits_before_start == 1
    state, late = run([ev(1, "first-frame", T0 + 30 * MIN)], state=state)
    assert not state.closed and state.first_event_ms == T0
    ttff = 30 * MIN
    exit_retracted = Components.with_ttff_counts(
        {sketch.bucket_of(ttff): 1}, exits_before_start=-1, ttff_sum_ms=ttff, ttff_count=1
    )
    assert late.by_bucket("minute") == {T0: exit_retracted}
    state, total = finish(state, total + late)
    assert total.by_bucket("minute") == {
        T0: exit_retracted + Components(sessions=1, views=1, exits_before_start=1)
    }
    assert total.total().exits_before_start == 0


def test_ended_then_more_beacons_reopens_without_a_new_view() -> None:
    state, _ = run([ev(1, "play", T0), ev(1, "ended", T0 + 1_000)])
    assert state.closed
    state, more = run([hb(1, T0 + 6_000, time_playing_ms=1_000)], state=state)
    assert not state.closed
    assert more.total() == Components(playing_ms=1_000)


def test_after_the_reopen_window_a_new_view_starts() -> None:
    state, total = finish(*run([ev(1, "play", T0), ev(1, "first-frame", T0 + 100)]))
    later = T0 + 2 * REOPEN_WINDOW_MS
    state, more = run([ev(2, "play", later)], state=state)
    assert state.first_event_ms == later and not state.closed
    assert more.by_bucket("hour") == {later: Components(sessions=1, views=1)}
    old_view = {
        T0: Components.with_ttff_counts(
            {sketch.bucket_of(100): 1}, sessions=1, views=1, ttff_sum_ms=100, ttff_count=1
        )
    }
    assert total.by_bucket("hour") == old_view
    state, earlier = run([hb(1, later - 2 * MIN, time_playing_ms=1_000)], state=state)
    assert state.first_event_ms == later - 2 * MIN  # the new view's anchor moves, not the old one
    assert earlier.by_bucket("minute") == {
        later: -Components(sessions=1, views=1),
        later - 2 * MIN: Components(sessions=1, views=1, playing_ms=1_000),
    }
    assert (total + more + earlier).by_bucket("hour") == {
        **old_view,
        later - HOUR: Components(sessions=1, views=1, playing_ms=1_000),  # 13:58 is in 13:00
    }


def test_an_earlier_event_moves_the_session_facts_to_its_bucket() -> None:
    beat = hb(1, T0 + 2 * MIN, time_playing_ms=1_000)
    play, frame = ev(1, "play", T0 + MIN), ev(1, "first-frame", T0 + MIN + 500)
    state, total = run([beat])
    assert total.by_bucket("minute") == {
        T0 + 2 * MIN: Components(sessions=1, views=1, playing_ms=1_000)
    }
    state, moved = run([play], state=state)
    assert state.first_event_ms == T0 + MIN
    view = Components(sessions=1, views=1)
    assert moved.deltas == ((T0 + 2 * MIN, -view), (T0 + MIN, view))
    state, more = run([frame], state=state)
    expected = {
        T0 + MIN: Components.with_ttff_counts(
            {sketch.bucket_of(500): 1}, sessions=1, views=1, ttff_sum_ms=500, ttff_count=1
        ),
        T0 + 2 * MIN: Components(playing_ms=1_000),
    }
    assert (total + moved + more).by_bucket("minute") == expected
    _, in_order = run([play, frame, beat])
    assert in_order.by_bucket("minute") == expected
    assert all(delta.sessions >= 0 for _, delta in in_order.deltas)  # nothing to retract


def test_the_anchor_moves_only_within_the_lateness() -> None:
    state, _ = run([ev(1, "play", T0), hb(1, T0 + 9 * MIN)], delay_ms=0)
    oldest_allowed = T0 + 9 * MIN - ALLOWED_LATENESS_MS
    state, moved = apply(state, oldest_allowed, hb(2, oldest_allowed))
    assert state.first_event_ms == oldest_allowed
    view = Components(sessions=1, views=1)
    assert moved.by_bucket("minute") == {T0: -view, oldest_allowed: view}
    state, _ = apply(state, T0 + 11 * MIN, hb(3, T0 + 11 * MIN))
    too_old = T0 + 11 * MIN - ALLOWED_LATENESS_MS - 1  # still after the anchor, but late
    assert apply(state, too_old, hb(4, too_old)) == (state, Contribution(late=1))


def test_events_older_than_the_lateness_are_dropped() -> None:
    state, _ = run([hb(1, T0 + 20 * MIN)], delay_ms=0)
    late = hb(2, T0, time_playing_ms=1_000)
    assert apply(state, T0 + 9 * MIN, late) == (state, Contribution(late=1))


def test_dedupe_memory_is_bounded() -> None:
    policy = SessionPolicy(max_seen_event_ids=3)
    state = None
    for i in range(5):
        state, _ = apply(state, T0 + i * 1_000, hb(i, T0 + i * 1_000), policy)
    assert state is not None
    assert list(state.seen_ids) == [id_hash("hb2"), id_hash("hb3"), id_hash("hb4")]
    assert state.dedupe_floor_ms == T0 + 1_000
    assert apply(state, T0 + 5_000, hb(9, T0 + 1_000), policy)[1] == Contribution(late=1)
    assert apply(state, T0 + 5_000, hb(9, T0 + 1_001), policy)[1].duplicates == 0


def test_ids_older_than_the_lateness_are_forgotten() -> None:
    state, _ = run([hb(1, T0), hb(2, T0 + 11 * MIN)], delay_ms=0)
    assert list(state.seen_ids) == [id_hash("hb2")]


def test_policy_must_cover_the_clock_tolerance() -> None:
    with pytest.raises(ValueError, match="allowed_lateness_ms"):
        SessionPolicy(allowed_lateness_ms=CLOCK_SKEW_PAST_MS)
    with pytest.raises(ValueError):
        SessionPolicy(timeout_ms=-1)
    with pytest.raises(ValueError):
        SessionPolicy(max_seen_event_ids=0)


def test_apply_batch_applies_in_event_time_order() -> None:
    events = [ev(1, "ended", T0 + 3_000), hb(1, T0 + 2_000, time_playing_ms=1), ev(1, "play", T0)]
    state, total = apply_batch(None, T0 + 4_000, events)
    assert state is not None and state.first_event_ms == T0 and state.closed
    assert total.total() == Components(sessions=1, views=1, playing_ms=1, exits_before_start=1)
    assert all(delta.sessions >= 0 for _, delta in total.deltas)  # the anchor never moved
    _, one_by_one = run(events, delay_ms=4_000)
    assert one_by_one.by_bucket("minute") == total.by_bucket("minute")
    assert apply_batch(state, T0, []) == (state, Contribution())


def test_junk_counters_count_as_zero() -> None:
    junk = hb(
        1, T0, time_playing_ms=-5, time_stalled_ms="7", errors=None, play_to_first_frame_ms="x"
    )
    state, total = run([junk, hb(2, T0 + 1, play_to_first_frame_ms=-3)])
    assert total.total() == Components(sessions=1)
    assert state.reported_ttff is None


# --- property tests -------------------------------------------------------------------------

KINDS = ["heartbeat", "heartbeat", "heartbeat", "play", "first-frame", "error", "pause", "ended"]
MIDNIGHT = T0 + 12 * HOUR  # 2024-03-01T00:00:00Z: a minute, hour and day boundary
STEPS_CHECKED: tuple[Step, ...] = ("minute", "hour", "day")

Pairs = list[tuple[int, dict[str, Any]]]


@st.composite
def sessions(draw: st.DrawFn) -> Pairs:
    """(server_ts, event) pairs spanning at most 9 min (inside the lateness) around midnight,
    received 0-4 min late (no clamping)."""
    start = MIDNIGHT - draw(st.integers(min_value=0, max_value=9 * MIN))
    n = draw(st.integers(min_value=1, max_value=25))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        at = start + draw(st.integers(min_value=0, max_value=9 * MIN))
        event: dict[str, Any] = {"id": f"e{i}", "type": kind, "timestamp": at}
        if kind == "heartbeat":
            for key in ("time_playing_ms", "time_stalled_ms", "time_waiting_ms", "errors"):
                event[key] = draw(st.sampled_from([0, 0, 1, 250, 5_000]))
            if draw(st.integers(0, 5)) == 0:
                event["play_to_first_frame_ms"] = draw(st.integers(0, 10_000))
        if kind == "error":
            event["fatal"] = draw(st.booleans())
        out.append((at + draw(st.integers(min_value=0, max_value=4 * MIN)), event))
    return out


RESENDS = st.lists(st.tuples(st.integers(0, 24), st.integers(0, 4 * MIN)), max_size=10)
"""(event index, receive delay) pairs: events sent again in another envelope."""


def with_resends(pairs: Pairs, resends: list[tuple[int, int]], rnd: Any) -> Pairs:
    """`pairs` plus the resent events, received at another (unclamped) time, shuffled."""
    resent = [(pairs[i % len(pairs)][1], delay) for i, delay in resends]
    out = [*pairs, *((event["timestamp"] + delay, event) for event, delay in resent)]
    rnd.shuffle(out)
    return out


def fold(
    pairs: Pairs,
    close_after: list[bool] | None = None,
    store: Callable[[Contribution], None] | None = None,
) -> tuple[SessionState, Contribution]:
    """Apply `pairs` in order, closing after the events `close_after` marks, then time out.

    `store` sees each event's (and each close's) contribution as it is made.
    """
    state: SessionState | None = None
    total = Contribution()

    def add(contribution: Contribution | None) -> None:
        nonlocal total
        contribution = contribution or Contribution()
        total += contribution
        if store is not None:
            store(contribution)

    for i, (server_ts, event) in enumerate(pairs):
        state, contribution = apply(state, server_ts, event)
        add(contribution)
        if close_after and close_after[i % len(close_after)]:
            state, closing = close(state, state.last_seen_ms + SESSION_TIMEOUT_MS)
            add(closing)
    assert state is not None
    state, closing = close(state, state.last_seen_ms + SESSION_TIMEOUT_MS)
    add(closing)
    return state, total


def summary(state: SessionState) -> tuple[Any, ...]:
    return (
        state.facts(),
        state.first_event_ms,
        state.playing_ms,
        state.buffer_ms,
        state.error_count,
        state.ttff_ms,
        state.last_event_ms,
    )


def placed(pairs: Pairs, facts: Components, step: Step) -> dict[int, Components]:
    """Rules 4 and 5 stated directly: the session's facts in the bucket of its earliest event
    time, each distinct heartbeat's activity in the bucket of its own."""
    distinct = {event["id"]: event_time_ms(event, ts) for ts, event in pairs}
    out = {floor(min(distinct.values()), step): facts}
    for _, event in pairs:
        if event["type"] == "heartbeat" and distinct.pop(event["id"], None) is not None:
            activity = Components(
                playing_ms=event["time_playing_ms"],
                buffer_ms=event["time_stalled_ms"] + event["time_waiting_ms"],
            )
            start = floor(event["timestamp"], step)
            out[start] = out.get(start, ZERO) + activity
    return {start: c for start, c in out.items() if not c.is_zero()}


@given(sessions(), st.randoms(use_true_random=False), RESENDS)
def test_order_and_duplicates_do_not_change_any_bucket(
    pairs: Pairs, rnd: Any, resends: list[tuple[int, int]]
) -> None:
    reference_state, reference = fold(pairs)
    state, total = fold(with_resends(pairs, resends, rnd))
    assert summary(state) == summary(reference_state)
    assert state.first_event_ms == min(event["timestamp"] for _, event in pairs)
    for step in STEPS_CHECKED:
        expected = placed(pairs, reference_state.facts(), step)
        assert reference.by_bucket(step) == expected
        assert total.by_bucket(step) == expected
    assert total.total() == reference_state.facts() + Components(
        playing_ms=reference_state.playing_ms, buffer_ms=reference_state.buffer_ms
    )
    assert total.late == 0
    assert total.duplicates == len(resends)


@given(
    sessions(),
    st.randoms(use_true_random=False),
    RESENDS,
    st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_timeouts_and_reopens_do_not_change_any_bucket(
    pairs: Pairs, rnd: Any, resends: list[tuple[int, int]], close_after: list[bool]
) -> None:
    _, reference = fold(pairs)
    _, total = fold(with_resends(pairs, resends, rnd), close_after)
    for step in STEPS_CHECKED:
        assert total.by_bucket(step) == reference.by_bucket(step)


@given(
    sessions(),
    st.randoms(use_true_random=False),
    RESENDS,
    st.lists(st.booleans(), max_size=8),
)
def test_stored_buckets_never_go_negative(
    pairs: Pairs, rnd: Any, resends: list[tuple[int, int]], close_after: list[bool]
) -> None:
    """Storing each contribution as absolute per-bucket values never stores a negative one."""
    stored: dict[Step, dict[int, Components]] = {step: {} for step in STEPS_CHECKED}

    def store(contribution: Contribution) -> None:
        for step, buckets in stored.items():
            for start, delta in contribution.by_bucket(step).items():
                buckets[start] = buckets.get(start, ZERO) + delta
                assert all(v >= 0 for v in buckets[start].to_fields().values())

    final_state, _ = fold(with_resends(pairs, resends, rnd), close_after, store)
    for step, buckets in stored.items():
        left = {start: c for start, c in buckets.items() if not c.is_zero()}
        assert left == placed(pairs, final_state.facts(), step)


@given(sessions())
def test_state_round_trips_through_json(pairs: list[tuple[int, dict[str, Any]]]) -> None:
    state, _ = fold(pairs[:-1] or pairs)
    assert SessionState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    open_state, _ = apply(None, T0, pairs[0][1])
    assert SessionState.from_dict(json.loads(json.dumps(open_state.to_dict()))) == open_state


@given(sessions(), st.lists(st.booleans(), min_size=25, max_size=25))
def test_the_steady_heartbeat_shortcut_is_the_general_rule(
    pairs: list[tuple[int, dict[str, Any]]], closes: list[bool]
) -> None:
    """Wherever `apply` takes its shortcut, the rules as written give the same state and
    contribution."""
    state: SessionState | None = None
    for (server_ts, event), close_now in zip(pairs, closes, strict=False):
        if state is not None:
            event_ms = event_time_ms(event, server_ts)
            key = id_hash(str(event["id"]))
            fresh = key not in state.seen_ids and not sessions_module._is_late(
                state, event_ms, DEFAULT_POLICY
            )
            shortcut = sessions_module._steady_heartbeat(
                state, server_ts, event_ms, key, event, DEFAULT_POLICY
            )
            if fresh and not state.closed and event_ms >= state.first_event_ms and shortcut:
                general = sessions_module._apply_accepted(
                    state, server_ts, event_ms, str(event["id"]), key, event, DEFAULT_POLICY
                )
                assert shortcut[0] == general[0]
                assert shortcut[1].by_bucket("minute") == general[1].by_bucket("minute")
        state, _ = apply(state, server_ts, event)
        if close_now:
            state, _ = close(state, state.last_seen_ms + SESSION_TIMEOUT_MS)


def test_a_plain_heartbeat_takes_the_shortcut() -> None:
    state, _ = run([ev(1, "play", T0), hb(1, T0 + 5_000, time_playing_ms=5_000)])
    beat = hb(2, T0 + 10_000, time_playing_ms=5_000)
    expected, _ = apply(state, T0 + 10_200, beat)
    assert absorb_steady_heartbeat(state, T0 + 10_200, beat) == (T0 + 10_000, 5_000, 0)
    assert state == expected and state.playing_ms == 10_000
    assert absorb_steady_heartbeat(state, T0 + 10_300, beat) is None  # a duplicate


def test_seen_ids_pack_small() -> None:
    events = [hb(i, T0 + i * 5_000, time_playing_ms=5_000) for i in range(120)]
    state, _ = run(events)
    assert len(state.seen_ids) == 120
    assert len(json.dumps(state.to_dict())) < 2_400  # 16 characters per remembered id


@given(sessions(), st.lists(st.booleans(), min_size=25, max_size=25))
def test_the_in_place_shortcut_is_apply(
    pairs: list[tuple[int, dict[str, Any]]], closes: list[bool]
) -> None:
    """`absorb_steady_heartbeat` changes its state exactly as `apply` would, contributes the
    same, and changes nothing when it declines."""
    state: SessionState | None = None
    for (server_ts, event), close_now in zip(pairs, closes, strict=False):
        if state is not None:
            mine = dataclasses.replace(state, seen_ids=dict(state.seen_ids))
            expected, contribution = apply(state, server_ts, event)
            steady = absorb_steady_heartbeat(mine, server_ts, event)
            if steady is None:
                assert mine == state
            else:
                event_ms, playing, buffer = steady
                assert mine == expected
                activity = Components(playing_ms=playing, buffer_ms=buffer)
                assert contribution.by_bucket("minute") == (
                    {floor(event_ms, "minute"): activity} if playing or buffer else {}
                )
        state, _ = apply(state, server_ts, event)
        if close_now:
            state, _ = close(state, state.last_seen_ms + SESSION_TIMEOUT_MS)


def test_state_written_before_ids_were_hashed_still_reads() -> None:
    state, _ = run([ev(1, "play", T0), hb(1, T0 + 5_000, time_playing_ms=5_000)])
    old = state.to_dict()
    old["seen_ids"] = [[T0 + 5_000, "hb1"], [T0, "play1"]]
    old["some_later_field"] = 1
    assert SessionState.from_dict(json.loads(json.dumps(old))) == state
