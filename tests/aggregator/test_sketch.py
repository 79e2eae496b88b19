from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.sketch import ZERO_BUCKET, bucket_of, build, merge, quantile, value_of

VALUES = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=600_000).map(float),
        st.just(0.0),
        # below ~2.2e-308 values read back as 0 (documented in aggregator.sketch)
        st.floats(min_value=1e-300, max_value=1e9),
    ),
    max_size=300,
)
Q = st.floats(min_value=0.0, max_value=1.0)


def exact_lower_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(1, 0), (2, 35), (10, 116), (100, 231), (250, 277), (1000, 346), (10_000, 461), (60_000, 551)],
)
def test_bucket_indices_are_pinned(value: float, bucket: int) -> None:
    """Indices are persisted in Redis; a change here silently corrupts stored sketches."""
    assert bucket_of(value) == bucket


def test_zero_has_its_own_bucket() -> None:
    assert bucket_of(0) == ZERO_BUCKET
    assert bucket_of(0.0) == ZERO_BUCKET
    assert value_of(ZERO_BUCKET) == 0.0
    assert bucket_of(1e-300) > ZERO_BUCKET
    assert bucket_of(5e-324) == ZERO_BUCKET  # subnormal: below what the mapping can index
    assert quantile({ZERO_BUCKET: 3}, 0.5) == 0.0


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_bad_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        bucket_of(bad)


def test_empty_sketch_has_no_quantile() -> None:
    assert quantile({}, 0.5) is None
    assert quantile({5: 0}, 0.95) is None


@pytest.mark.parametrize("bad_q", [-0.1, 1.1, math.nan])
def test_bad_q_is_refused(bad_q: float) -> None:
    with pytest.raises(ValueError):
        quantile({1: 1}, bad_q)


def test_negative_counts_are_refused_by_quantile() -> None:
    with pytest.raises(ValueError):
        quantile({1: -1, 2: 2}, 0.5)


def test_quantile_table() -> None:
    counts = build([100, 200, 300, 400, 1000])
    assert quantile(counts, 0.0) == pytest.approx(100, rel=0.01)
    assert quantile(counts, 0.5) == pytest.approx(300, rel=0.01)
    assert quantile(counts, 0.95) == pytest.approx(400, rel=0.01)
    assert quantile(counts, 1.0) == pytest.approx(1000, rel=0.01)


@given(VALUES.filter(bool), Q)
def test_relative_error_is_within_one_percent(values: list[float], q: float) -> None:
    estimate = quantile(build(values), q)
    exact = exact_lower_quantile(values, q)
    assert estimate is not None
    assert abs(estimate - exact) <= 0.01 * exact * (1 + 1e-12)


@given(VALUES, VALUES)
def test_merge_is_exact(a: list[float], b: list[float]) -> None:
    assert merge(build(a), build(b)) == build(a + b)


@given(VALUES, VALUES, VALUES)
def test_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    sa, sb, sc = build(a), build(b), build(c)
    assert merge(merge(sa, sb), sc) == merge(sa, merge(sb, sc)) == merge(sc, sb, sa)


@given(VALUES, VALUES)
def test_retraction_cancels(a: list[float], b: list[float]) -> None:
    negative = {k: -v for k, v in build(b).items()}
    assert merge(build(a + b), negative) == build(a)
