"""The validator's msgspec fast path gives exactly the answers of the rules by hand, only faster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import beacon
from ingest.beacon import MAX_SAFE_NUMBER, InvalidBeacon, validate_envelope

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
    fast_taken = 0
    for doc in docs:
        assert answer(validate_envelope, doc) == answer(beacon._validate_by_hand, doc), doc
        fast_taken += beacon._all_valid(doc, MAX_EVENTS)
    assert fast_taken > len(docs) // 5  # the fast path is not dead code


@given(doc=st.one_of(documents, values))
@settings(max_examples=3000, deadline=None)
def test_fast_path_answers_as_the_rules_by_hand(doc: Any) -> None:
    fast = answer(validate_envelope, doc)
    by_hand = answer(beacon._validate_by_hand, doc)
    assert fast == by_hand
    if beacon._all_valid(doc, MAX_EVENTS):  # what the fast path accepts, the rules accept whole
        assert not isinstance(by_hand, tuple)
        assert by_hand.rejected == ()


@pytest.mark.parametrize("path", PAYLOADS, ids=[p.stem for p in PAYLOADS])
def test_real_payloads_take_the_fast_path(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    assert beacon._all_valid(doc, 1000)
