"""The validator's msgspec fast paths give exactly the answers of the rules by hand, only faster.

Two fast paths: `validate_envelope`'s, on a decoded document, and `parse_beacon`'s strict one on
the bytes, which also keeps the events' JSON text as sent for the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import beacon
from ingest.beacon import (
    MAX_SAFE_NUMBER,
    InvalidBeacon,
    decode_body,
    parse_beacon,
    validate_envelope,
)

PAYLOADS = sorted(Path("/work/shared/research/player-payloads").glob("livepeer_*.json"))
MAX_EVENTS = 6

# Values on and around every boundary the rules draw, and of every JSON type.
TRICKY: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    -0.0,
    3.0,
    -2.5,
    MAX_SAFE_NUMBER,
    MAX_SAFE_NUMBER + 1,
    -MAX_SAFE_NUMBER,
    -MAX_SAFE_NUMBER - 1,
    float(MAX_SAFE_NUMBER),
    2**64,
    float("nan"),
    float("inf"),
    "",
    "x",
    "constant",
    "é" * 256,
    "é" * 257,
    "x" * 2048,
    "x" * 2049,
    "x" * 8193,
    [],
    [1],
    {},
    {"a": 1},
]
ENVELOPE_FIELDS = sorted(beacon._ENVELOPE.fields)
EVENT_FIELDS = sorted({f for shape in beacon._EVENT_SHAPES.values() for f in shape.fields})
EVENT_TYPES = [*beacon._EVENT_SHAPES, *beacon._PLAIN_EVENT_TYPES, "custom-type", ""]


def good_envelope(events: list[Any]) -> dict[str, Any]:
    return {
        "session_id": "s1",
        "playback_id": "pb1",
        "protocol": "video/mp4",
        "source_url": "https://cdn.example/v.mp4",
        "player": "video",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0",
        "events": events,
    }


def good_event(kind: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": "e1", "type": kind, "timestamp": 1795441630357}
    if kind in ("error", "warning"):
        event.update(message="boom", category="offline")
    return event


values = st.sampled_from(TRICKY)
events = st.builds(
    lambda kind, changes, dropped: {
        k: v for k, v in {**good_event(kind), **changes}.items() if k not in dropped
    },
    st.one_of(st.sampled_from(EVENT_TYPES), values),
    st.dictionaries(st.sampled_from([*EVENT_FIELDS, "unknown"]), values, max_size=4),
    st.sets(st.sampled_from(["id", "type", "timestamp", "message", "category"]), max_size=1),
)
documents = st.builds(
    lambda evs, changes, dropped: {
        k: v for k, v in {**good_envelope(evs), **changes}.items() if k not in dropped
    },
    st.lists(st.one_of(events, values), min_size=0, max_size=MAX_EVENTS + 1),
    st.dictionaries(st.sampled_from([*ENVELOPE_FIELDS, "unknown"]), values, max_size=3),
    st.sets(st.sampled_from(["session_id", "user_agent", "events"]), max_size=1),
)


def answer(validate: Any, doc: Any) -> Any:
    try:
        return validate(doc, max_events=MAX_EVENTS)
    except InvalidBeacon as exc:
        return ("invalid", exc.reason, exc.problems)


def test_every_single_change_is_answered_as_by_hand() -> None:
    """Every field of every event type, and of the envelope, set to every tricky value or removed."""
    docs: list[Any] = []
    for kind in [*EVENT_TYPES, *TRICKY]:
        base = good_event(kind)
        for field in [*EVENT_FIELDS, "unknown"]:
            docs.extend(good_envelope([good_event("play"), {**base, field: v}]) for v in TRICKY)
        docs.extend(
            good_envelope([{k: v for k, v in base.items() if k != field}]) for field in base
        )
    for field in [*ENVELOPE_FIELDS, "events", "unknown"]:
        docs.extend({**good_envelope([good_event("play")]), field: v} for v in TRICKY)
        docs.append({k: v for k, v in good_envelope([good_event("play")]).items() if k != field})
    docs.append(good_envelope([good_event("play")] * (MAX_EVENTS + 1)))
    fast_taken = strict_taken = 0
    for doc in docs:
        assert answer(validate_envelope, doc) == answer(beacon._validate_by_hand, doc), doc
        fast = beacon._all_valid(doc, MAX_EVENTS)
        fast_taken += fast
        body = encoded(doc)
        if body is not None:
            strict = check_body(body)
            strict_taken += strict
            # The strict path leaves only unknown fields to the general way.
            assert strict == (fast and only_known_fields(doc)), doc
    assert fast_taken > len(docs) // 5  # the fast paths are not dead code
    assert strict_taken > 500


@given(doc=st.one_of(documents, values))
@settings(max_examples=3000, deadline=None)
def test_fast_path_answers_as_the_rules_by_hand(doc: Any) -> None:
    fast = answer(validate_envelope, doc)
    by_hand = answer(beacon._validate_by_hand, doc)
    assert fast == by_hand
    if beacon._all_valid(doc, MAX_EVENTS):  # what the fast path accepts, the rules accept whole
        assert not isinstance(by_hand, tuple)
        assert by_hand.rejected == ()
    body = encoded(doc)
    if body is not None and check_body(body):
        assert beacon._all_valid(doc, MAX_EVENTS) and only_known_fields(doc)


def only_known_fields(doc: dict[str, Any]) -> bool:
    def known(event: dict[str, Any]) -> bool:
        shape = beacon._EVENT_SHAPES.get(event["type"], beacon._EVENT)
        return event.keys() <= {*shape.fields, "type"}

    envelope_keys = {*beacon._ENVELOPE.fields, "events"}
    return doc.keys() <= envelope_keys and all(known(e) for e in doc["events"])


def encoded(doc: Any) -> bytes | None:
    """`doc` as JSON, or None when it has no JSON form (orjson would write NaN as null)."""
    try:
        body = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # 2**64
        return None
    return body if orjson.loads(body) == doc else None


def check_body(body: bytes) -> bool:
    """`parse_beacon` answers `body` as the rules by hand answer orjson's reading of it, and
    the events' text it keeps reads back (with orjson, as the aggregator reads the record) as
    the events the rules accepted. True when the strict path took it."""
    try:
        by_hand = answer(beacon._validate_by_hand, decode_body(body))
    except InvalidBeacon as exc:
        by_hand = ("invalid", exc.reason, exc.problems)
    assert answer(parse_beacon, body) == by_hand, body
    strict = beacon._parse_strict(body, MAX_EVENTS)
    if strict is None:
        return False
    assert not isinstance(by_hand, tuple)
    assert strict.rejected == by_hand.rejected == ()
    assert strict.count == len(by_hand.events)
    assert orjson.loads(strict.events_json) == list(by_hand.events)
    assert strict.fields == by_hand.fields
    return True


EVENT = b'{"id":"e1","type":"play","timestamp":1795441630357}'
HEAD = (
    b'"session_id":"s1","playback_id":"pb1","protocol":"video/mp4",'
    b'"source_url":"https://cdn.example/v.mp4","player":"video",'
    b'"version":"@livepeer/core@3.3.1","user_agent":"Mozilla/5.0"'
)


def body_with(*, head: bytes = HEAD, events: bytes = b"[" + EVENT + b"]") -> bytes:
    return b"{" + head + b',"events":' + events + b"}"


# Texts the strict path must read as orjson does, or leave to the general way.
TRICKY_BODIES = [
    body_with(),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1,"timestamp":"x"}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":"x","timestamp":1}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1,"timestamp":2}]'),
    body_with(events=b'[{"id":"e1","type":"heartbeat","timestamp":1,"type":"error"}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1,"type":"pause"}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1}],"events":[]'),
    body_with(events=b'[],"events":[' + EVENT + b"]"),
    body_with(head=HEAD + b',"uid":"a","uid":null'),
    body_with(head=HEAD + b',"uid":"a","uid":7'),
    body_with(head=HEAD + b',"session_id":""'),
    body_with(events=rb'[{"\u0069d":"e\u00e9\ud83d\ude00","type":"pl\u0061y","timestamp":1e3}]'),
    body_with(events=rb'[{"id":"\ud800","type":"play","timestamp":1}]'),
    body_with(events=rb'[{"id":"\u0000","type":"play","timestamp":1}]'),
    body_with(
        events=b'[{"id":"e1","type":"play","timestamp":1,"x":123456789012345678901234567890}]'
    ),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1,"x":"\xff"}]'),
    body_with(events=b'[{"id":"\xff","type":"play","timestamp":1}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":1e400}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":-0}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":-0.0}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":9007199254740991}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":9007199254740992}]'),
    body_with(events=b'[{"id":"e1","type":"play","timestamp":9007199254740991.4}]'),
    body_with(events=b'[{"id":"e1","type":"heartbeat","timestamp":1,"time_playing_ms":4001.5}]'),
    body_with(head=HEAD + b',"view_seq":3.0'),
    body_with(head=HEAD + b',"view_seq":3'),
    body_with(head=HEAD + b',"live":true,"live":false'),
    body_with(events=b" [ \n" + EVENT + b" ,\t" + EVENT + b" ] "),
    b"\xef\xbb\xbf" + body_with(),
    body_with() + b" \n",
    body_with() + b" x",
    body_with(events=b"[" + b",".join([EVENT] * (MAX_EVENTS + 1)) + b"]"),
    body_with(events=b"[]"),
    body_with(events=b"{}"),
    body_with(events=b"[" + EVENT + b",1]"),
    body_with(events=b"[" * 5000 + b"]" * 5000),
    body_with(events=b"[" + EVENT + b"]", head=HEAD + b',"uid":' + b"[" * 5000 + b"]" * 5000),
    b"[]",
    b"",
]


@pytest.mark.parametrize("body", TRICKY_BODIES)
def test_strict_path_reads_the_bytes_as_orjson_and_the_rules(body: bytes) -> None:
    check_body(body)


def test_strict_path_takes_the_common_body_and_keeps_its_events_text() -> None:
    body = body_with(events=b"[" + EVENT + b", " + EVENT + b"]")
    parsed = beacon._parse_strict(body, MAX_EVENTS)
    assert parsed is not None
    assert parsed.events_json == b"[" + EVENT + b", " + EVENT + b"]"
    assert parsed.count == 2


@pytest.mark.parametrize("path", PAYLOADS, ids=[p.stem for p in PAYLOADS])
def test_real_payloads_take_the_fast_path(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    assert beacon._all_valid(doc, 1000)
    assert beacon._parse_strict(path.read_bytes(), 1000) is not None
    check_body(path.read_bytes())
