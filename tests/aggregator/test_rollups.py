from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import sketch
from aggregator.definitions import BREAKDOWN_DIMENSIONS
from aggregator.keys import FULL, GRAINS, ROLLUP_GROUPS, SCOPE_DIMENSIONS
from aggregator.metrics import ZERO, Components
from aggregator.rollups import (
    PartitionRollups,
    RowId,
    RowWrite,
    Values,
    full_values,
    scopes_of,
)
from aggregator.timebuckets import DAY_MS, HOUR_MS, MINUTE_MS, floor

DAY0 = 1_709_164_800_000  # 2024-02-29T00:00:00Z
H0 = DAY0 + 12 * HOUR_MS

Dims = dict[str, str | None]
Rows = dict[RowId, dict[Values, Components]]
Contribution = tuple[Dims, dict[int, Components]]


def dims(**overrides: str | None) -> Dims:
    base: Dims = {d: f"{d}-0" for d in BREAKDOWN_DIMENSIONS}
    base.update(overrides)
    return base


def view(playing_ms: int = 0, ttff_ms: int | None = None, **counters: int) -> Components:
    ttff = {} if ttff_ms is None else {"ttff_sum_ms": ttff_ms, "ttff_count": 1}
    buckets = () if ttff_ms is None else ((sketch.bucket_of(ttff_ms), 1),)
    return Components(
        views=1, sessions=1, playing_ms=playing_ms, ttff_buckets=buckets, **ttff, **counters
    )


def live_rows(rollups: PartitionRollups) -> Rows:
    """The rows holding data (a row emptied by `fold` stays as `{}` until `take_dirty`)."""
    return {row_id: dict(row) for row_id, row in rollups.rows.items() if row}


def apply_writes(redis: dict[RowId, dict[Values, Components]], writes: Sequence[RowWrite]) -> None:
    """A model of `RollupWriter.write` for one partition: set the values, drop the deleted."""
    for write in writes:
        stored = redis.setdefault(write.row, {})
        stored.update(write.values)
        for values in write.deleted:
            stored.pop(values, None)
        if not stored:
            del redis[write.row]


def fan_out(full: Values, hour_ms: int) -> set[RowId]:
    """Every row a delta at (full, hour) lands in: the definition `fold` must follow."""
    named = dict(zip(FULL, full, strict=True))
    out = set()
    for grain in GRAINS:
        bucket = hour_ms if grain == "hour" else floor(hour_ms, "day")
        for group in ROLLUP_GROUPS:
            scope_value = None if group.scope_dim is None else named[group.scope_dim]
            if group.scope_dim is not None and scope_value is None:
                continue
            out.add(RowId(grain, bucket, group.scope_dim, scope_value, group.dims))
    return out


# -- strategies -------------------------------------------------------------------------------

_VALUES: dict[str, list[str | None]] = {d: [f"{d}-a", f"{d}-b", None] for d in BREAKDOWN_DIMENSIONS}
_VALUES["playbackId"] = ["pb-1", "pb-2", "pb-3"]  # every envelope has one
_VALUES["viewerId"] = ["viewer-1", "viewer-2"]
_VALUES["creatorId"] = ["creator-1", "creator-2", None]

dims_st = st.fixed_dictionaries({d: st.sampled_from(v) for d, v in _VALUES.items()})
hours_st = st.sampled_from(
    [DAY0 + day * DAY_MS + h * HOUR_MS for day in (0, 1, 3) for h in (0, 7, 23)]
)


@st.composite
def positive_components(draw: st.DrawFn) -> Components:
    ttffs = draw(st.lists(st.integers(0, 20_000), max_size=2))
    counts = sketch.build(ttffs)
    return Components.with_ttff_counts(
        counts,
        views=draw(st.integers(0, 2)),
        sessions=draw(st.integers(0, 3)),
        playing_ms=draw(st.integers(0, 50_000)),
        buffer_ms=draw(st.integers(0, 5_000)),
        ttff_sum_ms=sum(ttffs),
        ttff_count=len(ttffs),
        error_sessions=draw(st.integers(0, 1)),
        exits_before_start=draw(st.integers(0, 1)),
    )


@st.composite
def contributions(draw: st.DrawFn, max_size: int = 8) -> list[Contribution]:
    """Sessions' per-hour deltas in some arrival order, including retractions.

    Each positive delta may be retracted by a later (or earlier) negative one, possibly split
    in two, so every stored total ends non-negative while intermediate ones may not be.
    """
    base = draw(
        st.lists(
            st.tuples(
                dims_st, st.dictionaries(hours_st, positive_components(), min_size=1, max_size=3)
            ),
            min_size=1,
            max_size=max_size,
        )
    )
    out: list[Contribution] = [(d, dict(by_hour)) for d, by_hour in base]
    for d, by_hour in base:
        for hour, delta in by_hour.items():
            if draw(st.booleans()):
                part = draw(positive_components())
                out.append((d, {hour: -part}))
                out.append((d, {hour: part - delta}))
    return draw(st.permutations(out))


def model(items: Sequence[Contribution]) -> dict[tuple[Values, int], Components]:
    """Net delta per (full dimension tuple, hour)."""
    out: dict[tuple[Values, int], Components] = {}
    for d, by_hour in items:
        for hour, delta in by_hour.items():
            key = (full_values(d), hour)
            out[key] = out.get(key, ZERO) + delta
    return {k: v for k, v in out.items() if not v.is_zero()}


def folded(items: Sequence[Contribution], *, fold_every: int = 0) -> PartitionRollups:
    rollups = PartitionRollups()
    for i, (d, by_hour) in enumerate(items):
        rollups.add(d, by_hour)
        if fold_every and i % fold_every == 0:
            rollups.fold()
    rollups.fold()
    return rollups


def expected_rows(items: Sequence[Contribution]) -> Rows:
    """The rows by their definition: every group's projection of every net delta."""
    rows: Rows = {}
    for (full, hour), delta in model(items).items():
        named = dict(zip(FULL, full, strict=True))
        for row_id in fan_out(full, hour):
            values = tuple(named[d] for d in row_id.dims)
            row = rows.setdefault(row_id, {})
            row[values] = row.get(values, ZERO) + delta
    return {
        row_id: {v: c for v, c in row.items() if not c.is_zero()}
        for row_id, row in rows.items()
        if any(not c.is_zero() for c in row.values())
    }


# -- tables -----------------------------------------------------------------------------------


def test_one_session_lands_in_every_group_and_grain() -> None:
    rollups = PartitionRollups()
    d = dims(creatorId="creator-1")
    rollups.add(d, {H0: view(playing_ms=4_000, ttff_ms=300)})
    rollups.fold()
    rows = live_rows(rollups)
    # per grain: all + playbackId + creatorId scopes, each with (), its singles and FULL
    per_scope = {None: 1 + 14 + 1, "playbackId": 1 + 13 + 1, "creatorId": 1 + 13 + 1}
    assert len(rows) == len(GRAINS) * sum(per_scope.values())
    hour_all = rows[RowId("hour", H0, None, None, ())]
    assert hour_all == {(): view(playing_ms=4_000, ttff_ms=300)}
    assert rows[RowId("day", DAY0, None, None, ())] == hour_all
    assert rows[RowId("hour", H0, None, None, ("country",))] == {
        ("country-0",): view(playing_ms=4_000, ttff_ms=300)
    }
    assert rows[RowId("hour", H0, "creatorId", "creator-1", ("playbackId",))] == {
        ("playbackId-0",): view(playing_ms=4_000, ttff_ms=300)
    }
    assert rows[RowId("hour", H0, None, None, FULL)] == {
        full_values(d): view(playing_ms=4_000, ttff_ms=300)
    }


def test_a_none_creator_is_a_breakdown_value_but_never_a_scope() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(creatorId=None), {H0: view()})
    rollups.fold()
    rows = live_rows(rollups)
    assert not [r for r in rows if r.scope_dim == "creatorId"]
    assert rows[RowId("hour", H0, None, None, ("creatorId",))] == {(None,): view()}
    scoped = RowId("hour", H0, "playbackId", "playbackId-0", ("creatorId",))
    assert rows[scoped] == {(None,): view()}


def test_missing_dimensions_are_none() -> None:
    assert full_values({"playbackId": "pb"}) == ("pb",) + (None,) * (len(FULL) - 1)


def test_add_without_fold_changes_nothing() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(), {H0: view()})
    assert rollups.rows == {}
    assert rollups.take_dirty() == []


def test_deltas_that_cancel_before_a_fold_write_nothing() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(), {H0: view(), H0 + HOUR_MS: view()})
    rollups.add(dims(), {H0: -view(), H0 + HOUR_MS: -view()})
    rollups.fold()
    assert rollups.rows == {}
    assert rollups.take_dirty() == []


def test_take_dirty_writes_changed_rows_and_deletes_vanished_tuples() -> None:
    rollups = PartitionRollups()
    a, b = dims(country="DE"), dims(country="US")
    rollups.add(a, {H0: view()})
    rollups.fold()
    first = {w.row: w for w in rollups.take_dirty()}
    assert all(w.deleted == () for w in first.values())
    assert set(first) == fan_out(full_values(a), H0)

    # a's session moves to b's country and the next hour: a's tuples vanish everywhere
    rollups.add(a, {H0: -view()})
    rollups.add(b, {H0 + HOUR_MS: view()})
    rollups.fold()
    second = {w.row: w for w in rollups.take_dirty()}
    assert set(second) == fan_out(full_values(a), H0) | fan_out(full_values(b), H0 + HOUR_MS)

    hour_all = RowId("hour", H0, None, None, ())
    assert second[hour_all] == RowWrite(hour_all, {}, ((),))
    hour_country = RowId("hour", H0, None, None, ("country",))
    assert second[hour_country] == RowWrite(hour_country, {}, (("DE",),))
    next_country = RowId("hour", H0 + HOUR_MS, None, None, ("country",))
    assert second[next_country] == RowWrite(next_country, {("US",): view()}, ())
    day_country = RowId("day", DAY0, None, None, ("country",))
    assert second[day_country] == RowWrite(day_country, {("US",): view()}, (("DE",),))
    # emptied rows are forgotten once written
    assert hour_all not in rollups.rows
    assert rollups.take_dirty() == []

    # a third flush with nothing new deletes nothing again
    rollups.add(b, {H0 + HOUR_MS: view()})
    rollups.fold()
    third = {w.row: w for w in rollups.take_dirty()}
    assert all(w.deleted == () for w in third.values())
    assert third[next_country].values == {("US",): view() + view()}


def test_a_row_emptied_before_its_first_write_deletes_nothing() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(), {H0: view()})
    rollups.fold()
    rollups.add(dims(), {H0: -view()})
    rollups.fold()
    writes = rollups.take_dirty()
    assert writes and all(w.values == {} and w.deleted == () for w in writes)
    assert rollups.rows == {}


def test_restore_unwritten_rewrites_rows_and_their_deletions() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(country="DE"), {H0: view()})
    rollups.fold()
    rollups.take_dirty()  # written
    rollups.add(dims(country="DE"), {H0: -view()})
    rollups.add(dims(country="US"), {H0: view()})
    rollups.fold()
    failed = rollups.take_dirty()
    rollups.restore_unwritten(failed)
    retried = {w.row: w for w in rollups.take_dirty()}
    assert set(retried) == {w.row for w in failed}
    for write in failed:
        assert retried[write.row].values == write.values
        assert set(retried[write.row].deleted) == set(write.deleted)
    country = RowId("hour", H0, None, None, ("country",))
    assert retried[country] == RowWrite(country, {("US",): view()}, (("DE",),))
    assert rollups.take_dirty() == []


def test_mark_all_dirty_rewrites_everything_without_deletions() -> None:
    rollups = PartitionRollups()
    rollups.add(dims(country="DE"), {H0: view()})
    rollups.add(dims(country="US"), {H0 + DAY_MS: view()})
    rollups.fold()
    rollups.take_dirty()
    assert rollups.take_dirty() == []
    rollups.mark_all_dirty()
    writes = rollups.take_dirty()
    assert {w.row: w.values for w in writes} == live_rows(rollups)
    assert all(w.deleted == () for w in writes)


# -- laws -------------------------------------------------------------------------------------


def _sum(row: Mapping[Values, Components]) -> Components:
    return Components.total(row.values())


@settings(max_examples=150, deadline=None)
@given(contributions())
def test_rows_are_the_projections_of_the_contributions(items: list[Contribution]) -> None:
    assert live_rows(folded(items)) == expected_rows(items)


@settings(max_examples=150, deadline=None)
@given(contributions())
def test_every_row_adds_up_to_its_no_breakdown_row(items: list[Contribution]) -> None:
    rows = live_rows(folded(items))
    totals = {r: _sum(v) for r, v in rows.items() if r.dims == ()}
    for row_id, row in rows.items():
        assert all(not c.is_zero() for c in row.values())
        base = RowId(row_id.grain, row_id.bucket_ms, row_id.scope_dim, row_id.scope_value, ())
        assert _sum(row) == totals[base], row_id
    for base, total in totals.items():
        scope = [d for d in BREAKDOWN_DIMENSIONS if d != base.scope_dim]
        for group_dims in [*((d,) for d in scope), FULL]:
            row_id = RowId(base.grain, base.bucket_ms, base.scope_dim, base.scope_value, group_dims)
            assert _sum(rows[row_id]) == total, row_id


@settings(max_examples=150, deadline=None)
@given(contributions())
def test_day_rows_are_the_sum_of_their_hours(items: list[Contribution]) -> None:
    rows = live_rows(folded(items))
    summed: Rows = {}
    for row_id, row in rows.items():
        if row_id.grain != "hour":
            continue
        day = RowId(
            "day", floor(row_id.bucket_ms, "day"), row_id.scope_dim, row_id.scope_value, row_id.dims
        )
        target = summed.setdefault(day, {})
        for values, c in row.items():
            target[values] = target.get(values, ZERO) + c
    summed = {r: {v: c for v, c in row.items() if not c.is_zero()} for r, row in summed.items()}
    assert {r: v for r, v in rows.items() if r.grain == "day"} == {
        r: v for r, v in summed.items() if v
    }


@settings(max_examples=150, deadline=None)
@given(contributions())
def test_a_scope_row_is_its_value_in_the_unscoped_breakdown(items: list[Contribution]) -> None:
    rows = live_rows(folded(items))
    for row_id, row in rows.items():
        if row_id.dims == () and row_id.scope_dim is not None:
            assert row_id.scope_value is not None
            unscoped = rows[RowId(row_id.grain, row_id.bucket_ms, None, None, (row_id.scope_dim,))]
            assert unscoped[(row_id.scope_value,)] == row[()]
    for row_id, row in rows.items():
        if row_id.scope_dim is None and row_id.dims in {(d,) for d in SCOPE_DIMENSIONS}:
            for (value,), c in row.items():
                scoped = RowId(row_id.grain, row_id.bucket_ms, row_id.dims[0], value, ())
                if value is None:
                    assert scoped not in rows
                else:
                    assert rows[scoped] == {(): c}


@settings(max_examples=100, deadline=None)
@given(contributions(), st.randoms(use_true_random=False), st.integers(0, 4))
def test_add_order_and_fold_points_do_not_matter(
    items: list[Contribution], rnd: random.Random, fold_every: int
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert live_rows(folded(shuffled, fold_every=fold_every)) == live_rows(folded(items))


Flush = tuple[list[Contribution], bool, list[bool]]


@st.composite
def flushes(draw: st.DrawFn) -> list[Flush]:
    """Batches of contributions, each flushed; a flush may fail after writing some of its rows.

    The contributions of all batches together are non-negative totals (see `contributions`).
    """
    items = draw(contributions(max_size=5))
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=4)))
    batches = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    out: list[Flush] = []
    for batch in batches:
        fails = draw(st.booleans())
        applied = draw(st.lists(st.booleans(), min_size=200, max_size=200)) if fails else []
        out.append((batch, fails, applied))
    return out


@settings(max_examples=150, deadline=None)
@given(flushes())
def test_take_dirty_writes_exactly_the_touched_rows_and_keeps_redis_exact(
    plan: list[Flush],
) -> None:
    rollups = PartitionRollups()
    redis: Rows = {}
    written: dict[RowId, set[Values]] = {}  # tuples redis holds after the successful writes
    sent: dict[RowId, set[Values]] = {}  # tuples any write ever carried, per row
    retried: set[RowId] = set()
    failed_before = False
    done: list[Contribution] = []
    for batch, fails, applied in plan:
        before = live_rows(rollups)
        for d, by_hour in batch:
            rollups.add(d, by_hour)
        rollups.fold()
        done += batch
        writes = rollups.take_dirty()
        after = live_rows(rollups)
        assert after == expected_rows(done)

        rows = [w.row for w in writes]
        assert len(rows) == len(set(rows))
        touched = set().union(*(fan_out(full, hour) for full, hour in model(batch)))
        assert set(rows) == touched | retried
        changed = {r for r in before.keys() | after.keys() if before.get(r) != after.get(r)}
        assert changed <= set(rows)
        for write in writes:
            # Only the tuples that changed are written, each with its current value.
            current = after.get(write.row, {})
            assert write.values.items() <= current.items()
            deleted = set(write.deleted)
            assert len(deleted) == len(write.deleted)
            assert not deleted & set(write.values)
            assert not deleted & set(current)
            if failed_before:  # a failed write may have reached redis: delete what it sent
                assert deleted <= sent.get(write.row, set())
                assert set(redis.get(write.row, {})) - set(current) <= deleted
            else:
                assert deleted <= written.get(write.row, set())
                assert written.get(write.row, set()) - set(current) <= deleted
            sent.setdefault(write.row, set()).update(write.values)
        if fails:
            # a pipeline that broke half way: some rows reached redis, all are retried
            apply_writes(redis, [w for w, ok in zip(writes, applied, strict=False) if ok])
            rollups.restore_unwritten(writes)
            retried = set(rows)
            failed_before = True
            continue
        apply_writes(redis, writes)
        for w in writes:
            written[w.row] = (written.get(w.row, set()) | set(w.values)) - set(w.deleted)
        retried = set()
        assert redis == after
    # a last flush that succeeds leaves redis holding exactly the rows
    apply_writes(redis, rollups.take_dirty())
    assert redis == live_rows(rollups)


@settings(max_examples=100, deadline=None)
@given(flushes())
def test_mark_all_dirty_refills_an_empty_redis(plan: list[Flush]) -> None:
    rollups = PartitionRollups()
    for batch, _, _ in plan:
        for d, by_hour in batch:
            rollups.add(d, by_hour)
        rollups.fold()
        rollups.take_dirty()
    rollups.mark_all_dirty()
    writes = rollups.take_dirty()
    assert all(w.deleted == () for w in writes)
    redis: Rows = {}
    apply_writes(redis, writes)
    assert redis == live_rows(rollups)


# -- minute rows ------------------------------------------------------------------------------

M0 = H0 + 17 * MINUTE_MS


def minute_rows(rollups: PartitionRollups) -> Rows:
    return {r: row for r, row in live_rows(rollups).items() if r.grain == "minute"}


def test_a_minute_delta_lands_in_its_scopes_no_breakdown_rows_only() -> None:
    rollups = PartitionRollups()
    d = dims(playbackId="pb-1", creatorId="creator-1")
    rollups.add_minutes(full_values(d), {M0: view(playing_ms=4_000, ttff_ms=300)})
    rollups.add_minute_activity(scopes_of(full_values(d)), M0 + MINUTE_MS, 5_000, 250)
    rollups.add_minute_activity(scopes_of(full_values(d)), M0 + MINUTE_MS, 1_000, 0)
    rollups.fold()
    first = view(playing_ms=4_000, ttff_ms=300)
    second = Components(playing_ms=6_000, buffer_ms=250)
    want = {}
    for minute, c in ((M0, first), (M0 + MINUTE_MS, second)):
        for scope_dim, value in ((None, None), ("playbackId", "pb-1"), ("creatorId", "creator-1")):
            want[RowId("minute", minute, scope_dim, value, ())] = {(): c}
    assert live_rows(rollups) == want  # and nothing at the hour or day grains
    assert {w.row: w.values for w in rollups.take_dirty()} == want


def test_a_minute_delta_without_creator_has_no_creator_scope() -> None:
    rollups = PartitionRollups()
    rollups.add_minutes(full_values(dims(playbackId="pb-2", creatorId=None)), {M0: view()})
    rollups.fold()
    assert set(live_rows(rollups)) == {
        RowId("minute", M0, None, None, ()),
        RowId("minute", M0, "playbackId", "pb-2", ()),
    }


@settings(max_examples=100, deadline=None)
@given(contributions(), st.sampled_from([0, 7, 59]))
def test_minute_rows_add_up_to_their_hour_rows(items: list[Contribution], minute: int) -> None:
    """The same deltas given by minute and by hour: each scope's minutes sum to its hour."""
    rollups = PartitionRollups()
    for d, by_hour in items:
        rollups.add(d, by_hour)
        rollups.add_minutes(full_values(d), {h + minute * MINUTE_MS: c for h, c in by_hour.items()})
    rollups.fold()
    rows = live_rows(rollups)
    hours = {r: row for r, row in rows.items() if r.grain == "hour" and r.dims == ()}
    minutes = {
        RowId("hour", floor(r.bucket_ms, "hour"), r.scope_dim, r.scope_value, ()): row
        for r, row in rows.items()
        if r.grain == "minute"
    }
    assert minutes == hours


def test_prune_drops_old_minutes_for_good_and_never_moves_back() -> None:
    rollups = PartitionRollups()
    full = full_values(dims())
    rollups.add_minutes(full, {M0: view(), M0 + MINUTE_MS: view()})
    rollups.fold()
    rollups.add_minutes(full, {M0: view()})  # queued when the horizon passes it: dropped too
    rollups.prune_minutes(M0 + MINUTE_MS + 30_000)  # floored: M0 goes, M0 + 1 min stays
    assert rollups.minute_horizon_ms == M0 + MINUTE_MS
    rollups.fold()
    assert {r.bucket_ms for r in minute_rows(rollups)} == {M0 + MINUTE_MS}
    assert {w.row.bucket_ms for w in rollups.take_dirty()} == {M0 + MINUTE_MS}
    rollups.add_minutes(full, {M0: view()})  # a late delta to a pruned minute is ignored
    rollups.add_minute_activity(scopes_of(full), M0, 1_000, 0)
    rollups.prune_minutes(M0)  # an older horizon changes nothing
    rollups.fold()
    assert rollups.minute_horizon_ms == M0 + MINUTE_MS
    assert rollups.take_dirty() == []
    # a failed write of a minute pruned since is not retried
    rollups.add_minutes(full, {M0 + MINUTE_MS: view()})
    rollups.fold()
    failed = rollups.take_dirty()
    rollups.prune_minutes(M0 + 2 * MINUTE_MS)
    rollups.restore_unwritten(failed)
    assert rollups.take_dirty() == [] and minute_rows(rollups) == {}
