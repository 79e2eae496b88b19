"""End-to-end freshness and Redis memory, on the real servers. Prints figures, asserts nothing.

Freshness: a collector and one aggregator worker run as processes; sessions post envelopes at a
steady rate, and a poller watches Redis (the realtime reader's sorted set) for each session;
the figure is the time from the collector's 200 to the session being visible, p50 and p99.

Memory: Redis `used_memory` growth while simulated players with realistic dimensions run
through the pipeline, per 1 000 concurrent sessions and per view (extrapolated to a million).

usage: python -m tests.bench.bench_pipeline [--sessions N] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiohttp import ClientSession
from redis.asyncio import Redis

from aggregator import keys
from ingest.fleet import FleetSpec
from ingest.settings import IngestSettings
from ingest.simulate import run as simulate
from tests.conftest import stop_processes

REPO_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envelope(session_id: str, n: int) -> bytes:
    now = int(time.time() * 1000)
    return orjson.dumps(
        {
            "session_id": session_id,
            "playback_id": "pb-fresh",
            "protocol": "video/mp4",
            "source_url": "https://cdn.example/v.mp4",
            "player": "video",
            "version": "bench",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0",
            "uid": session_id,
            "events": [
                {
                    "id": f"{session_id}-{n}",
                    "type": "heartbeat",
                    "timestamp": now,
                    "time_playing_ms": 5000,
                }
            ],
        }
    )


async def freshness(collector: str, redis: Redis, sessions: int, rate: float) -> list[float]:
    accepted: dict[str, tuple[float, int]] = {}
    visible: dict[str, float] = {}
    done = asyncio.Event()
    now_key = keys.now_key("all")

    async def poll() -> None:
        while not done.is_set() or len(visible) < len(accepted):
            pending = [sid for sid in accepted if sid not in visible]
            if pending:
                scores = await redis.zmscore(now_key, pending)
                seen_at = time.monotonic()
                for sid, score in zip(pending, scores, strict=True):
                    if score is not None and score >= accepted[sid][1]:
                        visible[sid] = seen_at
            await asyncio.sleep(0.02)
            if done.is_set() and time.monotonic() - last_accept > 30:
                break

    last_accept = time.monotonic()
    poller = asyncio.create_task(poll())
    async with ClientSession() as http:
        for i in range(sessions):
            sid = f"fresh-{uuid.uuid4().hex[:12]}"
            async with http.post(
                f"{collector}/analytics/log",
                data=envelope(sid, i),
                headers={"Content-Type": "application/json"},
            ) as resp:
                body = await resp.json()
                if resp.status == 200:
                    last_accept = time.monotonic()
                    accepted[sid] = (last_accept, body["server_timestamp"])
            await asyncio.sleep(1 / rate)
    done.set()
    await poller
    return sorted(visible[s] - accepted[s][0] for s in visible)


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_http(url: str) -> None:
    async with ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} never answered")


async def main_async(args: argparse.Namespace) -> None:
    settings = IngestSettings.from_env()
    topic = f"bench-pipe-{uuid.uuid4().hex[:6]}"
    ingest_addr = f"127.0.0.1:{free_port()}"
    agg_addr = f"127.0.0.1:{free_port()}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipe-"))
    env = {
        **os.environ,
        "PLAYPULSE_BEACONS_TOPIC": topic,
        "PLAYPULSE_VIEWS_TOPIC": f"views-{topic}",
        "PLAYPULSE_INGEST_ADDR": ingest_addr,
        "PLAYPULSE_AGGREGATOR_ADDR": agg_addr,
        "PLAYPULSE_AGGREGATOR_APP_ID": f"bench-{topic}",
        "PLAYPULSE_AGGREGATOR_DATA_DIR": str(tmp / "faust"),
    }
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    procs = [
        start([sys.executable, "-m", "api.cli", "ingest"], env, tmp / "ingest.log"),
        start([sys.executable, "-m", "api.cli", "aggregate"], env, tmp / "aggregator.log"),
    ]
    try:
        await wait_http(f"http://{ingest_addr}/readyz")
        await wait_http(f"http://{agg_addr}/healthz")
        collector = f"http://{ingest_addr}"
        async with ClientSession() as http:  # until the worker owns partitions and flushes
            for _ in range(600):
                async with http.get(f"http://{agg_addr}/healthz") as resp:
                    if (await resp.json())["partitions"]:
                        break
                await asyncio.sleep(0.1)
        lags = await freshness(collector, redis, args.sessions, args.rate)
        if lags:
            p50 = statistics.median(lags)
            p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
            print(
                f"freshness (collector 200 -> visible in Redis), {len(lags)} sessions at "
                f"{args.rate:.0f}/s, flush every 1 s: p50 {p50 * 1000:.0f} ms, "
                f"p99 {p99 * 1000:.0f} ms"
            )

        await redis.flushdb()
        await asyncio.sleep(2)  # the worker notices and rebuilds its (tiny) state
        base = await used_memory(redis)
        spec = FleetSpec(players=args.players, duration_s=60)
        log_path = tmp / "simulate.jsonl"
        summary = await simulate(spec, collector, log_path, speed=math.inf, concurrency=32)
        await asyncio.sleep(3)
        peak = await used_memory(redis)
        concurrent = await redis.zcard(keys.now_key("all"))
        views = summary.sessions
        print(
            f"redis memory: {peak - base:,} bytes for {views} views with realistic "
            f"dimensions ({concurrent} concurrent): "
            f"{(peak - base) / max(1, concurrent) * 1000 / 2**20:.1f} MiB per 1 000 concurrent "
            f"sessions, {(peak - base) / max(1, views) * 1e6 / 2**30:.1f} GiB per million views "
            f"(linear extrapolation: most of it is rows per distinct tuple, which grow slower)"
        )
    finally:
        stop_processes(procs)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--players", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
