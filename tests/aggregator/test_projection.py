"""The projection cache's pure parts against a plain computation through `Components`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import projection
from aggregator.keys import FULL, GENERATION_FIELD, row_field, version_field
from aggregator.metrics import OPTIONAL_FIELDS, Components, to_viewership
from aggregator.sketch import quantile, quantiles

SMALL = ["a", "b", None]
COMPONENTS = st.builds(
    Components.with_ttff_counts,
    st.dictionaries(st.integers(-3, 40), st.integers(1, 5), max_size=6),
    views=st.integers(0, 9),
    sessions=st.integers(0, 9),
    playing_ms=st.integers(0, 10**7),
    buffer_ms=st.integers(0, 10**5),
    ttff_sum_ms=st.integers(0, 10**5),
    ttff_count=st.integers(0, 9),
    error_sessions=st.integers(0, 9),
    exits_before_start=st.integers(0, 9),
).filter(lambda c: not c.is_zero())
# A stored tuple: partition, the values of three dimensions that vary (the rest are constant).
VARYING = ("deviceType", "country", "viewerId")
TUPLES = st.tuples(
    st.integers(0, 2), st.sampled_from(SMALL), st.sampled_from(SMALL), st.sampled_from(SMALL)
)
# A bucket: its step's start (a small number: several buckets may share one) and its tuples.
BUCKETS = st.lists(
    st.tuples(st.integers(0, 2), st.dictionaries(TUPLES, COMPONENTS, max_size=8)),
    min_size=1,
    max_size=5,
)


def full_of(values: tuple[str | None, ...]) -> tuple[str | None, ...]:
    named = dict(zip(VARYING, values, strict=True))
    return tuple(named.get(d, f"const-{d}") for d in FULL)


def stored_hash(tuples: dict[tuple[Any, ...], Components]) -> dict[bytes, bytes]:
    """What `RollupWriter` leaves in an all-dimensions hash, plus fields that are not data."""
    raw = {
        row_field(p, full_of(values)).encode(): orjson.dumps(c.to_fields())
        for (p, *values), c in tuples.items()
    }
    raw[version_field(0).encode()] = b"12"
    raw[GENERATION_FIELD.encode()] = b"0123456789abcdef"
    raw[b"pr|country,viewerId"] = b"0123456789abcdef|[]"
    raw[b"pi|"] = b"country,viewerId"
    return raw


def plainly(
    buckets: list[tuple[int, dict[tuple[Any, ...], Components]]],
    breakdown: tuple[str, ...],
    filters: dict[str, str | None],
    fields: tuple[str, ...] | None,
) -> list[dict[str, Any]]:
    """The answer the obvious way: every stored tuple's Components summed per step and
    breakdown values, then `to_viewership`."""
    totals: dict[tuple[int, tuple[str | None, ...]], Components] = {}
    for step_start, tuples in buckets:
        for (_, *values), c in tuples.items():
            named = dict(zip(VARYING, values, strict=True))
            if any(named[d] != v for d, v in filters.items()):
                continue
            slot = (step_start, tuple(named[d] for d in breakdown))
            totals[slot] = totals.get(slot, Components()) + c
    rows = []
    for (start, labels), c in sorted(
        totals.items(), key=lambda kv: (kv[0][0], [(v is not None, v or "") for v in kv[0][1]])
    ):
        rows.append({"timestamp": start, **dict(zip(breakdown, labels, strict=True))})
        rows[-1].update(to_viewership(c, fields))
    return rows


@settings(max_examples=150, deadline=None)
@given(
    buckets=BUCKETS,
    breakdown=st.permutations(VARYING).flatmap(
        lambda p: st.integers(1, 3).map(lambda n: tuple(p[:n]))
    ),
    filter_value=st.sampled_from([*SMALL, "absent"]),
    filtered=st.booleans(),
    fields=st.one_of(st.none(), st.lists(st.sampled_from(OPTIONAL_FIELDS), unique=True)),
    cached=st.booleans(),
)
def test_projected_answers_equal_summing_components(
    buckets: list[tuple[int, dict[tuple[Any, ...], Components]]],
    breakdown: tuple[str, ...],
    filter_value: str | None,
    filtered: bool,
    fields: list[str] | None,
    cached: bool,
) -> None:
    """Whether each bucket's projection is made now or read back from its stored form, and
    whether its step is its own (rows) or shared (sums), the rows equal the plain sum."""
    filters = {"deviceType": filter_value} if filtered else {}
    dims = tuple(d for d in FULL if d in breakdown or d in filters)
    positions = [FULL.index(d) for d in dims]
    sharing = [start for start, _ in buckets]
    entries: list[tuple[int, projection.Rows | None, projection.FlatSums | None]] = []
    for start, tuples in buckets:
        sums = projection.project(stored_hash(tuples), positions)
        if sharing.count(start) == 1:
            rows = projection.rows_of(sums)
            if cached:
                rows = projection.decode_rows(projection.encode_rows(rows))
            entries.append((start, rows, None))
        else:
            flat = projection.flat_sums(sums)
            if cached:
                flat = projection.decode_sums(projection.encode_sums(sums))
            entries.append((start, None, flat))
    got = projection.assemble(
        entries,
        timestamps=True,
        dims=dims,
        breakdown=breakdown,
        filters=filters,  # type: ignore[arg-type]
        fields=fields,
    )
    want = plainly(buckets, breakdown, filters, None if fields is None else tuple(fields))
    assert got == want
    assert [list(row) for row in got] == [list(row) for row in want]  # the same field order


def test_the_scope_dimension_is_labelled_with_the_scope_value() -> None:
    c = Components(views=2, sessions=2, playing_ms=60_000)
    sums = projection.project(stored_hash({(0, "mobile", "DE", "v1"): c}), [FULL.index("country")])
    rows = projection.assemble(
        [(0, None, projection.flat_sums(sums))],
        timestamps=False,
        dims=("country",),
        breakdown=("playbackId", "country"),
        scope=("playbackId", "pb-1"),
        fields=(),
    )
    assert rows == [{"playbackId": "pb-1", "country": "DE", "viewCount": 2, "playtimeMins": 1.0}]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="bogus"):
        projection.assemble([], timestamps=True, dims=("country",), breakdown=(), fields=["bogus"])


def test_a_stamp_is_trusted_only_for_its_own_generation() -> None:
    value = projection.stamp(b"00ff00ff00ff00ff", b"[1]")
    assert projection.unstamp(value, b"00ff00ff00ff00ff") == b"[1]"
    assert projection.unstamp(value, b"00ff00ff00ff00fe") is None  # written since
    assert projection.unstamp(value, b"00ff00ff") is None  # a prefix is not the generation
    assert projection.unstamp(value, None) is None  # a hash without a generation
    assert projection.unstamp(value, b"") is None
    assert projection.unstamp(None, b"00ff00ff00ff00ff") is None  # nothing cached


@given(
    st.dictionaries(st.integers(-50, 50), st.integers(1, 20), max_size=30),
    st.lists(st.floats(0, 1), min_size=1, max_size=4).map(sorted),
)
def test_quantiles_in_one_pass_equal_quantile_one_by_one(
    counts: dict[int, int], qs: list[float]
) -> None:
    assert quantiles(counts, tuple(qs)) == tuple(quantile(counts, q) for q in qs)
