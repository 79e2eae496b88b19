"""The playback registry: which creator, asset or stream a playback ID belongs to.

Kept in Redis (written by `playpulse playbacks add|remove` and the API's `/api/admin/playbacks`,
read by the collector and the API):

    pp:playback:{playbackId}  hash: creator_id, asset_id, stream_id. The truth.
    pp:asset:{assetId}        string: the playback ID of that asset (an index of the hashes)
    pp:stream:{streamId}      string: the playback ID of that stream (an index of the hashes)
    pp:playbackids            sorted set of playback IDs, all scored 0, so that listing pages
                              through them in byte order (ZRANGEBYLEX) from a cursor

Every key is one slot and every script touches one key, so it runs unchanged on Redis Cluster;
the price is that a write spanning keys is not atomic. So the hash is the truth and the asset
and stream keys are an index that is checked against it when read: `put` claims the new asset
or stream key first (compare-and-set, refused with `RegistryConflict` when another playback's
hash names it), then writes the hash, then releases the keys it no longer names
(compare-and-delete); `remove` deletes the hash first. An interruption between the steps leaves
at worst an index key that no hash backs, which resolves to nothing and which the next claimant
takes over. Two concurrent `put`s of different playbacks naming the same new asset may both
succeed; the asset then resolves to the one whose claim came last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal

from cachetools import TTLCache
from redis.asyncio import Redis

PLAYBACK_KEY: Final = "pp:playback:{}"
PLAYBACK_INDEX_KEY: Final = "pp:playbackids"
ASSET_KEY: Final = "pp:asset:{}"
STREAM_KEY: Final = "pp:stream:{}"

Target = Literal["assetId", "streamId"]
_TARGET_KEYS: Final[dict[Target, str]] = {"assetId": ASSET_KEY, "streamId": STREAM_KEY}
CLAIM_ATTEMPTS: Final = 3

# KEYS[1] the index key; ARGV[1] the claimant; ARGV[2] a stale owner it may replace ("" none).
# Returns 1 when the key now names the claimant, else the current owner.
_CLAIM: Final = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] or (ARGV[2] ~= '' and owner == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return owner
"""
# KEYS[1] the index key; deleted only while it still names ARGV[1].
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RegistryConflict(Exception):
    """The asset or stream already belongs to another playback."""

    def __init__(self, field: Target, value: str, owner: str) -> None:
        super().__init__(f"{field}: {value!r} already belongs to playback {owner!r}")
        self.field = field
        self.value = value
        self.owner = owner


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

    def target(self, field: Target) -> str | None:
        return self.asset_id if field == "assetId" else self.stream_id


@dataclass(frozen=True, slots=True)
class Page:
    playbacks: tuple[Playback, ...]
    next_cursor: str | None  # the last playback ID of this page when there are more


class PlaybackRegistry:
    def __init__(self, redis: Redis, *, cache_s: float = 30.0, cache_size: int = 100_000) -> None:
        self._redis = redis
        # Unknown playbacks are cached too (as None) so a flood of unknown IDs costs one read each.
        # Only this process's writes clear it: elsewhere a change shows after `cache_s`.
        self._cache: TTLCache[str, Playback | None] = TTLCache(
            cache_size, cache_s, timer=time.monotonic
        )
        # Reads under way, one per playback: every request that misses while it runs (all of
        # them under load when an entry expires) waits for it instead of taking a connection.
        self._reading: dict[str, asyncio.Future[Playback | None]] = {}
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def put(self, playback: Playback) -> bool:
        """Creates or replaces the playback; True when it is new.

        RegistryConflict when its asset or stream belongs to another playback (nothing is
        written then, except that a claim taken for its other target is released again).
        """
        existing = await self.fetch(playback.playback_id)
        claimed: list[Target] = []
        try:
            for field in _TARGET_KEYS:
                value = playback.target(field)
                if value is not None:
                    await self._take(field, value, playback.playback_id)
                    claimed.append(field)
        except RegistryConflict:
            for field in claimed:
                value = playback.target(field)
                if value is not None and (existing is None or existing.target(field) != value):
                    await self._release_key(field, value, playback.playback_id)
            raise
        fields = {
            "creator_id": playback.creator_id or "",
            "asset_id": playback.asset_id or "",
            "stream_id": playback.stream_id or "",
        }
        # Listed before it exists: an interruption leaves an ID that lists nothing, never a
        # playback that is not listed.
        await self._redis.zadd(PLAYBACK_INDEX_KEY, {playback.playback_id: 0})
        key = PLAYBACK_KEY.format(playback.playback_id)
        async with self._redis.pipeline(transaction=True) as pipe:  # one key: one slot
            pipe.delete(key)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py types the mapping invariantly
            await pipe.execute()
        if existing is not None:
            for field in _TARGET_KEYS:
                old = existing.target(field)
                if old is not None and old != playback.target(field):
                    await self._release_key(field, old, playback.playback_id)
        self._cache.pop(playback.playback_id, None)
        return existing is None

    async def add(self, playback: Playback) -> None:
        """`put`, for callers that do not care whether it was new."""
        await self.put(playback)

    async def remove(self, playback_id: str) -> bool:
        """False when there is no such playback."""
        existing = await self.fetch(playback_id)
        if existing is None:
            return False
        await self._redis.delete(PLAYBACK_KEY.format(playback_id))  # gone first
        await self._redis.zrem(PLAYBACK_INDEX_KEY, playback_id)
        for field in _TARGET_KEYS:
            value = existing.target(field)
            if value is not None:
                await self._release_key(field, value, playback_id)
        self._cache.pop(playback_id, None)
        return True

    async def fetch(self, playback_id: str) -> Playback | None:
        """Reads Redis, bypassing the cache."""
        return _playback(playback_id, await self._redis.hgetall(PLAYBACK_KEY.format(playback_id)))

    def cached(self, playback_id: str) -> Playback | None:
        """The cached answer, without I/O; raises KeyError when nothing is cached."""
        return self._cache[playback_id]

    async def lookup(self, playback_id: str) -> Playback | None:
        """Cached read for the hot path; raises the Redis error when there is nothing cached.

        Concurrent misses of one playback share one read (and its error, which is not kept).
        """
        try:
            return self._cache[playback_id]
        except KeyError:
            pass
        reading = self._reading.get(playback_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(playback_id))
            self._reading[playback_id] = reading
        # A waiter that gives up (its request cancelled) does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read(self, playback_id: str) -> Playback | None:
        try:
            playback = await self.fetch(playback_id)
            self._cache[playback_id] = playback
            return playback
        finally:
            del self._reading[playback_id]

    async def page(self, *, after: str | None = None, limit: int = 100) -> Page:
        """Up to `limit` playbacks in byte order of their IDs, starting after `after`."""
        low = "-" if after is None else "(" + after
        ids = [
            _text(m)
            for m in await self._redis.zrangebylex(
                PLAYBACK_INDEX_KEY, low, "+", start=0, num=limit + 1
            )
        ]
        more = len(ids) > limit
        ids = ids[:limit]
        async with self._redis.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.hgetall(PLAYBACK_KEY.format(pid))
            raws = await pipe.execute() if ids else []
        found = tuple(
            p for p in (_playback(pid, raw) for pid, raw in zip(ids, raws, strict=True)) if p
        )
        return Page(found, ids[-1] if more and ids else None)

    async def each(self, page_size: int = 500) -> AsyncIterator[Playback]:
        after: str | None = None
        while True:
            page = await self.page(after=after, limit=page_size)
            for playback in page.playbacks:
                yield playback
            if page.next_cursor is None:
                return
            after = page.next_cursor

    async def list(self) -> list[Playback]:
        return [p async for p in self.each()]

    async def playback_for_asset(self, asset_id: str) -> str | None:
        return await self._resolve("assetId", asset_id)

    async def playback_for_stream(self, stream_id: str) -> str | None:
        return await self._resolve("streamId", stream_id)

    async def _resolve(self, field: Target, value: str) -> str | None:
        """The index's playback, when its hash still names this asset or stream."""
        owner = await self._redis.get(_TARGET_KEYS[field].format(value))
        if owner is None:
            return None
        playback = await self.fetch(_text(owner))
        if playback is None or playback.target(field) != value:
            return None
        return playback.playback_id

    async def _take(self, field: Target, value: str, playback_id: str) -> None:
        key = _TARGET_KEYS[field].format(value)
        stale = ""
        for _ in range(CLAIM_ATTEMPTS):
            result = await self._claim(keys=[key], args=[playback_id, stale])
            if result == 1:
                return
            owner = _text(result)
            current = await self.fetch(owner)
            if current is not None and current.target(field) == value:
                raise RegistryConflict(field, value, owner)
            stale = owner  # an index key no hash backs: take it over unless it moved meanwhile
        raise RegistryConflict(field, value, stale)

    async def _release_key(self, field: Target, value: str, playback_id: str) -> None:
        await self._release(keys=[_TARGET_KEYS[field].format(value)], args=[playback_id])


def _playback(playback_id: str, raw: dict[bytes | str, bytes | str]) -> Playback | None:
    if not raw:
        return None
    fields = {_text(k): _text(v) or None for k, v in raw.items()}
    return Playback(
        playback_id=playback_id,
        creator_id=fields.get("creator_id"),
        asset_id=fields.get("asset_id"),
        stream_id=fields.get("stream_id"),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
