from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import sketch
from aggregator.metrics import (
    OPTIONAL_FIELDS,
    VIEWERSHIP_FIELDS,
    ZERO,
    Components,
    to_viewership,
)

COUNT = st.integers(min_value=0, max_value=10**9)
COMPONENTS = st.builds(
    Components.with_ttff_counts,
    st.dictionaries(st.integers(min_value=-100, max_value=800), st.integers(1, 50), max_size=8),
    views=COUNT,
    sessions=COUNT,
    playing_ms=COUNT,
    buffer_ms=COUNT,
    ttff_sum_ms=COUNT,
    ttff_count=COUNT,
    error_sessions=COUNT,
    exits_before_start=COUNT,
)


def test_counter_fields_are_all_summed() -> None:
    names = {f.name for f in dataclasses.fields(Components)}
    ones = Components(**{n: 1 for n in names - {"ttff_buckets"}}, ttff_buckets=((1, 1),))
    assert (ones + ones).to_fields() == {**{n: 2 for n in names - {"ttff_buckets"}}, "ttff:1": 2}


@given(COMPONENTS, COMPONENTS, COMPONENTS)
def test_merge_is_a_commutative_monoid(a: Components, b: Components, c: Components) -> None:
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)
    assert a + ZERO == a
    assert Components.total([a, b, c]) == a + b + c


@given(COMPONENTS, COMPONENTS)
def test_subtraction_undoes_addition(a: Components, b: Components) -> None:
    assert (a + b) - b == a
    assert (a - a).is_zero()


@given(COMPONENTS)
def test_fields_round_trip(c: Components) -> None:
    fields = c.to_fields()
    assert all(v != 0 for v in fields.values())
    assert Components.from_fields(fields) == c
    as_redis = {k: str(v).encode() for k, v in fields.items()}
    assert Components.from_fields({k: v.decode() for k, v in as_redis.items()}) == c


def test_sketch_buckets_are_canonical() -> None:
    a = Components(ttff_buckets=((5, 1), (3, 2), (7, 0)))
    assert a.ttff_buckets == ((3, 2), (5, 1))
    assert a == Components.with_ttff_counts({5: 1, 3: 2})
    assert hash(a) == hash(Components.with_ttff_counts({3: 2, 5: 1}))


def test_viewership_of_nothing() -> None:
    assert to_viewership(ZERO) == {
        "viewCount": 0,
        "playtimeMins": 0.0,
        "ttffMs": None,
        "ttffP50Ms": None,
        "ttffP95Ms": None,
        "rebufferRatio": None,
        "errorRate": None,
        "exitsBeforeStart": None,
        "exitsBeforeStartCount": 0,
    }


def test_viewership_table() -> None:
    ttffs = [500, 800, 1000, 4000]
    c = Components.with_ttff_counts(
        sketch.build(ttffs),
        views=4,
        sessions=5,
        playing_ms=90_000,
        buffer_ms=10_000,
        ttff_sum_ms=sum(ttffs),
        ttff_count=len(ttffs),
        error_sessions=1,
        exits_before_start=1,
    )
    out = to_viewership(c)
    assert out["viewCount"] == 4
    assert out["playtimeMins"] == 1.5
    assert out["ttffMs"] == 1575.0
    assert out["ttffP50Ms"] == pytest.approx(800, rel=0.01)
    assert out["ttffP95Ms"] == pytest.approx(1000, rel=0.01)
    assert out["rebufferRatio"] == 0.1
    assert out["errorRate"] == 0.2
    assert out["exitsBeforeStart"] == 0.25
    assert out["exitsBeforeStartCount"] == 1


def test_ratios_are_not_rounded() -> None:
    out = to_viewership(Components(views=3, sessions=3, error_sessions=1, playing_ms=1))
    assert out["errorRate"] == 1 / 3
    assert out["playtimeMins"] == 1 / 60_000
    assert out["rebufferRatio"] == 0.0


def test_only_requested_optional_fields_are_returned() -> None:
    out = to_viewership(Components(views=2, playing_ms=60_000), ["errorRate", "ttffMs"])
    assert out == {"viewCount": 2, "playtimeMins": 1.0, "ttffMs": None, "errorRate": None}
    assert list(to_viewership(ZERO, [])) == ["viewCount", "playtimeMins"]
    assert list(to_viewership(ZERO)) == list(VIEWERSHIP_FIELDS)
    assert set(OPTIONAL_FIELDS) < set(VIEWERSHIP_FIELDS)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="bogus"):
        to_viewership(ZERO, ["bogus"])


@given(COMPONENTS, COMPONENTS)
def test_ratios_of_merged_buckets_equal_ratios_of_sums(a: Components, b: Components) -> None:
    merged = to_viewership(a + b)
    assert merged["viewCount"] == a.views + b.views
    den = a.playing_ms + b.playing_ms + a.buffer_ms + b.buffer_ms
    assert merged["rebufferRatio"] == ((a.buffer_ms + b.buffer_ms) / den if den else None)
