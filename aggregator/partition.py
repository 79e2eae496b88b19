"""What one worker keeps for one `beacons` partition, as plain logic (no Kafka, Redis or Faust).

A partition's sessions live in the sessions table (`SessionEntry`, one per session id); this
module folds envelopes and ticks into them through `aggregator.sessions`, and keeps the derived
state that is cheap to rebuild from the table: the rollups, which sessions are open and when
they time out, and what changed since the last flush (viewers, concurrent viewers).

Minute rows are kept for `minute_retention_ms` behind the newest beacon (server time) the
partition folded, `newest_beacon_ms`: the rollups drop older minutes (`minute_horizon_ms`), and
each session keeps its per-minute contributions only from `minute_retention_ms` behind its own
last beacon (never later than the partition's horizon), so its entry does not grow with its
length. Both horizons only depend on the beacons, so a rebuild from the table gives the same
minute rows from the partition's horizon on.

Every decision depends only on the partition's records: session timeouts are driven by tick
records carrying the time (`apply_tick`), never by the wall clock, so a replay after a crash
reaches the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
from aggregator.metrics import COUNTERS, ZERO, Components
from aggregator.rollups import PartitionRollups, Scopes, Values, full_values, scopes_of
from aggregator.sessions import (
    Contribution,
    SessionState,
    absorb_steady_heartbeat,
    apply_batch,
    close,
    closes_at_ms,
)
from aggregator.timebuckets import HOUR_MS, MINUTE_MS

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
    `minutes` are its contributions per minute bucket within the minute retention behind its
    last beacon (`PartitionAggregate`): the minute rows are the sum of these.
    """

    partition: int
    dims: dict[str, str | None]
    viewer: str
    state: SessionState | None = None
    totals: dict[int, Components] = field(default_factory=dict)
    last_seen_ms: int = 0
    coverage: Runs = ()
    minutes: dict[int, Components] = field(default_factory=dict)
    full: Values = field(init=False, repr=False, compare=False)  # `dims` as a rollup tuple
    scopes: Scopes = field(init=False, repr=False, compare=False)  # its minute rows' scopes
    # the concurrency scopes of `dims` (`concurrency_scopes`), built once: used per beacon
    conc_scopes: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.full = full_values(self.dims)
        self.scopes = scopes_of(self.full)
        self.conc_scopes = concurrency_scopes(self.dims)

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
                "mins": minutes_to_json(self.minutes),
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
            minutes=minutes_from_json(doc.get("mins", ())),
        )


_COUNTERS = len(COUNTERS)


def minutes_to_json(minutes: Mapping[int, Components]) -> list[list[int]]:
    """Compact rows `[minute index (ms / 60 000), counters in COUNTERS order...]`, trailing zero
    counters left out unless sketch buckets follow as flat (bucket, count) pairs: a minute of
    heartbeats is `[29915693, 0, 0, 60000]`."""
    out = []
    for minute_ms, c in minutes.items():
        if not (
            c.views
            or c.sessions
            or c.ttff_sum_ms
            or c.ttff_count
            or c.error_sessions
            or c.exits_before_start
            or c.ttff_buckets
        ):  # heartbeats alone, the usual minute
            if c.buffer_ms:
                out.append([minute_ms // MINUTE_MS, 0, 0, c.playing_ms, c.buffer_ms])
            elif c.playing_ms:
                out.append([minute_ms // MINUTE_MS, 0, 0, c.playing_ms])
            else:
                out.append([minute_ms // MINUTE_MS])
            continue
        counters = list(c.counter_values())
        if c.ttff_buckets:
            out.append([minute_ms // MINUTE_MS, *counters, *(n for p in c.ttff_buckets for n in p)])
            continue
        while counters and not counters[-1]:
            counters.pop()
        out.append([minute_ms // MINUTE_MS, *counters])
    return out


def minutes_from_json(raw: Iterable[Sequence[int]]) -> dict[int, Components]:
    out = {}
    for row in sorted(raw, key=lambda r: r[0]):
        counters = [*row[1 : 1 + _COUNTERS], *[0] * (_COUNTERS + 1 - len(row))]
        flat = row[1 + _COUNTERS :]
        ttff = dict(zip(flat[::2], flat[1::2], strict=True))
        out[int(row[0]) * MINUTE_MS] = Components.from_parts(counters, ttff)
    return out


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
    minute_retention_ms: int = keys.MINUTE_RETENTION_S * 1000
    newest_beacon_ms: int = 0  # the newest server time of the envelopes folded (not ticks)
    # Every session of the partition, decoded: the worker folds into these and writes the
    # changed ones to the table once per checkpoint (`take_unsaved`), not once per envelope.
    sessions: dict[str, SessionEntry] = field(default_factory=dict)
    _unsaved: dict[str, SessionEntry] = field(default_factory=dict)
    _open: dict[str, int] = field(default_factory=dict)  # session id -> closes at (ms)
    # sessions with a beacon since the last take (made `Touched` when taken, as they are then)
    _touched: dict[str, SessionEntry | Touched] = field(default_factory=dict)

    def rebuild(self, entries: Iterable[tuple[str, SessionEntry]]) -> None:
        """Derives rollups and open sessions from the table (after a restart or a rebalance)."""
        mine = [(sid, entry) for sid, entry in entries if entry.partition == self.partition]
        for _, entry in mine:
            self.newest_beacon_ms = max(self.newest_beacon_ms, entry.last_seen_ms)
        self.prune_minutes()
        for session_id, entry in mine:
            self.sessions[session_id] = entry
            self.rollups.add_full(entry.full, entry.totals)
            self.rollups.add_minutes(entry.full, entry.minutes)
            self.concurrency.add(entry.conc_scopes, entry.coverage)
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
        if entry is None:
            entry = SessionEntry(self.partition, dims_of(envelope), envelope["viewer_hash"])
        return self.apply_events(
            envelope["envelope"]["session_id"],
            int(envelope["server_timestamp"]),
            envelope["events"],
            entry,
        )

    def apply_events(
        self, session_id: str, server_ts: int, events: Sequence[Any], entry: SessionEntry
    ) -> SessionEntry:
        """`apply_envelope` of an envelope's events (accepted at `server_ts`) into the session's
        entry (new or held); returns the entry to store."""
        if entry.state is not None and len(events) == 1:
            steady = absorb_steady_heartbeat(entry.state, server_ts, events[0], self.policy)
            if steady is not None:  # the common case, folded in place (same result)
                event_ms, playing, buffer = steady
                if server_ts > entry.last_seen_ms:
                    self._see(entry, server_ts)
                if server_ts > self.stream_time_ms:
                    self.stream_time_ms = server_ts
                if server_ts > self.newest_beacon_ms:
                    self.newest_beacon_ms = server_ts
                if playing or buffer:
                    hour = event_ms - event_ms % HOUR_MS
                    total = entry.totals.get(hour)
                    delta = Components(playing_ms=playing, buffer_ms=buffer)
                    entry.totals[hour] = delta if total is None else total + delta
                    self.rollups.add_activity(entry.full, hour, playing, buffer)
                    minute = event_ms - event_ms % MINUTE_MS
                    total = entry.minutes.get(minute)
                    if total is not None:  # the minute under way (kept, so not past retention)
                        # never zero: activity is not negative and is never retracted
                        entry.minutes[minute] = total + delta
                        self.rollups.add_minute_activity(entry.scopes, minute, playing, buffer)
                    elif self._record_minute(entry, minute, delta):
                        self.rollups.add_minute_activity(entry.scopes, minute, playing, buffer)
                self._open[session_id] = entry.state.last_seen_ms + self.policy.timeout_ms
                self._cover(entry, server_ts)
                self._touch(session_id, entry)
                return entry
        state, contribution = apply_batch(entry.state, server_ts, events, self.policy)
        entry.state = state
        if server_ts > entry.last_seen_ms:
            self._see(entry, server_ts)
        self._cover(entry, server_ts)
        self.stream_time_ms = max(self.stream_time_ms, server_ts)
        self.newest_beacon_ms = max(self.newest_beacon_ms, server_ts)
        self._record(entry, contribution)
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

    def fold_events(
        self, session_id: str, server_ts: int, events: Sequence[Any]
    ) -> tuple[SessionEntry, bool] | None:
        """`fold_envelope` for a session the partition holds, from the envelope's session id,
        server time and events alone: (its entry, whether it was closed before). None, folding
        nothing, when the session is not held: its dimensions come from the whole envelope."""
        stored = self.sessions.get(session_id)
        if stored is None:
            return None
        was_closed = stored.state is not None and stored.state.closed
        entry = self.apply_events(session_id, server_ts, events, stored)
        self._unsaved[session_id] = entry
        return entry, was_closed

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
            self._record(entry, contribution)
        return entry

    def minute_horizon_ms(self) -> int:
        """The first minute the partition keeps (`minute_retention_ms` behind its newest beacon)."""
        at = self.newest_beacon_ms - self.minute_retention_ms
        return max(0, at - at % MINUTE_MS)

    def prune_minutes(self) -> None:
        """Drops the minute rows before the horizon from the rollups (each flush)."""
        self.rollups.prune_minutes(self.minute_horizon_ms())

    def _record(self, entry: SessionEntry, contribution: Contribution) -> None:
        by_hour = contribution.by_bucket("hour")
        for hour, delta in by_hour.items():
            total = entry.totals.get(hour, ZERO) + delta
            if total.is_zero():
                entry.totals.pop(hour, None)
            else:
                entry.totals[hour] = total
        self.rollups.add_full(entry.full, by_hour)
        by_minute = {
            m: d
            for m, d in contribution.by_bucket("minute").items()
            if self._record_minute(entry, m, d)
        }
        if by_minute:
            self.rollups.add_minutes(entry.full, by_minute)

    def _session_horizon_ms(self, entry: SessionEntry) -> int:
        at = entry.last_seen_ms - self.minute_retention_ms
        return max(0, at - at % MINUTE_MS)

    def _see(self, entry: SessionEntry, server_ts: int) -> None:
        """Moves the session's last beacon on to `server_ts` (later than it), and forgets its
        minutes that fall past its retention then."""
        before = (entry.last_seen_ms - self.minute_retention_ms) // MINUTE_MS
        entry.last_seen_ms = server_ts
        if (server_ts - self.minute_retention_ms) // MINUTE_MS != before:
            self._trim_minutes(entry)

    def _trim_minutes(self, entry: SessionEntry) -> None:
        """Forgets the session's minutes past its retention (they are in time order)."""
        horizon, minutes = self._session_horizon_ms(entry), entry.minutes
        while minutes:
            oldest = next(iter(minutes))
            if oldest >= horizon:
                return
            del minutes[oldest]

    def _record_minute(self, entry: SessionEntry, minute_ms: int, delta: Components) -> bool:
        """Adds a delta to the session's minute `minute_ms`, unless that is older than the
        retention behind the session's last beacon: then False (it is past the partition's
        horizon too). Keeps the minutes in time order."""
        if minute_ms < self._session_horizon_ms(entry):
            return False
        minutes = entry.minutes
        total = minutes.get(minute_ms)
        if total is None:
            in_order = not minutes or minute_ms > next(reversed(minutes))
            minutes[minute_ms] = delta
            if not in_order:
                ordered = sorted(minutes.items())
                minutes.clear()
                minutes.update(ordered)
            return True
        total = total + delta
        if total.is_zero():
            del minutes[minute_ms]
        else:
            minutes[minute_ms] = total
        return True

    def _cover(self, entry: SessionEntry, server_ts: int) -> None:
        """Counts the session at the sample instants its beacon at `server_ts` newly covers."""
        entry.coverage, added = cover(entry.coverage, beacon_run(server_ts))
        if added:
            self.concurrency.add(entry.conc_scopes, added)

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
