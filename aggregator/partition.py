"""What one worker keeps for one `beacons` partition, as plain logic (no Kafka, Redis or Faust).

A partition's sessions live in the sessions table (`SessionEntry`, one per session id); this
module folds envelopes and ticks into them through `aggregator.sessions`, and keeps the derived
state that is cheap to rebuild from the table: the rollups, which sessions are open and when
they time out, and what changed since the last flush (viewers, concurrent viewers).

Every decision depends only on the partition's records: session timeouts are driven by tick
records carrying the time (`apply_tick`), never by the wall clock, so a replay after a crash
reaches the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator import keys
from aggregator.concurrency import (
    PartitionConcurrency,
    Runs,
    beacon_run,
    cover,
    runs_from_json,
    runs_to_json,
)
from aggregator.definitions import BREAKDOWN_DIMENSIONS, DEFAULT_POLICY, SessionPolicy
from aggregator.metrics import ZERO, Components
from aggregator.rollups import PartitionRollups, Values, full_values
from aggregator.sessions import (
    SessionState,
    absorb_steady_heartbeat,
    apply_batch,
    close,
    closes_at_ms,
)
from aggregator.timebuckets import HOUR_MS

ENTRY_VERSION = 2
"""`SessionEntry.to_bytes` format: 2 packs the remembered ids (`SessionState.to_dict`); 1 (no
"v") listed them. Readers accept both and ignore fields they do not know, so a field can be
added without a new version."""


@dataclass(slots=True)
class SessionEntry:
    """A session's row in the sessions table.

    `dims` are fixed by the session's first envelope (so a retraction always lands in the
    series it cancels); `totals` are everything the session ever contributed, per hour bucket,
    across its views: the rollups are the sum of these over a partition's sessions.
    `coverage` is the merged set of 5 s sample instants at which the session counted as a
    concurrent viewer (`aggregator.concurrency`): the concurrency counts are the sum of these.
    """

    partition: int
    dims: dict[str, str | None]
    viewer: str
    state: SessionState | None = None
    totals: dict[int, Components] = field(default_factory=dict)
    last_seen_ms: int = 0
    coverage: Runs = ()
    full: Values = field(init=False, repr=False, compare=False)  # `dims` as a rollup tuple
    # the concurrency scopes of `dims` (`concurrency_scopes`), built once: used per beacon
    scopes: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.full = full_values(self.dims)
        self.scopes = concurrency_scopes(self.dims)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": ENTRY_VERSION,
                "p": self.partition,
                "dims": self.dims,
                "viewer": self.viewer,
                "state": None if self.state is None else self.state.to_dict(),
                "totals": {str(h): c.to_fields() for h, c in self.totals.items()},
                "seen": self.last_seen_ms,
                "cov": runs_to_json(self.coverage),
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionEntry:
        doc = orjson.loads(raw)
        return cls(
            partition=doc["p"],
            dims=doc["dims"],
            viewer=doc["viewer"],
            state=None if doc["state"] is None else SessionState.from_dict(doc["state"]),
            totals={int(h): Components.from_fields(f) for h, f in doc["totals"].items()},
            last_seen_ms=doc["seen"],
            coverage=runs_from_json(doc.get("cov", ())),
        )


def dims_of(envelope: Mapping[str, Any]) -> dict[str, str | None]:
    """The breakdown dimensions of an enriched envelope (`ingest.record`)."""
    dims: dict[str, str | None] = dict.fromkeys(BREAKDOWN_DIMENSIONS)
    dims.update({k: v for k, v in envelope.get("dims", {}).items() if k in dims})
    dims["playbackId"] = envelope["envelope"]["playback_id"]
    dims["creatorId"] = (envelope.get("playback") or {}).get("creatorId")
    dims["viewerId"] = envelope["viewer_hash"]
    return dims


def concurrency_scopes(dims: Mapping[str, str | None]) -> list[str]:
    """The scopes (`keys.scope_text`) a session counts in: all, its playback, its creator."""
    out = [keys.scope_text(None, None)]
    out += [keys.scope_text(d, dims[d]) for d in keys.SCOPE_DIMENSIONS if dims.get(d) is not None]
    return out


@dataclass(frozen=True, slots=True)
class Touched:
    """A session that sent a beacon since the last flush: for concurrent viewers and uniques."""

    dims: dict[str, str | None]
    viewer: str
    last_seen_ms: int
    has_error: bool
    view_hours: tuple[int, ...]  # hour buckets where the session counts a view


@dataclass(slots=True)
class PartitionAggregate:
    partition: int
    policy: SessionPolicy = DEFAULT_POLICY
    rollups: PartitionRollups = field(default_factory=PartitionRollups)
    concurrency: PartitionConcurrency = field(default_factory=PartitionConcurrency)
    offset: int = -1
    stream_time_ms: int = 0
    # Every session of the partition, decoded: the worker folds into these and writes the
    # changed ones to the table once per checkpoint (`take_unsaved`), not once per envelope.
    sessions: dict[str, SessionEntry] = field(default_factory=dict)
    _unsaved: dict[str, SessionEntry] = field(default_factory=dict)
    _open: dict[str, int] = field(default_factory=dict)  # session id -> closes at (ms)
    # sessions with a beacon since the last take (made `Touched` when taken, as they are then)
    _touched: dict[str, SessionEntry | Touched] = field(default_factory=dict)

    def rebuild(self, entries: Iterable[tuple[str, SessionEntry]]) -> None:
        """Derives rollups and open sessions from the table (after a restart or a rebalance)."""
        for session_id, entry in entries:
            if entry.partition != self.partition:
                continue
            self.sessions[session_id] = entry
            self.rollups.add_full(entry.full, entry.totals)
            self.concurrency.add(entry.scopes, entry.coverage)
            if entry.state is not None and (due := closes_at_ms(entry.state, self.policy)):
                self._open[session_id] = due
            self.stream_time_ms = max(self.stream_time_ms, entry.last_seen_ms)
            self._touch(session_id, entry)
        self.rollups.fold()
        self.rollups.mark_all_dirty()

    def apply_envelope(
        self, envelope: Mapping[str, Any], entry: SessionEntry | None
    ) -> SessionEntry:
        """Folds one enriched envelope into its session; returns the entry to store."""
        server_ts = int(envelope["server_timestamp"])
        session_id = envelope["envelope"]["session_id"]
        events = envelope["events"]
        if entry is not None and entry.state is not None and len(events) == 1:
            steady = absorb_steady_heartbeat(entry.state, server_ts, events[0], self.policy)
            if steady is not None:  # the common case, folded in place (same result)
                event_ms, playing, buffer = steady
                if server_ts > entry.last_seen_ms:
                    entry.last_seen_ms = server_ts
                if server_ts > self.stream_time_ms:
                    self.stream_time_ms = server_ts
                if playing or buffer:
                    hour = event_ms - event_ms % HOUR_MS
                    total = entry.totals.get(hour)
                    if total is None:
                        entry.totals[hour] = Components(playing_ms=playing, buffer_ms=buffer)
                    else:  # `total + Components(playing_ms=..., buffer_ms=...)`, built once
                        entry.totals[hour] = Components(
                            total.views,
                            total.sessions,
                            total.playing_ms + playing,
                            total.buffer_ms + buffer,
                            total.ttff_sum_ms,
                            total.ttff_count,
                            total.error_sessions,
                            total.exits_before_start,
                            total.ttff_buckets,
                        )
                    self.rollups.add_activity(entry.full, hour, playing, buffer)
                self._open[session_id] = entry.state.last_seen_ms + self.policy.timeout_ms
                self._cover(entry, server_ts)
                self._touch(session_id, entry)
                return entry
        if entry is None:
            entry = SessionEntry(self.partition, dims_of(envelope), envelope["viewer_hash"])
        state, contribution = apply_batch(entry.state, server_ts, envelope["events"], self.policy)
        entry.state = state
        entry.last_seen_ms = max(entry.last_seen_ms, server_ts)
        self._cover(entry, server_ts)
        self.stream_time_ms = max(self.stream_time_ms, server_ts)
        self._record(entry, contribution.by_bucket("hour"))
        if state is not None and (due := closes_at_ms(state, self.policy)) is not None:
            self._open[session_id] = due
        else:
            self._open.pop(session_id, None)
        self._touch(session_id, entry)
        return entry

    def fold_envelope(self, envelope: Mapping[str, Any]) -> tuple[str, SessionEntry, bool]:
        """`apply_envelope` on the held session: (session id, its entry, whether it was closed
        before). The entry is saved to the table at the next `take_unsaved`."""
        session_id = envelope["envelope"]["session_id"]
        stored = self.sessions.get(session_id)
        was_closed = stored is not None and stored.state is not None and stored.state.closed
        entry = self.apply_envelope(envelope, stored)
        self.sessions[session_id] = self._unsaved[session_id] = entry
        return session_id, entry, was_closed

    def close_due(self, now_ms: int) -> list[tuple[str, SessionEntry, bool]]:
        """`apply_close` on every held session due at `now_ms`: (id, entry, was closed)."""
        out = []
        for session_id in self.due(now_ms):
            entry = self.sessions.get(session_id)
            if entry is None:
                self._open.pop(session_id, None)
                continue
            was_closed = entry.state is not None and entry.state.closed
            self.apply_close(session_id, entry, now_ms)
            self._unsaved[session_id] = entry
            out.append((session_id, entry, was_closed))
        return out

    def take_unsaved(self) -> dict[str, SessionEntry]:
        """The sessions changed since the last take, to write to the table."""
        unsaved, self._unsaved = self._unsaved, {}
        return unsaved

    def due(self, now_ms: int) -> list[str]:
        """Session ids whose timeout has passed at `now_ms` (stream time from a tick)."""
        self.stream_time_ms = max(self.stream_time_ms, now_ms)
        return [sid for sid, at in self._open.items() if at <= now_ms]

    def apply_close(self, session_id: str, entry: SessionEntry, now_ms: int) -> SessionEntry:
        """Closes a due session (deciding exit-before-start); returns the entry to store."""
        self._open.pop(session_id, None)
        if entry.state is None:
            return entry
        state, contribution = close(entry.state, now_ms, self.policy)
        entry.state = state
        if contribution is not None:
            self._record(entry, contribution.by_bucket("hour"))
        return entry

    def _record(self, entry: SessionEntry, by_hour: Mapping[int, Components]) -> None:
        for hour, delta in by_hour.items():
            total = entry.totals.get(hour, ZERO) + delta
            if total.is_zero():
                entry.totals.pop(hour, None)
            else:
                entry.totals[hour] = total
        self.rollups.add_full(entry.full, by_hour)

    def _cover(self, entry: SessionEntry, server_ts: int) -> None:
        """Counts the session at the sample instants its beacon at `server_ts` newly covers."""
        entry.coverage, added = cover(entry.coverage, beacon_run(server_ts))
        if added:
            self.concurrency.add(entry.scopes, added)

    def _touch(self, session_id: str, entry: SessionEntry) -> None:
        self._touched[session_id] = entry

    def take_touched(self) -> dict[str, Touched]:
        touched, self._touched = self._touched, {}
        return {sid: t if isinstance(t, Touched) else _touched(t) for sid, t in touched.items()}

    def restore_touched(self, touched: Mapping[str, Touched]) -> None:
        """Puts back what a failed flush took, unless the session was touched again since."""
        for session_id, t in touched.items():
            self._touched.setdefault(session_id, t)


def _touched(entry: SessionEntry) -> Touched:
    has_error = entry.state is not None and entry.state.error_count > 0
    view_hours = tuple(h for h, c in entry.totals.items() if c.views > 0)
    return Touched(entry.dims, entry.viewer, entry.last_seen_ms, has_error, view_hours)


def view_summary(session_id: str, entry: SessionEntry) -> dict[str, Any]:
    """A closed view, as published to the `views` topic for warehouses and per-view listings.

    At least once: a replay after a crash may publish the same view again, with the same
    `sessionId` and `closedAtMs`, which is the key to deduplicate on.
    """
    state = entry.state
    assert state is not None
    return {
        "sessionId": session_id,
        "viewerId": entry.viewer,
        **{k: v for k, v in entry.dims.items() if k != "viewerId"},
        "viewStartMs": state.first_event_ms,
        "closedAtMs": state.last_seen_ms,
        "playIntent": state.play_intent,
        "playingMs": state.playing_ms,
        "bufferMs": state.buffer_ms,
        "ttffMs": state.ttff_ms,
        "errors": state.error_count,
        "fatalError": state.fatal_error,
        "exitBeforeStart": state.exit_before_start,
    }
