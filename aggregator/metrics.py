"""Viewership metrics as additive components, with ratios computed only at query time.

`Components` is what is stored per (bucket, breakdown): sums and counts that add across
buckets, breakdowns and session deltas. `to_viewership` turns a sum of them into Livepeer's
`viewership-metric` fields. Nothing is rounded: ratios and minutes are exact float divisions
of the integer sums, so reading one month equals reading its days and adding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from aggregator import sketch

COUNTERS: Final = (
    "views",
    "sessions",
    "playing_ms",
    "buffer_ms",
    "ttff_sum_ms",
    "ttff_count",
    "error_sessions",
    "exits_before_start",
)
TTFF_FIELD_PREFIX: Final = "ttff:"
"""Prefix of the sketch bucket fields in `to_fields`: `ttff:<bucket index>`."""


# Immutable by convention, not `frozen`: a frozen dataclass takes six times as long to build
# (2.2 us against 0.4 here), and components are built for every delta, row and write.
# `unsafe_hash` keeps them hashable like a frozen one; nothing assigns their fields.
@dataclass(slots=True, unsafe_hash=True)
class Components:
    """Additive parts of the viewership metrics for one bucket (or a delta to one).

    views: sessions with play intent. sessions: all sessions (the errorRate denominator).
    playing_ms: sum of heartbeat `time_playing_ms` (playtime and rebufferRatio).
    buffer_ms: sum of heartbeat `time_stalled_ms + time_waiting_ms`.
    ttff_sum_ms / ttff_count: over sessions that reached a first frame with a known TTFF.
    error_sessions: sessions with an error. exits_before_start: closed sessions with play
    intent, no first frame and no fatal error.
    ttff_buckets: the TTFF sketch as sorted `(bucket, count)` pairs with no zero counts.

    A delta from the session reducer may hold negative values (a retraction); stored sums are
    never negative.
    """

    views: int = 0
    sessions: int = 0
    playing_ms: int = 0
    buffer_ms: int = 0
    ttff_sum_ms: int = 0
    ttff_count: int = 0
    error_sessions: int = 0
    exits_before_start: int = 0
    ttff_buckets: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        buckets = self.ttff_buckets
        if not buckets:
            return
        if all(c for _, c in buckets) and all(a[0] < b[0] for a, b in pairwise(buckets)):
            return  # already canonical: sorted, no repeats, no zeros
        canonical = tuple(sorted((b, c) for b, c in sketch.merge(dict(self.ttff_buckets)).items()))
        if canonical != self.ttff_buckets:
            object.__setattr__(self, "ttff_buckets", canonical)

    @classmethod
    def from_parts(cls, counters: Sequence[int], ttff: Mapping[int, int]) -> Components:
        """From the counters in `COUNTERS` order and sketch counts without zeros."""
        v, s, p, b, ts, tc, e, x = counters
        return cls(v, s, p, b, ts, tc, e, x, tuple(sorted(ttff.items())))

    def counter_values(self) -> tuple[int, ...]:
        """The counters in `COUNTERS` order."""
        return (
            self.views,
            self.sessions,
            self.playing_ms,
            self.buffer_ms,
            self.ttff_sum_ms,
            self.ttff_count,
            self.error_sessions,
            self.exits_before_start,
        )

    @property
    def ttff_counts(self) -> dict[int, int]:
        return dict(self.ttff_buckets)

    @classmethod
    def with_ttff_counts(cls, counts: Mapping[int, int], **counters: int) -> Components:
        return cls(ttff_buckets=tuple(counts.items()), **counters)

    def merge(self, other: Components) -> Components:
        # Field by field rather than through a dict: this runs for every row a delta touches.
        if not other.ttff_buckets:
            buckets = self.ttff_buckets
        elif not self.ttff_buckets:
            buckets = other.ttff_buckets
        else:
            buckets = tuple(sketch.merge(self.ttff_counts, other.ttff_counts).items())
        return Components(
            self.views + other.views,
            self.sessions + other.sessions,
            self.playing_ms + other.playing_ms,
            self.buffer_ms + other.buffer_ms,
            self.ttff_sum_ms + other.ttff_sum_ms,
            self.ttff_count + other.ttff_count,
            self.error_sessions + other.error_sessions,
            self.exits_before_start + other.exits_before_start,
            buckets,
        )

    def __add__(self, other: Components) -> Components:
        return self.merge(other)

    def __neg__(self) -> Components:
        negated = {name: -getattr(self, name) for name in COUNTERS}
        return Components(ttff_buckets=tuple((b, -c) for b, c in self.ttff_buckets), **negated)

    def __sub__(self, other: Components) -> Components:
        return self.merge(-other)

    def is_zero(self) -> bool:
        return self == ZERO

    @staticmethod
    def total(items: Iterable[Components]) -> Components:
        out = ZERO
        for item in items:
            out = out.merge(item)
        return out

    def to_fields(self) -> dict[str, int]:
        """Flat non-zero fields, e.g. for a Redis hash whose fields are summed on read."""
        out = {name: v for name, v in zip(COUNTERS, self.counter_values(), strict=True) if v}
        out.update({f"{TTFF_FIELD_PREFIX}{b}": c for b, c in self.ttff_buckets})
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[str, int | str | bytes]) -> Components:
        """Inverse of `to_fields`; accepts Redis' str/bytes values. Unknown fields are ignored."""
        counters: dict[str, int] = {}
        counts: dict[int, int] = {}
        for key, value in raw.items():
            number = int(value)
            if key.startswith(TTFF_FIELD_PREFIX):
                counts[int(key[len(TTFF_FIELD_PREFIX) :])] = number
            elif key in COUNTERS:
                counters[key] = number
        return cls.with_ttff_counts(counts, **counters)


ZERO: Final = Components()

REQUIRED_FIELDS: Final = ("viewCount", "playtimeMins")
OPTIONAL_FIELDS: Final = (
    "ttffMs",
    "ttffP50Ms",
    "ttffP95Ms",
    "rebufferRatio",
    "errorRate",
    "exitsBeforeStart",
    "exitsBeforeStartCount",
)
VIEWERSHIP_FIELDS: Final = REQUIRED_FIELDS + OPTIONAL_FIELDS


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def to_viewership(components: Components, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Livepeer `viewership-metric` values from summed components.

    `viewCount` and `playtimeMins` are always present. An optional field is present only if
    named in `fields` (all of them when `fields` is None) and is None when it has no data,
    matching Livepeer's "omitted if not asked, null if no data" contract. Unknown names raise
    `ValueError`. Definitions:

    - viewCount = views; playtimeMins = playing_ms / 60000
    - ttffMs = ttff_sum_ms / ttff_count (mean); ttffP50Ms, ttffP95Ms from the sketch
    - rebufferRatio = buffer_ms / (playing_ms + buffer_ms), a ratio of sums
    - errorRate = error_sessions / sessions
    - exitsBeforeStart = exits_before_start / views (a ratio), exitsBeforeStartCount = the count
    """
    wanted = set(OPTIONAL_FIELDS if fields is None else fields)
    unknown = wanted - set(VIEWERSHIP_FIELDS)
    if unknown:
        raise ValueError(f"unknown viewership fields: {sorted(unknown)}")
    values = viewership_values(components.counter_values(), components.ttff_counts)
    return {
        name: value
        for name, value in zip(VIEWERSHIP_FIELDS, values, strict=True)
        if name in wanted or name in REQUIRED_FIELDS
    }


_QUANTILES: Final = (0.5, 0.95)


def viewership_values(counters: Sequence[int], ttff: Mapping[int, int]) -> tuple[Any, ...]:
    """Every `VIEWERSHIP_FIELDS` value, in that order, from summed counters (`COUNTERS` order)
    and TTFF sketch counts (no negative count): the definitions of `to_viewership`, in the
    form the readers use per row (no `Components` built)."""
    views, sessions, playing, buffer, ttff_sum, ttff_count, errors, exits = counters
    p50, p95 = sketch.quantiles(ttff, _QUANTILES)
    return (
        views,
        playing / 60_000,
        _ratio(ttff_sum, ttff_count),
        p50,
        p95,
        _ratio(buffer, playing + buffer),
        _ratio(errors, sessions),
        _ratio(exits, views),
        exits,
    )
