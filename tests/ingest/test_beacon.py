"""Beacon validation: real payloads, tables of bad input, agreement with the JSON Schema."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.beacon import (
    HEARTBEAT_COUNTERS,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_REPORTED_PROBLEMS,
    MAX_SAFE_NUMBER,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    Envelope,
    InvalidBeacon,
    RejectedEvent,
    decode_body,
    parse_beacon,
    validate_envelope,
)

PAYLOADS = sorted(Path("/work/shared/research/player-payloads").glob("livepeer_*.json"))
SCHEMA_PATH = Path(__file__).parents[2] / "ingest" / "schema" / "beacon.schema.json"
MAX_EVENTS = 50


SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


@pytest.fixture
def schema() -> jsonschema.Draft202012Validator:
    return SCHEMA


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA.schema)


def test_schema_states_the_module_limits() -> None:
    defs = SCHEMA.schema["$defs"]

    assert defs["id"]["maxLength"] == MAX_ID_CHARS
    assert defs["url"]["maxLength"] == MAX_URL_CHARS
    assert defs["text"]["maxLength"] == MAX_TEXT_CHARS
    assert defs["problem"]["properties"]["message"]["maxLength"] == MAX_MESSAGE_CHARS
    assert defs["nonNegativeNumber"]["maximum"] == MAX_SAFE_NUMBER
    assert set(HEARTBEAT_COUNTERS) <= defs["heartbeat"]["properties"].keys()


def envelope(*events: Any, **fields: Any) -> dict[str, Any]:
    """A valid envelope (the fields of a real capture) holding `events`; `fields` override."""
    doc: dict[str, Any] = {
        "live": False,
        "session_id": "JloQVZZcL9YKKb1ZXLWMmP",
        "playback_id": "lptest123",
        "protocol": "video/mp4",
        "domain": "127.0.0.1",
        "path": "/livepeer.html",
        "params": "?fmt=mp4",
        "hash": "",
        "source_url": "http://127.0.0.1:50079/hls/lptest123/video.mp4?tkn=JloQVZZcL9YKKb1ZXLWMmP",
        "player": "video",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0 Safari/537.36",
        "uid": "u1",
        "events": list(events) or [event("play")],
    }
    doc.update(fields)
    return doc


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"id-{type_}", "type": type_, "timestamp": 1795441630357, **fields}


def heartbeat(**fields: Any) -> dict[str, Any]:
    counters = dict.fromkeys(
        (
            "errors",
            "warnings",
            "stalled_count",
            "waiting_count",
            "time_errored_ms",
            "time_warning_ms",
            "time_stalled_ms",
            "time_playing_ms",
            "time_waiting_ms",
        ),
        0,
    )
    return event("heartbeat", **{**counters, "time_playing_ms": 4002, **fields})


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


# --- real payloads ------------------------------------------------------------------------------


def test_the_captures_are_there() -> None:
    assert len(PAYLOADS) == 4


@pytest.mark.parametrize("path", PAYLOADS, ids=[p.stem for p in PAYLOADS])
def test_real_payload_is_valid_for_schema_and_validator(
    path: Path, schema: jsonschema.Draft202012Validator
) -> None:
    body = path.read_bytes()
    doc = orjson.loads(body)
    assert list(schema.iter_errors(doc)) == []

    parsed = parse_beacon(body, max_events=MAX_EVENTS)

    assert parsed.rejected == ()
    assert parsed.events == tuple(doc["events"])
    assert parsed.fields == without(doc, "events")


def test_validate_returns_the_objects_sent_and_does_not_modify_them() -> None:
    doc = orjson.loads(PAYLOADS[0].read_bytes())
    before = copy.deepcopy(doc)

    parsed = validate_envelope(doc, max_events=MAX_EVENTS)

    assert doc == before
    assert all(a is b for a, b in zip(parsed.events, doc["events"], strict=True))


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem", "reason"),
    [
        pytest.param(b"", "body: empty", "malformed_json", id="empty"),
        pytest.param(
            b'{"a":"\xff"}', "body: invalid UTF-8 at byte 6", "invalid_utf8", id="bad-utf8"
        ),
        pytest.param(
            b'{"a":"\xed\xa0\x80"}', "body: invalid UTF-8 at byte 6", "invalid_utf8", id="surrogate"
        ),
        pytest.param(
            b'{"a" 1}', "body: malformed JSON (line 1 column 6)", "malformed_json", id="no-colon"
        ),
        pytest.param(
            b'{"a": 1,}', "body: malformed JSON (line 1 column 8)", "malformed_json", id="trailing"
        ),
        pytest.param(
            b'{\n"a": NaN}', "body: malformed JSON (line 2 column 6)", "malformed_json", id="nan"
        ),
        pytest.param(
            b'{"a": 1e400}', "body: malformed JSON (line 1 column 7)", "malformed_json", id="inf"
        ),
        pytest.param(
            b'\xef\xbb\xbf{"a": 1}',
            "body: malformed JSON (line 1 column 1)",
            "malformed_json",
            id="bom",
        ),
        pytest.param(
            b'{"a": "\\ud800"}',
            "body: malformed JSON (line 1 column 8)",
            "malformed_json",
            id="lone-surrogate-escape",
        ),
    ],
)
def test_decode_body_rejects(body: bytes, problem: str, reason: str) -> None:
    with pytest.raises(InvalidBeacon) as caught:
        decode_body(body)

    assert caught.value.problems == (problem,)
    assert caught.value.reason == reason
    assert isinstance(caught.value.__cause__, ValueError)


def test_decode_body_returns_the_document() -> None:
    assert decode_body(b'{"a": [1, 2.5, null, true, "\xc3\xa9"]}') == {
        "a": [1, 2.5, None, True, "é"]
    }


# --- whole envelopes rejected -------------------------------------------------------------------

LONG_ID = "x" * (MAX_ID_CHARS + 1)

ENVELOPE_REJECTS = [
    pytest.param(["not", "an", "object"], ("body: must be a JSON object",), id="array-body"),
    pytest.param("text", ("body: must be a JSON object",), id="string-body"),
    pytest.param(without(envelope(), "session_id"), ("session_id: required",), id="no-session_id"),
    pytest.param(
        envelope(session_id=""), ("session_id: must not be empty",), id="empty-session_id"
    ),
    pytest.param(
        envelope(session_id=12), ("session_id: must be a string",), id="number-session_id"
    ),
    pytest.param(
        envelope(session_id=LONG_ID),
        (f"session_id: must be at most {MAX_ID_CHARS} characters",),
        id="long-session_id",
    ),
    pytest.param(
        envelope(playback_id=None), ("playback_id: must be a string",), id="null-playback_id"
    ),
    pytest.param(
        envelope(playback_id=""), ("playback_id: must not be empty",), id="empty-playback_id"
    ),
    pytest.param(
        envelope(protocol=["video/mp4"]), ("protocol: must be a string",), id="array-protocol"
    ),
    pytest.param(
        envelope(source_url="h" * (MAX_URL_CHARS + 1)),
        (f"source_url: must be at most {MAX_URL_CHARS} characters",),
        id="long-source_url",
    ),
    pytest.param(envelope(player=True), ("player: must be a string",), id="bool-player"),
    pytest.param(without(envelope(), "version"), ("version: required",), id="no-version"),
    pytest.param(
        envelope(user_agent="M" * (MAX_TEXT_CHARS + 1)),
        (f"user_agent: must be at most {MAX_TEXT_CHARS} characters",),
        id="long-user_agent",
    ),
    pytest.param(envelope(uid=7), ("uid: must be a string or null",), id="number-uid"),
    pytest.param(envelope(domain={}), ("domain: must be a string or null",), id="object-domain"),
    pytest.param(envelope(live="yes"), ("live: must be a boolean or null",), id="string-live"),
    pytest.param(envelope(live=1), ("live: must be a boolean or null",), id="number-live"),
    pytest.param(
        envelope(view_seq=1.5), ("view_seq: must be an integer or null",), id="float-view_seq"
    ),
    pytest.param(
        envelope(view_seq=-1), ("view_seq: must not be negative",), id="negative-view_seq"
    ),
    pytest.param(without(envelope(), "events"), ("events: required",), id="no-events"),
    pytest.param(
        envelope(events={"0": event("play")}), ("events: must be an array",), id="object-events"
    ),
    pytest.param(envelope(events=None), ("events: must be an array",), id="null-events"),
    pytest.param(envelope(events=[]), ("events: must not be empty",), id="empty-events"),
    pytest.param(
        without(envelope(session_id="", uid=3), "player", "events"),
        (
            "player: required",
            "session_id: must not be empty",
            "uid: must be a string or null",
            "events: required",
        ),
        id="every-problem-listed",
    ),
    pytest.param(
        envelope(event("play", timestamp="soon"), event("pause"), protocol=None),
        ("protocol: must be a string", "events[0].timestamp: must be a number"),
        id="envelope-and-event-problems",
    ),
]


@pytest.mark.parametrize(("doc", "problems"), ENVELOPE_REJECTS)
def test_bad_envelope_is_rejected_whole(doc: Any, problems: tuple[str, ...]) -> None:
    with pytest.raises(InvalidBeacon) as caught:
        validate_envelope(doc, max_events=MAX_EVENTS)

    assert caught.value.problems == problems
    assert caught.value.reason == "invalid_envelope"
    assert str(caught.value) == "; ".join(problems)


@pytest.mark.parametrize(("doc", "problems"), ENVELOPE_REJECTS)
def test_schema_rejects_bad_envelope(
    doc: Any, problems: tuple[str, ...], schema: jsonschema.Draft202012Validator
) -> None:
    assert not schema.is_valid(doc)


def test_more_events_than_max_events_rejects_the_envelope() -> None:
    # The schema leaves the cap to the collector's settings.
    doc = envelope(*[event("play")] * (MAX_EVENTS + 1))

    with pytest.raises(InvalidBeacon) as caught:
        validate_envelope(doc, max_events=MAX_EVENTS)

    assert caught.value.problems == (
        f"events: must hold at most {MAX_EVENTS} events (got {MAX_EVENTS + 1})",
    )
    assert validate_envelope(doc, max_events=MAX_EVENTS + 1).rejected == ()


def test_no_valid_event_rejects_the_envelope() -> None:
    doc = envelope(event("play", id=""), "pause", without(event("ended"), "timestamp"))

    with pytest.raises(InvalidBeacon) as caught:
        validate_envelope(doc, max_events=MAX_EVENTS)

    assert caught.value.reason == "no_valid_events"
    assert caught.value.problems == (
        "events[0].id: must not be empty",
        "events[1]: must be an object",
        "events[2].timestamp: required",
    )


def test_a_long_list_of_problems_is_capped() -> None:
    count = MAX_REPORTED_PROBLEMS  # each event has two problems
    doc = envelope(*[event("play", id="", timestamp=-1)] * count)

    with pytest.raises(InvalidBeacon) as caught:
        validate_envelope(doc, max_events=count)

    problems = caught.value.problems
    assert len(problems) == MAX_REPORTED_PROBLEMS + 1
    assert problems[:2] == (
        "events[0].id: must not be empty",
        "events[0].timestamp: must not be negative",
    )
    assert problems[-1] == f"body: {2 * count - MAX_REPORTED_PROBLEMS} more problems not listed"


# --- single events rejected ---------------------------------------------------------------------

EVENT_REJECTS = [
    pytest.param(
        event("play", timestamp="1795441630357"),
        ("timestamp: must be a number",),
        id="string-timestamp",
    ),
    pytest.param(
        event("play", timestamp=True), ("timestamp: must be a number",), id="bool-timestamp"
    ),
    pytest.param(
        event("play", timestamp=None), ("timestamp: must be a number",), id="null-timestamp"
    ),
    pytest.param(
        event("play", timestamp=-1), ("timestamp: must not be negative",), id="negative-timestamp"
    ),
    pytest.param(
        event("play", timestamp=2**53),
        ("timestamp: must be at most 9007199254740991",),
        id="unsafe-timestamp",
    ),
    pytest.param(
        event("play", timestamp=1e300),
        ("timestamp: must be at most 9007199254740991",),
        id="huge-float-timestamp",
    ),
    pytest.param(
        {"timestamp": 1},
        ("id: required", "type: required"),
        id="no-id-no-type",
    ),
    pytest.param({}, ("id: required", "type: required", "timestamp: required"), id="empty-object"),
    pytest.param(event("play", id=""), ("id: must not be empty",), id="empty-id"),
    pytest.param(event("play", id=5), ("id: must be a string",), id="number-id"),
    pytest.param(
        event("play", id=LONG_ID), (f"id: must be at most {MAX_ID_CHARS} characters",), id="long-id"
    ),
    pytest.param(
        event("", timestamp=-5),
        ("type: must not be empty", "timestamp: must not be negative"),
        id="empty-type",
    ),
    pytest.param(event("play", type=["play"]), ("type: must be a string",), id="array-type"),
    pytest.param(heartbeat(errors=-1), ("errors: must not be negative",), id="negative-counter"),
    pytest.param(
        heartbeat(time_playing_ms=-0.5),
        ("time_playing_ms: must not be negative",),
        id="negative-float-counter",
    ),
    pytest.param(
        heartbeat(stalled_count=True), ("stalled_count: must be a number",), id="bool-counter"
    ),
    pytest.param(
        heartbeat(waiting_count=None), ("waiting_count: must be a number",), id="null-counter"
    ),
    pytest.param(
        heartbeat(time_waiting_ms="12"), ("time_waiting_ms: must be a number",), id="string-counter"
    ),
    pytest.param(
        heartbeat(duration_ms=-1), ("duration_ms: must not be negative",), id="negative-duration"
    ),
    pytest.param(
        heartbeat(play_to_first_frame_ms="256"),
        ("play_to_first_frame_ms: must be a number or null",),
        id="string-ttff",
    ),
    pytest.param(
        heartbeat(video_width_px=False),
        ("video_width_px: must be a number or null",),
        id="bool-size",
    ),
    pytest.param(
        heartbeat(offset_ms="-3"), ("offset_ms: must be a number or null",), id="string-offset"
    ),
    pytest.param(
        heartbeat(autoplay_status=1),
        ("autoplay_status: must be a string or null",),
        id="number-autoplay",
    ),
    pytest.param(
        heartbeat(errors=-1, warnings="0", timestamp=None, id=""),
        (
            "id: must not be empty",
            "timestamp: must be a number",
            "errors: must not be negative",
            "warnings: must be a number",
        ),
        id="all-problems-of-one-event-in-order-sent",
    ),
    pytest.param(
        event("error"), ("message: required", "category: required"), id="error-without-payload"
    ),
    pytest.param(
        event("error", message=5, category="unknown"),
        ("message: must be a string",),
        id="number-message",
    ),
    pytest.param(
        event("warning", message="offline", category=None),
        ("category: must be a string",),
        id="null-category",
    ),
    pytest.param(
        event("error", message="m", category="unknown", fatal="yes"),
        ("fatal: must be a boolean or null",),
        id="string-fatal",
    ),
    pytest.param(
        event("error", message="m", category="unknown", code=[1]),
        ("code: must be a string, a number or null",),
        id="array-code",
    ),
    pytest.param(
        event("seek", payload="12.5"), ("payload: must be a number or null",), id="string-seek"
    ),
    pytest.param(
        event("rate", payload=True),
        ("payload: must be a string, a number or null",),
        id="bool-rate",
    ),
    pytest.param(
        event("video-quality", payload=720),
        ("payload: must be a string or null",),
        id="number-quality",
    ),
    pytest.param(
        event("clip", startTime=-1, endTime="2"),
        ("startTime: must not be negative", "endTime: must be a number or null"),
        id="bad-clip",
    ),
    pytest.param(
        event("play", playhead_ms=-2),
        ("playhead_ms: must not be negative",),
        id="negative-playhead",
    ),
    pytest.param(
        event("x-custom", timestamp="now"),
        ("timestamp: must be a number",),
        id="unknown-type-still-checked",
    ),
]


@pytest.mark.parametrize(("bad", "problems"), EVENT_REJECTS)
def test_bad_event_is_rejected_alone(bad: dict[str, Any], problems: tuple[str, ...]) -> None:
    good_before, good_after = heartbeat(), event("pause")
    doc = envelope(good_before, bad, good_after)

    parsed = validate_envelope(doc, max_events=MAX_EVENTS)

    assert parsed.events == (good_before, good_after)
    assert parsed.rejected == (RejectedEvent(1, tuple(f"events[1].{p}" for p in problems)),)
    assert parsed.fields == without(doc, "events")


@pytest.mark.parametrize(("bad", "problems"), EVENT_REJECTS)
def test_schema_rejects_bad_event(
    bad: dict[str, Any], problems: tuple[str, ...], schema: jsonschema.Draft202012Validator
) -> None:
    assert not schema.is_valid(envelope(heartbeat(), bad))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(math.nan, "must be a finite number", id="nan"),
        pytest.param(math.inf, "must be a finite number", id="inf"),
        pytest.param(-math.inf, "must be a finite number", id="minus-inf"),
    ],
)
@pytest.mark.parametrize("field", ["timestamp", "errors", "duration_ms", "offset_ms"])
def test_non_finite_numbers_are_rejected(field: str, value: float, problem: str) -> None:
    # Not JSON (decode_body refuses them), but validate_envelope may be handed any document.
    parsed = validate_envelope(envelope(heartbeat(**{field: value}), event("play")), max_events=9)

    assert parsed.rejected == (RejectedEvent(0, (f"events[0].{field}: {problem}",)),)


def test_non_object_event_is_rejected_alone() -> None:
    parsed = validate_envelope(envelope(event("play"), None, 3), max_events=MAX_EVENTS)

    assert parsed.events == (event("play"),)
    assert parsed.rejected == (
        RejectedEvent(1, ("events[1]: must be an object",)),
        RejectedEvent(2, ("events[2]: must be an object",)),
    )


# --- accepted variants --------------------------------------------------------------------------

ACCEPTED = [
    pytest.param(
        envelope(uid=None, domain=None, path=None, params=None, hash=None, live=None), id="nulls"
    ),
    pytest.param(
        without(envelope(), "uid", "domain", "path", "params", "hash", "live"), id="no-optionals"
    ),
    pytest.param(envelope(protocol="", user_agent="", hash=""), id="empty-free-text"),
    pytest.param(
        envelope(extra={"kept": [1, "two"]}, page_url="http://x"), id="unknown-envelope-fields"
    ),
    pytest.param(envelope(player_instance_id="p1", view_seq=2), id="extensions"),
    pytest.param(envelope(view_seq=3.0), id="integral-float-view_seq"),
    pytest.param(envelope(event("heartbeat")), id="heartbeat-without-counters"),
    pytest.param(
        envelope(heartbeat(timestamp=1795441630357.25, time_playing_ms=4001.5)), id="floats"
    ),
    pytest.param(
        envelope(heartbeat(offset_ms=-1500, duration_ms=None, video_width_px=None)),
        id="heartbeat-nulls",
    ),
    pytest.param(
        envelope(heartbeat(oldest_buffer_timestamp=1795441620357, extra_counter=-1)),
        id="heartbeat-extra",
    ),
    pytest.param(
        envelope(event("x-mux-rebufferstart", detail={"nested": [None]}, payload=-1)),
        id="unknown-type",
    ),
    pytest.param(
        envelope(
            event(
                "error",
                message="Unknown error loading video",
                category="unknown",
                fatal=True,
                code=4,
            ),
            event("warning", message="offline", category="offline", code=None),
        ),
        id="error-and-warning",
    ),
    pytest.param(
        envelope(
            event("seek", payload=-2.5),
            event("rate", payload="constant"),
            event("rate", payload=1.5),
            event("video-quality", payload="720p"),
            event("clip", startTime=1795441630000, endTime=1795441640000),
            event("enter-fullscreen", playhead_ms=1200),
        ),
        id="payload-events",
    ),
    pytest.param(envelope(event("play", timestamp=0)), id="zero-timestamp"),
]


@pytest.mark.parametrize("doc", ACCEPTED)
def test_valid_variant_is_accepted_by_both(
    doc: dict[str, Any], schema: jsonschema.Draft202012Validator
) -> None:
    assert list(schema.iter_errors(doc)) == []

    parsed = validate_envelope(doc, max_events=MAX_EVENTS)

    assert parsed == Envelope(
        fields=without(doc, "events"), events=tuple(doc["events"]), rejected=()
    )


def test_parse_beacon_decodes_and_validates() -> None:
    doc = envelope(heartbeat(), event("pause", id=""))

    parsed = parse_beacon(orjson.dumps(doc), max_events=MAX_EVENTS)

    assert parsed.events == (heartbeat(),)
    assert parsed.rejected == (RejectedEvent(1, ("events[1].id: must not be empty",)),)
    with pytest.raises(InvalidBeacon, match="must hold at most 1 events"):
        parse_beacon(orjson.dumps(doc), max_events=1)


# --- properties ---------------------------------------------------------------------------------

SAFE = MAX_SAFE_NUMBER
non_negative = st.one_of(st.integers(0, SAFE), st.floats(0, SAFE, allow_nan=False))
ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
json_scalars = st.none() | st.booleans() | st.integers(-SAFE, SAFE) | st.text(max_size=8)

COUNTERS = (
    "errors",
    "warnings",
    "stalled_count",
    "waiting_count",
    "time_playing_ms",
    "time_waiting_ms",
)
heartbeats = st.fixed_dictionaries(
    {"id": ids, "type": st.just("heartbeat"), "timestamp": non_negative},
    optional={name: non_negative for name in COUNTERS}
    | {"duration_ms": st.none() | non_negative, "offset_ms": st.none() | st.integers(-SAFE, SAFE)},
)
plain_events = st.fixed_dictionaries(
    {
        "id": ids,
        "type": st.sampled_from(["play", "pause", "first-frame", "ended", "can-play", "x-custom"]),
        "timestamp": non_negative,
    },
    optional={"extra": json_scalars},
)
errors = st.fixed_dictionaries(
    {
        "id": ids,
        "type": st.sampled_from(["error", "warning"]),
        "timestamp": non_negative,
        "message": st.text(max_size=40),
        "category": st.sampled_from(["unknown", "offline", "access-control"]),
    }
)
valid_events = st.one_of(heartbeats, plain_events, errors)

Corruption = Callable[[dict[str, Any]], Any]
CORRUPTIONS: dict[str, Corruption] = {
    "drop-id": lambda e: without(e, "id"),
    "drop-type": lambda e: without(e, "type"),
    "drop-timestamp": lambda e: without(e, "timestamp"),
    "empty-id": lambda e: {**e, "id": ""},
    "string-timestamp": lambda e: {**e, "timestamp": str(e["timestamp"])},
    "bool-timestamp": lambda e: {**e, "timestamp": True},
    "negative-timestamp": lambda e: {**e, "timestamp": -1},
    "nan-timestamp": lambda e: {**e, "timestamp": math.nan},
    "not-an-object": lambda e: [e],
    "negative-counter": lambda e: {**e, "type": "heartbeat", "errors": -3},
    "bool-counter": lambda e: {**e, "type": "heartbeat", "time_playing_ms": False},
    "error-without-message": lambda e: {**without(e, "message"), "type": "error", "category": "x"},
}


@given(events=st.lists(valid_events, min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_any_valid_envelope_is_accepted_whole(events: list[dict[str, Any]]) -> None:
    doc = envelope(*events)
    before = copy.deepcopy(doc)

    parsed = validate_envelope(doc, max_events=MAX_EVENTS)

    assert parsed.rejected == ()
    assert all(a is b for a, b in zip(parsed.events, events, strict=True))
    assert doc == before


@given(
    events=st.lists(valid_events, min_size=1, max_size=8),
    data=st.data(),
    corruption=st.sampled_from(sorted(CORRUPTIONS)),
)
@settings(max_examples=300, deadline=None)
def test_one_corrupted_event_keeps_the_others(
    events: list[dict[str, Any]], data: st.DataObject, corruption: str
) -> None:
    index = data.draw(st.integers(0, len(events) - 1), label="index")
    sent = [*events[:index], CORRUPTIONS[corruption](events[index]), *events[index + 1 :]]
    doc = envelope(*sent)
    others = tuple(e for i, e in enumerate(events) if i != index)

    if not others:
        with pytest.raises(InvalidBeacon) as caught:
            validate_envelope(doc, max_events=MAX_EVENTS)
        assert caught.value.reason == "no_valid_events"
        assert all(p.startswith("events[0]") for p in caught.value.problems)
        return

    parsed = validate_envelope(doc, max_events=MAX_EVENTS)

    assert all(a is b for a, b in zip(parsed.events, others, strict=True))
    assert [r.index for r in parsed.rejected] == [index]
    assert parsed.rejected[0].problems
    assert all(p.startswith(f"events[{index}]") for p in parsed.rejected[0].problems)


@given(
    events=st.lists(valid_events, min_size=1, max_size=4),
    corruption=st.sampled_from(sorted(CORRUPTIONS)),
)
@settings(max_examples=100, deadline=None)
def test_schema_agrees_with_validator(events: list[dict[str, Any]], corruption: str) -> None:
    assert SCHEMA.is_valid(envelope(*events))
    if corruption != "nan-timestamp":  # NaN is not JSON, and the schema cannot express finiteness
        assert not SCHEMA.is_valid(envelope(*events[1:], CORRUPTIONS[corruption](events[0])))
