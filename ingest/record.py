"""The `beacons` topic's record format: one Kafka record per partition batch of envelopes.

The collector coalesces the envelopes it accepts at about the same time for the same partition
(`ingest.batcher`): the partition is Kafka's default partitioner applied to the `session_id`, so
every envelope of a session lands in one partition, in acceptance order. Records carry no key.
Value: a JSON object (orjson), version 2:

    {"v": 2,
     "envelopes": [
       {"server_timestamp": 1732370000123,     # ms, the collector's clock when it accepted the envelope
        "envelope": {...},                      # the envelope's fields as sent, minus `events`
        "viewer_hash": "…",                     # uid when given, else HMAC(salt; domain, UA, client IP)
        "playback": {"creatorId": …, "assetId": …, "streamId": …},   # playback registry, or nulls
        "dims": {"deviceType": …, "device": …, "cpu": …, "os": …, "browser": …, "browserEngine": …,
                 "continent": …, "country": …, "subdivision": …, "timezone": …, "geohash": …},
        "events": [{...}, ...]},                # the valid events, as sent (their JSON text
                                                #   itself when the whole body was valid)
       ...]}

Enrichment lives only here, server side; nothing the client sent under these names is trusted.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.beacon import Envelope
from ingest.registry import Playback

RECORD_VERSION = 2
_HEAD = b'{"v":2,"envelopes":['
_TAIL = b"]}"
_EVENTS_KEY = b',"events":'


def envelope_item(
    envelope: Envelope,
    *,
    server_ts_ms: int,
    viewer_hash: str,
    dims: dict[str, str | None],
    playback: Playback | None,
) -> bytes:
    """One envelope's object of the record. The events go in as their JSON text
    (`Envelope.events_json`: as sent, when the envelope came by `parse_beacon`'s strict path),
    spliced after the rest instead of being decoded and encoded again."""
    head = orjson.dumps(
        {
            "server_timestamp": server_ts_ms,
            "envelope": envelope.fields,
            "viewer_hash": viewer_hash,
            "playback": {
                "creatorId": playback.creator_id if playback else None,
                "assetId": playback.asset_id if playback else None,
                "streamId": playback.stream_id if playback else None,
            },
            "dims": dims,
        }
    )
    return b"".join((head[:-1], _EVENTS_KEY, envelope.events_json, b"}"))


def encode_record(items: list[bytes]) -> bytes:
    """Joins `envelope_item`s into one record without decoding them again."""
    return b"".join((_HEAD, b",".join(items), _TAIL))


def decode_record(value: bytes) -> list[dict[str, Any]]:
    """The envelopes of one record, in acceptance order."""
    return envelopes_of(orjson.loads(value))


def envelopes_of(record: Any) -> list[dict[str, Any]]:
    """The envelopes of one record already decoded from JSON (`decode_record`)."""
    if not isinstance(record, dict):
        raise ValueError("beacons record: not a JSON object")
    if record.get("v") != RECORD_VERSION:
        raise ValueError(f"beacons record: unsupported version {record.get('v')!r}")
    envelopes = record.get("envelopes")
    if not isinstance(envelopes, list):
        raise ValueError("beacons record: `envelopes` is not a list")
    return envelopes
