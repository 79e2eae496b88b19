"""The concurrency writer and reader against the real Redis: partitions add up per instant
before the maximum, versions refuse stale writers, replace mode clears what is gone."""

from __future__ import annotations

from redis.asyncio import Redis

from aggregator import keys
from aggregator.concurrency import SAMPLE_MS, PartitionConcurrency
from aggregator.store import ConcurrencyReader, ConcurrencyWriter

H = 1_767_229_200_000  # 2026-01-01T01:00Z
K = H // SAMPLE_MS
MIN = 60_000


EMPTY_REDIS = True  # these tests own the whole test database: `redis` is emptied first


def minute_peaks(rows: list[dict[str, int]]) -> dict[int, int]:
    return {(r["timestamp"] - H) // MIN: r["peakConcurrentViewers"] for r in rows}


async def test_partitions_add_up_per_instant_before_the_peak(redis: Redis) -> None:
    writer, reader = ConcurrencyWriter(redis, 3_600), ConcurrencyReader(redis)
    p0, p1 = PartitionConcurrency(), PartitionConcurrency()
    # p0: two sessions at instants 0-5 of minute 0; p1: one session at instants 6-11, one at
    # 4-9. Per instant: 2,2,2,2,3,3,2,2,2,2,1,1 -> peak 3, where no partition alone has 3.
    p0.add(["all", "playbackId=pb-1"], [(K, K + 6)])
    p0.add(["all"], [(K, K + 6)])
    p1.add(["all", "playbackId=pb-1"], [(K + 6, K + 12)])
    p1.add(["all"], [(K + 4, K + 10)])
    p1.add(["all"], [(K + 12 * 61, K + 12 * 61 + 1)])  # the next hour's second minute
    assert await writer.write(0, 1, p0.take()) == 2
    assert await writer.write(1, 1, p1.take()) == 3
    rows = await reader.peaks(step="minute", from_ms=H, to_ms=H + 3 * MIN)
    assert minute_peaks(rows) == {0: 3, 1: 0, 2: 0}
    assert await writer.write(0, 1, p0.take(everything=True)) == 2  # a replay: same values
    assert await writer.write(0, 2, p0.take(everything=True)) == 2
    assert minute_peaks(await reader.peaks(step="minute", from_ms=H, to_ms=H + MIN)) == {0: 3}
    summed = await redis.hget(keys.concurrency_key(H, "all"), keys.concurrency_sum_field(H))
    assert summed == b"[2,2,2,2,3,3,2,2,2,2,1,1]"
    pb1 = await reader.peaks(step="minute", from_ms=H, to_ms=H + MIN, playback_id="pb-1")
    assert minute_peaks(pb1) == {0: 1}
    hours = await reader.peaks(step="hour", from_ms=H - 1, to_ms=H + 2 * 3_600_000)
    assert hours == [
        {"timestamp": H - 3_600_000, "peakConcurrentViewers": 0},
        {"timestamp": H, "peakConcurrentViewers": 3},
        {"timestamp": H + 3_600_000, "peakConcurrentViewers": 1},
    ]
    # Instants after "now" are not decided yet: at instant 3 only 2 sessions are counted.
    early = await reader.peaks(step="minute", from_ms=H, to_ms=H + MIN, now_ms=H + 3 * SAMPLE_MS)
    assert minute_peaks(early) == {0: 2}
    assert await redis.ttl(keys.concurrency_key(H, "all")) > 3_000


async def test_stale_versions_are_refused_and_replace_clears_the_rest(redis: Redis) -> None:
    writer, reader = ConcurrencyWriter(redis), ConcurrencyReader(redis)
    part = PartitionConcurrency()
    part.add(["all"], [(K, K + 6), (K + 12 * 70, K + 12 * 70 + 6)])  # minute 0 and hour 2
    await writer.write(0, 10, part.take())
    older = PartitionConcurrency()
    older.add(["all"], [(K, K + 6)])
    older.add(["all"], [(K, K + 6)])
    assert await writer.write(0, 9, older.take()) == 0  # a worker that lost the partition
    assert minute_peaks(await reader.peaks(step="minute", from_ms=H, to_ms=H + MIN)) == {0: 1}

    # A new owner rebuilt the partition from the table and knows only minute 5 of hour 1.
    rebuilt = PartitionConcurrency()
    rebuilt.add(["all"], [(K + 60, K + 66)])
    assert await writer.write(0, (1 << 40) | 1, rebuilt.take(everything=True), replace=True) == 2
    rows = await reader.peaks(step="minute", from_ms=H, to_ms=H + 6 * MIN)
    assert minute_peaks(rows) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 1}
    assert await redis.hgetall(keys.concurrency_key(H + 3_600_000, "all")) == {
        b"v|0": str((1 << 40) | 1).encode()
    }
