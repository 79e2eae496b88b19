"""The `beacons` topic's record format: one Kafka record per accepted envelope.

Key: the envelope's `session_id` (UTF-8), so every event of a session lands in one partition
(aiokafka's default murmur2 partitioner, the same as the Java client's).
Value: an orjson-encoded object, version 1:

    {"v": 1,
     "server_timestamp": 1732370000123,        # ms, the collector's clock when it accepted the envelope
     "envelope": {...},                         # the envelope's fields as sent, minus `events`
     "viewer_hash": "…",                        # uid when given, else salted sha256(domain, UA, client IP)
     "playback": {"creatorId": …, "assetId": …, "streamId": …},   # from the playback registry, or nulls
     "dims": {"deviceType": …, "device": …, "cpu": …, "os": …, "browser": …, "browserEngine": …,
              "continent": …, "country": …, "subdivision": …, "timezone": …, "geohash": …},
     "events": [{...}, ...]}                    # the valid events, as sent

Enrichment lives only here, server side; nothing the client sent under these names is trusted.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.beacon import Envelope
from ingest.registry import Playback

RECORD_VERSION = 1


def beacon_record(
    envelope: Envelope,
    *,
    server_ts_ms: int,
    viewer_hash: str,
    dims: dict[str, str | None],
    playback: Playback | None,
) -> bytes:
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "server_timestamp": server_ts_ms,
            "envelope": envelope.fields,
            "viewer_hash": viewer_hash,
            "playback": {
                "creatorId": playback.creator_id if playback else None,
                "assetId": playback.asset_id if playback else None,
                "streamId": playback.stream_id if playback else None,
            },
            "dims": dims,
            "events": envelope.events,
        }
    )


def decode_record(value: bytes) -> dict[str, Any]:
    record = orjson.loads(value)
    if not isinstance(record, dict):
        raise ValueError("beacons record: not a JSON object")
    if record.get("v") != RECORD_VERSION:
        raise ValueError(f"beacons record: unsupported version {record.get('v')!r}")
    return record
