"""Concurrent viewers over time, as pure logic (no Kafka, Redis or Faust).

The metric: at each sample instant `t = k * CONCURRENCY_SAMPLE_MS` (epoch-aligned, 5 s),
concurrent(t) is the number of sessions with at least one beacon whose server receive time lies
in `(t - CONCURRENCY_WINDOW_MS, t]`: the `/views/now` rule, sampled. A minute's peak is the
largest of its 12 samples, an hour's the largest of its 720.

How it is kept exactly and additively:

- A beacon received at server time `s` makes its session active at the instants
  `k * SAMPLE` in `[s, s + WINDOW)`: the run of indices `beacon_run(s)`. A session's *coverage*
  is the union of its beacons' runs, kept merged (`Runs`, sorted disjoint `[start, end)` index
  pairs; 5 s heartbeats make one run per watching stretch). `cover` adds a beacon and returns
  only the indices it newly covers, so a repeated or replayed beacon adds nothing.
- A partition's counts are, per scope and instant, the number of its sessions whose coverage
  holds the instant (`PartitionConcurrency`): each session adds its newly covered indices once.
  Everything is a sum over the sessions table's entries, so a rebuild from the table gives the
  same counts, and partitions add up: the count at an instant is the sum over partitions.
- Counts are grouped per minute (a list of `INSTANTS_PER_MINUTE` ints): the unit written to and
  read from Redis, which also keeps their sum over partitions (`add_minutes`). `peaks`
  (`minute_peaks`, then `step_peaks`) turns summed minutes into per-minute or per-hour peaks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from aggregator.definitions import CONCURRENCY_SAMPLE_MS, CONCURRENCY_WINDOW_MS
from aggregator.timebuckets import HOUR_MS, MINUTE_MS

SAMPLE_MS: Final = CONCURRENCY_SAMPLE_MS
INSTANTS_PER_MINUTE: Final = MINUTE_MS // SAMPLE_MS
assert MINUTE_MS % SAMPLE_MS == 0 and CONCURRENCY_WINDOW_MS % SAMPLE_MS == 0

PeakStep = Literal["minute", "hour"]
PEAK_STEPS: Final[tuple[PeakStep, ...]] = ("minute", "hour")

Run = tuple[int, int]  # [start, end) sample indices
Runs = tuple[Run, ...]  # sorted, disjoint and non-adjacent


def beacon_run(server_ms: int, window_ms: int = CONCURRENCY_WINDOW_MS) -> Run:
    """The sample indices `k` with `s <= k * SAMPLE_MS < s + window`: where a beacon counts."""
    return -(-server_ms // SAMPLE_MS), -(-(server_ms + window_ms) // SAMPLE_MS)


def cover(runs: Runs, run: Run) -> tuple[Runs, list[Run]]:
    """`runs` with `run` added (merged), and the pieces of `run` that were not covered before."""
    start, end = run
    if start >= end:
        return runs, []
    if runs:
        # The common case, once per beacon: a watching session's next beacon meets or
        # overlaps its last run and extends it (or falls inside it).
        a, b = runs[-1]
        if a <= start <= b:
            if end <= b:
                return runs, []
            return (*runs[:-1], (a, end)), [(b, end)]
    return _cover(runs, start, end)


def _cover(runs: Runs, start: int, end: int) -> tuple[Runs, list[Run]]:
    """`cover` by the general rule."""
    added: list[Run] = []
    cursor = start
    before: list[Run] = []
    after: list[Run] = []
    lo, hi = start, end
    for a, b in runs:
        if b < start:
            before.append((a, b))
        elif a > end:
            after.append((a, b))
        else:  # overlaps or touches the new run: merged into it
            if a > cursor and cursor < end:
                added.append((cursor, min(a, end)))
            cursor = max(cursor, b)
            lo, hi = min(lo, a), max(hi, b)
    if cursor < end:
        added.append((cursor, end))
    return (*before, (lo, hi), *after), added


def indices(runs: Iterable[Run]) -> Iterable[int]:
    for a, b in runs:
        yield from range(a, b)


def minute_of(index: int) -> tuple[int, int]:
    """(minute start ms, position of the instant within the minute) of a sample index."""
    at = index * SAMPLE_MS
    minute = at - at % MINUTE_MS
    return minute, (at - minute) // SAMPLE_MS


def runs_to_json(runs: Runs) -> list[list[int]]:
    return [[a, b] for a, b in runs]


def runs_from_json(raw: Iterable[Sequence[int]]) -> Runs:
    return tuple((int(a), int(b)) for a, b in raw)


Minutes = dict[int, list[int]]  # minute start ms -> counts at its INSTANTS_PER_MINUTE instants


@dataclass(slots=True)
class PartitionConcurrency:
    """One partition's counts per (scope, minute), derived from its sessions' coverage.

    `scope` is the text of `aggregator.keys.scope_text`. Minutes before `horizon_ms` are
    dropped (`prune`: they are past retention) and ignored if a session covers them later.
    """

    counts: dict[str, Minutes] = field(default_factory=dict)
    horizon_ms: int = 0
    _dirty: set[tuple[str, int]] = field(default_factory=set)

    def add(self, scopes: Iterable[str], runs: Iterable[Run]) -> None:
        """Count a session's newly covered indices in each of its scopes."""
        counts, dirty, horizon = self.counts, self._dirty, self.horizon_ms
        for a, b in runs:
            for index in range(a, b):
                minute, i = minute_of(index)
                if minute < horizon:
                    continue
                for scope in scopes:
                    minutes = counts.get(scope)
                    if minutes is None:
                        minutes = counts[scope] = {}
                    row = minutes.get(minute)
                    if row is None:
                        row = minutes[minute] = [0] * INSTANTS_PER_MINUTE
                    row[i] += 1
                    dirty.add((scope, minute))

    def prune(self, horizon_ms: int) -> None:
        """Forget minutes before `horizon_ms` (floored to the hour), for good."""
        horizon_ms -= horizon_ms % HOUR_MS
        if horizon_ms <= self.horizon_ms:
            return
        self.horizon_ms = horizon_ms
        for scope in list(self.counts):
            minutes = self.counts[scope]
            for minute in [m for m in minutes if m < horizon_ms]:
                del minutes[minute]
            if not minutes:
                del self.counts[scope]
        self._dirty = {(s, m) for s, m in self._dirty if m >= horizon_ms}

    def take(self, *, everything: bool = False) -> dict[tuple[str, int], Minutes]:
        """What to write, per (scope, hour start): the minutes changed since the last take (or
        all of them), as copies. Marks them clean; `restore` puts them back after a failure."""
        chosen: Iterable[tuple[str, int]]
        if everything:
            chosen = ((s, m) for s, minutes in self.counts.items() for m in minutes)
        else:
            chosen = self._dirty
        out: dict[tuple[str, int], Minutes] = {}
        for scope, minute in chosen:
            out.setdefault((scope, minute - minute % HOUR_MS), {})[minute] = list(
                self.counts[scope][minute]
            )
        self._dirty = set()
        return out

    def restore(self, taken: Mapping[tuple[str, int], Minutes]) -> None:
        for (scope, _), minutes in taken.items():
            self._dirty.update((scope, m) for m in minutes if m in self.counts.get(scope, {}))


def add_minutes(total: Minutes, minutes: Mapping[int, Sequence[int]]) -> None:
    """Adds one partition's minutes into `total`, instant by instant: what
    `aggregator.keys.CONCURRENCY_WRITE_SCRIPT` keeps in the `s|` fields."""
    for minute, counts in minutes.items():
        row = total.get(minute)
        if row is None:
            total[minute] = list(counts)
        else:
            for i, c in enumerate(counts):
                row[i] += c


def minute_peaks(total: Mapping[int, Sequence[int]], until_ms: int | None = None) -> dict[int, int]:
    """Per minute, the largest count at one of its instants, counting only instants at or before
    `until_ms` (later ones are not decided yet)."""
    out: dict[int, int] = {}
    for minute, counts in total.items():
        values = [
            c
            for i, c in enumerate(counts)
            if until_ms is None or minute + i * SAMPLE_MS <= until_ms
        ]
        if values:
            out[minute] = max(values)
    return out


def step_peaks(
    by_minute: Mapping[int, int], step: PeakStep, starts: Iterable[int]
) -> list[dict[str, int]]:
    """`{"timestamp", "peakConcurrentViewers"}` for each step start in `starts`: the largest
    minute peak of that minute or hour (the max of maxima is the max over its instants), 0 when
    it has none."""
    span = MINUTE_MS if step == "minute" else HOUR_MS
    best: dict[int, int] = {}
    for minute, peak in by_minute.items():
        start = minute - minute % span
        best[start] = max(best.get(start, 0), peak)
    return [{"timestamp": s, "peakConcurrentViewers": best.get(s, 0)} for s in starts]


def peaks(
    total: Mapping[int, Sequence[int]],
    step: PeakStep,
    starts: Iterable[int],
    until_ms: int | None = None,
) -> list[dict[str, int]]:
    """The series of `starts` from summed minutes (`step_peaks` of `minute_peaks`)."""
    return step_peaks(minute_peaks(total, until_ms), step, starts)
