"""Projections of an all-dimensions rollup hash onto fewer dimensions, and their cached form.

Pure (no I/O): `aggregator.store.RollupReader` reads and writes the cache, `aggregator.keys`
names the fields. A combined breakdown (two or more dimensions) is answered from a scope's
all-dimensions hash, whose tuples carry every dimension, viewerId included: a day of the `all`
scope holds tens of thousands of tuples for the few hundred of a country x deviceType answer.
`project` sums the data fields of such a hash per tuple of the wanted dimensions (all partitions
together); the reader stores the result in the hash itself, stamped with the hash's generation
(`keys.GENERATION_FIELD`, replaced by every applied write), and trusts it only while the stamp
equals the hash's generation. Two encodings, both orjson:

- *rows* (`encode_rows`): per tuple, its values and every `VIEWERSHIP_FIELDS` value already
  computed (`metrics.viewership_values`). A bucket that is alone in its step (a day of a
  day-step query, an hour of an hour-step one) is read from these, with no sketch touched.
- *sums* (`encode_sums`): per tuple, its values, the `COUNTERS` sums and the TTFF sketch as flat
  `bucket, count` pairs. Buckets that share a step (the hours at a range's edges, the days of a
  week) are added from these, and the metrics are computed once per summed row.

Both are exactly what projecting the hash again would give: the rows' numbers come from the
same sums by the same function, and orjson writes floats in their shortest round-trip form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, TypeVar

import orjson

from aggregator.metrics import (
    COUNTERS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    TTFF_FIELD_PREFIX,
    VIEWERSHIP_FIELDS,
    viewership_values,
)

Values = tuple[str | None, ...]
Sums = tuple[list[int], dict[int, int]]
"""Running sums of one tuple: counters in `COUNTERS` order, and TTFF sketch counts."""

_COUNTER_INDEX: Final = {name: i for i, name in enumerate(COUNTERS)}
_PREFIX_LEN: Final = len(TTFF_FIELD_PREFIX)
_N: Final = len(COUNTERS)

STAMP_SEPARATOR: Final = b"|"

K = TypeVar("K")


def project(
    raw: Mapping[bytes, bytes] | Mapping[str, str], positions: Sequence[int]
) -> dict[Values, Sums]:
    """Sums the data fields of an all-dimensions hash (`keys.row_field` -> json of
    `Components.to_fields`) per tuple of the dimension values at `positions` of the full
    tuple, over every partition. Other fields (versions, generation, cached projections) are
    skipped."""
    out: dict[Values, Sums] = {}
    loads = orjson.loads
    for field, value in raw.items():
        head = field[:1]
        if not head.isdigit():  # data fields are `{partition}|[...]`
            continue
        text = field.decode() if isinstance(field, bytes) else field
        full = loads(text[text.index("|") + 1 :])
        projected = tuple(full[i] for i in positions)
        sums = out.get(projected)
        if sums is None:
            sums = out[projected] = ([0] * _N, {})
        counters, ttff = sums
        for name, number in loads(value).items():
            index = _COUNTER_INDEX.get(name)
            if index is not None:
                counters[index] += number
            elif name.startswith(TTFF_FIELD_PREFIX):
                bucket = int(name[_PREFIX_LEN:])
                total = ttff.get(bucket, 0) + number
                if total:
                    ttff[bucket] = total
                else:
                    del ttff[bucket]
    return out


def flat_sums(sums: Mapping[Values, Sums]) -> list[tuple[Values, list[int], list[int]]]:
    """`decode_sums(encode_sums(sums))`, without the round trip."""
    return [
        (values, counters, [x for pair in sorted(ttff.items()) for x in pair])
        for values, (counters, ttff) in sums.items()
    ]


def add_sums(into: dict[K, Sums], more: Iterable[tuple[K, list[int], list[int]]]) -> None:
    """Adds flat sums (`decode_sums`, `flat_sums`) into `into`, by key."""
    for values, counters, pairs in more:
        sums = into.get(values)
        if sums is None:
            into[values] = (list(counters), dict(zip(pairs[::2], pairs[1::2], strict=True)))
            continue
        acc, ttff = sums
        for i, number in enumerate(counters):
            acc[i] += number
        get = ttff.get
        # Stored counts are positive (zero sums are deleted, never written): no zero to drop.
        for bucket, count in zip(pairs[::2], pairs[1::2], strict=True):
            ttff[bucket] = get(bucket, 0) + count


def rows_of(sums: Mapping[Values, Sums]) -> list[tuple[Values, tuple[Any, ...]]]:
    """(values, every `VIEWERSHIP_FIELDS` value) per tuple."""
    return [(values, viewership_values(c, t)) for values, (c, t) in sums.items()]


def encode_rows(rows: Iterable[tuple[Values, Sequence[Any]]]) -> bytes:
    return orjson.dumps([[list(values), list(metrics)] for values, metrics in rows])


def decode_rows(blob: bytes) -> list[tuple[Values, list[Any]]]:
    return [(tuple(values), metrics) for values, metrics in orjson.loads(blob)]


def encode_sums(sums: Mapping[Values, Sums]) -> bytes:
    return orjson.dumps([[list(v), c, pairs] for v, c, pairs in flat_sums(sums)])


def decode_sums(blob: bytes) -> list[tuple[Values, list[int], list[int]]]:
    return [(tuple(values), counters, pairs) for values, counters, pairs in orjson.loads(blob)]


def stamp(generation: bytes, blob: bytes) -> bytes:
    """A cached value: the generation of the hash it was projected from, then the blob."""
    return generation + STAMP_SEPARATOR + blob


def unstamp(value: bytes | None, generation: bytes | None) -> bytes | None:
    """The blob of a cached value if it was projected at `generation`, else None (missing,
    stale, or a hash that keeps no generation)."""
    if value is None or not generation:
        return None
    prefix = generation + STAMP_SEPARATOR
    return value[len(prefix) :] if value.startswith(prefix) else None


Rows = Sequence[tuple[Values, Sequence[Any]]]
FlatSums = Sequence[tuple[Values, list[int], list[int]]]
Labels = tuple[str | None, ...]


def assemble(
    entries: Iterable[tuple[int, Rows | None, FlatSums | None]], **shape: Any
) -> list[dict[str, Any]]:
    """`assemble_steps`' rows, all steps in order."""
    return [row for rows in assemble_steps(entries, **shape).values() for row in rows]


def assemble_steps(
    entries: Iterable[tuple[int, Rows | None, FlatSums | None]],
    *,
    timestamps: bool,
    dims: tuple[str, ...],
    breakdown: tuple[str, ...],
    scope: tuple[str | None, str | None] = (None, None),
    filters: Mapping[str, str] | None = None,
    fields: Iterable[str] | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """The reader's rows per step from projections onto `dims`, one entry per stored bucket read:
    (its step's start, its rows if it is alone in its step, else its flat sums).

    A tuple whose `filters` values differ is left out; the others become the `breakdown`
    values (the scope's dimension, constant in it, taken from `scope`). Rows of a bucket alone
    in its step are taken as they are; sums of buckets sharing a step are added per breakdown
    tuple and their metrics computed once. Like `metrics.to_viewership`: `viewCount` and
    `playtimeMins` always, the optional `fields` asked for (all when None). Steps in order,
    each with its rows sorted by breakdown values (None first); steps with no row left out."""
    wanted = set(OPTIONAL_FIELDS if fields is None else fields)
    unknown = wanted - set(VIEWERSHIP_FIELDS)
    if unknown:
        raise ValueError(f"unknown viewership fields: {sorted(unknown)}")
    picked = [
        (name, i)
        for i, name in enumerate(VIEWERSHIP_FIELDS)
        if name in wanted or name in REQUIRED_FIELDS
    ]
    every = len(picked) == len(VIEWERSHIP_FIELDS)
    scope_dim, scope_value = scope
    at = {d: i for i, d in enumerate(dims)}
    checks = [(at[d], v) for d, v in (filters or {}).items()]
    if scope_dim in breakdown:
        takes = [None if d == scope_dim else at[d] for d in breakdown]

        def labels_of(values: Values) -> Labels:
            return tuple(scope_value if i is None else values[i] for i in takes)
    else:
        positions = [at[d] for d in breakdown]
        if len(positions) == 1:
            (only,) = positions

            def labels_of(values: Values) -> Labels:
                return (values[only],)
        else:
            labels_of = itemgetter(*positions)  # type: ignore[assignment]

    names = (*breakdown, *VIEWERSHIP_FIELDS)
    stamped = ("timestamp", *names)

    def row_of(bucket: int, labels: Labels, metrics: Sequence[Any]) -> dict[str, Any]:
        if every:  # one dict(zip()): rows are built by the thousand per query
            if timestamps:
                return dict(zip(stamped, (bucket, *labels, *metrics), strict=True))
            return dict(zip(names, (*labels, *metrics), strict=True))
        row: dict[str, Any] = {"timestamp": bucket} if timestamps else {}
        row.update(zip(breakdown, labels, strict=True))
        for name, j in picked:
            row[name] = metrics[j]
        return row

    by_bucket: dict[int, dict[Labels, dict[str, Any]]] = {}
    merged: dict[tuple[int, Labels], Sums] = {}
    for bucket, rows, sums in entries:
        if rows is not None:
            out = by_bucket.setdefault(bucket, {})
            for values, metrics in rows:
                if checks and any(values[i] != v for i, v in checks):
                    continue
                labels = labels_of(values)
                out[labels] = row_of(bucket, labels, metrics)
        elif sums is not None:
            add_sums(
                merged,
                (
                    ((bucket, labels_of(values)), counters, pairs)
                    for values, counters, pairs in sums
                    if not checks or all(values[i] == v for i, v in checks)
                ),
            )
    for (bucket, labels), (counters, ttff) in merged.items():
        metrics = viewership_values(counters, ttff)
        by_bucket.setdefault(bucket, {})[labels] = row_of(bucket, labels, metrics)

    order = {
        labels: rank
        for rank, labels in enumerate(
            sorted(
                {labels for out in by_bucket.values() for labels in out},
                key=lambda vs: tuple((v is not None, v or "") for v in vs),
            )
        )
    }
    return {
        bucket: [
            by_bucket[bucket][labels] for labels in sorted(by_bucket[bucket], key=order.__getitem__)
        ]
        for bucket in sorted(by_bucket)
    }
