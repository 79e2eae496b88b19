"""One partition's rollups: absolute per-row components, derived from its sessions' contributions.

Pure and in memory. The worker adds each session's per-hour deltas (`add`), folds them into the
stored groups of `aggregator.keys` once per flush (`fold`: the fan-out to every group and grain
happens per session and hour per flush, not per event), and writes the rows that changed
(`take_dirty`). Because every value here is a sum of session contributions, the whole state can
be rebuilt from the sessions table after a restart, and rewritten to an empty Redis.

The fan-out is the worker's hottest loop (46 groups x 2 grains per session and hour, every
flush), so it works on mutable accumulators (`_Acc`) rather than immutable `Components`, and
remembers each (dimension tuple, hour)'s list of target accumulators: a fold is then a few
integer additions per target. `Components` appear only at the edges (`add`, `take_dirty`,
`rows`).

Minute rows (`keys.MINUTE_GROUPS`: each scope without a breakdown) take the sessions' per-minute
deltas (`add_minutes`, `add_minute_activity`) and fan out to at most 3 rows. They are kept from
`minute_horizon_ms` on (`prune_minutes`): older rows are dropped and deltas before it ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aggregator.keys import FULL, GRAINS, MINUTE, MINUTE_GROUPS, ROLLUP_GROUPS, Group
from aggregator.metrics import COUNTERS, Components
from aggregator.timebuckets import MINUTE_MS, floor

Values = tuple[str | None, ...]

_N = len(COUNTERS)
_SCOPE_INDEXES = tuple(
    (g.scope_dim, None if g.scope_dim is None else FULL.index(g.scope_dim)) for g in MINUTE_GROUPS
)
assert [d for d, _ in _SCOPE_INDEXES] == [None, "playbackId", "creatorId"]  # `scopes_of`
_PLAYBACK, _CREATOR = FULL.index("playbackId"), FULL.index("creatorId")
Scopes = tuple[str | None, ...]  # a full tuple's values of the scope dimensions, in group order
_TARGET_CACHE_MAX = 50_000  # (tuple, hour) fan-out plans kept; cleared when full


@dataclass(frozen=True, slots=True)
class RowId:
    grain: str
    bucket_ms: int
    scope_dim: str | None
    scope_value: str | None
    dims: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RowWrite:
    """What to write for one row: the current tuples, and the ones written before that are gone."""

    row: RowId
    values: dict[Values, Components]
    deleted: tuple[Values, ...]


class _Acc:
    """The running sum of one tuple of one row, and its write bookkeeping."""

    __slots__ = ("counters", "dirty", "row", "ttff", "values", "written")

    def __init__(self, row: RowId, values: Values) -> None:
        self.counters = [0] * _N
        self.ttff: dict[int, int] = {}
        self.dirty = False
        self.written = False  # Redis may hold this tuple (so a zero sum must be deleted)
        self.row = row
        self.values = values

    def is_zero(self) -> bool:
        return not self.ttff and not any(self.counters)

    def components(self) -> Components:
        return Components.from_parts(self.counters, self.ttff)


@dataclass(frozen=True, slots=True)
class _Delta:
    """A queued delta in the fold's sparse form: non-zero counters and sketch buckets."""

    counters: tuple[tuple[int, int], ...]
    ttff: tuple[tuple[int, int], ...]
    has_negative: bool

    @classmethod
    def of(cls, c: Components) -> _Delta:
        counters = tuple((i, v) for i, v in enumerate(c.counter_values()) if v)
        negative = any(v < 0 for _, v in counters) or any(n < 0 for _, n in c.ttff_buckets)
        return cls(counters, c.ttff_buckets, negative)


def full_values(dims: Mapping[str, str | None]) -> Values:
    return tuple(dims.get(d) for d in FULL)


def scopes_of(full: Values) -> Scopes:
    """The values of a full tuple that select its minute rows' scopes (`MINUTE_GROUPS`)."""
    return (None, full[_PLAYBACK], full[_CREATOR])


def _projector(group: Group) -> Callable[[Values], Values]:
    """Picks a group's dimension values out of a full tuple."""
    positions = [FULL.index(d) for d in group.dims]
    if not positions:
        return lambda full: ()
    if len(positions) == 1:
        (i,) = positions
        return lambda full: (full[i],)
    if len(positions) == len(FULL):
        return lambda full: full
    return lambda full: tuple(full[i] for i in positions)


@dataclass(slots=True)
class PartitionRollups:
    groups: tuple[Group, ...] = ROLLUP_GROUPS
    grains: tuple[str, ...] = GRAINS
    _rows: dict[RowId, dict[Values, _Acc]] = field(default_factory=dict)
    _pending: dict[tuple[Values, int], Components] = field(default_factory=dict)
    _activity: dict[tuple[Values, int], list[int]] = field(default_factory=dict)
    _dirty: list[_Acc] = field(default_factory=list)
    _targets: dict[tuple[Values, int], list[_Acc]] = field(default_factory=dict)
    _plan: list[tuple[Group, int | None, Callable[[Values], Values]]] = field(init=False)
    minute_horizon_ms: int = 0  # minute rows before this are dropped, deltas to them ignored
    _minute_pending: dict[tuple[Scopes, int], Components] = field(default_factory=dict)
    _minute_activity: dict[tuple[Scopes, int], list[int]] = field(default_factory=dict)
    _minute_targets: dict[tuple[Scopes, int], list[_Acc]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._plan = [
            (g, None if g.scope_dim is None else FULL.index(g.scope_dim), _projector(g))
            for g in self.groups
        ]

    @property
    def rows(self) -> dict[RowId, dict[Values, Components]]:
        """The current non-zero sums per row (a copy; rows with none are left out)."""
        out = {}
        for row_id, row in self._rows.items():
            live = {v: acc.components() for v, acc in row.items() if not acc.is_zero()}
            if live:
                out[row_id] = live
        return out

    def add(self, dims: Mapping[str, str | None], by_hour: Mapping[int, Components]) -> None:
        """Queue a session's deltas, keyed by hour bucket start, under its dimensions."""
        self.add_full(full_values(dims), by_hour)

    def add_full(self, full: Values, by_hour: Mapping[int, Components]) -> None:
        """`add` with the dimension tuple already built (`full_values`)."""
        pending = self._pending
        for hour_ms, delta in by_hour.items():
            key = (full, hour_ms)
            queued = pending.get(key)
            pending[key] = delta if queued is None else queued + delta

    def add_activity(self, full: Values, hour_ms: int, playing_ms: int, buffer_ms: int) -> None:
        """`add_full(full, {hour_ms: Components(playing_ms=..., buffer_ms=...)})`, summed in
        place: a heartbeat's delta, the most common by far."""
        queued = self._activity.get((full, hour_ms))
        if queued is None:
            self._activity[(full, hour_ms)] = [playing_ms, buffer_ms]
        else:
            queued[0] += playing_ms
            queued[1] += buffer_ms

    def add_minutes(self, full: Values, by_minute: Mapping[int, Components]) -> None:
        """Queue a session's deltas keyed by minute start (those before the horizon are
        ignored) for its minute rows."""
        scopes = scopes_of(full)
        pending = self._minute_pending
        for minute_ms, delta in by_minute.items():
            if minute_ms < self.minute_horizon_ms:
                continue
            key = (scopes, minute_ms)
            queued = pending.get(key)
            pending[key] = delta if queued is None else queued + delta

    def add_minute_activity(
        self, scopes: Scopes, minute_ms: int, playing_ms: int, buffer_ms: int
    ) -> None:
        """`add_minutes` of a heartbeat's activity, summed in place (`add_activity`), with the
        session's `scopes_of` its full tuple."""
        if minute_ms < self.minute_horizon_ms:
            return
        key = (scopes, minute_ms)
        queued = self._minute_activity.get(key)
        if queued is None:
            self._minute_activity[key] = [playing_ms, buffer_ms]
        else:
            queued[0] += playing_ms
            queued[1] += buffer_ms

    def prune_minutes(self, horizon_ms: int) -> None:
        """Forget minute rows (and queued deltas) before `horizon_ms` (floored to the minute),
        for good: later deltas to them are ignored. The horizon never moves back."""
        horizon_ms -= horizon_ms % MINUTE_MS
        if horizon_ms <= self.minute_horizon_ms:
            return
        self.minute_horizon_ms = horizon_ms
        for queue in (self._minute_pending, self._minute_activity):
            for key in [k for k in queue if k[1] < horizon_ms]:
                del queue[key]
        old = [r for r in self._rows if r.grain == MINUTE and r.bucket_ms < horizon_ms]
        if not old:
            return
        for row_id in old:
            del self._rows[row_id]
        self._dirty = [
            a for a in self._dirty if a.row.grain != MINUTE or a.row.bucket_ms >= horizon_ms
        ]
        self._minute_targets.clear()

    def _minute_fan_out(self, scopes: Scopes, minute_ms: int) -> list[_Acc]:
        targets = []
        for (scope_dim, index), scope_value in zip(_SCOPE_INDEXES, scopes, strict=True):
            if index is not None and scope_value is None:
                continue
            row_id = RowId(MINUTE, minute_ms, scope_dim, scope_value, ())
            row = self._rows.get(row_id)
            if row is None:
                row = self._rows[row_id] = {}
            acc = row.get(())
            if acc is None:
                acc = row[()] = _Acc(row_id, ())
            targets.append(acc)
        return targets

    def _fan_out(self, full: Values, hour_ms: int) -> list[_Acc]:
        """The accumulators a delta at (full, hour) lands in, created where missing."""
        targets = []
        rows = self._rows
        for grain in self.grains:
            bucket_ms = hour_ms if grain == "hour" else floor(hour_ms, "day")
            for group, scope_index, project in self._plan:
                scope_value = None if scope_index is None else full[scope_index]
                if scope_index is not None and scope_value is None:
                    continue  # e.g. an unregistered playback has no creator scope
                row_id = RowId(grain, bucket_ms, group.scope_dim, scope_value, group.dims)
                values = project(full)
                row = rows.get(row_id)
                if row is None:
                    row = rows[row_id] = {}
                acc = row.get(values)
                if acc is None:
                    acc = row[values] = _Acc(row_id, values)
                targets.append(acc)
        return targets

    def fold(self) -> None:
        """Fan the queued deltas out to every stored group and grain."""
        activity, self._activity = self._activity, {}
        for key, (playing_ms, buffer_ms) in activity.items():
            self.add_full(key[0], {key[1]: Components(playing_ms=playing_ms, buffer_ms=buffer_ms)})
        pending, self._pending = self._pending, {}
        self._fold(pending, self._targets, self._fan_out)
        minute_activity, self._minute_activity = self._minute_activity, {}
        minute_pending, self._minute_pending = self._minute_pending, {}
        for key, (playing_ms, buffer_ms) in minute_activity.items():
            delta = Components(playing_ms=playing_ms, buffer_ms=buffer_ms)
            queued = minute_pending.get(key)
            minute_pending[key] = delta if queued is None else queued + delta
        self._fold(minute_pending, self._minute_targets, self._minute_fan_out)

    def _fold(
        self,
        pending: Mapping[tuple[Any, int], Components],
        cache: dict[tuple[Any, int], list[_Acc]],
        fan_out: Callable[[Any, int], list[_Acc]],
    ) -> None:
        dirty = self._dirty
        for key, components in pending.items():
            if components.is_zero():
                continue
            targets = cache.get(key)
            if targets is None:
                if len(cache) >= _TARGET_CACHE_MAX:
                    cache.clear()
                targets = cache[key] = fan_out(*key)
            delta = _Delta.of(components)
            counters, ttff = delta.counters, delta.ttff
            for acc in targets:
                sums = acc.counters
                for i, v in counters:
                    sums[i] += v
                if ttff:
                    sketch = acc.ttff
                    for b, n in ttff:
                        total = sketch.get(b, 0) + n
                        if total:
                            sketch[b] = total
                        else:
                            del sketch[b]
                if not acc.dirty:
                    acc.dirty = True
                    dirty.append(acc)

    def mark_all_dirty(self) -> None:
        """Everything is written again at the next flush (Redis lost its data, or a rebuild)."""
        for row in self._rows.values():
            for acc in row.values():
                acc.written = False  # replace mode clears what was there: nothing to delete
                if not acc.dirty:
                    acc.dirty = True
                    self._dirty.append(acc)

    def take_dirty(self) -> list[RowWrite]:
        """The tuples that changed since the last take, per row: current values to set, and
        the tuples written before that are gone now (to delete)."""
        by_row: dict[RowId, tuple[dict[Values, Components], list[Values]]] = {}
        emptied = False
        for acc in self._dirty:
            acc.dirty = False
            entry = by_row.get(acc.row)
            if entry is None:
                entry = by_row[acc.row] = ({}, [])
            if not acc.is_zero():
                entry[0][acc.values] = acc.components()
                acc.written = True
                continue
            if acc.written:
                entry[1].append(acc.values)
            row = self._rows.get(acc.row)
            if row is not None and row.get(acc.values) is acc:
                del row[acc.values]
                if not row:
                    del self._rows[acc.row]
            emptied = True
        self._dirty = []
        if emptied:  # the fan-out plans may hold removed accumulators
            self._targets.clear()
            self._minute_targets.clear()
        return [RowWrite(row, values, tuple(deleted)) for row, (values, deleted) in by_row.items()]

    def restore_unwritten(self, writes: Iterable[RowWrite]) -> None:
        """Marks the tuples of failed writes dirty again, so the next flush retries them."""
        for write in writes:
            if write.row.grain == MINUTE and write.row.bucket_ms < self.minute_horizon_ms:
                continue  # pruned since: past retention
            row = self._rows.setdefault(write.row, {})
            for values in (*write.values, *write.deleted):
                acc = row.get(values)
                if acc is None:  # deleted: keep a zero sum around to delete it again
                    acc = row[values] = _Acc(write.row, values)
                    self._targets.clear()
                    self._minute_targets.clear()
                # Redis may hold any of these tuples: delete whichever is not current next time.
                acc.written = True
                if not acc.dirty:
                    acc.dirty = True
                    self._dirty.append(acc)
            if not row:
                del self._rows[write.row]
