"""The live page's snapshot: pure functions from what the readers returned to what is pushed.

No I/O here: `api.app` reads Redis (through `aggregator.store`) and hands the rows to
`snapshot`, which the stream sends as one Server-Sent Event. Every event is a whole snapshot,
so a client that reconnects needs nothing replayed (no `Last-Event-ID`).

The quality numbers (TTFF, rebuffer ratio, error rate, exits before start) come from the
minute rollups (each scope without a breakdown): "the last 5 minutes" is
[start of the minute holding now - 5 min, now), the last 5 whole minutes and the one under way,
between 5 and 6 minutes of data. `qoe_window` computes it and the snapshot names it, so the
page can say what it shows.

The chart is the last hour's peak concurrent viewers per minute (the concurrency reader's
series for [now - 1 h, now), as `GET /data/views/concurrent` answers it by default), carried in
every snapshot so that whoever may watch live sees it, whatever their key may query; `chart`
packs it and marks the hour's peak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import orjson

from aggregator.timebuckets import HOUR_MS, MINUTE_MS, floor

QOE_RANGE_MS = 5 * 60_000
CHART_RANGE_MS = HOUR_MS
TOP_N = 10
# (snapshot field, realtime dimension)
BREAKDOWNS = (
    ("topPlaybacks", "playbackId"),
    ("countries", "country"),
    ("devices", "device"),
    ("browsers", "browser"),
)
QOE_FIELDS = ("ttffMs", "ttffP95Ms", "rebufferRatio", "errorRate", "exitsBeforeStart")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A quality number at or above its threshold is flagged (the page colours it)."""

    ttffMs: float = 2_000.0
    ttffP95Ms: float = 5_000.0
    rebufferRatio: float = 0.02
    errorRate: float = 0.05
    exitsBeforeStart: float = 0.10

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        """`name=value,...` over the defaults, e.g. `ttffMs=1500,errorRate=0.02`.

        ValueError naming the problem for an unknown name, a missing `=` or a value that is
        not a finite number >= 0.
        """
        values = asdict(cls())
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            name, sep, raw = item.partition("=")
            name = name.strip()
            if not sep or name not in values:
                raise ValueError(
                    f"live threshold {item!r}: expected name=value, name one of {QOE_FIELDS}"
                )
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"live threshold {name}: {raw!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"live threshold {name}: {raw!r} must be finite and >= 0")
            values[name] = value
        return cls(**values)

    def breaches(self, qoe: Mapping[str, Any]) -> dict[str, bool]:
        """Per quality number: at or over its threshold (False when there is no data)."""
        limits = asdict(self)
        out = {}
        for name in QOE_FIELDS:
            value = qoe.get(name)
            out[name] = value is not None and value >= limits[name]
        return out


def qoe_window(now_ms: int) -> tuple[int, int]:
    """(from, to) of the data the quality numbers cover: [now - 5 min, now) widened to the
    minute rollups, i.e. from the start of the minute holding now - 5 min (up to now, which
    the open minute's row holds)."""
    return floor(now_ms - QOE_RANGE_MS, "minute"), now_ms


def top(rows: Sequence[Mapping[str, Any]], dim: str, n: int = TOP_N) -> list[dict[str, Any]]:
    """The `n` values with the most viewers now, most first (ties by value), each with its
    `viewCount` and `errorRate`; a missing value (null) is listed like any other."""
    ordered = sorted(rows, key=lambda r: (-r["viewCount"], r[dim] is not None, r[dim] or ""))
    return [
        {dim: r[dim], "viewCount": r["viewCount"], "errorRate": r["errorRate"]} for r in ordered[:n]
    ]


def chart(rows: Sequence[Mapping[str, int]]) -> dict[str, Any]:
    """The per-minute chart from the concurrency reader's minute rows (consecutive minutes,
    oldest first): `from` (the first minute's start), `stepMs`, `peaks` (one per minute) and
    `peak`, the hour's largest minute (the earliest of equal ones), or None when nobody
    watched. ValueError when the rows are not consecutive minutes."""
    starts = [r["timestamp"] for r in rows]
    if any(b - a != MINUTE_MS for a, b in pairwise(starts)):
        raise ValueError("chart rows must be consecutive minutes, oldest first")
    peaks = [r["peakConcurrentViewers"] for r in rows]
    best: dict[str, int] | None = None
    for start, value in zip(starts, peaks, strict=True):
        if value > 0 and (best is None or value > best["peakConcurrentViewers"]):
            best = {"timestamp": start, "peakConcurrentViewers": value}
    return {
        "from": starts[0] if starts else None,
        "stepMs": MINUTE_MS,
        "peaks": peaks,
        "peak": best,
    }


def snapshot(
    *,
    now_ms: int,
    total: Sequence[Mapping[str, Any]],
    breakdowns: Mapping[str, Sequence[Mapping[str, Any]]],
    qoe_rows: Sequence[Mapping[str, Any]],
    minute_peaks: Sequence[Mapping[str, int]],
    last_beacon_ms: int | None,
    thresholds: Thresholds,
    scope: Mapping[str, str | None],
    interval_ms: int,
) -> dict[str, Any]:
    """One live event. `total` is the realtime reader's one row (or none), `breakdowns` its rows
    per dimension of `BREAKDOWNS`, `qoe_rows` the minute rows' reader's row for
    `qoe_window(now_ms)` (one row without step, or none when there was no data), `minute_peaks` the concurrency
    reader's minute rows for [now_ms - CHART_RANGE_MS, now_ms)."""
    now = total[0] if total else {"viewCount": 0, "errorRate": 0.0}
    row = qoe_rows[0] if qoe_rows else {}
    start, end = qoe_window(now_ms)
    qoe: dict[str, Any] = {"from": start, "to": end, "viewCount": row.get("viewCount", 0)}
    qoe.update({name: row.get(name) for name in QOE_FIELDS})
    out: dict[str, Any] = {
        "serverTime": now_ms,
        "intervalMs": interval_ms,
        "scope": dict(scope),
        "concurrentViewers": now["viewCount"],
        "errorRateNow": now["errorRate"],
        "lastBeaconMs": last_beacon_ms,
    }
    for name, dim in BREAKDOWNS:
        out[name] = top(breakdowns.get(dim, ()), dim)
    out["qoe"] = qoe
    out["lastHour"] = chart(minute_peaks)
    out["thresholds"] = asdict(thresholds)
    out["breaches"] = thresholds.breaches(qoe)
    return out


def sse(event: str, data: Mapping[str, Any] | str, *, retry_ms: int | None = None) -> bytes:
    """One Server-Sent Event; `data` (JSON text, or a mapping to encode) must be one line."""
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE data line cannot hold a line break")
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()
