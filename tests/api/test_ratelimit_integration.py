"""Rate limits over real HTTP against the real Redis: 429 with Retry-After once an identity is
over its limit, other identities unaffected, the count shared by several API processes, and the
window recovering."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from api.app import create_app
from api.auth import create_key
from api.ratelimit import KEY_PREFIX, RateLimited, RateLimiter, identity, parse_limit
from api.settings import ApiSettings
from ingest.settings import IngestSettings

QUERY = "/api/data/views/query"
TOTAL = "/api/data/views/query/total/pb-1"
ORIGIN = "https://app.example"
SETTINGS = ApiSettings(
    rate_limit_key=parse_limit("3/2 seconds"),
    rate_limit_ip=parse_limit("2/2 seconds"),
    trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
)


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


async def _server(settings: ApiSettings) -> TestServer:
    """An API process of its own: its own Redis client and connection pool."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def servers(redis: Redis) -> AsyncIterator[list[TestServer]]:
    settings = replace(SETTINGS, redis_url=IngestSettings.from_env().redis_url)
    started = [await _server(settings), await _server(settings)]
    yield started
    for s in started:
        await s.close()


async def get(
    server: TestServer, path: str, *, key: str | None = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    async with ClientSession() as http, http.get(server.make_url(path), headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def assert_limited(answer: tuple[int, Any, dict[str, str]], window_s: int) -> int:
    status, body, headers = answer
    assert status == 429, answer
    retry = headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= window_s
    [message] = body["errors"]
    assert "rate limit" in message
    return int(retry)


async def test_a_key_over_its_limit_gets_429_others_do_not(
    redis: Redis, servers: list[TestServer]
) -> None:
    _, one = await create_key(redis, kind="private")
    _, two = await create_key(redis, kind="private")
    a, b = servers
    # Three per window, counted across both processes.
    for server in (a, b, a):
        assert (await get(server, QUERY, key=one))[0] == 200
    wait = assert_limited(await get(b, QUERY, key=one), 2)
    assert_limited(await get(a, QUERY, key=one), 2)
    # Another key, and another client's public requests, are not affected.
    assert (await get(a, QUERY, key=two))[0] == 200
    assert (await get(a, TOTAL, X_Forwarded_For="198.51.100.7"))[0] == 200
    # The window moves on: after Retry-After the key is served again.
    await asyncio.sleep(wait)
    assert (await get(b, QUERY, key=one))[0] == 200


async def test_public_requests_count_per_client_ip(redis: Redis, servers: list[TestServer]) -> None:
    a, b = servers
    _, cors = await create_key(redis, kind="cors", origins=[ORIGIN])
    viewer, other = "203.0.113.5", "203.0.113.6"
    assert (await get(a, TOTAL, X_Forwarded_For=viewer))[0] == 200
    # A CORS key is shared by a site's visitors: its requests count per IP, not per key.
    assert (await get(b, TOTAL, key=cors, Origin=ORIGIN, X_Forwarded_For=viewer))[0] == 200
    assert_limited(await get(a, TOTAL, X_Forwarded_For=viewer), 2)
    assert_limited(await get(b, TOTAL, key=cors, Origin=ORIGIN, X_Forwarded_For=viewer), 2)
    assert (await get(b, TOTAL, key=cors, Origin=ORIGIN, X_Forwarded_For=other))[0] == 200
    # An unknown key is counted against its IP too, so keys cannot be guessed at full speed.
    status, _, _ = await get(a, QUERY, key="guess", X_Forwarded_For=other)
    assert status == 401
    assert_limited(await get(a, QUERY, key="guess", X_Forwarded_For=other), 2)


async def test_forwarded_for_counts_only_from_trusted_proxies(redis: Redis) -> None:
    settings = replace(SETTINGS, redis_url=IngestSettings.from_env().redis_url, trusted_proxies=())
    server = await _server(settings)
    try:
        # Untrusted peer: the forged header is ignored, both requests are the peer's.
        assert (await get(server, TOTAL, X_Forwarded_For="192.0.2.1"))[0] == 200
        assert (await get(server, TOTAL, X_Forwarded_For="192.0.2.2"))[0] == 200
        assert_limited(await get(server, TOTAL, X_Forwarded_For="192.0.2.3"), 2)
    finally:
        await server.close()


async def test_limits_off_and_the_keys_are_single_keys(redis: Redis) -> None:
    settings = replace(SETTINGS, redis_url=IngestSettings.from_env().redis_url, rate_limit_ip=None)
    server = await _server(settings)
    try:
        for _ in range(5):
            assert (await get(server, TOTAL))[0] == 200
        _, key = await create_key(redis, kind="private")
        assert (await get(server, QUERY, key=key))[0] == 200
    finally:
        await server.close()
    stored = [k.decode() async for k in redis.scan_iter("pp:rl:*")]
    assert len(stored) == 1 and "/key/" in stored[0], stored
    assert 0 < await redis.ttl(stored[0]) <= 2


async def test_hits_sent_together_count_exactly_and_the_library_sees_them(redis: Redis) -> None:
    """Hits asked for in one turn of the event loop go out in one pipeline: each is still
    counted once, in order, and `limits` reads the same window (its Retry-After)."""
    limiter = RateLimiter(redis, per_key=parse_limit("5/minute"), per_ip=None)
    who = identity("k-1", None)
    answers = await asyncio.gather(*(limiter.hit(who) for _ in range(8)), return_exceptions=True)
    assert answers[:5] == [None] * 5
    assert all(isinstance(a, RateLimited) and 1 <= a.retry_after_s <= 60 for a in answers[5:])
    item = parse_limit("5/minute")
    assert item is not None
    storage = RedisStorage(
        "async+redis://",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]
    )
    stats = await MovingWindowRateLimiter(storage).get_window_stats(item, "key", "k-1")
    assert stats.remaining == 0
    # An IP without a limit is not counted at all.
    await asyncio.gather(*(limiter.hit(identity(None, "192.0.2.9")) for _ in range(10)))
    assert [k async for k in redis.scan_iter("pp:rl:*ip*")] == []


async def test_a_redis_that_forgot_the_script_is_given_it_again(redis: Redis) -> None:
    limiter = RateLimiter(redis, per_key=parse_limit("2/minute"), per_ip=None)
    await limiter.hit(identity("k-2", None))
    await redis.script_flush()
    await limiter.hit(identity("k-2", None))  # NOSCRIPT: loaded again, and counted
    with pytest.raises(RateLimited):
        await limiter.hit(identity("k-2", None))
