"""Livepeer's metrics query parameters, parsed and checked. Pure: no aiohttp, no Redis.

Every parser takes the query string as (name, value) pairs, repeats included, and either returns
a frozen query or raises `InvalidQuery` listing every problem as `"<parameter>: <reason>"`, so a
bad request is answered 400 naming each bad parameter at once. Unknown parameters are ignored,
as Livepeer does; an empty value counts as absent (Go's `Query().Get`).

Time ranges (`from` inclusive, `to` exclusive) take epoch milliseconds or RFC 3339 (with or
without an offset, UTC when there is none, any fraction, truncated to the millisecond).

Defaults when `from`/`to` are missing: `to` is now, `from` is `to` minus `DEFAULT_RANGE_MS` of
the time step (24 hours for hour, 30 days for day or no step, 12 weeks, 12 months, 2 years).

Cost bounds (`MAX_RANGE_MS`): a query reads about one Redis hash per day of its range (one per
hour for `timeStep=hour`) and returns one row per step and breakdown tuple, so the range is
capped per step: hour 31 days (744 rows per tuple; hour rollups are kept 40 days), day 732 days
(two years), week, month, year and no step 800 days (day rollups are kept 800 days: nothing
older exists). A result of more than `MAX_ROWS` rows is refused (Livepeer caps at 10 000).

A `/data/views/query` without `timeStep` is one total over the range per breakdown tuple,
with no `timestamp` (the reader totals any range, ratios included).

`/data/views/concurrent` (ours): timeStep minute (default) or hour, the last 60 minutes by
default, at most 24 hours with minute (1 440 rows) and 31 days with hour (744 rows; it reads
one Redis hash per hour of the range either way).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from aggregator.definitions import BREAKDOWN_DIMENSIONS
from aggregator.keys import NOW_DIMENSIONS
from aggregator.timebuckets import DAY_MS, HOUR_MS, WEEK_MS

Pairs = Iterable[tuple[str, str]]
TimeStep = Literal["hour", "day", "week", "month", "year"]
TIME_STEPS: Final[tuple[TimeStep, ...]] = get_args(TimeStep)
USAGE_TIME_STEPS: Final[tuple[TimeStep, ...]] = ("hour", "day")

VIEWS_BREAKDOWNS: Final[tuple[str, ...]] = BREAKDOWN_DIMENSIONS
CREATOR_BREAKDOWNS: Final[tuple[str, ...]] = tuple(
    d for d in BREAKDOWN_DIMENSIONS if d not in {"playbackId", "geohash", "creatorId"}
)
NOW_BREAKDOWNS: Final[tuple[str, ...]] = NOW_DIMENSIONS
USAGE_BREAKDOWNS: Final[tuple[str, ...]] = ("creatorId",)

BREAKDOWN_PARAM: Final = "breakdownBy[]"

RETAINED_MS: Final = 800 * DAY_MS  # aggregator.keys.RETENTION_S["day"]
MAX_RANGE_MS: Final[dict[TimeStep | None, int]] = {
    "hour": 31 * DAY_MS,
    "day": 732 * DAY_MS,
    "week": RETAINED_MS,
    "month": RETAINED_MS,
    "year": RETAINED_MS,
    None: RETAINED_MS,
}
DEFAULT_RANGE_MS: Final[dict[TimeStep | None, int]] = {
    "hour": 24 * HOUR_MS,
    "day": 30 * DAY_MS,
    "week": 12 * WEEK_MS,
    "month": 365 * DAY_MS,
    "year": 730 * DAY_MS,
    None: 30 * DAY_MS,
}
MAX_ROWS: Final = 10_000

ConcurrentStep = Literal["minute", "hour"]
CONCURRENT_TIME_STEPS: Final[tuple[ConcurrentStep, ...]] = ("minute", "hour")
CONCURRENT_DEFAULT_RANGE_MS: Final = HOUR_MS
CONCURRENT_MAX_RANGE_MS: Final[dict[ConcurrentStep, int]] = {"minute": DAY_MS, "hour": 31 * DAY_MS}
MAX_ID_CHARS: Final = 256
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the calendar's end


class InvalidQuery(Exception):
    """The query string has problems, each `"<parameter>: <reason>"`."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


# ASCII digits only ([0-9], not \d, which takes any Unicode digit); `api.openapi` publishes these.
RFC3339_PATTERN: Final = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_RFC3339 = re.compile(RFC3339_PATTERN)
_EPOCH_MS = re.compile(r"[0-9]{1,15}")


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from epoch milliseconds or RFC 3339; `ValueError(reason)` otherwise."""
    if _EPOCH_MS.fullmatch(text):
        value = int(text)
        if value > MAX_TIMESTAMP_MS:
            raise ValueError(f"{text!r} is after the year 9999")
        return value
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is neither epoch milliseconds nor an RFC 3339 date-time "
            "(e.g. 2024-05-01T00:00:00Z)"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    tz = dt.UTC
    if offset and offset not in "Zz":
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{text!r} has an invalid offset")
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time ({exc})") from exc
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    value = (delta.days * 86_400 + delta.seconds) * 1000 + int(fraction.ljust(3, "0")[:3])
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ValueError(f"{text!r} is outside 1970-01-01 .. 9999-12-31 UTC")
    return value


@dataclass(frozen=True, slots=True)
class ViewsQuery:
    """`/data/views/query` and `/data/views/query/creator`."""

    from_ms: int
    to_ms: int
    time_step: TimeStep | None = None
    breakdown: tuple[str, ...] = ()
    playback_id: str | None = None
    asset_id: str | None = None
    stream_id: str | None = None
    creator_id: str | None = None


@dataclass(frozen=True, slots=True)
class NowQuery:
    """`/data/views/now`."""

    playback_id: str | None = None
    creator_id: str | None = None
    breakdown: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConcurrentQuery:
    """`/data/views/concurrent`."""

    from_ms: int
    to_ms: int
    time_step: ConcurrentStep = "minute"
    playback_id: str | None = None
    creator_id: str | None = None


@dataclass(frozen=True, slots=True)
class LiveQuery:
    """`/live/stream`: the live token and the page's filter."""

    token: str | None
    playback_id: str | None = None
    creator_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """`/data/usage/query`."""

    from_ms: int
    to_ms: int
    time_step: TimeStep | None = None
    creator_id: str | None = None
    breakdown: tuple[str, ...] = ()


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(values)


class _Params:
    """The query's values by name, collecting problems instead of stopping at the first."""

    def __init__(self, pairs: Pairs) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            self.values.setdefault(name, []).append(value)
        self.problems: list[str] = []

    def problem(self, name: str, reason: str) -> None:
        self.problems.append(f"{name}: {reason}")

    def given(self, name: str) -> bool:
        return any(self.values.get(name, ()))

    def one(self, name: str) -> str | None:
        values = [v for v in self.values.get(name, ()) if v]
        if len(values) > 1:
            self.problem(name, "given more than once")
            return None
        return values[0] if values else None

    def identifier(self, name: str) -> str | None:
        value = self.one(name)
        if value is None:
            return None
        if len(value) > MAX_ID_CHARS:
            self.problem(name, f"longer than {MAX_ID_CHARS} characters")
            return None
        if not value.isprintable():
            self.problem(name, "contains control characters")
            return None
        return value

    def timestamp(self, name: str) -> int | None:
        value = self.one(name)
        if value is None:
            return None
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None

    def time_step(self, allowed: Sequence[TimeStep]) -> tuple[bool, TimeStep | None]:
        """(ok, step); not ok when the value was refused (the problem is already recorded)."""
        before = len(self.problems)
        value = self.one("timeStep")
        if value is None:
            return len(self.problems) == before, None
        for step in allowed:
            if value == step:
                return True, step
        self.problem("timeStep", f"{value!r} is not one of {_quoted(allowed)}")
        return False, None

    def breakdown(self, allowed: Sequence[str]) -> tuple[str, ...]:
        if self.given("breakdownBy"):
            self.problem("breakdownBy", f"use {BREAKDOWN_PARAM}, repeated once for each dimension")
        out: list[str] = []
        given = self.values.get(BREAKDOWN_PARAM, ())
        if len(given) > len(allowed):
            self.problem(BREAKDOWN_PARAM, f"at most {len(allowed)} values, one per dimension")
            return ()
        for value in given:
            if value not in allowed:
                self.problem(BREAKDOWN_PARAM, f"{value!r} is not one of {_quoted(allowed)}")
            elif value not in out:
                out.append(value)
        return tuple(out)

    def forbid(self, names: Sequence[str], endpoint: str) -> None:
        for name in names:
            if name in self.values:
                self.problem(name, f"not supported by {endpoint}")

    def range(
        self,
        step_ok: bool,
        step: TimeStep | None,
        now_ms: int,
        *,
        bounds: tuple[int, int, str] | None = None,
    ) -> tuple[int, int]:
        """The [from, to) range, with defaults, checked against the step's cost bound (when the
        step itself was valid). `bounds`: (default range, largest range, the step's name)
        instead of `step`'s."""
        before = len(self.problems)
        from_ms, to_ms = self.timestamp("from"), self.timestamp("to")
        if len(self.problems) > before or not step_ok:
            return 0, 0
        from_given, to_given = from_ms is not None, to_ms is not None
        if to_ms is None:
            to_ms = now_ms
        if from_ms is None:
            default = DEFAULT_RANGE_MS[step] if bounds is None else bounds[0]
            from_ms = max(0, to_ms - default)
        if from_ms >= to_ms:
            if to_given:
                self.problem("to", "must be after from")
            else:
                self.problem("from", "must be before to (now, when to is absent)")
            return from_ms, to_ms
        limit = MAX_RANGE_MS[step] if bounds is None else bounds[1]
        named = step if bounds is None else bounds[2]
        if to_ms - from_ms > limit:
            self.problem(
                "from" if from_given else "to",
                f"the range spans {_days(to_ms - from_ms)}, more than the {_days(limit)} "
                f"allowed {f'with timeStep={named}' if named else 'without timeStep'}",
            )
        return from_ms, to_ms

    def done(self) -> None:
        if self.problems:
            raise InvalidQuery(self.problems)


def _days(ms: int) -> str:
    days = ms / DAY_MS
    return f"{days:g} days" if days == int(days) else f"{days:.2f} days"


def views_query(pairs: Pairs, now_ms: int) -> ViewsQuery:
    """`GET /data/views/query`: at most one of playbackId, assetId, streamId."""
    p = _Params(pairs)
    targets = {name: p.identifier(name) for name in ("playbackId", "assetId", "streamId")}
    chosen = [name for name, value in targets.items() if value is not None]
    if len(chosen) > 1:
        p.problem(", ".join(chosen), "give at most one of playbackId, assetId and streamId")
    creator_id = p.identifier("creatorId")
    ok, step = p.time_step(TIME_STEPS)
    breakdown = p.breakdown(VIEWS_BREAKDOWNS)
    from_ms, to_ms = p.range(ok, step, now_ms)
    p.done()
    return ViewsQuery(
        from_ms,
        to_ms,
        step,
        breakdown,
        playback_id=targets["playbackId"],
        asset_id=targets["assetId"],
        stream_id=targets["streamId"],
        creator_id=creator_id,
    )


def creator_query(pairs: Pairs, now_ms: int) -> ViewsQuery:
    """`GET /data/views/query/creator`: exactly one of assetId, streamId (the proof of
    ownership); a playbackId is ignored, as Livepeer strips it."""
    p = _Params(pairs)
    asset_id, stream_id = p.identifier("assetId"), p.identifier("streamId")
    if (asset_id is None) == (stream_id is None) and not p.problems:
        p.problem("assetId, streamId", "exactly one of assetId and streamId is required")
    creator_id = p.identifier("creatorId")
    ok, step = p.time_step(TIME_STEPS)
    breakdown = p.breakdown(CREATOR_BREAKDOWNS)
    from_ms, to_ms = p.range(ok, step, now_ms)
    p.done()
    return ViewsQuery(
        from_ms,
        to_ms,
        step,
        breakdown,
        asset_id=asset_id,
        stream_id=stream_id,
        creator_id=creator_id,
    )


def now_query(pairs: Pairs) -> NowQuery:
    """`GET /data/views/now`: no time range; any combination of the realtime dimensions."""
    p = _Params(pairs)
    p.forbid(("from", "to", "timeStep"), "/data/views/now")
    playback_id, creator_id = p.identifier("playbackId"), p.identifier("creatorId")
    breakdown = p.breakdown(NOW_BREAKDOWNS)
    p.done()
    return NowQuery(playback_id, creator_id, breakdown)


def concurrent_query(pairs: Pairs, now_ms: int) -> ConcurrentQuery:
    """`GET /data/views/concurrent`: peak concurrent viewers per minute or hour, optionally of
    one playback or creator; no breakdown."""
    p = _Params(pairs)
    p.forbid(("assetId", "streamId", "breakdownBy", BREAKDOWN_PARAM), "/data/views/concurrent")
    playback_id, creator_id = p.identifier("playbackId"), p.identifier("creatorId")
    step: ConcurrentStep = "minute"
    before = len(p.problems)
    value = p.one("timeStep")
    if value == "hour":
        step = "hour"
    elif value not in (None, "minute"):
        p.problem("timeStep", f"{value!r} is not one of {_quoted(CONCURRENT_TIME_STEPS)}")
    bounds = (CONCURRENT_DEFAULT_RANGE_MS, CONCURRENT_MAX_RANGE_MS[step], step)
    from_ms, to_ms = p.range(len(p.problems) == before, None, now_ms, bounds=bounds)
    p.done()
    return ConcurrentQuery(from_ms, to_ms, step, playback_id, creator_id)


def live_query(pairs: Pairs) -> LiveQuery:
    """`GET /live/stream`: a live token and at most one of playbackId and creatorId."""
    p = _Params(pairs)
    token = p.one("token")
    playback_id, creator_id = p.identifier("playbackId"), p.identifier("creatorId")
    if playback_id is not None and creator_id is not None:
        p.problem("creatorId", "filter by playbackId or by creatorId, not both")
    p.done()
    return LiveQuery(token, playback_id, creator_id)


def usage_query(pairs: Pairs, now_ms: int) -> UsageQuery:
    """`GET /data/usage/query`: timeStep hour or day, breakdown by creatorId only."""
    p = _Params(pairs)
    creator_id = p.identifier("creatorId")
    ok, step = p.time_step(USAGE_TIME_STEPS)
    breakdown = p.breakdown(USAGE_BREAKDOWNS)
    from_ms, to_ms = p.range(ok, step, now_ms)
    p.done()
    return UsageQuery(from_ms, to_ms, step, creator_id, breakdown)


def playback_path(value: str) -> str:
    """The `{playbackId}` of `/data/views/query/total/{playbackId}`."""
    p = _Params([("playbackId", value)])
    checked = p.identifier("playbackId")
    if checked is None and not p.problems:
        p.problem("playbackId", "required")
    p.done()
    assert checked is not None
    return checked
