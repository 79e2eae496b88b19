"""The rollup writer and reader against the real Redis: versions, replace mode, projection."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from aggregator import keys
from aggregator.keys import FULL, minute_written_key, rollup_key, written_key
from aggregator.metrics import ZERO, Components
from aggregator.partition import Touched
from aggregator.rollups import PartitionRollups, full_values, scopes_of
from aggregator.store import (
    NOW_KEEP_MS,
    NOW_TTL_S,
    NOW_UPKEEP_MS,
    RealtimeReader,
    RollupReader,
    RollupWriter,
    TouchedWriter,
)
from aggregator.timebuckets import HOUR_MS, MINUTE_MS

H = 1_767_229_200_000  # 2026-01-01T01:00Z
DIMS = dict.fromkeys(FULL)


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


def session(
    country: str, views: int = 1, playing_ms: int = 0
) -> tuple[dict[str, str | None], dict[int, Components]]:
    dims = {**DIMS, "playbackId": "pb-1", "creatorId": "cr-1", "country": country}
    return dims, {H: Components(views=views, sessions=views, playing_ms=playing_ms)}


async def flush(
    rollups: PartitionRollups,
    writer: RollupWriter,
    partition: int,
    version: int,
    *,
    replace: bool = False,
) -> int:
    rollups.fold()
    return await writer.write(partition, version, rollups.take_dirty(), replace=replace)


async def totals(redis: Redis, **kw: object) -> list[dict[str, object]]:
    rows = await RollupReader(redis).viewership(step="hour", from_ms=H, to_ms=H + 3_600_000, **kw)  # type: ignore[arg-type]
    return [
        {k: r[k] for k in ("viewCount", "playtimeMins", *[d for d in r if d in FULL])} for r in rows
    ]


async def test_partitions_add_up_and_stale_versions_are_refused(redis: Redis) -> None:
    writer = RollupWriter(redis)
    p0, p1 = PartitionRollups(), PartitionRollups()
    p0.add(*session("DE", playing_ms=60_000))
    p1.add(*session("DE", playing_ms=120_000))
    p1.add(*session("FR"))
    assert await flush(p0, writer, 0, 10) > 0
    assert await flush(p1, writer, 1, 7) > 0
    assert await totals(redis) == [{"viewCount": 3, "playtimeMins": 3.0}]
    assert await totals(redis, breakdown=["country"]) == [
        {"viewCount": 2, "playtimeMins": 3.0, "country": "DE"},
        {"viewCount": 1, "playtimeMins": 0.0, "country": "FR"},
    ]
    # A stale worker for partition 0 (older version) cannot overwrite it...
    zombie = PartitionRollups()
    zombie.add(*session("DE", views=5))
    assert await flush(zombie, writer, 0, 9) == 0
    assert await totals(redis) == [{"viewCount": 3, "playtimeMins": 3.0}]
    # ...and a replay at the same version writes the same absolute values: nothing doubles.
    again = PartitionRollups()
    again.add(*session("DE", playing_ms=60_000))
    await flush(again, writer, 0, 10)
    assert await totals(redis) == [{"viewCount": 3, "playtimeMins": 3.0}]


async def test_replace_mode_clears_what_a_predecessor_wrote(redis: Redis) -> None:
    writer = RollupWriter(redis)
    before = PartitionRollups()
    before.add(*session("DE"))
    await flush(before, writer, 0, 1)
    # The new owner's rebuilt state no longer has the DE session (its anchor moved away).
    after = PartitionRollups()
    after.add(*session("FR"))
    after.mark_all_dirty()
    await flush(after, writer, 0, (2 << 40) | 1, replace=True)
    assert await totals(redis, breakdown=["country"]) == [
        {"viewCount": 1, "playtimeMins": 0.0, "country": "FR"}
    ]


async def test_combined_breakdowns_and_filters_project_the_full_rows(redis: Redis) -> None:
    writer = RollupWriter(redis)
    rollups = PartitionRollups()
    for country, device in [("DE", "mobile"), ("DE", "desktop"), ("FR", "mobile")]:
        dims, by_hour = session(country)
        rollups.add({**dims, "deviceType": device}, by_hour)
    await flush(rollups, writer, 0, 1)
    rows = await totals(
        redis, breakdown=["deviceType", "country"], playback_id="pb-1", creator_id="cr-1"
    )
    assert [(r["deviceType"], r["country"], r["viewCount"]) for r in rows] == [
        ("desktop", "DE", 1),
        ("mobile", "DE", 1),
        ("mobile", "FR", 1),
    ]
    assert await totals(redis, creator_id="nobody") == []


async def minute_rows(redis: Redis, **kw: object) -> list[dict[str, object]]:
    rows = await RollupReader(redis).minutes(
        from_ms=H,
        to_ms=H + 10 * MINUTE_MS,
        step="minute",
        **kw,  # type: ignore[arg-type]
    )
    return [{k: r[k] for k in ("timestamp", "viewCount", "playtimeMins")} for r in rows]


async def test_minute_rows_are_written_versioned_listed_and_read(redis: Redis) -> None:
    writer = RollupWriter(redis, minute_retention_s=1_800)
    p0, p1 = PartitionRollups(), PartitionRollups()
    dims, _ = session("DE")
    full = full_values(dims)
    p0.add_minutes(full, {H: Components(views=1, sessions=1), H + MINUTE_MS: ZERO})
    p0.add_minute_activity(scopes_of(full), H + MINUTE_MS, 60_000, 0)
    p1.add_minutes(full_values({**dims, "creatorId": "cr-2"}), {H: Components(views=2, sessions=2)})
    assert await flush(p0, writer, 0, 10) == 3 * 2  # all, pb-1 and cr-1, two minutes
    assert await flush(p1, writer, 1, 3) == 3
    first, second = H, H + MINUTE_MS
    assert await minute_rows(redis) == [
        {"timestamp": first, "viewCount": 3, "playtimeMins": 0.0},
        {"timestamp": second, "viewCount": 0, "playtimeMins": 1.0},
    ]
    assert await minute_rows(redis, creator_id="cr-1") == [
        {"timestamp": first, "viewCount": 1, "playtimeMins": 0.0},
        {"timestamp": second, "viewCount": 0, "playtimeMins": 1.0},
    ]
    window = await RollupReader(redis).minutes(
        from_ms=H + 30_000, to_ms=H + MINUTE_MS + 1, playback_id="pb-1", fields=("errorRate",)
    )
    assert window == [{"viewCount": 3, "playtimeMins": 1.0, "errorRate": 0.0}]
    assert await RollupReader(redis).minutes(from_ms=H + 2 * MINUTE_MS, to_ms=H + HOUR_MS) == []
    key = rollup_key("minute", H, "playbackId", "pb-1", ())
    assert 1_700 < await redis.ttl(key) <= 1_800
    # listed apart from the hour and day keys, scored by minute
    assert await redis.zscore(minute_written_key(0), key) == H
    assert not await redis.sismember(written_key(0), key)
    # a stale version is refused; replace mode clears what the predecessor wrote
    zombie = PartitionRollups()
    zombie.add_minutes(full, {H: Components(views=5, sessions=5)})
    assert await flush(zombie, writer, 0, 9) == 0
    successor = PartitionRollups()
    successor.add_minutes(full, {second: Components(playing_ms=30_000)})
    successor.mark_all_dirty()
    await flush(successor, writer, 0, (2 << 40) | 1, replace=True)
    assert await minute_rows(redis, playback_id="pb-1") == [
        {"timestamp": first, "viewCount": 2, "playtimeMins": 0.0},  # partition 1's
        {"timestamp": second, "viewCount": 0, "playtimeMins": 0.5},
    ]
    # the listing forgets minutes past the retention behind the newest written
    later = PartitionRollups()
    later.add_minutes(full, {H + 31 * MINUTE_MS: Components(views=1, sessions=1)})
    await flush(later, writer, 0, (2 << 40) | 2)
    listed = await redis.zrange(minute_written_key(0), 0, -1, withscores=True)
    assert {int(score) for _, score in listed} == {second, H + 31 * MINUTE_MS}
    with pytest.raises(ValueError, match="not both"):
        await RollupReader(redis).minutes(from_ms=H, to_ms=H + 10, playback_id="a", creator_id="b")


async def test_concurrent_viewers_now(redis: Redis) -> None:
    writer = TouchedWriter(redis)
    now = H + 1_000_000
    dims = {**DIMS, "playbackId": "pb-1", "creatorId": "cr-1", "country": "DE", "browser": "Chrome"}
    await writer.write(
        {
            "a": Touched(dims, "v1", now - 1_000, False, ()),
            "b": Touched({**dims, "country": "FR"}, "v2", now - 29_999, True, ()),
            "c": Touched(dims, "v3", now - 30_000, False, ()),  # exactly 30 s ago: not watching
        },
        now,
    )
    reader = RealtimeReader(redis, 30_000)
    assert await reader.now(now) == [{"viewCount": 2, "errorRate": 0.5}]
    assert await reader.now(now, breakdown=["country"]) == [
        {"country": "DE", "viewCount": 1, "errorRate": 0.0},
        {"country": "FR", "viewCount": 1, "errorRate": 1.0},
    ]
    assert await reader.now(now, creator_id="cr-1") == [{"viewCount": 2, "errorRate": 0.5}]
    assert await reader.now(now, playback_id="other") == [{"viewCount": 0, "errorRate": 0.0}]


async def test_realtime_sets_are_pruned_and_expire_at_most_once_a_minute(redis: Redis) -> None:
    writer = TouchedWriter(redis)
    dims = {**DIMS, "playbackId": "pb-1", "country": "DE"}
    everyone = keys.now_key(keys.scope_text(None, None))
    t0 = H
    await writer.write({"old": Touched(dims, "v1", t0, False, ())}, t0)
    assert 0 < await redis.ttl(everyone) <= NOW_TTL_S  # the first write of a key sets its TTL
    await redis.persist(everyone)
    later = t0 + NOW_KEEP_MS + 1_000  # "old" is past keeping, but this key was upkept just now
    await writer.write({"new": Touched(dims, "v2", later, False, ())}, t0 + NOW_UPKEEP_MS - 1)
    assert await redis.zcard(everyone) == 2 and await redis.ttl(everyone) == -1
    await writer.write({"new": Touched(dims, "v2", later, False, ())}, later)
    assert await redis.zrange(everyone, 0, -1) == [b"new"]
    assert 0 < await redis.ttl(everyone) <= NOW_TTL_S
