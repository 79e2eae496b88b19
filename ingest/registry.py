"""The playback registry: which creator, asset or stream a playback ID belongs to.

Kept in Redis (written by `playpulse playbacks add|remove`, read by the collector and the API) as one
hash per playback, `pp:playback:{playbackId}` with fields creator_id, asset_id, stream_id, plus the
set `pp:playbacks` indexing them for listing, and `pp:asset:{assetId}` / `pp:stream:{streamId}`
strings mapping back to the playback ID. One key per playback keeps every lookup a single-slot
read, so it works unchanged on Redis Cluster.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from cachetools import TTLCache
from redis.asyncio import Redis

PLAYBACK_KEY = "pp:playback:{}"
PLAYBACK_INDEX_KEY = "pp:playbacks"
ASSET_KEY = "pp:asset:{}"
STREAM_KEY = "pp:stream:{}"


@dataclass(frozen=True, slots=True)
class Playback:
    playback_id: str
    creator_id: str | None = None
    asset_id: str | None = None
    stream_id: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "playbackId": self.playback_id,
            "creatorId": self.creator_id,
            "assetId": self.asset_id,
            "streamId": self.stream_id,
        }


class PlaybackRegistry:
    def __init__(self, redis: Redis, *, cache_s: float = 30.0, cache_size: int = 100_000) -> None:
        self._redis = redis
        # Unknown playbacks are cached too (as None) so a flood of unknown IDs costs one read each.
        self._cache: TTLCache[str, Playback | None] = TTLCache(
            cache_size, cache_s, timer=time.monotonic
        )

    async def add(self, playback: Playback) -> None:
        fields: dict[str, str] = {
            k: v for k, v in asdict(playback).items() if v is not None and k != "playback_id"
        }
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(PLAYBACK_KEY.format(playback.playback_id))
            if fields:
                pipe.hset(PLAYBACK_KEY.format(playback.playback_id), mapping=fields)  # type: ignore[arg-type]  # redis-py types the key invariantly
            else:
                pipe.hset(PLAYBACK_KEY.format(playback.playback_id), "creator_id", "")
            pipe.sadd(PLAYBACK_INDEX_KEY, playback.playback_id)
            if playback.asset_id:
                pipe.set(ASSET_KEY.format(playback.asset_id), playback.playback_id)
            if playback.stream_id:
                pipe.set(STREAM_KEY.format(playback.stream_id), playback.playback_id)
            await pipe.execute()
        self._cache.pop(playback.playback_id, None)

    async def remove(self, playback_id: str) -> bool:
        existing = await self.fetch(playback_id)
        if existing is None:
            return False
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(PLAYBACK_KEY.format(playback_id))
            pipe.srem(PLAYBACK_INDEX_KEY, playback_id)
            if existing.asset_id:
                pipe.delete(ASSET_KEY.format(existing.asset_id))
            if existing.stream_id:
                pipe.delete(STREAM_KEY.format(existing.stream_id))
            await pipe.execute()
        self._cache.pop(playback_id, None)
        return True

    async def fetch(self, playback_id: str) -> Playback | None:
        """Reads Redis, bypassing the cache."""
        raw = await self._redis.hgetall(PLAYBACK_KEY.format(playback_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) or None for k, v in raw.items()}
        return Playback(
            playback_id=playback_id,
            creator_id=fields.get("creator_id"),
            asset_id=fields.get("asset_id"),
            stream_id=fields.get("stream_id"),
        )

    def cached(self, playback_id: str) -> Playback | None:
        """The cached answer, without I/O; raises KeyError when nothing is cached."""
        return self._cache[playback_id]

    async def lookup(self, playback_id: str) -> Playback | None:
        """Cached read for the hot path; raises the Redis error when there is nothing cached."""
        try:
            return self._cache[playback_id]
        except KeyError:
            pass
        playback = await self.fetch(playback_id)
        self._cache[playback_id] = playback
        return playback

    async def list(self) -> list[Playback]:
        ids = sorted(_text(m) for m in await self._redis.smembers(PLAYBACK_INDEX_KEY))
        found = [await self.fetch(pid) for pid in ids]
        return [p for p in found if p is not None]

    async def playback_for_asset(self, asset_id: str) -> str | None:
        value = await self._redis.get(ASSET_KEY.format(asset_id))
        return None if value is None else _text(value)

    async def playback_for_stream(self, stream_id: str) -> str | None:
        value = await self._redis.get(STREAM_KEY.format(stream_id))
        return None if value is None else _text(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
