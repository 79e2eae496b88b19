"""A whole pipeline on the real servers, for end-to-end and fault tests: a collector in-process,
aggregator workers as subprocesses (so they can be killed), simulated players, the reference."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aggregator import reference
from aggregator.definitions import CLOCK_SKEW_PAST_MS
from aggregator.store import ConcurrencyReader, RollupReader
from aggregator.timebuckets import HOUR_MS, Step, ceil, floor
from aggregator.watchdog import EXIT_RECOVERY_STALLED
from ingest.app import create_app
from ingest.enrich import parse_user_agent, viewer_hash
from ingest.fleet import CATALOGUE, FleetSpec
from ingest.geodb import build_db
from ingest.registry import Playback, PlaybackRegistry
from ingest.settings import IngestSettings
from ingest.simulate import run as simulate
from tests.conftest import REPO_DIR, stop_processes

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
DAY_MS = 86_400_000
Rows = list[dict[str, Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dims_of(envelope: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[str, Any]:
    device = parse_user_agent(envelope["user_agent"])
    return {"browser": device.browser, "os": device.os, "device": device.device}


@dataclass
class Pipeline:
    tmp: Path
    partitions: int = 3
    topic: str = field(default_factory=lambda: f"beacons-e2e-{uuid.uuid4().hex[:8]}")
    app_id: str = field(default_factory=lambda: f"pp-e2e-{uuid.uuid4().hex[:6]}")
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def views_topic(self) -> str:
        return f"views-{self.topic}"

    log_path: Path = field(init=False)
    settings: IngestSettings = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.tmp / "simulate.jsonl"
        self.settings = replace(
            IngestSettings.from_env(),
            topic=self.topic,
            topic_partitions=self.partitions,
            geoip_db=str(build_db(self.tmp / "geo.mmdb")),
            trusted_proxies=IngestSettings.from_env(
                {"PLAYPULSE_TRUSTED_PROXIES": "127.0.0.1/32"}
            ).trusted_proxies,
        )

    async def reset_redis(self) -> None:
        """Rollup keys are not namespaced per topic: each pipeline starts from an empty Redis."""
        redis = Redis.from_url(self.settings.redis_url)
        await redis.flushdb()
        await redis.aclose()

    # -- workers -------------------------------------------------------------------------
    def start_worker(self, name: str = "w1") -> None:
        env = {
            **os.environ,
            "PLAYPULSE_BEACONS_TOPIC": self.topic,
            "PLAYPULSE_VIEWS_TOPIC": self.views_topic,
            "PLAYPULSE_BEACONS_PARTITIONS": str(self.partitions),
            "PLAYPULSE_AGGREGATOR_APP_ID": self.app_id,
            "PLAYPULSE_AGGREGATOR_ADDR": f"127.0.0.1:{free_port()}",
            "PLAYPULSE_AGGREGATOR_DATA_DIR": str(self.tmp / f"faust-{name}"),
            "PLAYPULSE_FLUSH_INTERVAL_S": "0.5",
            "PLAYPULSE_TICK_INTERVAL_S": "0.5",
            "PLAYPULSE_SESSION_TIMEOUT_S": "3",
            "PLAYPULSE_AGGREGATOR_GROUP_SESSION_TIMEOUT_S": "10",
            "PLAYPULSE_RECOVERY_STALL_S": "20",
        }
        log = open(self.tmp / f"worker-{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "aggregate"],
            cwd=REPO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def revive(self) -> None:
        """Restarts workers that gave up a stuck recovery (`aggregator.watchdog`), as their
        supervisor would in production."""
        for name, proc in list(self.workers.items()):
            if proc.poll() == EXIT_RECOVERY_STALLED:
                self.start_worker(name)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        stop_processes([self.workers.pop(name)], sig)

    def stop(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name, signal.SIGTERM)

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-2000:] for p in self.tmp.glob("worker-*.log")
        )

    # -- players -------------------------------------------------------------------------
    async def simulate(self, spec: FleetSpec, *, speed: float, seed: int = 7) -> None:
        redis = Redis.from_url(self.settings.redis_url)
        registry = PlaybackRegistry(redis)
        for e in CATALOGUE:
            await registry.add(Playback(e.playback_id, e.creator_id, e.asset_id, e.stream_id))
        await redis.aclose()
        server = TestServer(create_app(self.settings), host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession() as http:
                for _ in range(300):  # until the collector reaches Kafka
                    async with http.get(server.make_url("/readyz")) as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.1)
            summary = await simulate(
                spec,
                str(server.make_url("")),
                self.log_path,
                speed=speed,
                concurrency=16,
                seed=seed,
            )
            assert summary.ok > 50, summary.line()
        finally:
            await server.close()

    # -- truth ---------------------------------------------------------------------------
    @property
    def log(self) -> list[bytes]:
        return self.log_path.read_bytes().splitlines()

    def viewer_of(self, envelope: Mapping[str, Any], truth: Mapping[str, Any]) -> str:
        return viewer_hash(
            envelope.get("uid"),
            envelope.get("domain"),
            envelope["user_agent"],
            truth["clientIp"],
            self.settings.viewer_hash_salt,
        )

    def window(self) -> tuple[int, int]:
        """A range around the run: the day before it started to the day after it ended."""
        sent = [orjson.loads(line)["sent_at_ms"] for line in self.log]
        return floor(min(sent), "day") - DAY_MS, floor(max(sent), "day") + 2 * DAY_MS

    def expected(
        self, step: Step, breakdown: tuple[str, ...] = (), **filters: Any
    ) -> list[dict[str, Any]]:
        lo, hi = self.window()
        return reference.expected(
            self.log,
            step=step,
            breakdown_by=breakdown,
            from_ms=lo,
            to_ms=hi,
            dims_of=dims_of,
            viewer_of=self.viewer_of,
            **filters,
        )

    async def read(
        self, step: Step, breakdown: tuple[str, ...] = (), **filters: Any
    ) -> list[dict[str, Any]]:
        lo, hi = self.window()
        redis = Redis.from_url(self.settings.redis_url)
        try:
            return await RollupReader(redis).viewership(
                step=step, from_ms=lo, to_ms=hi, breakdown=breakdown, **filters
            )
        finally:
            await redis.aclose()

    def served_window(self) -> tuple[int, int]:
        """Whole hours around the collector's server timestamps (what concurrency is about)."""
        served = [
            orjson.loads(line)["response"]["server_timestamp"]
            for line in self.log
            if orjson.loads(line)["status"] == 200
        ]
        return floor(min(served), "hour"), ceil(max(served) + 60_000, "hour") + HOUR_MS

    def expected_concurrency(self, step: Literal["minute", "hour"], **filters: Any) -> Rows:
        lo, hi = self.served_window()
        return reference.concurrent_series(self.log, step=step, from_ms=lo, to_ms=hi, **filters)

    async def read_concurrency(self, step: Literal["minute", "hour"], **filters: Any) -> Rows:
        lo, hi = self.served_window()
        redis = Redis.from_url(self.settings.redis_url)
        try:
            return await ConcurrencyReader(redis).peaks(step=step, from_ms=lo, to_ms=hi, **filters)
        finally:
            await redis.aclose()

    async def assert_concurrency_exact(self, timeout_s: float = 30) -> None:
        """The series equals the reference's, per minute and per hour, for each scope (waiting
        for the last flush), and is not vacuous."""
        cases = [
            (step, filters)
            for step in ("minute", "hour")
            for filters in ({}, {"playback_id": "pb-live-001"}, {"creator_id": "creator-a"})
        ]
        for step, filters in cases:
            want = self.expected_concurrency(step, **filters)  # type: ignore[arg-type]
            assert max(r["peakConcurrentViewers"] for r in want) > 0, (step, filters)
            deadline = time.monotonic() + timeout_s
            got = await self.read_concurrency(step, **filters)  # type: ignore[arg-type]
            while got != want and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                got = await self.read_concurrency(step, **filters)  # type: ignore[arg-type]
            assert got == want, f"concurrency {step} {filters}\n{self.worker_logs()}"

    def minute_window(self) -> tuple[int, int]:
        """Whole hours around every event time the run can have (its served range, from 5 min
        earlier: event times are clamped to at most that behind their server time)."""
        lo, hi = self.served_window()
        return floor(lo - CLOCK_SKEW_PAST_MS, "hour"), hi

    def expected_minutes(self, step: Step, **filters: Any) -> Rows:
        lo, hi = self.minute_window()
        return reference.expected(
            self.log, step=step, from_ms=lo, to_ms=hi, grain="minute", **filters
        )

    async def read_minutes(self, step: Literal["minute"] | None, **filters: Any) -> Rows:
        lo, hi = self.minute_window()
        redis = Redis.from_url(self.settings.redis_url)
        try:
            return await RollupReader(redis).minutes(from_ms=lo, to_ms=hi, step=step, **filters)
        finally:
            await redis.aclose()

    async def assert_minutes_exact(self) -> None:
        """The minute rows equal the reference's minute buckets for each scope, minute by
        minute and summed over the run, and are not vacuous."""
        for filters in ({}, {"playback_id": "pb-live-001"}, {"creator_id": "creator-a"}):
            want = self.expected_minutes("minute", **filters)
            assert want and (filters or len(want) > 1), f"{len(want)} minutes {filters}"
            got = await self.read_minutes("minute", **filters)
            assert_rows_equal(got, want, f"minutes {filters}")
            [total] = self.expected_minutes("year", **filters)
            del total["timestamp"]
            assert_rows_equal(await self.read_minutes(None, **filters), [total], f"{filters}")

    async def settle(self, timeout_s: float = 240) -> None:
        """Waits until the workers closed every session and Redis shows the reference's totals.

        Generous: a worker that meets a record faust dropped exits and is restarted, 10 to 15 s
        each time (the group waits out its session), and that was seen up to 5 times in a test."""
        want = _comparable(self.expected("year"))
        deadline = time.monotonic() + timeout_s
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.revive()
            got = await self.read("year")
            if _comparable(got) == want:
                return
            await asyncio.sleep(1)
        pytest.fail(f"never settled:\n got {got}\nwant {want}\n{self.worker_logs()}")


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k in (*EXACT, "timestamp")} for r in rows]


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]], label: str) -> None:
    assert len(got) == len(want), f"{label}: {len(got)} rows, reference has {len(want)}"
    for g, w in zip(got, want, strict=True):
        names = [k for k in w if k not in (*EXACT, *SKETCHED, "uniqueViewers")]
        assert {k: g.get(k) for k in names} == {k: w[k] for k in names}, label
        assert {k: g[k] for k in EXACT} == {k: w[k] for k in EXACT}, f"{label}: {g} != {w}"
        for k in SKETCHED:
            if w[k] is None:
                assert g[k] is None, label
            else:
                assert g[k] == pytest.approx(w[k], rel=0.0101), f"{label} {k}"
        if "uniqueViewers" in g:  # HyperLogLog: within its standard error, at least 1
            assert abs(g["uniqueViewers"] - w["uniqueViewers"]) <= max(1, 0.02 * w["uniqueViewers"])
