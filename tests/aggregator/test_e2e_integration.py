"""End to end on the real servers: simulated players -> collector -> Kafka -> faust worker ->
Redis -> reader, and every number the reader gives equals the reference model's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from aggregator import reference
from aggregator.definitions import CONCURRENCY_WINDOW_MS
from aggregator.store import RealtimeReader, RollupReader
from aggregator.timebuckets import Step
from ingest.fleet import BehaviourMix, FleetSpec
from tests.aggregator.pipeline import Pipeline, assert_rows_equal, dims_of

BREAKDOWNS = [
    (),
    ("country",),
    ("deviceType",),
    ("playbackId",),
    ("creatorId",),
    ("browser",),
    ("viewerId",),
    ("continent", "deviceType"),
    ("playbackId", "country", "os"),
]
FILTERS = [
    {},
    {"playback_id": "pb-live-001"},
    {"creator_id": "creator-a"},
    {"playback_id": "pb-vod-001", "creator_id": "creator-a"},
]
SPEC = FleetSpec(
    players=150,
    duration_s=120,
    mix=replace(BehaviourMix(), exit_before_start_share=0.1, start_failure_share=0.08),
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path_factory.mktemp("e2e"))
    asyncio.run(p.reset_redis())
    p.start_worker()
    try:
        asyncio.run(p.simulate(SPEC, speed=30))
        asyncio.run(p.settle())
        yield p
    finally:
        p.stop()


@pytest.mark.parametrize("step", ["hour", "day", "week", "month", "year"])
@pytest.mark.parametrize("breakdown", BREAKDOWNS, ids=lambda b: "+".join(b) or "none")
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f.values()) or "all")
async def test_reader_equals_reference(
    pipeline: Pipeline, step: Step, breakdown: tuple[str, ...], filters: dict[str, Any]
) -> None:
    want = pipeline.expected(step, breakdown, **filters)
    assert want, "the reference has rows: the query is not vacuous"
    got = await pipeline.read(step, breakdown, **filters)
    assert_rows_equal(got, want, f"{step} {breakdown} {filters}")


async def test_minute_rows_equal_reference(pipeline: Pipeline) -> None:
    """The live page's grain: per minute and over the run, for all, a playback and a creator."""
    await pipeline.assert_minutes_exact()


async def test_unaligned_range_selects_whole_hours(pipeline: Pipeline) -> None:
    sent = sorted(orjson.loads(line)["sent_at_ms"] for line in pipeline.log)
    lo, hi = sent[len(sent) // 3] + 123, sent[2 * len(sent) // 3] + 456
    want = reference.expected(
        pipeline.log, step="hour", from_ms=lo, to_ms=hi, viewer_of=pipeline.viewer_of
    )
    redis = Redis.from_url(pipeline.settings.redis_url)
    try:
        got = await RollupReader(redis).viewership(step="hour", from_ms=lo, to_ms=hi)
    finally:
        await redis.aclose()
    assert_rows_equal(got, want, "unaligned")


async def test_the_fleet_exercises_every_metric(pipeline: Pipeline) -> None:
    [total] = pipeline.expected("year")
    assert total["viewCount"] > 50
    assert total["exitsBeforeStartCount"] > 0
    assert 0 < total["errorRate"] < 1
    assert total["rebufferRatio"] > 0
    assert total["ttffMs"] > 0
    lines = [orjson.loads(line) for line in pipeline.log]
    ids = [e["id"] for line in lines if line["status"] == 200 for e in line["envelope"]["events"]]
    assert len(ids) > len(set(ids)), "the fleet re-sent some events: duplicates are exercised"


NOW_BREAKDOWNS = [
    (),
    ("country",),
    ("browser",),
    ("device",),
    ("playbackId",),
    ("country", "device"),
    ("browser", "playbackId"),
    ("playbackId", "browser", "country"),
    ("device", "browser", "country", "playbackId"),
]


@pytest.mark.parametrize("breakdown", NOW_BREAKDOWNS, ids=lambda b: "+".join(b) or "none")
@pytest.mark.parametrize("filters", FILTERS[:3], ids=lambda f: ",".join(f.values()) or "all")
async def test_concurrent_viewers_equal_reference(
    pipeline: Pipeline, breakdown: tuple[str, ...], filters: dict[str, Any]
) -> None:
    """Now = just after the last accepted beacon (the sorted sets keep each session's latest
    beacon time, so "now" can only be asked about the present, not replayed for the past)."""
    lines = [orjson.loads(line) for line in pipeline.log]
    now_ms = max(line["response"]["server_timestamp"] for line in lines if line["status"] == 200)
    now_ms += 1_000
    want = reference.concurrent_now(
        pipeline.log, now_ms, breakdown_by=breakdown, dims_of=dims_of, **filters
    )
    redis = Redis.from_url(pipeline.settings.redis_url)
    try:
        got = await RealtimeReader(redis, CONCURRENCY_WINDOW_MS).now(
            now_ms, breakdown=breakdown, **filters
        )
    finally:
        await redis.aclose()
    assert want and sum(r["viewCount"] for r in want) > 0
    if len(breakdown) > 1:
        assert len(want) > 1, "several tuples: the projection is exercised"

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row.get(d)) for d in breakdown)

    assert sorted(got, key=key) == sorted(want, key=key)


async def test_concurrent_viewers_series_equals_reference(pipeline: Pipeline) -> None:
    """Peaks per minute and per hour, for all, a playback and a creator, through the real
    pipeline: exactly the reference's."""
    await pipeline.assert_concurrency_exact()


async def test_every_closed_view_is_published_to_views(pipeline: Pipeline) -> None:
    consumer = AIOKafkaConsumer(
        pipeline.views_topic,
        bootstrap_servers=pipeline.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=1_000)
            for messages in batch.values():
                for m in messages:
                    summary = orjson.loads(m.value)
                    summaries[summary["sessionId"]] = summary  # the latest close wins
            if not batch and summaries:
                break
    finally:
        await consumer.stop()
    sessions = reference.sessions(pipeline.log, dims_of=dims_of, viewer_of=pipeline.viewer_of)
    assert set(summaries) == {s.session_id for s in sessions}
    for s in sessions:
        summary = summaries[s.session_id]
        assert summary["playbackId"] == s.dims["playbackId"]
        assert summary["viewerId"] == s.viewer
        assert summary["exitBeforeStart"] == bool(s.exit_before_start)
        assert summary["ttffMs"] == s.ttff_ms
