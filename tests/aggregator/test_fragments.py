"""An answer spliced from encoded steps against encoding the whole answer at once."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aggregator import projection
from aggregator.fragments import encode_step, join_steps, without_nulls
from aggregator.keys import FULL
from aggregator.metrics import Components
from tests.aggregator.test_projection import BUCKETS, VARYING, stored_hash

# Rows as the reader makes them: a timestamp, dimension values (any text, or null for an
# unknown one), metrics (integers, floats, or null when there is no data).
DIM = st.one_of(st.none(), st.text(max_size=12))
METRIC = st.one_of(
    st.none(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)
ROW = st.fixed_dictionaries(
    {"timestamp": st.integers(0, 2**45), "country": DIM, "deviceType": DIM},
    optional={"viewCount": METRIC, "ttffMs": METRIC, "rebufferRatio": METRIC},
)
STEPS = st.lists(st.lists(ROW, max_size=4), max_size=6)  # steps may be empty, first or last


def flat(steps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for rows in steps for row in rows]


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, omit_nulls=st.booleans())
@example(steps=[], omit_nulls=False)
@example(steps=[[], [], []], omit_nulls=False)
@example(
    steps=[[], [{"timestamp": 1, "country": 'ü\u2028"\\', "deviceType": None}]], omit_nulls=True
)
@example(steps=[[{"timestamp": 0, "country": None, "deviceType": "tv"}], []], omit_nulls=False)
def test_spliced_steps_are_the_bytes_of_the_whole_answer(
    steps: list[list[dict[str, Any]]], omit_nulls: bool
) -> None:
    spliced = join_steps(encode_step(rows, omit_nulls=omit_nulls) for rows in steps)
    whole = without_nulls(flat(steps)) if omit_nulls else flat(steps)
    assert spliced == orjson.dumps(whole)
    assert orjson.loads(spliced) == whole


def test_an_empty_step_is_no_fragment_and_adds_no_comma() -> None:
    assert encode_step([]) == b""
    assert join_steps([b"", b'{"a":1}', b"", b'{"b":2},{"c":3}', b""]) == (
        b'[{"a":1},{"b":2},{"c":3}]'
    )
    assert join_steps([]) == join_steps([b""]) == b"[]"


def test_without_nulls_keeps_falsy_values() -> None:
    rows = [{"a": None, "b": 0, "c": 0.0, "d": "", "e": False}]
    assert without_nulls(rows) == [{"b": 0, "c": 0.0, "d": "", "e": False}]


@settings(max_examples=100, deadline=None)
@given(
    buckets=BUCKETS,
    breakdown=st.permutations(VARYING).map(lambda p: tuple(p[:2])),
    omit_nulls=st.booleans(),
)
def test_the_readers_steps_spliced_equal_its_rows_encoded(
    buckets: list[tuple[int, dict[tuple[Any, ...], Components]]],
    breakdown: tuple[str, ...],
    omit_nulls: bool,
) -> None:
    """The steps `projection.assemble_steps` makes, encoded one by one and spliced, are the
    answer `projection.assemble` gives encoded at once (real rows: nulls, floats, shared
    steps summed from sums, steps alone from rows)."""
    dims = tuple(d for d in ("country", "deviceType", "viewerId") if d in breakdown)
    positions = [FULL.index(d) for d in dims]
    starts = [start for start, _ in buckets]
    entries = []
    for start, tuples in buckets:
        sums = projection.project(stored_hash(tuples), positions)
        if starts.count(start) == 1:
            entries.append((start, projection.rows_of(sums), None))
        else:
            entries.append((start, None, projection.flat_sums(sums)))
    shape: dict[str, Any] = {"timestamps": True, "dims": dims, "breakdown": breakdown}
    steps = projection.assemble_steps(entries, **shape)
    spliced = join_steps(encode_step(rows, omit_nulls=omit_nulls) for rows in steps.values())
    whole = projection.assemble(entries, **shape)
    assert spliced == orjson.dumps(without_nulls(whole) if omit_nulls else whole)
