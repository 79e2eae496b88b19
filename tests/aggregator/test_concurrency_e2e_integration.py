"""The concurrent-viewers series end to end over real minutes: players arriving and leaving
over about 100 s of wall time (so the series rises and falls across several minutes), a worker
killed with SIGKILL mid-run and restarted, and the series still equals the reference exactly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ingest.fleet import FleetSpec
from tests.aggregator.pipeline import Pipeline, assert_rows_equal

SPEC = FleetSpec(players=40, duration_s=120)


async def test_series_over_minutes_survives_kill_9(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    await p.reset_redis()
    p.start_worker("first")
    try:
        players = asyncio.create_task(p.simulate(SPEC, speed=1.2))  # about 100 s of sends
        await asyncio.sleep(45)
        p.kill_worker("first", signal.SIGKILL)
        await asyncio.sleep(1)
        p.start_worker("second")
        await players
        await p.settle()
        assert_rows_equal(await p.read("hour"), p.expected("hour"), "rollups")
        await p.assert_concurrency_exact()
        minutes = [r["peakConcurrentViewers"] for r in p.expected_concurrency("minute")]
        watched = [m for m in minutes if m > 0]
        assert len(watched) >= 3 and len(set(watched)) >= 2, f"a flat series: {minutes}"
    finally:
        p.stop()


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
