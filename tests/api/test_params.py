from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.timebuckets import DAY_MS, HOUR_MS
from api.params import (
    CREATOR_BREAKDOWNS,
    DEFAULT_RANGE_MS,
    MAX_RANGE_MS,
    MAX_TIMESTAMP_MS,
    NOW_BREAKDOWNS,
    TIME_STEPS,
    VIEWS_BREAKDOWNS,
    InvalidQuery,
    NowQuery,
    UsageQuery,
    ViewsQuery,
    creator_query,
    now_query,
    parse_timestamp,
    playback_path,
    usage_query,
    views_query,
)


def ms(text: str) -> int:
    """'2024-02-29T13:45:30.250' (UTC) -> epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOW = ms("2025-06-15T12:34:56.789")


def problems(parse: object, pairs: list[tuple[str, str]], *args: object) -> list[str]:
    with pytest.raises(InvalidQuery) as info:
        parse(pairs, *args)  # type: ignore[operator]
    return list(info.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1717200000000", 1_717_200_000_000),
        ("2024-06-01T00:00:00Z", ms("2024-06-01T00:00:00")),
        ("2024-06-01t00:00:00z", ms("2024-06-01T00:00:00")),
        ("2024-06-01 00:00:00Z", ms("2024-06-01T00:00:00")),
        ("2024-06-01T00:00:00", ms("2024-06-01T00:00:00")),  # no offset: UTC
        ("2024-06-01T02:00:00+02:00", ms("2024-06-01T00:00:00")),
        ("2024-05-31T19:30:00-04:30", ms("2024-06-01T00:00:00")),
        ("2024-06-01T00:00:00.5Z", ms("2024-06-01T00:00:00.500")),
        ("2024-06-01T00:00:00.123Z", ms("2024-06-01T00:00:00.123")),
        ("2024-06-01T00:00:00.123999999Z", ms("2024-06-01T00:00:00.123")),  # truncated
        ("2024-02-29T23:59:59.999+00:00", ms("2024-02-29T23:59:59.999")),
        ("9999-12-31T23:59:59.999Z", MAX_TIMESTAMP_MS),
    ],
)
def test_timestamps_parse(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "1.5",
        "1e12",
        "0x10",
        " 1717200000000",
        "1717200000000000000",
        "999999999999999",  # beyond 9999-12-31
        "2024-06-01",
        "2024-06-01T00:00Z",
        "2024-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-06-01T24:00:00Z",
        "2024-06-01T00:00:60Z",
        "2024-06-01T00:00:00+25:00",
        "2024-06-01T00:00:00+0200",
        "2024-06-01T00:00:00.Z",
        "1969-12-31T23:59:59Z",
        "yesterday",
        "\u0661\u0662\u0663",  # Arabic-Indic digits: int() takes them, RFC 3339 does not
        "\u0662\u0660\u0662\u0664-06-01T00:00:00Z",
    ],
)
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


MOMENTS = st.integers(min_value=0, max_value=ms("9998-12-31T00:00:00"))
OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)


@given(MOMENTS, OFFSETS, st.integers(min_value=0, max_value=999_999))
def test_rfc3339_round_trips_in_any_offset(value: int, offset_min: int, sub_ms_ns: int) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    moment = datetime.fromtimestamp(value / 1000, tz=UTC).astimezone(tz)
    moment = moment.replace(microsecond=(value % 1000) * 1000)
    fraction = f"{(value % 1000) * 1_000_000 + sub_ms_ns:09d}"
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + "." + fraction + moment.strftime("%z")
    text = text[:-2] + ":" + text[-2:]
    assert parse_timestamp(text) == value


@given(st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS))
def test_epoch_ms_round_trips(value: int) -> None:
    assert parse_timestamp(str(value)) == value


def test_views_query_defaults_to_the_last_30_days() -> None:
    assert views_query([], NOW) == ViewsQuery(NOW - 30 * DAY_MS, NOW)
    early_january = ms("2025-01-10T08:00:00")
    q = views_query([], early_january)  # across a year's end: the reader totals any range
    assert (q.from_ms, q.to_ms) == (early_january - 30 * DAY_MS, early_january)


@pytest.mark.parametrize("step", TIME_STEPS)
def test_each_step_has_a_default_within_its_bound(step: str) -> None:
    q = views_query([("timeStep", step)], NOW)
    assert q.time_step == step
    assert q.to_ms - q.from_ms == DEFAULT_RANGE_MS[step] <= MAX_RANGE_MS[step]


def test_views_query_reads_every_parameter() -> None:
    q = views_query(
        [
            ("playbackId", "pb-1"),
            ("creatorId", "cr-1"),
            ("from", "2025-06-01T00:00:00Z"),
            ("to", str(ms("2025-06-03T00:00:00"))),
            ("timeStep", "hour"),
            ("breakdownBy[]", "country"),
            ("breakdownBy[]", "deviceType"),
            ("breakdownBy[]", "country"),
            ("unknown", "ignored"),
        ],
        NOW,
    )
    assert q == ViewsQuery(
        ms("2025-06-01T00:00:00"),
        ms("2025-06-03T00:00:00"),
        "hour",
        ("country", "deviceType"),
        playback_id="pb-1",
        creator_id="cr-1",
    )


def test_empty_values_count_as_absent() -> None:
    assert views_query([("playbackId", ""), ("timeStep", "")], NOW) == views_query([], NOW)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("timeStep", "minute")], "timeStep: 'minute' is not one of hour, day, week, month, year"),
        ([("timeStep", "Day")], "timeStep: 'Day' is not one of"),
        ([("from", "soon")], "from: 'soon' is neither epoch milliseconds"),
        ([("to", "2024-02-30T00:00:00Z")], "to: '2024-02-30T00:00:00Z' is not a valid date-time"),
        ([("from", "1"), ("from", "2")], "from: given more than once"),
        ([("breakdownBy[]", "city")], "breakdownBy[]: 'city' is not one of playbackId, deviceType"),
        ([("breakdownBy", "country")], "breakdownBy: use breakdownBy[]"),
        ([("playbackId", "x" * 257)], "playbackId: longer than 256 characters"),
        ([("creatorId", "a\nb")], "creatorId: contains control characters"),
        (
            [("playbackId", "p"), ("assetId", "a")],
            "playbackId, assetId: give at most one of playbackId, assetId and streamId",
        ),
        ([("from", "2025-06-02T00:00:00Z"), ("to", "2025-06-01T00:00:00Z")], "to: must be after"),
        ([("from", "2025-06-01T00:00:00Z"), ("to", "2025-06-01T00:00:00Z")], "to: must be after"),
        ([("from", "2025-07-01T00:00:00Z")], "from: must be before to (now, when to is absent)"),
        (
            [
                ("timeStep", "hour"),
                ("from", "2025-05-01T00:00:00Z"),
                ("to", "2025-06-02T00:00:00Z"),
            ],
            "from: the range spans 32 days, more than the 31 days allowed with timeStep=hour",
        ),
        (
            [("timeStep", "day"), ("from", "2023-01-01T00:00:00Z"), ("to", "2025-01-03T00:00:00Z")],
            "from: the range spans 733 days, more than the 732 days allowed with timeStep=day",
        ),
        (
            [
                ("timeStep", "year"),
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2025-01-01T00:00:00Z"),
            ],
            "from: the range spans 1827 days, more than the 800 days allowed with timeStep=year",
        ),
        (
            [("from", "2022-01-01T00:00:00Z"), ("to", "2025-01-01T00:00:00Z")],
            "from: the range spans 1096 days, more than the 800 days allowed without timeStep",
        ),
    ],
)
def test_views_query_problems_name_the_parameter(
    pairs: list[tuple[str, str]], expected: str
) -> None:
    found = problems(views_query, pairs, NOW)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        views_query,
        [("timeStep", "fortnight"), ("breakdownBy[]", "city"), ("creatorId", "a\x00")],
        NOW,
    )
    assert [p.split(":")[0] for p in found] == ["creatorId", "timeStep", "breakdownBy[]"]


@given(st.lists(st.sampled_from(VIEWS_BREAKDOWNS), max_size=len(VIEWS_BREAKDOWNS)))
def test_breakdowns_keep_the_first_order_without_repeats(dims: list[str]) -> None:
    q = views_query([("breakdownBy[]", d) for d in dims], NOW)
    assert q.breakdown == tuple(dict.fromkeys(dims))


@given(st.lists(st.sampled_from(VIEWS_BREAKDOWNS), min_size=len(VIEWS_BREAKDOWNS) + 1))
def test_more_breakdowns_than_dimensions_are_refused(dims: list[str]) -> None:
    """Bounds the request line: schemathesis found a long enough list of repeats overflowing
    aiohttp's 8 190-byte limit, which answers in plain text before our edge can."""
    found = problems(views_query, [("breakdownBy[]", d) for d in dims], NOW)
    assert found == [f"breakdownBy[]: at most {len(VIEWS_BREAKDOWNS)} values, one per dimension"]


@given(st.text(min_size=1, max_size=30).filter(lambda s: s not in VIEWS_BREAKDOWNS))
def test_any_other_breakdown_is_refused_by_name(value: str) -> None:
    found = problems(views_query, [("breakdownBy[]", value)], NOW)
    assert found == [f"breakdownBy[]: {value!r} is not one of {', '.join(VIEWS_BREAKDOWNS)}"]


@given(
    st.integers(min_value=0, max_value=ms("2100-01-01T00:00:00")),
    st.integers(min_value=1, max_value=900 * DAY_MS),
    st.sampled_from((*TIME_STEPS, None)),
)
def test_a_range_is_accepted_iff_within_its_bound(
    from_ms: int, span: int, step: str | None
) -> None:
    pairs = [("from", str(from_ms)), ("to", str(from_ms + span))]
    if step is not None:
        pairs.append(("timeStep", step))
    ok = span <= MAX_RANGE_MS[step]  # type: ignore[index]
    if ok:
        q = views_query(pairs, NOW)
        assert (q.from_ms, q.to_ms) == (from_ms, from_ms + span)
    else:
        assert problems(views_query, pairs, NOW)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], "assetId, streamId: exactly one of assetId and streamId is required"),
        ([("assetId", "a"), ("streamId", "s")], "assetId, streamId: exactly one"),
        ([("assetId", "a"), ("breakdownBy[]", "playbackId")], "breakdownBy[]: 'playbackId'"),
        ([("assetId", "a"), ("breakdownBy[]", "geohash")], "breakdownBy[]: 'geohash'"),
        ([("assetId", "a"), ("breakdownBy[]", "creatorId")], "breakdownBy[]: 'creatorId'"),
    ],
)
def test_creator_query_problems(pairs: list[tuple[str, str]], expected: str) -> None:
    found = problems(creator_query, pairs, NOW)
    assert any(p.startswith(expected) for p in found), found


def test_creator_query_ignores_a_playback_id_and_spans_years_without_a_step() -> None:
    q = creator_query(
        [
            ("streamId", "st-1"),
            ("playbackId", "ignored"),
            ("from", "2024-12-01T00:00:00Z"),
            ("to", "2025-02-01T00:00:00Z"),
            *(("breakdownBy[]", d) for d in CREATOR_BREAKDOWNS),
        ],
        NOW,
    )
    assert q.stream_id == "st-1" and q.playback_id is None and q.asset_id is None
    assert q.breakdown == CREATOR_BREAKDOWNS


def test_now_query() -> None:
    assert now_query([]) == NowQuery()
    assert now_query(
        [("playbackId", "pb"), ("creatorId", "cr"), ("breakdownBy[]", "country")]
    ) == NowQuery("pb", "cr", ("country",))
    for dim in NOW_BREAKDOWNS:
        assert now_query([("breakdownBy[]", dim)]).breakdown == (dim,)
    combined = [("breakdownBy[]", d) for d in ("country", "device", "country", "playbackId")]
    assert now_query(combined).breakdown == ("country", "device", "playbackId")


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("from", "0")], ["from: not supported by /data/views/now"]),
        (
            [("to", "1"), ("timeStep", "hour")],
            ["to: not supported by /data/views/now", "timeStep: not supported by /data/views/now"],
        ),
        (
            [("breakdownBy[]", "os")],
            ["breakdownBy[]: 'os' is not one of playbackId, device, browser, country"],
        ),
    ],
)
def test_now_query_problems(pairs: list[tuple[str, str]], expected: list[str]) -> None:
    assert problems(now_query, pairs) == expected


def test_usage_query() -> None:
    q = usage_query(
        [
            ("from", "1735689600000"),
            ("to", "1738368000000"),
            ("timeStep", "day"),
            ("creatorId", "cr"),
            ("breakdownBy[]", "creatorId"),
        ],
        NOW,
    )
    assert q == UsageQuery(1_735_689_600_000, 1_738_368_000_000, "day", "cr", ("creatorId",))
    assert usage_query([], NOW) == UsageQuery(NOW - 30 * DAY_MS, NOW)
    assert usage_query([("timeStep", "hour")], NOW).from_ms == NOW - 24 * HOUR_MS


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("timeStep", "week")], "timeStep: 'week' is not one of hour, day"),
        ([("breakdownBy[]", "country")], "breakdownBy[]: 'country' is not one of creatorId"),
    ],
)
def test_usage_query_problems(pairs: list[tuple[str, str]], expected: str) -> None:
    assert problems(usage_query, pairs, NOW) == [expected]


def test_playback_path() -> None:
    assert playback_path("pb-1") == "pb-1"
    for bad, expected in [("", "playbackId: required"), ("x" * 300, "playbackId: longer")]:
        with pytest.raises(InvalidQuery) as info:
            playback_path(bad)
        assert info.value.problems[0].startswith(expected)
