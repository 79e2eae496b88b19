"""The playback registry's admin endpoints over real HTTP against the real Redis: create, get,
list, delete, the views query resolving what was registered, key kinds, bad bodies, limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from api.app import create_app
from api.auth import create_key, list_keys, lookup_key
from api.playbacks import MAX_BODY_BYTES
from api.ratelimit import parse_limit
from api.settings import ApiSettings
from ingest.registry import Playback, PlaybackRegistry
from ingest.settings import IngestSettings
from tests.api.test_api_integration import JUNE, NOW, ORIGIN, seed

ADMIN = "/api/admin/playbacks"
QUERY = "/api/data/views/query"
METRICS_ROUTES = (
    ("GET", QUERY),
    ("GET", "/api/data/views/now"),
    ("GET", "/api/data/views/concurrent"),
    ("GET", "/api/data/views/query/creator?assetId=as-1"),
    ("GET", "/api/data/views/query/total/pb-1"),
    ("GET", "/api/data/usage/query"),
    ("POST", "/api/live/token"),
)


@dataclass
class Client:
    http: ClientSession
    keys: dict[str, str]

    async def call(
        self, method: str, path: str, key: str | None = "admin", /, **kw: Any
    ) -> tuple[int, Any, dict[str, str]]:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        if "json" in kw:
            kw["data"] = orjson.dumps(kw.pop("json"))
        async with self.http.request(method, path, headers=headers, **kw) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None, dict(resp.headers)


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


@contextlib.asynccontextmanager
async def _client(redis: Redis, settings: ApiSettings) -> AsyncIterator[Client]:
    await seed(redis)
    keys = {
        "admin": (await create_key(redis, kind="admin", name="backend"))[1],
        "private": (await create_key(redis, kind="private"))[1],
        "scoped": (await create_key(redis, kind="private", creator_id="cr-1"))[1],
        "cors": (await create_key(redis, kind="cors", origins=[ORIGIN]))[1],
    }
    server = TestServer(create_app(settings, redis=redis, clock=lambda: NOW), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            yield Client(http, keys)
    finally:
        await server.close()


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Client]:
    async with _client(redis, ApiSettings()) as client:
        yield client


async def test_create_get_replace_list_delete(api: Client) -> None:
    body = {"creatorId": "cr-3", "assetId": "as-3"}
    status, created, _ = await api.call("PUT", f"{ADMIN}/pb-3", json=body)
    expected = {"playbackId": "pb-3", "creatorId": "cr-3", "assetId": "as-3", "streamId": None}
    assert (status, created) == (201, expected)
    assert (await api.call("GET", f"{ADMIN}/pb-3"))[:2] == (200, expected)

    replaced = {"playbackId": "pb-3", "creatorId": "cr-4", "assetId": None, "streamId": "st-3"}
    status, body_out, _ = await api.call(
        "PUT", f"{ADMIN}/pb-3", json={"creatorId": "cr-4", "streamId": "st-3"}
    )
    assert (status, body_out) == (200, replaced)
    assert (await api.call("GET", f"{ADMIN}/pb-3"))[:2] == (200, replaced)

    status, page, _ = await api.call("GET", ADMIN)
    assert status == 200 and page["nextCursor"] is None
    assert [p["playbackId"] for p in page["playbacks"]] == ["pb-1", "pb-2", "pb-3"]
    assert page["playbacks"][0] == {
        "playbackId": "pb-1",
        "creatorId": "cr-1",
        "assetId": "as-1",
        "streamId": None,
    }

    status, body_out, _ = await api.call("DELETE", f"{ADMIN}/pb-3")
    assert (status, body_out) == (204, None)
    assert (await api.call("GET", f"{ADMIN}/pb-3"))[:2] == (
        404,
        {"errors": ["playbackId: 'pb-3' not found"]},
    )
    assert (await api.call("DELETE", f"{ADMIN}/pb-3"))[0] == 404


async def test_pages_follow_the_cursor(api: Client) -> None:
    for i in range(5):
        status, _, _ = await api.call("PUT", f"{ADMIN}/pb-x{i}", json={"creatorId": "cr"})
        assert status == 201
    seen, cursor = [], None
    while True:
        query = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        status, page, _ = await api.call("GET", ADMIN, params=query)
        assert status == 200 and len(page["playbacks"]) <= 3
        seen += [p["playbackId"] for p in page["playbacks"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["pb-1", "pb-2", *(f"pb-x{i}" for i in range(5))]
    status, body, _ = await api.call("GET", ADMIN, params={"limit": "0"})
    assert (status, body) == (400, {"errors": ["limit: '0' is not an integer in 1..1000"]})


async def test_what_is_registered_resolves_in_views_queries(api: Client) -> None:
    """pb-9 has views in the seeded data but no asset until the admin API gives it one."""
    june = {"assetId": "as-9", **JUNE}
    status, body, _ = await api.call("GET", QUERY, "private", params=june)
    assert (status, body) == (404, {"errors": ["assetId: 'as-9' not found"]})

    await api.call("PUT", f"{ADMIN}/pb-9", json={"creatorId": "cr-9", "assetId": "as-9"})
    status, rows, _ = await api.call("GET", QUERY, "private", params=june)
    assert status == 200 and [(r["viewCount"], r["playtimeMins"]) for r in rows] == [(1, 0.5)]

    # Moved to a stream: the asset no longer resolves, the stream does, at once.
    await api.call("PUT", f"{ADMIN}/pb-9", json={"creatorId": "cr-9", "streamId": "st-9"})
    assert (await api.call("GET", QUERY, "private", params=june))[0] == 404
    by_stream = {"streamId": "st-9", **JUNE}
    status, rows, _ = await api.call("GET", QUERY, "private", params=by_stream)
    assert status == 200 and rows[0]["viewCount"] == 1

    # pb-1's asset, seeded, resolves until pb-1 is deleted.
    seeded = {"assetId": "as-1", **JUNE}
    status, rows, _ = await api.call("GET", QUERY, "private", params=seeded)
    assert status == 200 and rows[0]["viewCount"] == 3
    assert (await api.call("DELETE", f"{ADMIN}/pb-1"))[0] == 204
    assert (await api.call("GET", QUERY, "private", params=seeded))[0] == 404


async def test_an_asset_of_another_playback_is_409(api: Client) -> None:
    status, body, _ = await api.call(
        "PUT", f"{ADMIN}/pb-3", json={"creatorId": "cr-3", "assetId": "as-1"}
    )
    assert (status, body) == (
        409,
        {"errors": ["assetId: 'as-1' already belongs to playback 'pb-1'"]},
    )
    assert (await api.call("GET", f"{ADMIN}/pb-3"))[0] == 404


async def test_only_admin_keys_open_admin_endpoints(api: Client) -> None:
    calls = [
        ("GET", ADMIN, None),
        ("GET", f"{ADMIN}/pb-1", None),
        ("PUT", f"{ADMIN}/pb-1", {"creatorId": "cr-evil"}),
        ("DELETE", f"{ADMIN}/pb-1", None),
    ]
    for method, path, body in calls:
        kw: dict[str, Any] = {} if body is None else {"json": body}
        status, out, _ = await api.call(method, path, None, **kw)
        assert (status, out) == (
            401,
            {"errors": ["authorization: an API key is required (Bearer <key>)"]},
        )
        assert (await api.call(method, path, "not-a-key", **kw))[0] == 401
        for kind in ("private", "scoped"):
            status, out, _ = await api.call(method, path, kind, **kw)
            assert (status, out) == (
                403,
                {"errors": ["authorization: this endpoint needs an admin key"]},
            ), (method, path, kind)
        status, _, headers = await api.call(method, path, "cors", headers={"Origin": ORIGIN}, **kw)
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
    # Nothing the refused calls sent was written.
    assert (await api.call("GET", f"{ADMIN}/pb-1"))[1]["creatorId"] == "cr-1"


async def test_admin_keys_open_no_metrics_endpoint(api: Client) -> None:
    for method, path in METRICS_ROUTES:
        status, body, _ = await api.call(method, path, "admin", headers={"Origin": ORIGIN})
        assert (status, body) == (
            403,
            {"errors": ["authorization: admin keys open only /api/admin endpoints"]},
        ), path
        assert (await api.call(method, path, "private"))[0] == 200, path


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (b"", ["body: required (a JSON object)"]),
        (b"[1]", ["body: expected a JSON object, not array"]),
        (b"{}", ["creatorId: required"]),
        (
            b'{"creatorId": "cr", "assetId": "a", "streamId": "s", "assetID": "a"}',
            [
                "'assetID': unknown field (expected creatorId, assetId, streamId, or playbackId)",
                "assetId, streamId: give at most one of assetId and streamId",
            ],
        ),
        (b'{"creatorId": 7}', ["creatorId: expected a string, not number"]),
        (b'{"creatorId": "a\\u0000b"}', ["creatorId: contains control characters"]),
        (
            b'{"creatorId": "cr", "playbackId": "pb-2"}',
            ["playbackId: differs from the playback ID of the path"],
        ),
    ],
)
async def test_bad_bodies_are_400_naming_each_problem(
    api: Client, body: bytes, problems: list[str]
) -> None:
    status, out, _ = await api.call("PUT", f"{ADMIN}/pb-1", data=body)
    assert (status, out) == (400, {"errors": problems})
    assert (await api.call("GET", f"{ADMIN}/pb-1"))[1]["creatorId"] == "cr-1"


async def test_bad_path_ids_are_400(api: Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, out, _ = await api.call(
            method, f"{ADMIN}/pb%01", json={"creatorId": "cr"} if method == "PUT" else None
        )
        assert (status, out) == (400, {"errors": ["playbackId: contains control characters"]})
        status, _, _ = await api.call(method, f"{ADMIN}/{'p' * 257}")
        assert status == 400


async def test_oversized_bodies_are_413_by_length_or_as_read(api: Client) -> None:
    big = b'{"creatorId": "' + b"x" * MAX_BODY_BYTES + b'"}'
    problem = {"errors": [f"body: larger than {MAX_BODY_BYTES} bytes"]}
    assert (await api.call("PUT", f"{ADMIN}/pb-5", data=big))[:2] == (413, problem)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for _ in range(8):
            yield b" " * (MAX_BODY_BYTES // 4)
        yield b'{"creatorId": "cr"}'

    assert (await api.call("PUT", f"{ADMIN}/pb-5", data=chunks()))[:2] == (413, problem)
    assert (await api.call("GET", f"{ADMIN}/pb-5"))[0] == 404
    # Just under the limit is fine, whitespace included.
    fits = b" " * (MAX_BODY_BYTES - 40) + b'{"creatorId": "cr"}'
    assert (await api.call("PUT", f"{ADMIN}/pb-5", data=fits))[0] == 201


async def test_admin_requests_count_against_the_admin_key(redis: Redis) -> None:
    settings = ApiSettings(rate_limit_key=parse_limit("3/minute"), rate_limit_ip=None)
    async with _client(redis, settings) as api:
        for _ in range(3):
            assert (await api.call("GET", ADMIN))[0] == 200
        status, body, headers = await api.call("PUT", f"{ADMIN}/pb-7", json={"creatorId": "c"})
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert body["errors"][0].startswith("rate limit of 3 per 1 minute per key exceeded")
        assert (await api.call("GET", f"{ADMIN}/pb-7"))[0] == 429
        assert (await api.call("GET", QUERY, "private"))[0] == 200  # another key's count


async def test_redis_unreachable_is_503_with_retry_after() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    server = TestServer(create_app(ApiSettings(), redis=dead), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(str(server.make_url("/"))) as http:
            api = Client(http, {"admin": "whatever"})
            for method, path in (
                ("GET", ADMIN),
                ("GET", f"{ADMIN}/pb-1"),
                ("DELETE", f"{ADMIN}/x"),
            ):
                status, body, headers = await api.call(method, path)
                assert (status, headers["Retry-After"]) == (503, "5")
                assert body == {"errors": ["metrics store unavailable, retry later"]}
            status, _, headers = await api.call("PUT", f"{ADMIN}/pb-1", json={"creatorId": "c"})
            assert (status, headers["Retry-After"]) == (503, "5")
    finally:
        await server.close()
        await dead.aclose()


async def _playpulse(*args: str) -> tuple[int, str, str]:
    """Runs the `playpulse` command against the test Redis: (exit code, stdout, stderr)."""
    env = {**os.environ, "PLAYPULSE_REDIS_URL": IngestSettings.from_env().redis_url}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("playpulse")),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_creates_admin_keys_and_registers_playbacks(redis: Redis) -> None:
    code, out, _ = await _playpulse("keys", "create", "--kind", "admin", "--name", "ops")
    assert code == 0
    secret = out.split("secret: ")[1].split()[0]
    key = await lookup_key(redis, secret)
    assert key is not None and key.kind == "admin" and key.name == "ops"
    assert await redis.hget(f"pp:apikey:{secret}", "kind") is None  # stored hashed only
    assert [k.kind for k in await list_keys(redis)] == ["admin"]
    code, _, err = await _playpulse("keys", "create", "--kind", "admin", "--creator", "cr-1")
    assert code == 2 and "takes no creator" in err

    registry = PlaybackRegistry(redis, cache_s=0.001)
    await registry.put(Playback("pb-1", "cr-1", asset_id="as-1"))
    code, _, err = await _playpulse("playbacks", "add", "pb-2", "--creator", "c", "--asset", "as-1")
    assert (code, err.strip()) == (1, "assetId: 'as-1' already belongs to playback 'pb-1'")
    code, out, _ = await _playpulse("playbacks", "list")
    assert (code, out) == (0, "pb-1\tcreator=cr-1\tasset=as-1\tstream=-\n")
