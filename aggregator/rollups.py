"""One partition's rollups: absolute per-row components, derived from its sessions' contributions.

Pure and in memory. The worker adds each session's per-hour deltas (`add`), folds them into the
stored groups of `aggregator.keys` once per flush (`fold`: the fan-out to every group and grain
happens per session and hour per flush, not per event), and writes the rows that changed
(`take_dirty`). Because every value here is a sum of session contributions, the whole state can
be rebuilt from the sessions table after a restart, and rewritten to an empty Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aggregator.keys import FULL, GRAINS, ROLLUP_GROUPS, Group
from aggregator.metrics import ZERO, Components
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


@dataclass(slots=True)
class PartitionRollups:
    groups: tuple[Group, ...] = ROLLUP_GROUPS
    grains: tuple[str, ...] = GRAINS
    rows: dict[RowId, dict[Values, Components]] = field(default_factory=dict)
    _pending: dict[tuple[Values, int], Components] = field(default_factory=dict)
    _dirty: set[RowId] = field(default_factory=set)
    _written: dict[RowId, set[Values]] = field(default_factory=dict)

    def add(self, dims: Mapping[str, str | None], by_hour: Mapping[int, Components]) -> None:
        """Queue a session's deltas, keyed by hour bucket start, under its dimensions."""
        full = full_values(dims)
        for hour_ms, delta in by_hour.items():
            key = (full, hour_ms)
            self._pending[key] = self._pending.get(key, ZERO) + delta

    def fold(self) -> None:
        """Fan the queued deltas out to every stored group and grain."""
        pending, self._pending = self._pending, {}
        for (full, hour_ms), delta in pending.items():
            if delta.is_zero():
                continue
            dims = dict(zip(FULL, full, strict=True))
            for grain in self.grains:
                bucket_ms = hour_ms if grain == "hour" else floor(hour_ms, "day")
                for group in self.groups:
                    scope_value = None
                    if group.scope_dim is not None:
                        scope_value = dims[group.scope_dim]
                        if scope_value is None:
                            continue  # e.g. an unregistered playback has no creator scope
                    row_id = RowId(grain, bucket_ms, group.scope_dim, scope_value, group.dims)
                    values = tuple(dims[d] for d in group.dims)
                    row = self.rows.setdefault(row_id, {})
                    total = row.get(values, ZERO) + delta
                    if total.is_zero():
                        row.pop(values, None)
                    else:
                        row[values] = total
                    self._dirty.add(row_id)

    def mark_all_dirty(self) -> None:
        """Everything is written again at the next flush (Redis lost its data, or a rebuild)."""
        self._dirty.update(self.rows)
        self._written.clear()

    def take_dirty(self) -> list[RowWrite]:
        writes = []
        for row_id in self._dirty:
            row = self.rows.get(row_id, {})
            before = self._written.get(row_id, set())
            deleted = tuple(v for v in before if v not in row)
            writes.append(RowWrite(row_id, dict(row), deleted))
            self._written[row_id] = set(row)
            if not row:
                self.rows.pop(row_id, None)
        self._dirty.clear()
        return writes

    def restore_unwritten(self, writes: Iterable[RowWrite]) -> None:
        """Marks rows dirty again after a failed write, so the next flush retries them."""
        for write in writes:
            self._dirty.add(write.row)
            # Redis may hold any of these tuples: delete whichever is not current next time.
            self._written[write.row] = set(write.values) | set(write.deleted)
