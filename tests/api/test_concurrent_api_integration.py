"""`GET /api/data/views/concurrent` over real HTTP against the real Redis, filled by the
aggregator's own concurrency writer (two source partitions, as two workers write them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aggregator.concurrency import SAMPLE_MS, PartitionConcurrency
from aggregator.store import ConcurrencyWriter
from api.app import create_app
from api.auth import create_key
from api.settings import ApiSettings
from ingest.registry import Playback, PlaybackRegistry

PATH = "/api/data/views/concurrent"
MIN = 60_000
HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOW = ms("2025-06-15T12:00:30")
M = ms("2025-06-15T11:50:00")  # a minute with viewers
K = M // SAMPLE_MS
PB1 = ["all", "playbackId=pb-1", "creatorId=cr-1"]
PB2 = ["all", "playbackId=pb-2", "creatorId=cr-2"]


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


async def seed(redis: Redis) -> None:
    registry = PlaybackRegistry(redis, cache_s=0.001)
    await registry.add(Playback("pb-1", "cr-1"))
    await registry.add(Playback("pb-2", "cr-2"))
    p0, p1 = PartitionConcurrency(), PartitionConcurrency()
    p0.add(PB1, [(K, K + 6)])  # minute M, instants 0-5
    p0.add(PB1, [(K + 3, K + 9)])  # instants 3-8: pb-1 peaks at 2
    p1.add(PB2, [(K + 5, K + 11)])  # instants 5-10: all peaks at 3 (instant 5)
    p1.add(PB2, [(K - 10 * 12, K - 10 * 12 + 6)])  # 11:40, one viewer
    p1.add(PB1, [(NOW // SAMPLE_MS + 1, NOW // SAMPLE_MS + 7)])  # after "now": not counted
    p1.add(PB1, [(K - 24 * 12 * 60, K - 24 * 12 * 60 + 1)])  # a day earlier, 11:50
    writer = ConcurrencyWriter(redis)
    for partition, part in enumerate((p0, p1)):
        await writer.write(partition, 1, part.take())


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[tuple[ClientSession, dict[str, str]]]:
    await seed(redis)
    keys = {
        "private": (await create_key(redis, kind="private"))[1],
        "scoped": (await create_key(redis, kind="private", creator_id="cr-1"))[1],
        "cors": (await create_key(redis, kind="cors", origins=["https://app.example"]))[1],
    }
    app = create_app(ApiSettings(), redis=redis, clock=lambda: NOW)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession(str(server.make_url("/"))) as http:
        yield http, keys
    await server.close()


async def get(
    client: tuple[ClientSession, dict[str, str]], key: str | None, **query: Any
) -> tuple[int, Any]:
    http, keys = client
    headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
    if key == "cors":
        headers["Origin"] = "https://app.example"
    async with http.get(PATH, params=query, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def nonzero(rows: list[dict[str, int]]) -> dict[str, int]:
    return {
        datetime.fromtimestamp(r["timestamp"] / 1000, UTC).strftime("%d %H:%M"): r[
            "peakConcurrentViewers"
        ]
        for r in rows
        if r["peakConcurrentViewers"]
    }


async def test_the_last_hour_by_minute_by_default(client: Any) -> None:
    status, rows = await get(client, "private")
    assert status == 200
    # from = now - 60 min = 11:00:30, floored to its minute; to = now (12:00:30): 61 minutes.
    assert [r["timestamp"] for r in rows] == list(range(ms("2025-06-15T11:00:00"), NOW, MIN))
    assert set(rows[0]) == {"timestamp", "peakConcurrentViewers"}
    assert nonzero(rows) == {"15 11:40": 1, "15 11:50": 3}


async def test_filters_and_hour_steps(client: Any) -> None:
    assert nonzero((await get(client, "private", playbackId="pb-1"))[1]) == {"15 11:50": 2}
    assert nonzero((await get(client, "private", creatorId="cr-2"))[1]) == {
        "15 11:40": 1,
        "15 11:50": 1,
    }
    status, rows = await get(
        client,
        "private",
        timeStep="hour",
        **{"from": "2025-06-14T00:00:00Z", "to": str(NOW)},
    )
    assert status == 200 and len(rows) == 24 + 13
    assert nonzero(rows) == {"14 11:00": 1, "15 11:00": 3}
    # A playback with a creator it does not belong to: nobody, as /views/now.
    status, rows = await get(client, "private", playbackId="pb-1", creatorId="cr-2")
    assert status == 200 and len(rows) == 61 and nonzero(rows) == {}
    status, rows = await get(client, "private", playbackId="pb-1", creatorId="cr-1")
    assert nonzero(rows) == {"15 11:50": 2}


async def test_a_scoped_key_sees_only_its_creator(client: Any) -> None:
    assert nonzero((await get(client, "scoped"))[1]) == {"15 11:50": 2}
    assert nonzero((await get(client, "scoped", playbackId="pb-1"))[1]) == {"15 11:50": 2}
    for query in ({"creatorId": "cr-2"}, {"playbackId": "pb-2"}):
        status, body = await get(client, "scoped", **query)
        assert status == 403 and body["errors"], query


async def test_refusals(client: Any) -> None:
    assert (await get(client, None))[0] == 401
    status, body = await get(client, "cors")
    assert status == 403 and "CORS keys cannot call this endpoint" in body["errors"][0]
    status, body = await get(client, "private", timeStep="day", **{"breakdownBy[]": "country"})
    assert status == 400
    assert body["errors"] == [
        "breakdownBy[]: not supported by /data/views/concurrent",
        "timeStep: 'day' is not one of minute, hour",
    ]
    status, body = await get(client, "private", **{"from": str(NOW - 25 * HOUR)})
    assert status == 400
    assert body["errors"] == [
        "from: the range spans 1.04 days, more than the 1 days allowed with timeStep=minute"
    ]
    status, body = await get(
        client, "private", timeStep="hour", **{"from": str(NOW - 32 * 24 * HOUR)}
    )
    assert status == 400 and "31 days allowed with timeStep=hour" in body["errors"][0]
    status, body = await get(client, "private", **{"from": str(NOW + 1)})
    assert status == 400 and body["errors"][0].startswith("from:")
    status, rows = await get(client, "private", timeStep="hour", **{"from": str(NOW - 24 * HOUR)})
    assert status == 200 and len(rows) == 25
