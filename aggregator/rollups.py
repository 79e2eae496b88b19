"""One partition's rollups: absolute per-row components, derived from its sessions' contributions.

Pure and in memory. The worker adds each session's per-hour deltas (`add`), folds them into the
stored groups of `aggregator.keys` once per flush (`fold`: the fan-out to every group and grain
happens per session and hour per flush, not per event), and writes the rows that changed
(`take_dirty`). Because every value here is a sum of session contributions, the whole state can
be rebuilt from the sessions table after a restart, and rewritten to an empty Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aggregator.keys import FULL, GRAINS, ROLLUP_GROUPS, Group
from aggregator.metrics import Components
from aggregator.timebuckets import floor

Values = tuple[str | None, ...]


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


def full_values(dims: Mapping[str, str | None]) -> Values:
    return tuple(dims.get(d) for d in FULL)


def _projector(group: Group) -> Callable[[Values], Values]:
    """Picks a group's dimension values out of a full tuple (precomputed: this is hot)."""
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
    rows: dict[RowId, dict[Values, Components]] = field(default_factory=dict)
    _pending: dict[tuple[Values, int], Components] = field(default_factory=dict)
    _dirty: dict[RowId, set[Values]] = field(default_factory=dict)
    _written: dict[RowId, set[Values]] = field(default_factory=dict)
    _plan: list[tuple[Group, int | None, Callable[[Values], Values]]] = field(init=False)

    def __post_init__(self) -> None:
        self._plan = [
            (g, None if g.scope_dim is None else FULL.index(g.scope_dim), _projector(g))
            for g in self.groups
        ]

    def add(self, dims: Mapping[str, str | None], by_hour: Mapping[int, Components]) -> None:
        """Queue a session's deltas, keyed by hour bucket start, under its dimensions."""
        full = full_values(dims)
        for hour_ms, delta in by_hour.items():
            key = (full, hour_ms)
            queued = self._pending.get(key)
            self._pending[key] = delta if queued is None else queued + delta

    def fold(self) -> None:
        """Fan the queued deltas out to every stored group and grain."""
        pending, self._pending = self._pending, {}
        rows, dirty = self.rows, self._dirty
        for (full, hour_ms), delta in pending.items():
            if delta.is_zero():
                continue
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
                    current = row.get(values)
                    total = delta if current is None else current + delta
                    if total.is_zero():
                        row.pop(values, None)
                    else:
                        row[values] = total
                    marked = dirty.get(row_id)
                    if marked is None:
                        dirty[row_id] = {values}
                    else:
                        marked.add(values)

    def mark_all_dirty(self) -> None:
        """Everything is written again at the next flush (Redis lost its data, or a rebuild)."""
        for row_id, row in self.rows.items():
            self._dirty.setdefault(row_id, set()).update(row)
        self._written.clear()

    def take_dirty(self) -> list[RowWrite]:
        """The tuples that changed since the last take, per row: current values to set, and
        the tuples written before that are gone now (to delete)."""
        writes = []
        for row_id, changed in self._dirty.items():
            row = self.rows.get(row_id, {})
            written = self._written.setdefault(row_id, set())
            values = {v: row[v] for v in changed if v in row}
            deleted = tuple(v for v in changed if v not in row and v in written)
            written.update(values)
            written.difference_update(deleted)
            writes.append(RowWrite(row_id, values, deleted))
            if not row:
                self.rows.pop(row_id, None)
                if not written:
                    del self._written[row_id]
        self._dirty = {}
        return writes

    def restore_unwritten(self, writes: Iterable[RowWrite]) -> None:
        """Marks the tuples of failed writes dirty again, so the next flush retries them."""
        for write in writes:
            marked = self._dirty.setdefault(write.row, set())
            marked.update(write.values)
            marked.update(write.deleted)
            # Redis may hold any of these tuples: delete whichever is not current next time.
            self._written.setdefault(write.row, set()).update(write.values, write.deleted)
