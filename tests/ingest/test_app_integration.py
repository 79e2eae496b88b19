"""The collector over real HTTP against the real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from ingest.app import create_app
from ingest.batcher import partition_for
from ingest.record import decode_record
from ingest.registry import Playback, PlaybackRegistry
from ingest.settings import IngestSettings
from tests.conftest import PAYLOADS_DIR, kafka_ctl

LIVEPEER_PAYLOADS = sorted(PAYLOADS_DIR.glob("livepeer_*.json"))


def envelope(n_events: int = 2, **overrides: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    doc = {
        "session_id": f"s-{uuid.uuid4().hex[:12]}",
        "playback_id": "pb-test",
        "protocol": "application/vnd.apple.mpegurl",
        "source_url": "https://cdn.example/hls/pb-test/index.m3u8",
        "player": "hls",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "domain": "example.com",
        "events": [
            {
                "id": uuid.uuid4().hex,
                "type": "heartbeat",
                "timestamp": now + i,
                "time_playing_ms": 5000,
                "errors": 0,
            }
            for i in range(n_events)
        ],
    }
    doc.update(overrides)
    return doc


@pytest.fixture
async def collector(
    ingest_settings: IngestSettings,
) -> AsyncIterator[tuple[TestServer, ClientSession]]:
    settings = replace(ingest_settings, produce_timeout_s=3.0, retry_after_s=2)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    async with ClientSession(str(server.make_url("/")), timeout=ClientTimeout(total=30)) as http:
        # The sink connects in the background: wait until the collector says it is ready.
        for _ in range(200):
            async with http.get("/readyz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("collector never became ready")
        yield server, http
    await server.close()


async def read_envelopes(
    settings: IngestSettings, expected: int, timeout_s: float = 20.0
) -> list[tuple[int, dict[str, Any]]]:
    """(partition, envelope) for every envelope in the topic, waiting for at least `expected`."""
    consumer = AIOKafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[int, dict[str, Any]]] = []

    async def poll() -> None:
        batch = await consumer.getmany(timeout_ms=500)
        for msgs in batch.values():
            for msg in msgs:
                found.extend((msg.partition, env) for env in decode_record(msg.value))

    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            await poll()
        await poll()  # anything beyond what we expected would be a duplicate: let it show up
    finally:
        await consumer.stop()
    return found


async def post(
    http: ClientSession, body: bytes, content_type: str = "application/json", **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with http.post(
        "/analytics/log", data=body, headers={"Content-Type": content_type, **headers}
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


@pytest.mark.parametrize("path", LIVEPEER_PAYLOADS, ids=lambda p: p.name)
async def test_real_livepeer_payloads_reach_kafka_enriched(
    collector: tuple[TestServer, ClientSession], ingest_settings: IngestSettings, path: Any
) -> None:
    _, http = collector
    doc = json.loads(path.read_text())
    content_type = "text/plain;charset=UTF-8" if "sendBeacon" in path.name else "application/json"
    status, headers, body = await post(http, path.read_bytes(), content_type)
    assert status == 200, body
    assert body["accepted"] == len(doc["events"])
    assert body["rejected"] == []
    assert headers["Access-Control-Allow-Origin"] == "*"
    [(partition, record)] = await read_envelopes(ingest_settings, 1)
    assert partition == partition_for(doc["session_id"].encode(), ingest_settings.topic_partitions)
    assert record["events"] == doc["events"]
    assert record["envelope"] == {k: v for k, v in doc.items() if k != "events"}
    assert record["server_timestamp"] == body["server_timestamp"]
    assert record["viewer_hash"] == doc["uid"]  # uid given: it is the viewer
    assert record["dims"]["browser"] is not None
    assert record["dims"]["deviceType"] == "desktop"


async def test_enrichment_uses_registry_and_trusted_forwarded_for(
    ingest_settings: IngestSettings, redis: Redis
) -> None:
    pid = f"pb-{uuid.uuid4().hex[:8]}"
    await PlaybackRegistry(redis).add(Playback(pid, creator_id="creator-x", asset_id=f"a-{pid}"))
    settings = replace(ingest_settings, trusted_proxies=())
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            doc = envelope(1, playback_id=pid)
            doc.pop("uid", None)
            for _ in range(100):
                status, _, body = await post(
                    http, orjson.dumps(doc), **{"X-Forwarded-For": "1.2.3.4"}
                )
                if status != 503:
                    break
                await asyncio.sleep(0.2)
            assert status == 200, body
        [(_, record)] = await read_envelopes(settings, 1)
        assert record["playback"] == {
            "creatorId": "creator-x",
            "assetId": f"a-{pid}",
            "streamId": None,
        }
        # No trusted proxy: the forwarded address was ignored, the viewer hash is not the uid.
        assert len(record["viewer_hash"]) == 64
        assert record["dims"]["country"] is None
    finally:
        await server.close()


async def test_strict_mode_refuses_unknown_playbacks(
    ingest_settings: IngestSettings, redis: Redis
) -> None:
    settings = replace(ingest_settings, strict_playbacks=True)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            # Refused before Kafka is involved; still let the sink finish connecting, so that
            # closing the server does not cut its connection attempt half way.
            for _ in range(200):
                async with http.get("/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
            status, _, body = await post(http, orjson.dumps(envelope(playback_id="pb-nobody")))
            assert status == 403
            assert body == {"errors": ["playback_id: 'pb-nobody' is not registered"]}
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"{not json", "application/json", 400, "body:"),
        (b"\xff\xfe{}", "application/json", 400, "UTF-8"),
        (b"[]", "application/json", 400, ""),
        (orjson.dumps(envelope(events=[])), "application/json", 400, "events"),
        (orjson.dumps(envelope(session_id=5)), "application/json", 400, "session_id"),
        (orjson.dumps(envelope()), "application/x-www-form-urlencoded", 415, "content-type"),
        (orjson.dumps(envelope(1001)), "application/json", 400, "events"),
    ],
    ids=["malformed", "bad-utf8", "not-object", "no-events", "wrong-type", "form", "too-many"],
)
async def test_bad_input_gets_a_clear_4xx(
    collector: tuple[TestServer, ClientSession],
    body: bytes,
    content_type: str,
    status: int,
    fragment: str,
) -> None:
    _, http = collector
    got, _, answer = await post(http, body, content_type)
    assert got == status
    assert answer["errors"] and all(isinstance(e, str) for e in answer["errors"])
    assert any(fragment in e for e in answer["errors"]), answer


async def test_oversized_body_is_refused_before_reading(
    collector: tuple[TestServer, ClientSession], ingest_settings: IngestSettings
) -> None:
    _, http = collector
    big = b"x" * (ingest_settings.max_body_bytes + 1)
    status, _, answer = await post(http, big)
    assert status == 413
    assert "larger than" in answer["errors"][0]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(ingest_settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    async with http.post(
        "/analytics/log", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413


async def test_partly_bad_envelope_keeps_valid_events(
    collector: tuple[TestServer, ClientSession], ingest_settings: IngestSettings
) -> None:
    _, http = collector
    doc = envelope(3)
    doc["events"][1]["timestamp"] = "yesterday"
    status, _, body = await post(http, orjson.dumps(doc))
    assert status == 200
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    [(_, record)] = await read_envelopes(ingest_settings, 1)
    assert record["events"] == [doc["events"][0], doc["events"][2]]


async def test_cors_preflight(collector: tuple[TestServer, ClientSession]) -> None:
    _, http = collector
    async with http.options(
        "/analytics/log",
        headers={
            "Origin": "https://site.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]


async def test_metrics_count_accepted_and_rejected(
    collector: tuple[TestServer, ClientSession],
) -> None:
    _, http = collector
    assert (await post(http, orjson.dumps(envelope(4))))[0] == 200
    assert (await post(http, b"nope"))[0] == 400
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'playpulse_ingest_events_total{outcome="accepted",reason=""} 4.0' in text
    assert 'playpulse_ingest_envelopes_total{outcome="rejected"' in text
    assert "playpulse_ingest_produce_seconds_count 1.0" in text  # one record, acknowledged


async def test_kafka_down_gives_503_then_recovers_and_loses_nothing(
    collector: tuple[TestServer, ClientSession], ingest_settings: IngestSettings
) -> None:
    """Everything answered 2xx is in the topic, across a broker stop and start."""
    _, http = collector
    accepted: set[str] = set()

    async def send(doc: dict[str, Any]) -> tuple[int, dict[str, str]]:
        status, headers, _ = await post(http, orjson.dumps(doc))
        if status == 200:
            accepted.update(e["id"] for e in doc["events"])
        return status, headers

    for _ in range(10):
        assert (await send(envelope(3)))[0] == 200

    kafka_ctl("stop")
    try:
        started = time.monotonic()
        status, headers = await send(envelope(3))
        took = time.monotonic() - started
        assert status == 503
        assert int(headers["Retry-After"]) > 0
        assert took < 3.0 + 2.0  # produce timeout plus slack: bounded, not hanging
        # While down, further requests fail fast instead of piling up.
        started = time.monotonic()
        assert (await send(envelope(1)))[0] == 503
        assert time.monotonic() - started < 3.5
        async with http.get("/readyz") as resp:
            assert resp.status == 503
    finally:
        kafka_ctl("start")

    deadline = time.monotonic() + 60
    while True:
        status, _ = await send(envelope(2))
        if status == 200:
            break
        assert status == 503
        assert time.monotonic() < deadline, "collector did not recover after Kafka came back"
        await asyncio.sleep(0.5)
    for _ in range(5):
        assert (await send(envelope(2)))[0] == 200

    found = await read_envelopes(ingest_settings, 16, timeout_s=30)
    in_topic = {e["id"] for _, env in found for e in env["events"]}
    assert accepted <= in_topic


async def test_a_sessions_envelopes_share_a_partition_and_keep_their_order(
    collector: tuple[TestServer, ClientSession], ingest_settings: IngestSettings
) -> None:
    """Concurrent posts are coalesced into few records without mixing up partitions or order."""
    _, http = collector
    sessions = [f"s-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    docs = [envelope(2, session_id=sid) for _ in range(4) for sid in sessions]
    for round_ in range(4):  # each round posts one envelope per session, all at once
        batch = docs[round_ * len(sessions) : (round_ + 1) * len(sessions)]
        statuses = await asyncio.gather(*(post(http, orjson.dumps(d)) for d in batch))
        assert [s for s, _, _ in statuses] == [200] * len(batch)
    found = await read_envelopes(ingest_settings, len(docs))
    assert len(found) == len(docs)
    for sid in sessions:
        mine = [(p, env) for p, env in found if env["envelope"]["session_id"] == sid]
        assert {p for p, _ in mine} == {
            partition_for(sid.encode(), ingest_settings.topic_partitions)
        }
        sent = [d["events"] for d in docs if d["session_id"] == sid]
        assert [env["events"] for _, env in mine] == sent
