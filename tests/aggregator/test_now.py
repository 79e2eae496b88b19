"""Concurrent viewers by combined dimensions: the full-tuple encoding and the projection."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.keys import NOW_DIMENSIONS, now_tuple, parse_now_tuple
from aggregator.store import project_now

values = st.one_of(st.none(), st.sampled_from(["", "a,b", "DE", "%2C", "\x00", "é x", "pb-1"]))
dims = st.fixed_dictionaries({d: values for d in NOW_DIMENSIONS})


@given(dims)
def test_a_tuple_reads_back_as_written(d: dict[str, str | None]) -> None:
    assert parse_now_tuple(now_tuple(d)) == d
    assert parse_now_tuple(now_tuple(d).encode()) == d


def test_distinct_values_make_distinct_tuples() -> None:
    base = dict.fromkeys(NOW_DIMENSIONS, "x")
    assert now_tuple({**base, "country": None}) != now_tuple({**base, "country": "\x00"})
    assert now_tuple({**base, "device": "a,b"}) != now_tuple(
        {**base, "device": "a", "browser": "b"}
    )
    with pytest.raises(ValueError):
        parse_now_tuple("a,b")


sessions = st.lists(st.tuples(dims, st.booleans()), max_size=40)
breakdowns = st.sampled_from(
    [
        combo
        for n in range(1, len(NOW_DIMENSIONS) + 1)
        for combo in itertools.permutations(NOW_DIMENSIONS, n)
    ]
)


@given(sessions, breakdowns)
def test_projecting_full_tuples_equals_grouping_the_sessions(
    watching: list[tuple[dict[str, str | None], bool]], breakdown: tuple[str, ...]
) -> None:
    # What the reader sees: per full tuple, its sessions and erroring sessions.
    per_tuple: dict[str, list[int]] = {}
    for d, error in watching:
        counts = per_tuple.setdefault(now_tuple(d), [0, 0])
        counts[0] += 1
        counts[1] += error
    got = project_now(((parse_now_tuple(t), v, e) for t, (v, e) in per_tuple.items()), breakdown)

    # Directly: group the sessions by the breakdown's values.
    groups: dict[tuple[str | None, ...], list[bool]] = {}
    for d, error in watching:
        groups.setdefault(tuple(d[b] for b in breakdown), []).append(error)
    want = {
        values: {"viewCount": len(errors), "errorRate": sum(errors) / len(errors)}
        for values, errors in groups.items()
    }
    assert {tuple(r[b] for b in breakdown): r for r in got} == {
        values: {**dict(zip(breakdown, values, strict=True)), **row} for values, row in want.items()
    }
    assert [list(r)[: len(breakdown)] for r in got] == [list(breakdown)] * len(got)
    order = [tuple((v is not None, v or "") for v in (r[b] for b in breakdown)) for r in got]
    assert order == sorted(order)


def test_tuples_with_nobody_watching_are_left_out() -> None:
    rows = project_now(
        [
            ({"playbackId": "a", "device": "d", "browser": "b", "country": "DE"}, 0, 0),
            ({"playbackId": "a", "device": "d", "browser": "c", "country": "FR"}, 2, 1),
            ({"playbackId": "a", "device": "d", "browser": "b", "country": "FR"}, 1, 0),
        ],
        ("country", "playbackId"),
    )
    assert rows == [{"country": "FR", "playbackId": "a", "viewCount": 3, "errorRate": 1 / 3}]
