"""The live page's token and event stream over real HTTP against the real Redis, filled by the
aggregator's own writers (the same data as the query API's tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from redis.asyncio import Redis
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from aggregator import sketch
from aggregator.concurrency import SAMPLE_MS, PartitionConcurrency
from aggregator.keys import FULL
from aggregator.metrics import Components
from aggregator.rollups import PartitionRollups, full_values, scopes_of
from aggregator.store import ConcurrencyWriter, RollupWriter
from aggregator.timebuckets import MINUTE_MS
from api import openapi
from api.app import create_app
from api.auth import create_key, revoke_key
from api.live import Thresholds
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from ingest.settings import IngestSettings
from tests.api.test_api_integration import NOW, ORIGIN, ms, seed

TOKEN, STREAM = "/api/live/token", "/api/live/stream"
SNAPSHOT = Draft202012Validator(
    {"$ref": "urn:openapi#/components/schemas/live-snapshot"},
    registry=Registry().with_resource(
        "urn:openapi", Resource.from_contents(openapi.document(), DRAFT202012)
    ),
)


async def seed_concurrency(redis: Redis) -> None:
    """Concurrent viewers over the last hour, as two workers' concurrency writers store them:
    pb-1 (cr-1) peaks at 2 at 11:50, pb-2 (cr-2) at 3 at 11:20 (the peak of all)."""
    k = ms("2025-06-15T11:50:00") // SAMPLE_MS
    p0, p1 = PartitionConcurrency(), PartitionConcurrency()
    pb1, pb2 = (
        ["all", "playbackId=pb-1", "creatorId=cr-1"],
        ["all", "playbackId=pb-2", "creatorId=cr-2"],
    )
    p0.add(pb1, [(k, k + 6)])
    p1.add(pb1, [(k + 3, k + 9)])
    p1.add(pb2, [(k + 8, k + 10)])
    p0.add(pb2, [(k - 360, k - 354)])
    p1.add(pb2, [(k - 360, k - 350)])
    p1.add(pb2, [(k - 358, k - 352)])
    p0.add(pb1, [(NOW // SAMPLE_MS + 1, NOW // SAMPLE_MS + 7)])  # after "now": not counted yet
    writer = ConcurrencyWriter(redis)
    for partition, part in enumerate((p0, p1)):
        await writer.write(partition, 1, part.take())


def minute_view(ttff_ms: int | None = None, errors: int = 0, **counters: int) -> Components:
    ttff = {} if ttff_ms is None else {"ttff_sum_ms": ttff_ms, "ttff_count": 1}
    buckets = () if ttff_ms is None else ((sketch.bucket_of(ttff_ms), 1),)
    return Components(
        views=1, sessions=1, error_sessions=errors, ttff_buckets=buckets, **ttff, **counters
    )


async def seed_minutes(redis: Redis) -> None:
    """Minute rows around the quality window of NOW (12:00:30): [11:55, 12:00:30), as two
    workers' rollup writers store them. pb-1 (cr-1): a view at 11:54 (before the window),
    one at 11:55 (TTFF 1 s, an error), one in the open minute 12:00 (TTFF 3 s) and 30 s of
    play with 10 s of buffering at 11:58; pb-2 (cr-2): a view at 11:57 (TTFF 2 s)."""
    pb1 = dict.fromkeys(FULL) | {"playbackId": "pb-1", "creatorId": "cr-1"}
    pb2 = dict.fromkeys(FULL) | {"playbackId": "pb-2", "creatorId": "cr-2"}
    p0, p1 = PartitionRollups(), PartitionRollups()
    p0.add_minutes(
        full_values(pb1),
        {
            ms("2025-06-15T11:54:00"): minute_view(ttff_ms=9_000, errors=1),
            ms("2025-06-15T11:55:00"): minute_view(ttff_ms=1_000, errors=1),
            ms("2025-06-15T12:00:00"): minute_view(ttff_ms=3_000),
        },
    )
    p1.add_minute_activity(scopes_of(full_values(pb1)), ms("2025-06-15T11:58:00"), 30_000, 10_000)
    p1.add_minutes(full_values(pb2), {ms("2025-06-15T11:57:00"): minute_view(ttff_ms=2_000)})
    writer = RollupWriter(redis)
    for partition, part in enumerate((p0, p1)):
        part.fold()
        await writer.write(partition, 1, part.take_dirty())


@dataclass
class Live:
    http: ClientSession
    redis: Redis
    keys: dict[str, str]
    ids: dict[str, str]
    metrics: ApiMetrics

    async def token(
        self, key: str | None, origin: str | None = None, **query: str
    ) -> tuple[int, Any]:
        headers = {} if key is None else {"Authorization": f"Bearer {self.keys.get(key, key)}"}
        if origin is not None:
            headers["Origin"] = origin
        async with self.http.post(TOKEN, params=query, headers=headers) as resp:
            return resp.status, await resp.json()

    async def events(self, token: str, n: int, **query: str) -> list[tuple[str, Any]]:
        """The first `n` events of a stream (then it is closed)."""
        out = []
        async with self.http.get(STREAM, params={"token": token, **query}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"] == "text/event-stream"
            while len(out) < n:
                frame = (await resp.content.readuntil(b"\n\n")).decode()
                fields = dict(line.split(": ", 1) for line in frame.strip().split("\n"))
                out.append((fields["event"], orjson.loads(fields["data"])))
                if fields["event"] == "snapshot":  # as the OpenAPI document describes it
                    SNAPSHOT.validate(out[-1][1])
        return out

    async def concurrent(self, **query: str) -> list[dict[str, int]]:
        """`/views/concurrent` by minute over its default range (the last hour), private key."""
        headers = {"Authorization": f"Bearer {self.keys['private']}"}
        async with self.http.get(
            "/api/data/views/concurrent", params=query, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            rows: list[dict[str, int]] = await resp.json()
            return rows

    async def stream_status(self, token: str, **query: str) -> tuple[int, Any]:
        async with self.http.get(STREAM, params={"token": token, **query}) as resp:
            return resp.status, await resp.json()


KEY_CACHE_S = 0.3  # how long the API remembers a key it found


@pytest.fixture
async def lv() -> AsyncIterator[Live]:
    redis = Redis.from_url(IngestSettings.from_env().redis_url)
    await redis.flushdb()
    await seed(redis)
    await seed_concurrency(redis)
    await seed_minutes(redis)
    made = {
        "private": await create_key(redis, kind="private"),
        "scoped": await create_key(redis, kind="private", creator_id="cr-1"),
        "cors": await create_key(redis, kind="cors", origins=[ORIGIN]),
        "cors-scoped": await create_key(redis, kind="cors", origins=[ORIGIN], creator_id="cr-1"),
    }
    settings = ApiSettings(
        live_interval_s=0.2, live_thresholds=Thresholds(errorRate=0.4), key_cache_s=KEY_CACHE_S
    )
    metrics = ApiMetrics.create()
    server = TestServer(
        create_app(settings, metrics=metrics, redis=redis, clock=lambda: NOW), host="127.0.0.1"
    )
    await server.start_server()
    async with ClientSession(str(server.make_url("/"))) as http:
        yield Live(
            http,
            redis,
            {k: v[1] for k, v in made.items()},
            {k: v[0] for k, v in made.items()},
            metrics,
        )
    await server.close()
    await redis.aclose()


async def test_page_and_its_files_are_served_without_a_key(lv: Live) -> None:
    async with lv.http.get("/live") as resp:
        assert resp.status == 200
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        page = await resp.text()
    for path in ("/live/static/live.js", "/live/static/vendor/uplot/uPlot.iife.min.js"):
        assert path in page
        async with lv.http.get(path) as resp:
            assert resp.status == 200


async def test_the_stream_pushes_snapshots_of_what_views_now_reports(lv: Live) -> None:
    status, body = await lv.token("private")
    assert status == 200 and body["expiresInS"] == ApiSettings().live_token_ttl_s
    events = await lv.events(body["token"], 2)
    assert [name for name, _ in events] == ["snapshot", "snapshot"]
    snap = events[0][1]
    async with lv.http.get(
        "/api/data/views/now", headers={"Authorization": f"Bearer {lv.keys['private']}"}
    ) as resp:
        now = (await resp.json())[0]
    # s1, s2 (erroring) on pb-1 in DE, s4 on pb-1 in FR; s3 is 40 s old: not watching.
    assert snap["concurrentViewers"] == now["viewCount"] == 3
    assert snap["errorRateNow"] == pytest.approx(now["errorRate"])
    assert snap["topPlaybacks"] == [{"playbackId": "pb-1", "viewCount": 3, "errorRate": 1 / 3}]
    assert [(r["country"], r["viewCount"]) for r in snap["countries"]] == [("DE", 2), ("FR", 1)]
    assert snap["lastBeaconMs"] == NOW - 1_000
    # 12:00:30 - 5 min is in the 11:55 minute: the minute rows are summed from there.
    assert snap["qoe"]["from"] == ms("2025-06-15T11:55:00") and snap["qoe"]["to"] == NOW
    assert snap["thresholds"]["errorRate"] == 0.4
    assert snap["intervalMs"] == 200


async def test_a_scoped_key_sees_only_its_creator(lv: Live) -> None:
    status, body = await lv.token("scoped")
    assert status == 200
    (_, snap), *_ = await lv.events(body["token"], 1)
    assert snap["scope"] == {"playbackId": None, "creatorId": "cr-1"}
    assert snap["concurrentViewers"] == 3
    (_, snap), *_ = await lv.events(body["token"], 1, playbackId="pb-1")
    assert snap["scope"]["playbackId"] == "pb-1" and snap["concurrentViewers"] == 3
    # Another creator's data, asked for by creator or by playback: refused, at both doors.
    for query in ({"creatorId": "cr-2"}, {"playbackId": "pb-2"}):
        assert (await lv.token("scoped", **query))[0] == 403
        assert (await lv.stream_status(body["token"], **query))[0] == 403


async def test_a_cors_key_must_be_scoped_and_come_from_its_origin(lv: Live) -> None:
    status, body = await lv.token("cors", ORIGIN)
    assert status == 403 and "scoped to a creator" in body["errors"][0]
    assert (await lv.token("cors-scoped", "https://evil.example"))[0] == 403
    assert (await lv.token("cors-scoped"))[0] == 403  # no Origin: not from a page it allows
    status, body = await lv.token("cors-scoped", ORIGIN)
    assert status == 200 and body["creatorId"] == "cr-1"
    async with lv.http.get(
        STREAM, params={"token": body["token"]}, headers={"Origin": ORIGIN}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with lv.http.get(
        STREAM, params={"token": body["token"]}, headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403


async def test_unauthorised_is_refused(lv: Live) -> None:
    assert (await lv.token(None))[0] == 401
    assert (await lv.token("not-a-key"))[0] == 401
    async with lv.http.get(STREAM) as resp:
        assert resp.status == 401
    assert (await lv.stream_status("not-a-token"))[0] == 401
    # A key's secret is not a token: a token opens nothing but the stream, and only a token
    # opens the stream.
    assert (await lv.stream_status(lv.keys["private"]))[0] == 401
    status, body = await lv.token("private", playbackId="pb-1", creatorId="cr-1")
    assert status == 400 and body["errors"][0].startswith("creatorId:")


async def test_revoking_the_key_ends_its_tokens(lv: Live) -> None:
    _, body = await lv.token("scoped")
    assert await revoke_key(lv.redis, lv.ids["scoped"])
    assert (await lv.stream_status(body["token"]))[0] == 401  # tokens look their key up
    await asyncio.sleep(KEY_CACHE_S + 0.05)  # the key itself is remembered that long
    assert (await lv.token("scoped"))[0] == 401


async def test_open_streams_are_counted(lv: Live) -> None:
    _, body = await lv.token("private")
    async with lv.http.get(STREAM, params={"token": body["token"]}) as resp:
        await resp.content.readuntil(b"\n\n")
        assert lv.metrics.live_streams._value.get() == 1
    for _ in range(50):  # the handler notices the closed connection at its next write
        if lv.metrics.live_streams._value.get() == 0:
            break
        await asyncio.sleep(0.1)
    assert lv.metrics.live_streams._value.get() == 0


async def test_the_quality_numbers_are_the_minutes_of_the_window(lv: Live) -> None:
    """11:55 to now (the open minute 12:00 included), not 11:54 nor the hour rows."""
    _, body = await lv.token("private")
    (_, snap), *_ = await lv.events(body["token"], 1)
    qoe = snap["qoe"]
    assert (qoe["from"], qoe["to"], qoe["viewCount"]) == (ms("2025-06-15T11:55:00"), NOW, 3)
    assert qoe["ttffMs"] == 2_000 and qoe["errorRate"] == pytest.approx(1 / 3)
    assert qoe["rebufferRatio"] == 0.25 and qoe["exitsBeforeStart"] == 0
    assert qoe["ttffP95Ms"] == pytest.approx(2_000, rel=0.01)  # rank 0.95 * (3 - 1), floored
    assert snap["breaches"]["rebufferRatio"] and not snap["breaches"]["errorRate"]  # 1/3 < 0.4
    # Scoped: cr-1's own minutes only; a playback's too.
    _, body = await lv.token("cors-scoped", ORIGIN)
    (_, snap), *_ = await lv.events(body["token"], 1)
    assert snap["qoe"]["viewCount"] == 2 and snap["qoe"]["ttffMs"] == 2_000
    assert snap["qoe"]["errorRate"] == 0.5
    _, body = await lv.token("private", playbackId="pb-2")
    (_, snap), *_ = await lv.events(body["token"], 1, playbackId="pb-2")
    assert snap["qoe"]["viewCount"] == 1 and snap["qoe"]["rebufferRatio"] is None


def series(chart: dict[str, Any]) -> list[dict[str, int]]:
    """The snapshot's chart as `/views/concurrent` rows."""
    return [
        {"timestamp": chart["from"] + i * chart["stepMs"], "peakConcurrentViewers": p}
        for i, p in enumerate(chart["peaks"])
    ]


async def test_the_snapshot_carries_the_hours_chart_of_its_scope(lv: Live) -> None:
    _, body = await lv.token("private")
    (_, snap), *_ = await lv.events(body["token"], 1)
    chart = snap["lastHour"]
    rows = await lv.concurrent()
    assert series(chart) == rows and len(rows) == 61  # 11:00 to the open minute, 12:00
    assert chart["stepMs"] == MINUTE_MS
    assert chart["peak"] == {"timestamp": ms("2025-06-15T11:20:00"), "peakConcurrentViewers": 3}
    # Scoped: a CORS key of cr-1 (which may not call /views/concurrent) sees cr-1's chart.
    _, body = await lv.token("cors-scoped", ORIGIN)
    (_, snap), *_ = await lv.events(body["token"], 1)
    assert snap["scope"] == {"playbackId": None, "creatorId": "cr-1"}
    assert series(snap["lastHour"]) == await lv.concurrent(creatorId="cr-1")
    assert snap["lastHour"]["peak"] == {
        "timestamp": ms("2025-06-15T11:50:00"),
        "peakConcurrentViewers": 2,
    }
    (_, snap), *_ = await lv.events(body["token"], 1, playbackId="pb-1")
    assert series(snap["lastHour"]) == await lv.concurrent(playbackId="pb-1")


def test_the_snapshot_schema_is_closed() -> None:
    snap: dict[str, Any] = {"lastHour": {"from": 0, "stepMs": MINUTE_MS, "peaks": [], "peak": None}}
    errors = [e.message for e in SNAPSHOT.iter_errors(snap | {"extra": 1})]
    assert any("'extra' was unexpected" in e for e in errors)
    assert any("'serverTime' is a required property" in e for e in errors)
