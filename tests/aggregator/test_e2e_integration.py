"""End to end on the real servers: simulated players -> collector -> Kafka -> faust worker ->
Redis -> reader, and every number the reader gives equals the reference model's."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aggregator import reference
from aggregator.store import RollupReader
from aggregator.timebuckets import Step, floor
from ingest.app import create_app
from ingest.enrich import parse_user_agent, viewer_hash
from ingest.fleet import CATALOGUE, BehaviourMix, FleetSpec
from ingest.geodb import build_db
from ingest.registry import Playback, PlaybackRegistry
from ingest.settings import IngestSettings
from ingest.simulate import run as simulate
from tests.conftest import REPO_DIR

EXACT = (
    "viewCount",
    "playtimeMins",
    "ttffMs",
    "rebufferRatio",
    "errorRate",
    "exitsBeforeStart",
    "exitsBeforeStartCount",
)
SKETCHED = ("ttffP50Ms", "ttffP95Ms")  # DDSketch, 1 % relative accuracy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dims_of(envelope: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    device = parse_user_agent(envelope["user_agent"])
    return {"browser": device.browser, "os": device.os}


@dataclass
class Run:
    log: list[bytes]
    settings: IngestSettings
    viewer_of: Any


async def _drive(settings: IngestSettings, log_path: Path) -> None:
    redis = Redis.from_url(settings.redis_url)
    registry = PlaybackRegistry(redis)
    for e in CATALOGUE:
        await registry.add(Playback(e.playback_id, e.creator_id, e.asset_id, e.stream_id))
    await redis.aclose()
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as http:
            for _ in range(300):  # until the collector reaches Kafka
                async with http.get(server.make_url("/readyz")) as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
        spec = FleetSpec(
            players=150,
            duration_s=120,
            mix=replace(BehaviourMix(), exit_before_start_share=0.1, start_failure_share=0.08),
        )
        summary = await simulate(
            spec, str(server.make_url("")), log_path, speed=30, concurrency=16, seed=7
        )
        assert summary.ok > 100, summary.line()
    finally:
        await server.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("e2e")
    topic = f"beacons-e2e-{uuid.uuid4().hex[:8]}"
    base = IngestSettings.from_env()
    settings = replace(
        base,
        topic=topic,
        topic_partitions=3,
        geoip_db=str(build_db(tmp / "geo.mmdb")),
        trusted_proxies=IngestSettings.from_env(
            {"PLAYPULSE_TRUSTED_PROXIES": "127.0.0.1/32"}
        ).trusted_proxies,
    )
    env = {
        **os.environ,
        "PLAYPULSE_BEACONS_TOPIC": topic,
        "PLAYPULSE_BEACONS_PARTITIONS": "3",
        "PLAYPULSE_AGGREGATOR_APP_ID": f"pp-e2e-{uuid.uuid4().hex[:6]}",
        "PLAYPULSE_AGGREGATOR_ADDR": f"127.0.0.1:{free_port()}",
        "PLAYPULSE_AGGREGATOR_DATA_DIR": str(tmp / "faust"),
        "PLAYPULSE_FLUSH_INTERVAL_S": "0.5",
        "PLAYPULSE_TICK_INTERVAL_S": "0.5",
        "PLAYPULSE_SESSION_TIMEOUT_S": "3",
    }
    log_path = tmp / "simulate.jsonl"
    with open(tmp / "worker.log", "wb") as worker_log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "aggregate"],
            cwd=REPO_DIR,
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            asyncio.run(_drive(settings, log_path))

            def viewer_of(envelope: dict[str, Any], truth: dict[str, Any]) -> str:
                return viewer_hash(
                    envelope.get("uid"),
                    envelope.get("domain"),
                    envelope["user_agent"],
                    truth["clientIp"],
                    settings.viewer_hash_salt,
                )

            lines = log_path.read_bytes().splitlines()
            asyncio.run(_settle(settings, lines, viewer_of))
            yield Run(lines, settings, viewer_of)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        print((tmp / "worker.log").read_text()[-3000:])


async def _settle(settings: IngestSettings, lines: list[bytes], viewer_of: Any) -> None:
    """Waits until the worker closed every session and Redis shows the reference's totals."""
    lo, hi = window(lines)
    want = reference.expected(lines, step="year", viewer_of=viewer_of, from_ms=lo, to_ms=hi)
    redis = Redis.from_url(settings.redis_url)
    try:
        reader = RollupReader(redis)
        deadline = time.monotonic() + 90
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = await reader.viewership(step="year", from_ms=lo, to_ms=hi)
            if _comparable(got) == _comparable(want):
                return
            await asyncio.sleep(1)
        pytest.fail(f"worker never settled: got {got}, want {want}")
    finally:
        await redis.aclose()


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k in (*EXACT, "timestamp")} for r in rows]


def window(lines: list[bytes]) -> tuple[int, int]:
    """A range around the run: the day before it started to the day after it ended."""
    sent = [orjson.loads(line)["sent_at_ms"] for line in lines]
    return floor(min(sent), "day") - DAY_MS, floor(max(sent), "day") + 2 * DAY_MS


DAY_MS = 86_400_000
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


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]], label: str) -> None:
    assert len(got) == len(want), f"{label}: {len(got)} rows, reference has {len(want)}"
    for g, w in zip(got, want, strict=True):
        keys_ = [k for k in w if k not in (*EXACT, *SKETCHED, "uniqueViewers")]
        assert {k: g.get(k) for k in keys_} == {k: w[k] for k in keys_}, label
        assert {k: g[k] for k in EXACT} == {k: w[k] for k in EXACT}, f"{label}: {g} != {w}"
        for k in SKETCHED:
            if w[k] is None:
                assert g[k] is None, label
            else:
                assert g[k] == pytest.approx(w[k], rel=0.0101), f"{label} {k}"
        if "uniqueViewers" in g:  # HyperLogLog: within its standard error, at least 1
            assert abs(g["uniqueViewers"] - w["uniqueViewers"]) <= max(1, 0.02 * w["uniqueViewers"])


@pytest.mark.parametrize("step", ["hour", "day", "week", "month", "year"])
@pytest.mark.parametrize("breakdown", BREAKDOWNS, ids=lambda b: "+".join(b) or "none")
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f.values()) or "all")
async def test_reader_equals_reference(
    run: Run, step: Step, breakdown: tuple[str, ...], filters: dict[str, str]
) -> None:
    lo, hi = window(run.log)
    want = reference.expected(
        run.log,
        step=step,
        breakdown_by=breakdown,
        from_ms=lo,
        to_ms=hi,
        dims_of=dims_of,
        viewer_of=run.viewer_of,
        **filters,
    )
    redis = Redis.from_url(run.settings.redis_url)
    try:
        got = await RollupReader(redis).viewership(
            step=step,
            from_ms=lo,
            to_ms=hi,
            breakdown=breakdown,
            **filters,  # type: ignore[arg-type]
        )
    finally:
        await redis.aclose()
    assert want, "the reference has rows: the query is not vacuous"
    assert_rows_equal(got, want, f"{step} {breakdown} {filters}")


async def test_unaligned_range_selects_whole_hours(run: Run) -> None:
    sent = sorted(orjson.loads(line)["sent_at_ms"] for line in run.log)
    lo, hi = sent[len(sent) // 3] + 123, sent[2 * len(sent) // 3] + 456
    want = reference.expected(run.log, step="hour", from_ms=lo, to_ms=hi, viewer_of=run.viewer_of)
    redis = Redis.from_url(run.settings.redis_url)
    try:
        got = await RollupReader(redis).viewership(step="hour", from_ms=lo, to_ms=hi)
    finally:
        await redis.aclose()
    assert_rows_equal(got, want, "unaligned")
