"""The playback registry against the real Redis: replacing, conflicts, interrupted writes, pages."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest.registry import (
    ASSET_KEY,
    PLAYBACK_INDEX_KEY,
    PLAYBACK_KEY,
    STREAM_KEY,
    Playback,
    PlaybackRegistry,
    RegistryConflict,
)
from ingest.settings import IngestSettings


@pytest.fixture
async def registry(redis: Redis) -> PlaybackRegistry:
    await redis.flushdb()
    return PlaybackRegistry(redis, cache_s=60)


async def test_put_creates_then_replaces_and_releases_what_it_no_longer_names(
    registry: PlaybackRegistry, redis: Redis
) -> None:
    assert await registry.put(Playback("pb-1", "cr-1", asset_id="as-1")) is True
    assert await registry.playback_for_asset("as-1") == "pb-1"
    assert await registry.put(Playback("pb-1", "cr-2", stream_id="st-1")) is False
    assert await registry.fetch("pb-1") == Playback("pb-1", "cr-2", stream_id="st-1")
    assert await registry.playback_for_asset("as-1") is None
    assert await redis.exists(ASSET_KEY.format("as-1")) == 0  # released, not left behind
    assert await registry.playback_for_stream("st-1") == "pb-1"
    # The same asset for the same playback again is no conflict.
    assert await registry.put(Playback("pb-1", "cr-2", stream_id="st-1")) is False


async def test_an_asset_of_another_playback_is_a_conflict_and_nothing_changes(
    registry: PlaybackRegistry,
) -> None:
    await registry.put(Playback("pb-1", "cr-1", asset_id="as-1"))
    await registry.put(Playback("pb-2", "cr-2", stream_id="st-2"))
    with pytest.raises(RegistryConflict) as info:
        await registry.put(Playback("pb-2", "cr-2", asset_id="as-1"))
    assert (info.value.field, info.value.value, info.value.owner) == ("assetId", "as-1", "pb-1")
    assert str(info.value) == "assetId: 'as-1' already belongs to playback 'pb-1'"
    assert await registry.fetch("pb-2") == Playback("pb-2", "cr-2", stream_id="st-2")
    assert await registry.playback_for_asset("as-1") == "pb-1"
    assert await registry.playback_for_stream("st-2") == "pb-2"
    # A new playback that conflicts is not created at all.
    with pytest.raises(RegistryConflict):
        await registry.put(Playback("pb-3", "cr-3", stream_id="st-2"))
    assert await registry.fetch("pb-3") is None
    # Once pb-1 lets the asset go, pb-2 can take it.
    await registry.put(Playback("pb-1", "cr-1"))
    await registry.put(Playback("pb-2", "cr-2", asset_id="as-1"))
    assert await registry.playback_for_asset("as-1") == "pb-2"
    assert await registry.playback_for_stream("st-2") is None


async def test_an_index_key_no_hash_backs_resolves_to_nothing_and_is_taken_over(
    registry: PlaybackRegistry, redis: Redis
) -> None:
    # What a put interrupted after its claim, or the old `add` replacing an asset, leaves.
    await redis.set(ASSET_KEY.format("as-1"), "pb-gone")
    await registry.put(Playback("pb-old", "cr-1", asset_id="as-other"))
    await redis.set(STREAM_KEY.format("st-1"), "pb-old")
    assert await registry.playback_for_asset("as-1") is None
    assert await registry.playback_for_stream("st-1") is None
    await registry.put(Playback("pb-1", "cr-1", asset_id="as-1"))
    await registry.put(Playback("pb-2", "cr-1", stream_id="st-1"))
    assert await registry.playback_for_asset("as-1") == "pb-1"
    assert await registry.playback_for_stream("st-1") == "pb-2"


async def test_remove_deletes_the_hash_the_index_and_only_its_own_keys(
    registry: PlaybackRegistry, redis: Redis
) -> None:
    await registry.put(Playback("pb-1", "cr-1", asset_id="as-1"))
    await redis.set(ASSET_KEY.format("as-1"), "pb-other")  # not pb-1's any more
    assert await registry.remove("pb-1") is True
    assert await registry.remove("pb-1") is False
    assert await redis.exists(PLAYBACK_KEY.format("pb-1")) == 0
    assert await redis.zscore(PLAYBACK_INDEX_KEY, "pb-1") is None
    assert await redis.get(ASSET_KEY.format("as-1")) == b"pb-other"


async def test_writes_clear_this_processs_cache(registry: PlaybackRegistry) -> None:
    assert await registry.lookup("pb-1") is None  # cached as unknown
    await registry.put(Playback("pb-1", "cr-1"))
    assert await registry.lookup("pb-1") == Playback("pb-1", "cr-1")
    await registry.remove("pb-1")
    assert await registry.lookup("pb-1") is None


async def test_pages_walk_every_playback_once_in_byte_order(registry: PlaybackRegistry) -> None:
    ids = [f"pb-{i:03d}" for i in range(25)] + ["PB-upper", "pb-ü", "pb [x]", "(", "-", "+"]
    for pid in ids:
        await registry.put(Playback(pid, "cr"))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await registry.page(after=cursor, limit=7)
        assert len(page.playbacks) <= 7
        seen += [p.playback_id for p in page.playbacks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids, key=str.encode)
    assert [p.playback_id async for p in registry.each(page_size=3)] == seen
    full = await registry.page(limit=len(ids))
    assert len(full.playbacks) == len(ids) and full.next_cursor is None
    assert (await registry.page(after=seen[-1])).playbacks == ()


async def test_an_id_listed_without_a_hash_lists_nothing(
    registry: PlaybackRegistry, redis: Redis
) -> None:
    """What a put interrupted after listing, or a remove before unlisting, leaves."""
    await registry.put(Playback("pb-1", "cr"))
    await redis.zadd(PLAYBACK_INDEX_KEY, {"pb-0": 0})
    page = await registry.page(limit=1)
    assert (page.playbacks, page.next_cursor) == ((), "pb-0")
    assert await registry.list() == [Playback("pb-1", "cr")]


async def test_concurrent_misses_of_one_playback_share_one_read(
    registry: PlaybackRegistry, ingest_settings: IngestSettings
) -> None:
    # Under load, when a playback's cache entry expires every request in flight misses at once;
    # with a read each, more of them than the client's pool holds (redis-py's default is 100)
    # failed with MaxConnectionsError, i.e. 503s for a Redis that was up.
    await registry.put(Playback("pb-1", "cr-1", asset_id="as-1"))
    client = Redis.from_url(ingest_settings.redis_url, max_connections=2)
    try:
        collector = PlaybackRegistry(client, cache_s=60)
        answers = await asyncio.gather(*(collector.lookup("pb-1") for _ in range(300)))
        assert answers == [Playback("pb-1", "cr-1", asset_id="as-1")] * 300
        assert collector.cached("pb-1") == Playback("pb-1", "cr-1", asset_id="as-1")
        # Unknown playbacks too: one read, cached as None.
        assert await asyncio.gather(*(collector.lookup("pb-x") for _ in range(300))) == [None] * 300
    finally:
        await client.aclose()


async def test_a_failed_shared_read_fails_every_waiter_and_is_not_remembered(
    registry: PlaybackRegistry, redis: Redis, ingest_settings: IngestSettings
) -> None:
    await registry.put(Playback("pb-1", "cr-1"))
    client = Redis.from_url(ingest_settings.redis_url, socket_timeout=0.2)
    try:
        collector = PlaybackRegistry(client, cache_s=60)
        await client.ping()  # connected before Redis stops answering
        await redis.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        outcomes = await asyncio.gather(
            *(collector.lookup("pb-1") for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(o, RedisError) for o in outcomes), outcomes
        with pytest.raises(KeyError):
            collector.cached("pb-1")
        await redis.execute_command("CLIENT", "UNPAUSE")
        # Read again, not the old failure handed out.
        assert await collector.lookup("pb-1") == Playback("pb-1", "cr-1")
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()
