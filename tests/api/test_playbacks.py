"""The admin API's body and list validators (pure)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.params import MAX_ID_CHARS, InvalidQuery
from api.playbacks import MAX_LIST_LIMIT, ListQuery, list_query, playback_body
from ingest.registry import Playback


def problems(body: object | bytes) -> list[str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidQuery) as info:
        playback_body("pb-1", raw)
    return list(info.value.problems)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"creatorId": "cr"}, Playback("pb-1", "cr")),
        ({"creatorId": "cr", "assetId": "as"}, Playback("pb-1", "cr", asset_id="as")),
        ({"creatorId": "cr", "streamId": "st"}, Playback("pb-1", "cr", stream_id="st")),
        (
            {"creatorId": "cr", "assetId": None, "streamId": "st"},
            Playback("pb-1", "cr", None, "st"),
        ),
        ({"creatorId": "cr", "playbackId": "pb-1"}, Playback("pb-1", "cr")),
        ({"creatorId": "é" * MAX_ID_CHARS}, Playback("pb-1", "é" * MAX_ID_CHARS)),
    ],
)
def test_valid_bodies(body: dict[str, object], expected: Playback) -> None:
    assert playback_body("pb-1", orjson.dumps(body)) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ["body: required"]),
        (b" \n", ["body: required"]),
        (b"{", ["body: not valid JSON"]),
        (b"\xff", ["body: not valid JSON"]),
        ([], ["body: expected a JSON object, not array"]),
        ("cr", ["body: expected a JSON object, not string"]),
        (None, ["body: expected a JSON object, not null"]),
        ({}, ["creatorId: required"]),
        ({"creatorId": None}, ["creatorId: required"]),
        ({"creatorId": 5}, ["creatorId: expected a string, not number"]),
        ({"creatorId": True}, ["creatorId: expected a string, not boolean"]),
        ({"creatorId": ""}, ["creatorId: empty"]),
        ({"creatorId": "x" * (MAX_ID_CHARS + 1)}, ["creatorId: longer than 256 characters"]),
        ({"creatorId": "a\nb"}, ["creatorId: contains control characters"]),
        ({"creatorId": "cr", "assetId": ["a"]}, ["assetId: expected a string, not array"]),
        ({"creatorId": "cr", "streamId": {}}, ["streamId: expected a string, not object"]),
        (
            {"creatorId": "cr", "assetId": "a", "streamId": "s"},
            ["assetId, streamId: give at most one of assetId and streamId"],
        ),
        ({"creatorId": "cr", "playbackId": "pb-2"}, ["playbackId: differs from the playback ID"]),
        ({"creatorId": "cr", "assetID": "a"}, ["'assetID': unknown field"]),
        (
            {"assetId": 1, "streamId": "", "x": 0},
            [
                "'x': unknown field",
                "creatorId: required",
                "assetId: expected a string",
                "streamId: empty",
                "assetId, streamId: give at most one",
            ],
        ),
    ],
)
def test_every_problem_is_named(body: object, expected: list[str]) -> None:
    found = problems(body)
    assert len(found) == len(expected), found
    for problem, start in zip(found, expected, strict=True):
        assert problem.startswith(start), (problem, start)


def test_a_long_unknown_field_is_shown_shortened() -> None:
    (problem,) = problems({"creatorId": "cr", "y" * 10_000: 1})
    assert len(problem) < 200 and "..." in problem


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=5))
def test_any_non_object_json_is_refused_not_crashed(value: object) -> None:
    with pytest.raises(InvalidQuery):
        playback_body("pb-1", json.dumps(value).encode())


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=300)))
def test_any_object_is_a_playback_or_named_problems(body: dict[str, object]) -> None:
    try:
        playback = playback_body("pb-1", json.dumps(body).encode())
    except InvalidQuery as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
    else:
        assert playback.playback_id == "pb-1" and playback.creator_id == body["creatorId"]
        assert playback.asset_id is None or playback.stream_id is None


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], ListQuery(None, 100)),
        ([("limit", "1"), ("cursor", "pb-3")], ListQuery("pb-3", 1)),
        ([("limit", str(MAX_LIST_LIMIT)), ("cursor", "")], ListQuery(None, MAX_LIST_LIMIT)),
        ([("limit", "")], ListQuery(None, 100)),
        ([("other", "x")], ListQuery(None, 100)),
    ],
)
def test_list_query(pairs: list[tuple[str, str]], expected: ListQuery) -> None:
    assert list_query(pairs) == expected


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ([("limit", "0")], "limit: '0' is not an integer in 1..1000"),
        ([("limit", "1001")], "limit: '1001' is not an integer in 1..1000"),
        ([("limit", "-1")], "limit: '-1' is not an integer"),
        ([("limit", "1.5")], "limit: '1.5' is not an integer"),
        ([("limit", "\u0661")], "limit: '\u0661' is not an integer"),  # a non-ASCII digit
        ([("limit", "1"), ("limit", "2")], "limit: given more than once"),
        ([("cursor", "a\x00")], "cursor: contains control characters"),
    ],
)
def test_list_query_refusals(pairs: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        list_query(pairs)
    (found,) = info.value.problems
    assert found.startswith(problem), found
