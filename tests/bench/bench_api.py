"""Query API throughput and latency next to a trivial endpoint of the same server, in one run.

Fills Redis with a million views over the last 30 days through the aggregator's own code
(`PartitionRollups` folds them, `RollupWriter` writes them with its Lua compare-and-set), not
through Kafka: the pipeline does about 1 300 events/s here, so a million views through it would
take hours. Only the rollup groups these queries read are folded (the `all` scope's totals,
per-country and all-dimensions rows, hour and day grains); the aggregator also writes 43 other
groups, which nothing here reads. Then runs a real `playpulse api` process and `wrk` against:

- `GET /readyz`, which reads one Redis key: the trivial baseline;
- realtime now (`/api/data/views/now`), over a few thousand sessions watching now;
- a 24 h hour-step query broken down by country;
- a 30-day day-step query broken down by two dimensions (country, deviceType), in three
  states of its caches (`RollupReader`): cold, every all-dimensions hash written again just
  before each request (`rewrite`: what the aggregator's next write does to the caches, no data
  changed), so each request projects every hash anew and writes the projections back (seconds
  each: timed over a few sequential requests on one connection, next to wrk's baseline on one
  connection); warm, nothing written since (each step kept encoded in the API's memory); warm
  with the open hour's hash written every second, as a live aggregator does (the last day's
  step is made again once per write, from the other hours' projections in Redis and the open
  hour's hash, by one request while those at the same generations wait for it); and live, the
  open hour's hash written again before each request (timed over sequential requests on one
  connection, next to wrk's baseline on one connection), so every request makes the last
  day's step again.

Each query is measured right after the baseline at the same connection count, and printed with
requests/s, p50/p99 latency and its ratio to the baseline. Not a test: it asserts nothing.

usage: python -m tests.bench.bench_api [--views N] [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import orjson
from redis.asyncio import Redis

from aggregator import keys, sketch
from aggregator.keys import FULL, Group
from aggregator.metrics import Components
from aggregator.partition import Touched
from aggregator.rollups import PartitionRollups
from aggregator.store import RollupWriter, TouchedWriter
from aggregator.timebuckets import DAY_MS, HOUR_MS, floor
from api.auth import create_key
from api.settings import ApiSettings

REPO_DIR = Path(__file__).resolve().parents[2]
DAYS = 30

# The groups the benchmarked queries read (see the module docstring).
GROUPS = (Group(None, ()), Group(None, ("country",)), Group(None, FULL))

COUNTRIES = [  # (country, continent, timezone), most-watched first
    ("US", "North America", "America/New_York"),
    ("BR", "South America", "America/Sao_Paulo"),
    ("IN", "Asia", "Asia/Kolkata"),
    ("DE", "Europe", "Europe/Berlin"),
    ("GB", "Europe", "Europe/London"),
    ("FR", "Europe", "Europe/Paris"),
    ("JP", "Asia", "Asia/Tokyo"),
    ("MX", "North America", "America/Mexico_City"),
    ("CA", "North America", "America/Toronto"),
    ("ES", "Europe", "Europe/Madrid"),
    ("IT", "Europe", "Europe/Rome"),
    ("KR", "Asia", "Asia/Seoul"),
    ("AU", "Oceania", "Australia/Sydney"),
    ("NL", "Europe", "Europe/Amsterdam"),
    ("PL", "Europe", "Europe/Warsaw"),
    ("TR", "Asia", "Europe/Istanbul"),
    ("ID", "Asia", "Asia/Jakarta"),
    ("AR", "South America", "America/Argentina/Buenos_Aires"),
    ("NG", "Africa", "Africa/Lagos"),
    ("ZA", "Africa", "Africa/Johannesburg"),
]
DEVICES = [  # (deviceType, device, cpu, os, browser, browserEngine)
    ("desktop", "Other", "amd64", "Windows", "Chrome", "Blink"),
    ("desktop", "Other", "amd64", "Windows", "Edge", "Blink"),
    ("desktop", "Mac", "arm64", "Mac OS X", "Safari", "WebKit"),
    ("desktop", "Mac", "arm64", "Mac OS X", "Chrome", "Blink"),
    ("desktop", "Other", "amd64", "Linux", "Firefox", "Gecko"),
    ("mobile", "iPhone", "arm64", "iOS", "Mobile Safari", "WebKit"),
    ("mobile", "Samsung SM-S918B", "arm64", "Android", "Chrome Mobile", "Blink"),
    ("mobile", "Pixel 8", "arm64", "Android", "Chrome Mobile", "Blink"),
    ("tablet", "iPad", "arm64", "iOS", "Mobile Safari", "WebKit"),
    ("smarttv", "Smart TV", "arm", "Tizen", "Samsung Internet", "Blink"),
]


@dataclass(frozen=True)
class Audience:
    """Viewers with fixed places and devices, and playbacks of creators, by popularity."""

    viewers: list[dict[str, str | None]]
    playbacks: list[tuple[str, str]]
    playback_weights: list[float]


def audience(rng: random.Random, n_viewers: int, n_playbacks: int) -> Audience:
    country_weights = [1 / (i + 1) for i in range(len(COUNTRIES))]
    viewers = []
    for i in range(n_viewers):
        country, continent, timezone = rng.choices(COUNTRIES, country_weights)[0]
        device_type, device, cpu, os_, browser, engine = rng.choice(DEVICES)
        viewers.append(
            {
                "viewerId": f"viewer-{i}",
                "country": country,
                "continent": continent,
                "timezone": timezone,
                "subdivision": f"{country}-{rng.randrange(6)}",
                "geohash": f"{country.lower()}{rng.choice('0123456789bcdefg')}",
                "deviceType": device_type,
                "device": device,
                "cpu": cpu,
                "os": os_,
                "browser": browser,
                "browserEngine": engine,
            }
        )
    playbacks = [(f"pb-{i:04d}", f"creator-{i % 50:02d}") for i in range(n_playbacks)]
    weights = [1 / (i + 1) ** 0.8 for i in range(n_playbacks)]
    return Audience(viewers, playbacks, weights)


def views_of_day(
    rng: random.Random, people: Audience, day_ms: int, n: int, end_ms: int
) -> Iterator[tuple[dict[str, str | None], int, Components]]:
    """`n` views in the day starting at `day_ms` (before `end_ms`), more in the evening (UTC)."""
    hours = [h for h in range(24) if day_ms + h * HOUR_MS < end_ms]
    hour_weights = [1 + (h >= 17) * 2 for h in hours]
    picked_hours = rng.choices(hours, hour_weights, k=n)
    picked_playbacks = rng.choices(people.playbacks, people.playback_weights, k=n)
    for hour, (playback_id, creator_id) in zip(picked_hours, picked_playbacks, strict=True):
        viewer = people.viewers[int(rng.paretovariate(1.2) * 37) % len(people.viewers)]
        dims = {**viewer, "playbackId": playback_id, "creatorId": creator_id}
        ttff_ms = rng.lognormvariate(6.2, 0.5)
        playing_ms = int(rng.expovariate(1 / 600_000))
        errored = rng.random() < 0.02
        delta = Components.with_ttff_counts(
            sketch.build([ttff_ms]),
            views=1,
            sessions=1,
            playing_ms=playing_ms,
            buffer_ms=int(playing_ms * rng.random() * 0.02),
            ttff_sum_ms=int(ttff_ms),
            ttff_count=1,
            error_sessions=int(errored),
            exits_before_start=int(rng.random() < 0.03),
        )
        yield dims, day_ms + hour * HOUR_MS, delta


async def fill(redis: Redis, n_views: int, now_ms: int, seed: int) -> tuple[int, float]:
    """Writes `n_views` views over the last `DAYS` days up to `now_ms`, day by day (each day's
    rows are its own keys, so a fresh `PartitionRollups` per day writes absolute values)."""
    rng = random.Random(seed)
    people = audience(rng, n_viewers=200_000, n_playbacks=500)
    writer = RollupWriter(redis)
    first_day = floor(now_ms, "day") - (DAYS - 1) * DAY_MS
    span_ms = now_ms - first_day
    written, started = 0, time.perf_counter()
    for day in range(DAYS):
        day_ms = first_day + day * DAY_MS
        share = (min(day_ms + DAY_MS, now_ms) - day_ms) / span_ms
        n = n_views - written if day == DAYS - 1 else round(n_views * share)
        rollups = PartitionRollups(groups=GROUPS)
        for dims, hour_ms, delta in views_of_day(rng, people, day_ms, n, now_ms):
            rollups.add(dims, {hour_ms: delta})
        rollups.fold()
        await writer.write(0, 1, rollups.take_dirty())
        written += n
    return written, time.perf_counter() - started


async def watch_now(redis_url: str, n_sessions: int, seed: int) -> None:
    """`n_sessions` sessions that sent a beacon in the last 5 s (the realtime sorted sets)."""
    rng = random.Random(seed)
    people = audience(rng, n_viewers=n_sessions, n_playbacks=50)
    now_ms = time.time_ns() // 1_000_000
    touched = {}
    for i, viewer in enumerate(people.viewers):
        playback_id, creator_id = rng.choice(people.playbacks)
        dims = {**viewer, "playbackId": playback_id, "creatorId": creator_id}
        last_seen = now_ms - rng.randrange(5_000)
        errored = rng.random() < 0.02
        touched[f"s{i}"] = Touched(dims, str(viewer["viewerId"]), last_seen, errored, ())
    redis = Redis.from_url(redis_url)
    await TouchedWriter(redis).write(touched, now_ms)
    await redis.aclose()


async def rewrite(redis: Redis, keys_: list[str]) -> int:
    """What the aggregator's next write to each of these hashes does to their caches, with no
    data changed: partition 0's version written again through `WRITE_SCRIPT`, which replaces
    the generation and drops the cached projections. Returns how many hashes it wrote."""
    script = redis.register_script(keys.WRITE_SCRIPT)
    written = 0
    for key in keys_:
        version = await redis.hget(key, keys.version_field(0))
        if version is None:
            continue
        ttl = keys.RETENTION_S[key.split(":")[2]]
        args = [keys.version_field(0), int(version), ttl, keys.WRITE_MODE, os.urandom(8).hex()]
        written += int(await script(keys=[key], args=args))
    return written


async def full_keys(redis: Redis) -> list[str]:
    """Every all-dimensions rollup hash."""
    found = [k.decode() async for k in redis.scan_iter(match="pp:r:*", count=1000)]
    return [k for k in found if keys.keeps_projections(k)]


def rewrite_all(redis_url: str) -> int:
    async def run() -> int:
        redis = Redis.from_url(redis_url)
        try:
            return await rewrite(redis, await full_keys(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


@contextmanager
def flushing_open_hour(redis_url: str) -> Iterator[None]:
    """Like a live aggregator: the open hour's all-dimensions hash written every second."""
    stop = threading.Event()

    async def run() -> None:
        redis = Redis.from_url(redis_url)
        hour = floor(time.time_ns() // 1_000_000, "hour")
        written = [  # what a flush writes: the hour's hash and its day's
            keys.rollup_key("hour", hour, None, None, FULL),
            keys.rollup_key("day", floor(hour, "day"), None, None, FULL),
        ]
        try:
            while not stop.is_set():
                await rewrite(redis, written)
                await asyncio.sleep(1)
        finally:
            await redis.aclose()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def rewrite_open_hour(redis_url: str) -> int:
    """The open hour's all-dimensions hash written once, as a live aggregator's next flush
    (the hour before when the clock has just passed into an hour with no data yet)."""

    async def run() -> int:
        redis = Redis.from_url(redis_url)
        hour = floor(time.time_ns() // 1_000_000, "hour")
        try:
            for start in (hour, hour - HOUR_MS):
                # what a flush writes: the hour's hash and its day's
                hour_key = keys.rollup_key("hour", start, None, None, FULL)
                day_key = keys.rollup_key("day", floor(start, "day"), None, None, FULL)
                if await rewrite(redis, [hour_key]):
                    return await rewrite(redis, [day_key]) + 1
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, key: str | None, seconds: float, connections: int) -> tuple[float, str, str, int]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    command += ["--timeout", "60s"]
    if key is not None:
        command += ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(bad.group(1)) if bad else 0


def get(url: str, key: str) -> tuple[int, bytes, float]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as resp:
        body = resp.read()
        return resp.status, body, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=1_000_000)
    parser.add_argument("--sessions-now", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cold-requests", type=int, default=3)
    parser.add_argument("--live-requests", type=int, default=30)
    args = parser.parse_args()
    settings = ApiSettings.from_env()

    async def prepare() -> tuple[str, int, float, int]:
        redis = Redis.from_url(settings.redis_url)
        await redis.flushdb()
        now_ms = time.time_ns() // 1_000_000
        views, fill_s = await fill(redis, args.views, now_ms, args.seed)
        key = (await create_key(redis, kind="private", name="bench"))[1]
        memory = int((await redis.info("memory"))["used_memory"])
        await redis.aclose()
        return key, views, fill_s, memory

    key, views, fill_s, memory = asyncio.run(prepare())
    print(
        f"filled {views:,} views over {DAYS} days in {fill_s:.0f}s through PartitionRollups + "
        f"RollupWriter; Redis used_memory {memory / 2**20:,.0f} MiB"
    )
    port = free_port()
    env = {
        **os.environ,
        "PLAYPULSE_API_ADDR": f"127.0.0.1:{port}",
        # the 30-day query's reads take longer than the default 2 s timeout (which answers 503)
        "PLAYPULSE_API_REDIS_TIMEOUT_S": "60",
        # Rate limits stay on, so their Redis round trip is measured, but high enough that
        # wrk's load is answered rather than refused (the defaults allow 20 requests/s per key).
        "PLAYPULSE_API_RATE_LIMIT_KEY": "10000/second",
        "PLAYPULSE_API_RATE_LIMIT_IP": "10000/second",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "api"],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    now = f"{base}/api/data/views/now"
    day = f"{base}/api/data/views/query?timeStep=hour&breakdownBy[]=country"
    month = (
        f"{base}/api/data/views/query?timeStep=day&breakdownBy[]=country&breakdownBy[]=deviceType"
    )
    try:
        for _ in range(300):
            try:
                if get(f"{base}/readyz", key)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the API did not become ready")
        print(f"{args.seconds:.0f}s per run, {os.cpu_count()} cores, API and wrk on loopback")
        for name, url in (
            ("24 h by hour, by country", day),
            ("30 days by day, by country x deviceType", month),
        ):
            status, body, seconds = get(url, key)
            print(
                f"  {name}: {status}, {len(orjson.loads(body))} rows, {len(body):,} bytes, "
                f"first call {seconds * 1000:.0f} ms"
            )
        print(
            f"{'query':<42} {'conns':>5} {'req/s':>9} {'p50':>9} {'p99':>9} "
            f"{'trivial req/s':>13} {'ratio':>6}"
        )
        runs = [
            ("realtime now", now, args.connections, ""),
            ("24 h hour step, by country", day, args.connections, ""),
            (f"30 d day step, 2 dims, cold ({args.cold_requests} in a row)", month, 1, "cold"),
            ("30 d day step, 2 dims, warm", month, 1, ""),
            ("30 d day step, 2 dims, warm", month, args.connections, ""),
            ("30 d, warm, open hour written every 1 s", month, args.connections, "live"),
            (f"30 d, open hour written before each ({args.live_requests})", month, 1, "each"),
        ]
        for name, url, connections, state in runs:
            base_rps, base_p50, base_p99, _ = wrk(f"{base}/readyz", None, args.seconds, connections)
            if url == now:  # fresh sessions: all of them stay in the 30 s window during the run
                asyncio.run(watch_now(settings.redis_url, args.sessions_now, args.seed))
            if state == "cold":  # seconds per request: too few for wrk's percentiles to mean much
                times = []
                for _ in range(args.cold_requests):
                    rewritten = rewrite_all(settings.redis_url)
                    times.append(get(url, key)[2])
                times.sort()
                rps, bad = len(times) / sum(times), 0
                p50, p99 = f"{times[len(times) // 2]:.2f}s", f"{times[-1]:.2f}s max"
                print(f"  (before each cold request: {rewritten} all-dimensions hashes rewritten)")
            elif state == "each":  # the open step made again for every request
                get(url, key)
                times = []
                for _ in range(args.live_requests):
                    if rewrite_open_hour(settings.redis_url) != 2:
                        raise SystemExit("the open hour's hash was not written")
                    times.append(get(url, key)[2])
                times.sort()
                rps, bad = len(times) / sum(times), 0
                p50 = f"{times[len(times) // 2] * 1000:.1f}ms"
                p99 = f"{times[-1] * 1000:.0f}ms max"
            else:
                live = flushing_open_hour(settings.redis_url) if state == "live" else nullcontext()
                with live:
                    rps, p50, p99, bad = wrk(url, key, args.seconds, connections)
            print(
                f"{'  trivial (/readyz, one key)':<42} {connections:>5} {base_rps:>9,.0f} "
                f"{base_p50:>9} {base_p99:>9}"
            )
            print(
                f"{name:<42} {connections:>5} {rps:>9,.1f} {p50:>9} {p99:>9} "
                f"{base_rps:>13,.0f} {rps / base_rps:>6.3f}" + (f"  ({bad} non-2xx)" if bad else "")
            )
    finally:
        api.terminate()
        try:
            api.wait(timeout=15)
        except subprocess.TimeoutExpired:  # still inside a long query
            api.kill()
            api.wait()


if __name__ == "__main__":
    main()
