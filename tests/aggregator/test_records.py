"""Folding records decoded light (`aggregator.records`) gives what folding them in full gives."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings

from aggregator.partition import PartitionAggregate
from aggregator.records import decode_held, decode_light
from ingest.record import decode_record
from tests.aggregator.test_partition import H0, envelope, hb, live_rows, realise, steps


def record(*envelopes: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 2, "envelopes": list(envelopes)})


def fold_light_or_full(part: PartitionAggregate, value: bytes) -> None:
    """The worker's rule: light when every session is held, else in full."""
    light = decode_held(value, part.sessions)
    if light is None:
        for env in decode_record(value):
            part.fold_envelope(env)
        return
    for held in light.envelopes:
        assert part.fold_events(held.session_id, held.server_timestamp, held.events) is not None


@settings(max_examples=150, deadline=None)
@given(steps())
def test_light_decoding_folds_the_same_sessions_and_rows(plan: list[Any]) -> None:
    full, light = PartitionAggregate(0), PartitionAggregate(0)
    for kind, arg, env in realise(plan):
        if kind == "tick":
            closed = [(s, was) for s, _, was in full.close_due(arg)]
            assert [(s, was) for s, _, was in light.close_due(arg)] == closed
            continue
        value = record(env)
        for e in decode_record(value):
            full.fold_envelope(e)
        fold_light_or_full(light, value)
        assert light.take_unsaved().keys() == full.take_unsaved().keys()  # a checkpoint's
    assert {s: e.to_bytes() for s, e in light.sessions.items()} == {
        s: e.to_bytes() for s, e in full.sessions.items()
    }
    for part in (full, light):
        part.prune_minutes()
        part.rollups.fold()
    assert live_rows(light) == live_rows(full)
    assert light.take_touched() == full.take_touched()


def test_a_record_with_a_new_session_is_decoded_in_full() -> None:
    value = record(
        envelope("s1", H0, [hb("a", H0, time_playing_ms=5_000)]),
        envelope("s2", H0, [hb("b", H0, time_playing_ms=5_000)]),
    )
    assert decode_held(value, {"s1"}) is None
    held = decode_held(value, {"s1", "s2"})
    assert held is not None
    assert [(e.session_id, e.server_timestamp) for e in held.envelopes] == [("s1", H0), ("s2", H0)]
    assert held.envelopes[1].events == [hb("b", H0, time_playing_ms=5_000)]
    tick = orjson.dumps({"v": 2, "tick": H0, "envelopes": []})
    assert (light := decode_held(tick, ())) is not None and light.tick == H0


def test_what_the_light_types_refuse_is_left_to_the_full_decoding() -> None:
    env = envelope("s1", H0, [hb("a", H0, time_playing_ms=5_000)])
    assert decode_light(record({**env, "server_timestamp": float(H0)})) is None
    assert decode_light(record({**env, "events": ["not an event"]})) is None
    assert decode_light(orjson.dumps({"v": 3, "envelopes": [env]})) is None
    assert decode_light(b"not json") is None
    assert decode_light(b"[]") is None
