"""The concurrent-viewers series' pure logic, against brute force over explicit instants."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.concurrency import (
    INSTANTS_PER_MINUTE,
    SAMPLE_MS,
    Minutes,
    PartitionConcurrency,
    Runs,
    _cover,
    add_minutes,
    beacon_run,
    cover,
    indices,
    minute_of,
    peaks,
    runs_from_json,
    runs_to_json,
)
from aggregator.definitions import CONCURRENCY_WINDOW_MS
from aggregator.timebuckets import HOUR_MS, MINUTE_MS

H0 = 1_709_208_000_000  # 2024-02-29T12:00:00Z, an hour start
times = st.integers(H0 - 10 * MINUTE_MS, H0 + 80 * MINUTE_MS)


def active_instants(beacons: Iterable[int]) -> set[int]:
    """Brute force: instants t = k * 5 s with a beacon in (t - 30 s, t]."""
    out = set()
    for s in beacons:
        t = s - s % SAMPLE_MS
        for k in range(t // SAMPLE_MS - 2, (t + CONCURRENCY_WINDOW_MS) // SAMPLE_MS + 2):
            if k * SAMPLE_MS - CONCURRENCY_WINDOW_MS < s <= k * SAMPLE_MS:
                out.add(k)
    return out


def well_formed(runs: Runs) -> bool:
    return all(a < b for a, b in runs) and all(b < a2 for (_, b), (a2, _) in pairwise(runs))


def test_a_beacon_counts_at_six_instants_from_its_time_on() -> None:
    assert beacon_run(H0) == (H0 // SAMPLE_MS, H0 // SAMPLE_MS + 6)  # on an instant: it counts
    assert beacon_run(H0 + 1) == (H0 // SAMPLE_MS + 1, H0 // SAMPLE_MS + 7)
    assert beacon_run(H0 - 1) == (H0 // SAMPLE_MS, H0 // SAMPLE_MS + 6)


@given(times)
def test_beacon_run_is_the_window_rule(s: int) -> None:
    a, b = beacon_run(s)
    assert set(range(a, b)) == active_instants([s])


@given(st.lists(times, max_size=30))
def test_cover_merges_and_reports_only_new_instants(beacons: list[int]) -> None:
    runs: Runs = ()
    seen: set[int] = set()
    for s in beacons:
        runs, added = cover(runs, beacon_run(s))
        new = set(indices(added))
        assert new == active_instants([s]) - seen
        assert sum(b - a for a, b in added) == len(new)  # added pieces do not overlap
        seen |= new
        assert set(indices(runs)) == seen
        assert well_formed(runs)
    assert runs_from_json(runs_to_json(runs)) == runs


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12)), max_size=20))
def test_cover_of_arbitrary_runs(pairs: list[tuple[int, int]]) -> None:
    runs: Runs = ()
    seen: set[int] = set()
    for start, length in pairs:
        runs, added = cover(runs, (start, start + length))
        assert set(indices(added)) == set(range(start, start + length)) - seen
        seen |= set(range(start, start + length))
        assert set(indices(runs)) == seen and well_formed(runs)


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), max_size=20))
def test_covers_shortcut_agrees_with_the_general_rule(pairs: list[tuple[int, int]]) -> None:
    runs: Runs = ()
    for start, length in sorted(pairs):  # mostly extending the last run: the shortcut
        run = (start, start + length)
        assert cover(runs, run) == _cover(runs, *run)
        runs, _ = cover(runs, run)


def test_minute_of_places_instants() -> None:
    assert minute_of(H0 // SAMPLE_MS) == (H0, 0)
    assert minute_of(H0 // SAMPLE_MS + 11) == (H0, 11)
    assert minute_of(H0 // SAMPLE_MS + 12) == (H0 + MINUTE_MS, 0)


Sessions = dict[str, tuple[str, list[int]]]  # session id -> (playback, beacon times)
sessions_st = st.dictionaries(
    st.sampled_from([f"s{i}" for i in range(8)]),
    st.tuples(st.sampled_from(["pb-1", "pb-2"]), st.lists(times, min_size=1, max_size=8)),
    max_size=8,
)


def brute_counts(sessions: Sessions, scope: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for playback, beacons in sessions.values():
        if scope not in ("all", playback):
            continue
        for k in active_instants(beacons):
            out[k] = out.get(k, 0) + 1
    return out


def as_instants(minutes: Minutes) -> dict[int, int]:
    out = {}
    for minute, counts in minutes.items():
        assert len(counts) == INSTANTS_PER_MINUTE
        for i, c in enumerate(counts):
            if c:
                out[(minute + i * SAMPLE_MS) // SAMPLE_MS] = c
    return out


def fold(part: PartitionConcurrency, sessions: Sessions, rng: random.Random) -> dict[str, Runs]:
    """Feeds every beacon, duplicated and shuffled, through `cover` as the worker does."""
    feed = [(sid, s) for sid, (_, beacons) in sessions.items() for s in beacons]
    feed += rng.sample(feed, len(feed) // 2)  # re-sent and replayed envelopes
    rng.shuffle(feed)
    coverage: dict[str, Runs] = {}
    for sid, s in feed:
        coverage[sid], added = cover(coverage.get(sid, ()), beacon_run(s))
        part.add(["all", sessions[sid][0]], added)
    return coverage


@settings(max_examples=60)
@given(sessions_st, st.randoms(use_true_random=False))
def test_counts_are_exact_under_duplicates_and_any_order(
    sessions: Sessions, rng: random.Random
) -> None:
    streamed = PartitionConcurrency()
    coverage = fold(streamed, sessions, rng)
    rebuilt = PartitionConcurrency()  # from the table's entries, as after a rebalance
    for sid, runs in coverage.items():
        rebuilt.add(["all", sessions[sid][0]], runs)
    for scope in ("all", "pb-1", "pb-2"):
        want = brute_counts(sessions, scope)
        assert as_instants(streamed.counts.get(scope, {})) == want
        assert as_instants(rebuilt.counts.get(scope, {})) == want


@settings(max_examples=60)
@given(sessions_st, st.integers(1, 4), st.randoms(use_true_random=False))
def test_partitions_add_up(sessions: Sessions, n: int, rng: random.Random) -> None:
    total: Minutes = {}
    for p in range(n):
        part = PartitionConcurrency()
        mine = {sid: v for sid, v in sessions.items() if hash(sid) % n == p}
        fold(part, mine, rng)
        for (scope, _), minutes in part.take().items():
            if scope == "all":
                add_minutes(total, minutes)
    assert as_instants(total) == brute_counts(sessions, "all")


@given(sessions_st, st.sampled_from(["minute", "hour"]), st.none() | times)
def test_peaks_are_maxima_over_the_instants_of_each_step(
    sessions: Sessions, step: str, until: int | None
) -> None:
    part = PartitionConcurrency()
    fold(part, sessions, random.Random(1))
    total: Minutes = {}
    for (scope, _), minutes in part.take().items():
        if scope == "all":
            add_minutes(total, minutes)
    span = MINUTE_MS if step == "minute" else HOUR_MS
    starts = list(range(H0 - HOUR_MS, H0 + 2 * HOUR_MS, span))
    counts = brute_counts(sessions, "all")
    want = []
    for start in starts:
        instants = [
            counts.get(t // SAMPLE_MS, 0)
            for t in range(start, start + span, SAMPLE_MS)
            if until is None or t <= until
        ]
        want.append({"timestamp": start, "peakConcurrentViewers": max(instants, default=0)})
    assert peaks(total, step, starts, until) == want  # type: ignore[arg-type]


def test_take_gives_changed_minutes_per_hour_and_restore_puts_them_back() -> None:
    part = PartitionConcurrency()
    k = (H0 + HOUR_MS - MINUTE_MS) // SAMPLE_MS + 10  # two instants before the next hour
    part.add(["all"], [(k, k + 6)])
    taken = part.take()
    assert set(taken) == {("all", H0), ("all", H0 + HOUR_MS)}
    assert taken[("all", H0)] == {H0 + HOUR_MS - MINUTE_MS: [0] * 10 + [1, 1]}
    assert taken[("all", H0 + HOUR_MS)] == {H0 + HOUR_MS: [1] * 4 + [0] * 8}
    assert part.take() == {}
    part.restore(taken)
    assert part.take() == taken
    part.add(["all"], [(k + 6, k + 7)])
    assert part.take() == {("all", H0 + HOUR_MS): {H0 + HOUR_MS: [1] * 5 + [0] * 7}}
    assert set(part.take(everything=True)) == set(taken)


def test_prune_forgets_whole_hours_before_the_horizon_for_good() -> None:
    part = PartitionConcurrency()
    k0 = H0 // SAMPLE_MS
    part.add(["all", "pb-1"], [(k0, k0 + 6)])
    part.add(["all"], [(k0 + 720, k0 + 726)])
    part.prune(H0 + HOUR_MS + 30 * MINUTE_MS)  # floored: the hour H0 goes, H0 + 1 h stays
    assert set(part.counts) == {"all"}
    assert list(part.counts["all"]) == [H0 + HOUR_MS]
    assert set(part.take()) == {("all", H0 + HOUR_MS)}
    part.add(["all"], [(k0 + 6, k0 + 12)])  # late coverage of a pruned hour is ignored
    assert part.take() == {}


def test_the_partition_counts_each_session_once_and_a_rebuild_agrees() -> None:
    """Through `PartitionAggregate` and the table's bytes: a replayed envelope (same server
    time) adds nothing, a re-sent one (new server time) extends the coverage, scopes are
    all, playback and creator."""
    from aggregator.partition import PartitionAggregate
    from ingest.registry import Playback
    from tests.aggregator.test_partition import Table, envelope, hb

    table = Table(PartitionAggregate(0))
    pb1 = Playback("pb-1", creator_id="creator-1", asset_id="a-1")
    t = H0 + 2_500
    first = envelope("s1", t, [hb("h1", t)], playback=pb1)
    table.envelope(first)
    table.envelope(first)  # replayed after a crash: the same record again
    table.envelope(envelope("s1", t + 40_000, [hb("h1", t)], playback=pb1))  # re-sent later
    table.envelope(envelope("s2", t + 10_000, [hb("x", t + 10_000)], playback_id="pb-2"))

    k = H0 // SAMPLE_MS
    s1 = {*range(k + 1, k + 7), *range(k + 9, k + 15)}
    s2 = set(range(k + 3, k + 9))
    expect = {
        "all": {i: (i in s1) + (i in s2) for i in s1 | s2},
        "playbackId=pb-1": dict.fromkeys(s1, 1),
        "creatorId=creator-1": dict.fromkeys(s1, 1),
        "playbackId=pb-2": dict.fromkeys(s2, 1),
    }
    rebuilt = PartitionAggregate(0)
    rebuilt.rebuild(Table(rebuilt, table.data).entries())
    for part in (table.part, rebuilt):
        assert {s: as_instants(m) for s, m in part.concurrency.counts.items()} == expect
    assert table.get("s1").coverage == ((k + 1, k + 7), (k + 9, k + 15))  # type: ignore[union-attr]


def test_a_steady_heartbeat_extends_the_coverage_like_any_beacon() -> None:
    """The streaming fast path for steady heartbeats (`absorb_steady_heartbeat`) counts the
    session at the instants its beacon newly covers, as the general path does: the two agree."""
    from aggregator.partition import PartitionAggregate
    from aggregator.sessions import absorb_steady_heartbeat
    from tests.aggregator.test_partition import Table, envelope, ev, hb

    t = H0 + 2_500
    start = envelope("s1", t, [ev("p", "play", t), ev("f", "first-frame", t + 900)])
    steady = envelope("s1", t + 60_000, [hb("h2", t + 60_000, time_playing_ms=5_000)])

    fast = Table(PartitionAggregate(0))
    fast.envelope(start)
    state = fast.get("s1").state  # type: ignore[union-attr]
    assert state is not None
    probe = copy.deepcopy(state)
    assert absorb_steady_heartbeat(probe, t + 60_000, steady["events"][0]) is not None
    fast.envelope(steady)  # takes the fast path: the probe above shows it applies

    general = Table(PartitionAggregate(0))
    general.envelope(envelope("s1", t, [*start["events"], *steady["events"]]))
    general.envelope({**steady, "events": []})  # the same beacon times, through apply_batch

    k = H0 // SAMPLE_MS
    assert fast.get("s1").coverage == ((k + 1, k + 7), (k + 13, k + 19))  # type: ignore[union-attr]
    assert fast.part.concurrency.counts == general.part.concurrency.counts
