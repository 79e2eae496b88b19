"""The real Prometheus (started by deploy/test.sh) scrapes the three real services while beacons
flow, and the values read back through Prometheus's own HTTP API match what the services say.

The test starts `playpulse ingest`, `aggregate` and `api` as processes on ports of their own and
points Prometheus's jobs at them by rewriting its targets files (file_sd, reread on change).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from redis.asyncio import Redis

from api.auth import create_key
from ingest.settings import IngestSettings
from tests.aggregator.pipeline import free_port
from tests.conftest import REPO_DIR, stop_processes

JOBS = ("playpulse-ingest", "playpulse-aggregator", "playpulse-api")
SESSIONS = 6  # sessions kept watching for the whole test
ERRORING = 2  # of them, sessions that report an error
BEAT_S = 2.0  # how often each session sends a heartbeat (well inside the 30 s window)
SETTLE_S = 90.0


def prometheus_addr() -> str:
    return os.environ.get("PLAYPULSE_PROMETHEUS_ADDR", "127.0.0.1:9090")


def targets_dir() -> Path:
    state = Path(os.environ.get("PLAYPULSE_STATE", REPO_DIR / ".state"))
    return state / "prometheus" / "targets"


def point_job(job: str, addr: str | None) -> None:
    """Rewrites the job's targets file atomically; Prometheus picks the change up by itself."""
    path = targets_dir() / f"{job}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps([{"targets": [addr]}] if addr else []))
    tmp.replace(path)


@dataclass
class Stack:
    addrs: dict[str, str]
    procs: list[subprocess.Popen[bytes]]
    logs: Path

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:] for p in self.logs.glob("*.log"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not targets_dir().is_dir():
        pytest.fail(f"no Prometheus targets directory at {targets_dir()}: run via deploy/test.sh")
    tmp = tmp_path_factory.mktemp("prom")
    addrs = {job: f"127.0.0.1:{free_port()}" for job in JOBS}
    topic = f"beacons-prom-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PLAYPULSE_INGEST_ADDR": addrs["playpulse-ingest"],
        "PLAYPULSE_AGGREGATOR_ADDR": addrs["playpulse-aggregator"],
        "PLAYPULSE_API_ADDR": addrs["playpulse-api"],
        "PLAYPULSE_BEACONS_TOPIC": topic,
        "PLAYPULSE_VIEWS_TOPIC": f"views-{topic}",
        "PLAYPULSE_BEACONS_PARTITIONS": "2",
        "PLAYPULSE_AGGREGATOR_APP_ID": f"pp-prom-{uuid.uuid4().hex[:6]}",
        "PLAYPULSE_AGGREGATOR_DATA_DIR": str(tmp / "faust"),
        "PLAYPULSE_FLUSH_INTERVAL_S": "0.5",
        "PLAYPULSE_API_GAUGES_INTERVAL_S": "1",
    }
    redis_url = IngestSettings.from_env().redis_url
    asyncio.run(_flush(redis_url))  # the concurrent-viewer sets are global: start from nothing
    procs = []
    for name, command in (("ingest", "ingest"), ("aggregator", "aggregate"), ("api", "api")):
        with open(tmp / f"{name}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.cli", command],
                    cwd=REPO_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    for job, addr in addrs.items():
        point_job(job, addr)
    try:
        yield Stack(addrs, procs, tmp)
    finally:
        for job in JOBS:
            point_job(job, None)
        stop_processes(procs)


async def _flush(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()


def envelope(session_id: str, error: bool) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "session_id": session_id,
        "playback_id": "pb-prom",
        "protocol": "application/vnd.apple.mpegurl",
        "source_url": "https://cdn.example/hls/pb-prom/index.m3u8",
        "player": "hls",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0 Safari/537.36",
        "domain": "example.com",
        "events": [
            {
                "id": uuid.uuid4().hex,
                "type": "heartbeat",
                "timestamp": now,
                "time_playing_ms": 2000,
                "errors": int(error),
            }
        ],
    }


async def watch(http: ClientSession, collector: str, stop: asyncio.Event) -> int:
    """Every session beats every BEAT_S until `stop`; returns the beacons accepted."""
    sessions = [(f"prom-{uuid.uuid4().hex[:10]}", i < ERRORING) for i in range(SESSIONS)]
    accepted = 0
    while not stop.is_set():
        for session_id, error in sessions:
            async with http.post(
                f"{collector}/analytics/log", json=envelope(session_id, error)
            ) as resp:
                accepted += resp.status == 200
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BEAT_S)
    return accepted


async def query(http: ClientSession, promql: str) -> list[dict[str, Any]]:
    url = f"http://{prometheus_addr()}/api/v1/query"
    async with http.get(url, params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def scalar(http: ClientSession, promql: str) -> float | None:
    result = await query(http, promql)
    return float(result[0]["value"][1]) if result else None


async def wait_healthy(http: ClientSession, stack: Stack) -> None:
    deadline = time.monotonic() + 60
    for job, addr in stack.addrs.items():
        path = (
            "/healthz" if job == "playpulse-aggregator" else "/readyz"
        )  # the worker has no readyz
        while True:
            try:
                async with http.get(f"http://{addr}{path}") as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{addr} never became ready\n{stack.log_tail()}")
            await asyncio.sleep(0.2)


async def test_prometheus_scrapes_all_three_services(stack: Stack) -> None:
    redis = Redis.from_url(IngestSettings.from_env().redis_url)
    _, key = await create_key(redis, kind="private", name="prometheus-test")
    await redis.aclose()
    api = f"http://{stack.addrs['playpulse-api']}"
    auth = {"Authorization": f"Bearer {key}"}
    stop = asyncio.Event()
    async with ClientSession() as http:
        await wait_healthy(http, stack)
        beating = asyncio.create_task(
            watch(http, f"http://{stack.addrs['playpulse-ingest']}", stop)
        )
        try:
            seen: dict[str, Any] = {}
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline:
                async with http.get(f"{api}/api/data/views/now", headers=auth) as resp:
                    assert resp.status == 200
                    [now] = await resp.json()
                up = await query(http, "up")
                seen = {
                    "up": sorted(
                        (r["metric"]["job"], r["metric"]["instance"], r["value"][1]) for r in up
                    ),
                    "now": now,
                    "viewers": await scalar(http, "playpulse_concurrent_viewers"),
                    "erroring": await scalar(http, "playpulse_concurrent_viewers_erroring"),
                    "events": await scalar(
                        http, 'sum(playpulse_ingest_events_total{outcome="accepted"})'
                    ),
                    "folded": await scalar(http, "sum(playpulse_aggregator_events_total)"),
                    "requests": await scalar(
                        http,
                        'sum(playpulse_api_requests_total{route="/api/data/views/now",status="200"})',
                    ),
                    "rate": await scalar(http, "playpulse:ingest_events_accepted:rate1m"),
                }
                settled = (
                    seen["up"] == sorted((job, stack.addrs[job], "1") for job in JOBS)
                    and now["viewCount"] == SESSIONS
                    and seen["viewers"] == SESSIONS
                    and seen["erroring"] == ERRORING
                    and (seen["events"] or 0) > 0
                    and (seen["folded"] or 0) > 0
                    and (seen["requests"] or 0) > 0
                    and (seen["rate"] or 0) > 0
                )
                if settled:
                    break
                await asyncio.sleep(1)
            else:
                pytest.fail(
                    f"Prometheus never agreed with the services: {seen}\n{stack.log_tail()}"
                )
        finally:
            stop.set()
            accepted = await beating
    # What Prometheus says is what the services say.
    assert seen["now"] == {"viewCount": SESSIONS, "errorRate": ERRORING / SESSIONS}
    assert seen["viewers"] == seen["now"]["viewCount"]
    assert seen["erroring"] / seen["viewers"] == seen["now"]["errorRate"]
    assert accepted > 0 and seen["events"] <= accepted  # one event per accepted beacon
