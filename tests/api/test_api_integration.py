"""The query API over real HTTP against the real Redis, filled by the aggregator's own writers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aggregator import sketch
from aggregator.keys import FULL
from aggregator.metrics import Components
from aggregator.partition import Touched
from aggregator.rollups import PartitionRollups
from aggregator.store import RollupWriter, TouchedWriter
from aggregator.timebuckets import DAY_MS, floor
from api.app import create_app
from api.auth import KnownKeys, create_key, list_keys, revoke_key
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from ingest.registry import Playback, PlaybackRegistry


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


H0 = ms("2025-06-10T10:00:00")
H1 = H0 + DAY_MS
LAST_YEAR = ms("2024-12-31T23:00:00")
NOW = ms("2025-06-15T12:00:30")
JUNE = {"from": "2025-06-01T00:00:00Z", "to": str(ms("2025-06-15T00:00:00"))}
ORIGIN = "https://app.example"


def dims(playback: str, creator: str | None, country: str, device: str) -> dict[str, str | None]:
    return {
        **dict.fromkeys(FULL),
        "playbackId": playback,
        "creatorId": creator,
        "country": country,
        "deviceType": device,
        "device": device,
        "browser": "Chrome",
    }


A = dims("pb-1", "cr-1", "DE", "desktop")
B = dims("pb-1", "cr-1", "FR", "mobile")
C = dims("pb-2", "cr-2", "DE", "desktop")
UNREGISTERED = dims("pb-9", None, "DE", "desktop")


async def seed_registry(redis: Redis) -> None:
    registry = PlaybackRegistry(redis, cache_s=0.001)
    await registry.add(Playback("pb-1", "cr-1", asset_id="as-1"))
    await registry.add(Playback("pb-2", "cr-2", stream_id="st-2"))


async def seed(redis: Redis) -> None:
    await seed_registry(redis)
    # Two source partitions, as two workers would write them: the reader adds them up.
    p0, p1 = PartitionRollups(), PartitionRollups()
    ttff = sketch.build([200, 400])
    p0.add(
        A,
        {
            H0: Components.with_ttff_counts(
                ttff,
                views=2,
                sessions=2,
                playing_ms=120_000,
                ttff_sum_ms=600,
                ttff_count=2,
                error_sessions=1,
            )
        },
    )
    p0.add(A, {LAST_YEAR: Components(views=5, sessions=5, playing_ms=300_000)})
    p0.add(UNREGISTERED, {H0: Components(views=1, sessions=1, playing_ms=30_000)})
    p1.add(
        B,
        {
            H1: Components(
                views=1, sessions=2, playing_ms=60_000, buffer_ms=20_000, exits_before_start=1
            )
        },
    )
    p1.add(C, {H0: Components(views=3, sessions=3, playing_ms=180_000)})
    writer = RollupWriter(redis)
    for partition, rollups in enumerate((p0, p1)):
        rollups.fold()
        await writer.write(partition, 1, rollups.take_dirty())
    await TouchedWriter(redis).write(
        {
            "s1": Touched(A, "viewer-1", NOW - 5_000, False, (H0,)),
            "s2": Touched(A, "viewer-2", NOW - 10_000, True, (H0,)),
            "s3": Touched(C, "viewer-3", NOW - 40_000, False, (H0,)),  # not watching now
            "s4": Touched(B, "viewer-1", NOW - 1_000, False, (H1,)),
        },
        NOW,
    )


@dataclass
class Client:
    http: ClientSession
    metrics: ApiMetrics
    keys: dict[str, str]

    async def get(
        self, path: str, key: str | None = None, /, **query: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """GET with the named key (or a literal bearer token); `Origin=` sets that header."""
        origin = query.pop("Origin", None)
        headers = {}
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        if origin is not None:
            headers["Origin"] = origin
        pairs = []
        for name, value in query.items():
            for v in value if isinstance(value, list) else [value]:
                pairs.append((name, str(v)))
        async with self.http.get(path, params=pairs, headers=headers) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body, dict(resp.headers)


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


KEY_CACHE_S = 0.3  # how long the API remembers a key it found (a revoked one works that long)


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Client]:
    await seed(redis)
    keys = {
        "private": (await create_key(redis, kind="private", name="server"))[1],
        "scoped": (await create_key(redis, kind="private", creator_id="cr-1"))[1],
        "cors": (await create_key(redis, kind="cors", origins=[ORIGIN + "/"]))[1],
        "cors-scoped": (await create_key(redis, kind="cors", origins=[ORIGIN], creator_id="cr-1"))[
            1
        ],
    }
    metrics = ApiMetrics.create()
    settings = ApiSettings(key_cache_s=KEY_CACHE_S)
    app = create_app(settings, metrics=metrics, redis=redis, clock=lambda: NOW)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession(str(server.make_url("/"))) as http:
        yield Client(http, metrics, keys)
    await server.close()


QUERY = "/api/data/views/query"
NOW_PATH = "/api/data/views/now"
CREATOR = "/api/data/views/query/creator"
USAGE = "/api/data/usage/query"


async def test_views_query_by_day_for_a_playback(api: Client) -> None:
    status, rows, _ = await api.get(QUERY, "private", playbackId="pb-1", timeStep="day", **JUNE)
    assert status == 200
    p50 = rows[0].pop("ttffP50Ms")
    p95 = rows[0].pop("ttffP95Ms")
    for quantile in (p50, p95):  # the sketch's values are within 1 % of one of the two
        assert min(abs(quantile - v) / v for v in (200, 400)) <= 0.01
    assert rows == [
        {
            "timestamp": floor(H0, "day"),
            "viewCount": 2,
            "playtimeMins": 2.0,
            "ttffMs": 300.0,
            "rebufferRatio": 0.0,
            "errorRate": 0.5,
            "exitsBeforeStart": 0.0,
            "exitsBeforeStartCount": 0,
            "uniqueViewers": 2,
        },
        {
            "timestamp": floor(H1, "day"),
            "viewCount": 1,
            "playtimeMins": 1.0,
            "ttffMs": None,  # asked for, no data: null
            "ttffP50Ms": None,
            "ttffP95Ms": None,
            "rebufferRatio": 0.25,
            "errorRate": 0.0,
            "exitsBeforeStart": 1.0,
            "exitsBeforeStartCount": 1,
            "uniqueViewers": 1,
        },
    ]


async def test_views_query_without_a_step_is_one_total_per_tuple(api: Client) -> None:
    status, rows, _ = await api.get(QUERY, "private", assetId="as-1", **JUNE)
    assert status == 200 and len(rows) == 1
    total = rows[0]
    assert "timestamp" not in total
    assert (total["viewCount"], total["playtimeMins"]) == (3, 3.0)
    assert total["ttffMs"] == 300.0
    assert total["rebufferRatio"] == pytest.approx(0.1)  # 20 s / (180 s + 20 s): ratio of sums
    assert total["errorRate"] == 0.25  # 1 of 4 sessions
    assert total["exitsBeforeStart"] == pytest.approx(1 / 3)
    assert total["uniqueViewers"] == 2

    status, rows, _ = await api.get(
        QUERY, "private", **{"breakdownBy[]": ["country", "playbackId"]}, **JUNE
    )
    assert status == 200
    assert [(r["country"], r["playbackId"], r["viewCount"]) for r in rows] == [
        ("DE", "pb-1", 2),
        ("DE", "pb-2", 3),
        ("DE", "pb-9", 1),
        ("FR", "pb-1", 1),
    ]
    assert all("uniqueViewers" not in r and "deviceType" not in r for r in rows)


async def test_views_query_refusals(api: Client) -> None:
    status, body, _ = await api.get(QUERY, "private", assetId="nope")
    assert (status, body) == (404, {"errors": ["assetId: 'nope' not found"]})
    status, body, _ = await api.get(
        QUERY, "private", **{"from": "2022-12-01T00:00:00Z", "to": "2025-07-01T00:00:00Z"}
    )
    assert status == 400 and "800 days allowed without timeStep" in body["errors"][0]
    status, body, _ = await api.get(QUERY, "private", timeStep="fortnight", **{"from": "soon"})
    assert status == 400
    assert [e.split(":")[0] for e in body["errors"]] == ["timeStep", "from"]
    status, body, _ = await api.get(
        QUERY, "private", timeStep="hour", **{"from": "2025-05-01T00:00:00Z"}
    )
    assert status == 400 and "31 days" in body["errors"][0]


async def test_keys_are_required_and_checked(api: Client, redis: Redis) -> None:
    assert (await api.get(QUERY))[:2] == (
        401,
        {"errors": ["authorization: an API key is required (Bearer <key>)"]},
    )
    status, body, _ = await api.get(QUERY, "not-a-key")
    assert (status, body) == (401, {"errors": ["authorization: unknown or revoked API key"]})
    async with api.http.get(QUERY, headers={"Authorization": "Basic abc"}) as resp:
        assert resp.status == 401
    for path in (QUERY, NOW_PATH, USAGE):
        status, body, headers = await api.get(path, "cors", Origin=ORIGIN)
        assert status == 403 and "CORS keys cannot call this endpoint" in body["errors"][0]
        assert "Access-Control-Allow-Origin" not in headers

    listed = await list_keys(redis)
    assert sorted(k.kind for k in listed) == ["cors", "cors", "private", "private"]
    assert {k.origins for k in listed} == {(), (ORIGIN,)}
    assert {k.creator_id for k in listed} == {None, "cr-1"}
    assert all(api.keys["private"] not in str(k.to_json()) for k in listed)
    server = next(k for k in listed if k.name == "server")
    assert await revoke_key(redis, server.key_id)
    assert not await revoke_key(redis, server.key_id)
    await asyncio.sleep(KEY_CACHE_S + 0.05)  # the process remembers a key found that long
    assert (await api.get(QUERY, "private"))[0] == 401
    with pytest.raises(ValueError):
        await create_key(redis, kind="cors")
    with pytest.raises(ValueError):
        await create_key(redis, kind="cors", origins=["app.example"])


async def test_a_key_found_is_remembered_for_its_time_only(redis: Redis) -> None:
    key_id, secret = await create_key(redis, kind="private", creator_id="cr-9")
    remembering, looking = KnownKeys(redis, 60), KnownKeys(redis, 0)
    key = await remembering.lookup(secret)
    assert key is not None and (key.key_id, key.creator_id) == (key_id, "cr-9")
    assert await looking.lookup(secret) == key
    assert await remembering.lookup("not-a-key") is None
    assert await revoke_key(redis, key_id)
    assert await remembering.lookup(secret) == key  # within its time: not asked again
    assert await looking.lookup(secret) is None


async def test_a_scoped_key_sees_only_its_creator(api: Client) -> None:
    status, rows, _ = await api.get(QUERY, "scoped", **JUNE)
    assert status == 200 and [(r["viewCount"], r["playtimeMins"]) for r in rows] == [(3, 3.0)]
    status, rows, _ = await api.get(QUERY, "scoped", playbackId="pb-1", **JUNE)
    assert status == 200 and rows[0]["viewCount"] == 3
    for query in ({"creatorId": "cr-2"}, {"playbackId": "pb-2"}, {"streamId": "st-2"}):
        status, body, _ = await api.get(QUERY, "scoped", **query)
        assert status == 403, query
    status, body, _ = await api.get(USAGE, "scoped", **JUNE)
    assert body == {"DeliveryUsageMins": 3.0, "TotalUsageMins": 0.0, "StorageUsageMins": 0.0}
    status, rows, _ = await api.get(NOW_PATH, "scoped")
    assert rows == [{"viewCount": 3, "errorRate": pytest.approx(1 / 3)}]


async def test_views_now(api: Client) -> None:
    assert (await api.get(NOW_PATH, "private"))[1] == [
        {"viewCount": 3, "errorRate": pytest.approx(1 / 3)}
    ]
    status, rows, _ = await api.get(
        NOW_PATH, "private", playbackId="pb-1", **{"breakdownBy[]": "country"}
    )
    assert rows == [
        {"country": "DE", "viewCount": 2, "errorRate": 0.5},
        {"country": "FR", "viewCount": 1, "errorRate": 0.0},
    ]
    assert (await api.get(NOW_PATH, "private", creatorId="cr-2"))[1] == [
        {"viewCount": 0, "errorRate": 0.0}
    ]
    # A playback and a creator it does not belong to: nobody.
    assert (await api.get(NOW_PATH, "private", playbackId="pb-1", creatorId="cr-2"))[1] == [
        {"viewCount": 0, "errorRate": 0.0}
    ]
    assert (await api.get(NOW_PATH, "private", playbackId="pb-1", creatorId="cr-1"))[1] == [
        {"viewCount": 3, "errorRate": pytest.approx(1 / 3)}
    ]
    status, rows, _ = await api.get(NOW_PATH, "private", **{"breakdownBy[]": ["country", "device"]})
    assert rows == [
        {"country": "DE", "device": "desktop", "viewCount": 2, "errorRate": 0.5},
        {"country": "FR", "device": "mobile", "viewCount": 1, "errorRate": 0.0},
    ]
    status, rows, _ = await api.get(
        NOW_PATH, "private", creatorId="cr-1", **{"breakdownBy[]": ["browser", "playbackId"]}
    )
    assert rows == [
        {
            "browser": "Chrome",
            "playbackId": "pb-1",
            "viewCount": 3,
            "errorRate": pytest.approx(1 / 3),
        }
    ]
    status, body, _ = await api.get(
        NOW_PATH, "private", timeStep="day", **{"breakdownBy[]": ["device", "country"]}
    )
    assert status == 400
    assert body["errors"] == ["timeStep: not supported by /data/views/now"]


async def test_creator_query_with_a_cors_key(api: Client) -> None:
    range_ = {"from": "2024-12-01T00:00:00Z", "to": "2025-07-01T00:00:00Z"}
    status, rows, headers = await api.get(CREATOR, "cors", Origin=ORIGIN, assetId="as-1", **range_)
    assert (status, rows) == (200, [{"viewCount": 8, "playtimeMins": 8.0}])
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in headers
    status, rows, _ = await api.get(
        CREATOR, "cors", Origin=ORIGIN, assetId="as-1", **{"breakdownBy[]": "country"}, **range_
    )
    assert rows == [
        {"country": "DE", "viewCount": 7, "playtimeMins": 7.0},
        {"country": "FR", "viewCount": 1, "playtimeMins": 1.0},
    ]
    status, rows, _ = await api.get(CREATOR, "private", assetId="as-1", timeStep="month", **range_)
    assert rows == [
        {"timestamp": ms("2024-12-01T00:00:00"), "viewCount": 5, "playtimeMins": 5.0},
        {"timestamp": ms("2025-06-01T00:00:00"), "viewCount": 3, "playtimeMins": 3.0},
    ]
    status, body, headers = await api.get(CREATOR, "cors", Origin=ORIGIN, assetId="missing")
    assert status == 404 and headers["Access-Control-Allow-Origin"] == ORIGIN
    status, body, _ = await api.get(CREATOR, "cors", Origin=ORIGIN)
    assert (status, body) == (
        400,
        {"errors": ["assetId, streamId: exactly one of assetId and streamId is required"]},
    )
    for origin in (None, "https://evil.example", "null"):
        status, body, headers = await api.get(CREATOR, "cors", Origin=origin, assetId="as-1")
        assert status == 403 and body["errors"][0].startswith("origin:")
        assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = await api.get(CREATOR, "cors-scoped", Origin=ORIGIN, streamId="st-2")
    assert status == 403
    assert (await api.get(CREATOR, Origin=ORIGIN, assetId="as-1"))[0] == 401


async def test_preflights_only_where_cors_keys_go(api: Client) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    async with api.http.options(CREATOR, headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    async with api.http.options(QUERY, headers=headers) as resp:
        assert resp.status == 405
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert (await resp.json())["errors"]


async def test_a_wrong_method_is_405_naming_the_allowed_ones(api: Client) -> None:
    # Found by schemathesis: the error edge dropped the 405's Allow header (RFC 9110 requires it).
    for method, path, allowed in (
        ("TRACE", "/healthz", {"GET", "HEAD"}),
        ("POST", QUERY, {"GET", "HEAD"}),
        ("DELETE", CREATOR, {"GET", "HEAD", "OPTIONS"}),
    ):
        async with api.http.request(method, path) as resp:
            assert resp.status == 405
            assert set(resp.headers["Allow"].split(",")) == allowed
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.json() == {"errors": ["Method Not Allowed"]}


async def test_public_total(api: Client) -> None:
    status, body, headers = await api.get("/api/data/views/query/total/pb-1")
    assert (status, body) == (200, {"playbackId": "pb-1", "viewCount": 8, "playtimeMins": 8.0})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "public, max-age=60"
    status, body, headers = await api.get(
        "/api/data/views/query/total/unknown", "cors", Origin=ORIGIN
    )
    assert (status, body) == (200, {"playbackId": "unknown", "viewCount": 0, "playtimeMins": 0.0})
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (await api.get("/api/data/views/query/total/pb-1", "bogus"))[0] == 401
    status, _, _ = await api.get("/api/data/views/query/total/pb-1", "cors", Origin="https://x.io")
    assert status == 403


async def test_usage(api: Client) -> None:
    status, body, _ = await api.get(USAGE, "private", **JUNE)
    assert (status, body) == (
        200,
        {"DeliveryUsageMins": 6.5, "TotalUsageMins": 0.0, "StorageUsageMins": 0.0},
    )
    status, body, _ = await api.get(USAGE, "private", timeStep="day", **JUNE)
    assert body == [
        {
            "TimeInterval": floor(H0, "day"),
            "DeliveryUsageMins": 5.5,
            "TotalUsageMins": 0.0,
            "StorageUsageMins": 0.0,
        },
        {
            "TimeInterval": floor(H1, "day"),
            "DeliveryUsageMins": 1.0,
            "TotalUsageMins": 0.0,
            "StorageUsageMins": 0.0,
        },
    ]
    status, body, _ = await api.get(USAGE, "private", **{"breakdownBy[]": "creatorId"}, **JUNE)
    assert [(r["CreatorID"], r["DeliveryUsageMins"]) for r in body] == [
        (None, 0.5),
        ("cr-1", 3.0),
        ("cr-2", 3.0),
    ]
    status, body, _ = await api.get(USAGE, "private", creatorId="cr-2", **JUNE)
    assert body["DeliveryUsageMins"] == 3.0
    status, body, _ = await api.get(USAGE, "private", timeStep="week")
    assert (status, body) == (400, {"errors": ["timeStep: 'week' is not one of hour, day"]})
    status, body, _ = await api.get(USAGE, "private", **{"from": "2025-01-01", "to": "0"})
    assert status == 400 and [e.split(":")[0] for e in body["errors"]] == ["from"]
    status, body, _ = await api.get(USAGE, "private", **{"to": "2025-01-01T00:00:00Z"})
    assert body["DeliveryUsageMins"] == 5.0  # the default: the 30 days before `to`
    status, body, _ = await api.get(
        USAGE, "private", **{"from": "2025-02-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}
    )
    assert status == 200 and body["DeliveryUsageMins"] == 0.0


async def test_health_metrics_and_unknown_routes(api: Client) -> None:
    assert (await api.get("/healthz"))[:2] == (200, {"status": "ok"})
    assert (await api.get("/readyz"))[:2] == (200, {"status": "ready"})
    assert (await api.get("/api/nope"))[:2] == (404, {"errors": ["Not Found"]})
    await api.get(QUERY)
    await api.get(QUERY, "private", **JUNE)
    sample = api.metrics.registry.get_sample_value
    assert sample("playpulse_api_requests_total", {"route": QUERY, "status": "401"}) == 1
    assert sample("playpulse_api_requests_total", {"route": QUERY, "status": "200"}) == 1
    assert sample("playpulse_api_requests_total", {"route": "unmatched", "status": "404"}) == 1
    assert sample("playpulse_api_request_seconds_count", {"route": QUERY}) == 2
    assert (sample("playpulse_api_redis_seconds_count", {"op": "viewership"}) or 0) >= 1
    async with api.http.get("/metrics") as resp:
        assert "playpulse_api_requests_total" in await resp.text()


async def test_redis_unreachable_is_503_not_500() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    server = TestServer(create_app(ApiSettings(), redis=dead, clock=lambda: NOW), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            for path, headers in (
                (QUERY, {"Authorization": "Bearer whatever"}),
                ("/api/data/views/query/total/pb-1", {}),
            ):
                async with http.get(path, headers=headers) as resp:
                    assert resp.status == 503
                    assert resp.headers["Retry-After"] == "5"
                    assert await resp.json() == {
                        "errors": ["metrics store unavailable, retry later"]
                    }
            async with http.get("/readyz") as resp:
                assert resp.status == 503
            async with http.get("/healthz") as resp:
                assert resp.status == 200
    finally:
        await server.close()
        await dead.aclose()


@pytest.mark.parametrize(
    "query",
    [
        "from=%FF",
        "to=%00",
        "timeStep=%00",
        "breakdownBy[]=%E2%82%AC",
        "breakdownBy[]=",
        "playbackId=" + "%C3%A9" * 300,
        "from=99999999999999999999999",
        "from=0&to=1&timeStep=year",
        "assetId=%00",
        "from=-5",
        "&&&=&==",
    ],
)
async def test_odd_input_is_a_4xx_never_a_500(api: Client, query: str) -> None:
    headers = {"Authorization": f"Bearer {api.keys['private']}"}
    for path in (QUERY, NOW_PATH, USAGE, CREATOR):
        async with api.http.get(f"{path}?{query}", headers=headers) as resp:
            assert resp.status < 500, (path, query, await resp.text())
            if resp.status >= 400:
                assert (await resp.json())["errors"]


async def test_business_gauges_are_refreshed_in_the_background(redis: Redis) -> None:
    await seed(redis)
    metrics = ApiMetrics.create()
    settings = ApiSettings(gauges_interval_s=0.05)
    app = create_app(settings, metrics=metrics, redis=redis, clock=lambda: NOW)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sample = metrics.registry.get_sample_value
    try:
        for _ in range(100):
            if sample("playpulse_concurrent_viewers") == 3:
                break
            await asyncio.sleep(0.05)
        # The same numbers as /views/now without a filter: s1, s2 (with an error), s4.
        assert sample("playpulse_concurrent_viewers") == 3
        assert sample("playpulse_concurrent_viewers_erroring") == 1
        refreshed = sample("playpulse_api_gauges_refreshed_timestamp_seconds")
        assert refreshed is not None and abs(refreshed - time.time()) < 5
        # New sessions show up at the next refresh, without a request.
        await TouchedWriter(redis).write(
            {"s5": Touched(C, "viewer-5", NOW - 2_000, True, (H0,))}, NOW
        )
        for _ in range(100):
            if sample("playpulse_concurrent_viewers") == 4:
                break
            await asyncio.sleep(0.05)
        assert sample("playpulse_concurrent_viewers") == 4
        assert sample("playpulse_concurrent_viewers_erroring") == 2
        async with ClientSession() as http, http.get(server.make_url("/metrics")) as resp:
            text = await resp.text()
        assert "playpulse_concurrent_viewers 4.0" in text
    finally:
        await server.close()
