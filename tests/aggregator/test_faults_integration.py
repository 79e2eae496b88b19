"""Fault tests on the real servers: the numbers stay exact through a worker killed with
SIGKILL mid-stream, a second worker leaving mid-run, and Redis restarted empty."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ingest.fleet import BehaviourMix, FleetSpec
from tests.aggregator.pipeline import Pipeline, assert_rows_equal
from tests.conftest import REPO_DIR

SPEC = FleetSpec(
    players=80,
    duration_s=120,
    mix=replace(BehaviourMix(), exit_before_start_share=0.1, start_failure_share=0.08),
)
QUERIES = [
    ("hour", ()),
    ("day", ("country",)),
    ("month", ("playbackId", "deviceType")),
]


async def assert_exact(p: Pipeline) -> None:
    await p.settle()
    for step, breakdown in QUERIES:
        want = p.expected(step, breakdown)  # type: ignore[arg-type]
        assert want
        assert_rows_equal(await p.read(step, breakdown), want, f"{step} {breakdown}")  # type: ignore[arg-type]
    await p.assert_minutes_exact()
    await p.assert_concurrency_exact()


async def test_worker_killed_mid_stream_and_restarted(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    await p.reset_redis()
    p.start_worker("first")
    try:
        players = asyncio.create_task(p.simulate(SPEC, speed=12))  # about 10 s of sends
        await asyncio.sleep(5)
        p.kill_worker("first", signal.SIGKILL)
        await asyncio.sleep(1)
        p.start_worker("second")
        await players
        await assert_exact(p)
    finally:
        p.stop()


async def test_two_workers_share_partitions_and_one_leaves(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, partitions=4)
    await p.reset_redis()
    p.start_worker("a")
    p.start_worker("b")
    try:
        players = asyncio.create_task(p.simulate(SPEC, speed=12))
        await asyncio.sleep(6)
        p.kill_worker("b", signal.SIGTERM)  # leaves the group; "a" takes its partitions
        await players
        await assert_exact(p)
    finally:
        p.stop()


async def test_redis_restarted_empty_is_repopulated(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    await p.reset_redis()
    p.start_worker()
    try:
        await p.simulate(SPEC, speed=30)
        await p.settle()
        before = await run_id(p)
        restart_redis_empty()
        assert await run_id(p) != before  # a new server, started on a wiped data directory
        await assert_exact(p)
    finally:
        p.stop()


async def run_id(p: Pipeline) -> str:
    redis = Redis.from_url(p.settings.redis_url)
    try:
        return str((await redis.info("server"))["run_id"])
    finally:
        await redis.aclose()


def restart_redis_empty() -> None:
    env = os.environ.copy()
    subprocess.run(["bash", str(REPO_DIR / "deploy" / "redis.sh"), "stop"], check=True, env=env)
    state = Path(env.get("PLAYPULSE_STATE", REPO_DIR / ".state"))
    shutil.rmtree(state / "redis", ignore_errors=True)
    subprocess.run(["bash", str(REPO_DIR / "deploy" / "redis.sh"), "start"], check=True, env=env)


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
