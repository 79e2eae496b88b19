"""Aggregator throughput next to faust, quix-streams and raw aiokafka, on one input, in one run.

The input is N heartbeat events (about 200 bytes each) from 1 000 sessions, one heartbeat per
session every 5 s, written twice to the same broker:

* `v2`: the collector's format (`ingest.record`), 1 event per envelope (a player's steady
  state: one heartbeat per 5-s send), 20 envelopes of one partition per record, partitioned by
  session id like the collector; read by `playpulse aggregate` and the v2 baselines;
* `per-event`: one Kafka record per event, the event plus its `session_id` as the value, keyed
  by session id, the record timestamp the event's; read by the per-record baselines.

Each scenario is one worker process (the raw ceilings run in this process) catching up on the
backlog, with a fresh consumer group per run. The rate counts from the first event processed to
the N-th, so startup (reported apart) is left out. A baseline's run stops counting after
`--max-run-s` (its per-event cost does not grow with the backlog, so the prefix's rate is its
rate); median of `--runs` runs, interleaved. Our aggregator's per-event cost grows while
sessions accumulate the event ids they deduplicate against (up to 10 min of them), so it runs
through the whole input, once by default (`--aggregator-runs`), and also reports its rate over
the first and the last quarter of the input.
Scenarios:

1. `playpulse aggregate` (v2): the `playpulse_aggregator_events_total` counter read from its
   /metrics; also how long after the N-th event Redis shows the final totals.
2. a no-op faust agent (per-event, JSON values), and the same on v2 (decode, count events).
3. naive faust: `group_by` session (repartition) into a 60-s `tumbling` table, `+= 1` per event.
4. quix-streams: a 60-s tumbling window `count()` per record key (RocksDB state, changelog).
5. raw aiokafka `getmany` + `orjson.loads` + a dict count per (minute, session), both shapes.

usage: python -m tests.bench.bench_aggregate [--events N] [--runs R] [--max-run-s S]
                                              [--aggregator-runs R] [--aggregator-max-s S]
                                              [--only aggregate,quix,...]
Not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from redis.asyncio import Redis

from aggregator.settings import AggregatorSettings
from aggregator.store import RollupReader
from aggregator.timebuckets import floor
from ingest.batcher import partition_for
from ingest.record import decode_record, encode_record

REPO_DIR = Path(__file__).resolve().parents[2]
PARTITIONS = 6
SESSIONS = 1_000
HEARTBEAT_MS = 5_000
ENVELOPES_PER_RECORD = 20
PLAYING_MS = 5_000  # time_playing_ms of every heartbeat: the totals Redis must end up with
DAY_MS = 86_400_000
CHILD_KINDS = ("faust-noop", "faust-noop-v2", "faust-naive", "quix")
SCENARIO_KEYS = ("aggregate", *CHILD_KINDS, "raw", "raw-v2")


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    key: bytes | None
    value: bytes
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Dataset:
    n_events: int
    v2: list[Record]
    per_event: list[Record]
    event_bytes: float  # mean size of one event as the player sent it
    first_ts_ms: int
    last_ts_ms: int


@dataclass(frozen=True, slots=True)
class Result:
    events_per_s: float
    measured: int  # events counted between the first and the last timestamp of the rate
    counted: int  # every event counted, the first call's included
    startup_s: float
    # from the run's last count (the N-th event, or the time cap) until Redis shows that many
    redis_lag_s: float | None = None
    # events/s over the first and over the last quarter of the input (state grows meanwhile)
    quarters: tuple[float, float] | None = None
    # the worker process's CPU time (all its threads) per event over the same span as the rate
    cpu_us_per_event: float | None = None

    @classmethod
    def of_progress(cls, r: dict[str, Any]) -> Result:
        """From a `progress.result(...)` dict (also what a baseline's process writes as json)."""
        return cls(
            r["events_per_s"],
            int(r["measured"]),
            int(r["counted"]),
            r["startup_s"],
            cpu_us_per_event=r["cpu_us_per_event"],
        )


def make_dataset(n_events: int, seed: int = 7) -> Dataset:
    rng = random.Random(seed)
    rounds = -(-n_events // SESSIONS)
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - rounds * HEARTBEAT_MS
    sessions = [_session(i, rng) for i in range(SESSIONS)]
    phase = [rng.randrange(HEARTBEAT_MS) for _ in range(SESSIONS)]
    beats: list[tuple[int, int, dict[str, Any]]] = []  # (server ts, session index, event)
    for r in range(rounds):
        for s in range(SESSIONS):
            if len(beats) == n_events:
                break
            ts = start_ms + r * HEARTBEAT_MS + phase[s]
            event: dict[str, Any] = {
                "id": f"{rng.getrandbits(132):033x}"[:22],
                "type": "heartbeat",
                "timestamp": ts,
                "errors": 0,
                "warnings": 0,
                "stalled_count": 0,
                "waiting_count": 0,
                "time_playing_ms": PLAYING_MS,
                "time_stalled_ms": 0,
                "time_waiting_ms": 0,
            }
            beats.append((ts + rng.randrange(20, 80), s, event))
    beats.sort(key=lambda b: b[0])  # the collector's acceptance order

    per_event: list[Record] = []
    pending: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    v2: list[Record] = []
    size = 0
    for server_ts, s, event in beats:
        session = sessions[s]
        sid = session["envelope"]["session_id"]
        partition = partition_for(sid.encode(), PARTITIONS)
        size += len(orjson.dumps(event))
        per_event.append(
            Record(
                partition,
                sid.encode(),
                orjson.dumps({**event, "session_id": sid}),
                event["timestamp"],
            )
        )
        item = orjson.dumps({**session, "server_timestamp": server_ts, "events": [event]})
        batch = pending[partition]
        batch.append((server_ts, item))
        if len(batch) == ENVELOPES_PER_RECORD:
            v2.append(Record(partition, None, encode_record([i for _, i in batch]), batch[0][0]))
            batch.clear()
    for partition, batch in pending.items():
        if batch:
            v2.append(Record(partition, None, encode_record([i for _, i in batch]), batch[0][0]))
    return Dataset(
        n_events=len(beats),
        v2=v2,
        per_event=per_event,
        event_bytes=size / len(beats),
        first_ts_ms=beats[0][0],
        last_ts_ms=beats[-1][0],
    )


def _session(i: int, rng: random.Random) -> dict[str, Any]:
    """An enriched envelope without its events: what the collector adds around them."""
    sid = hashlib.sha256(f"session-{i}".encode()).hexdigest()[:22]
    playback = f"pb-bench-{rng.randrange(20):03d}"
    continent, country, tz = rng.choice(
        [
            ("EU", "DE", "Europe/Berlin"),
            ("EU", "FR", "Europe/Paris"),
            ("NA", "US", "America/New_York"),
            ("AS", "JP", "Asia/Tokyo"),
            ("SA", "BR", "America/Sao_Paulo"),
        ]
    )
    device, os_, browser, engine = rng.choice(
        [
            ("desktop", "Windows", "Chrome", "Blink"),
            ("desktop", "Mac OS X", "Safari", "WebKit"),
            ("mobile", "Android", "Chrome Mobile", "Blink"),
            ("mobile", "iOS", "Mobile Safari", "WebKit"),
            ("smarttv", "Tizen", "Samsung Internet", "Blink"),
        ]
    )
    return {
        "envelope": {
            "session_id": sid,
            "playback_id": playback,
            "protocol": "application/vnd.apple.mpegurl",
            "source_url": f"https://cdn.example/hls/{playback}/index.m3u8",
            "player": "hls",
            "version": "@livepeer/core@3.3.1",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
            "like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "domain": "example.com",
            "path": "/watch",
        },
        "viewer_hash": hashlib.sha256(f"viewer-{i}".encode()).hexdigest(),
        "playback": {
            "creatorId": f"creator-{rng.randrange(5)}",
            "assetId": playback,
            "streamId": None,
        },
        "dims": {
            "deviceType": device,
            "device": None,
            "cpu": "amd64" if device == "desktop" else "arm",
            "os": os_,
            "browser": browser,
            "browserEngine": engine,
            "continent": continent,
            "country": country,
            "subdivision": None,
            "timezone": tz,
            "geohash": "u33",
        },
    }


async def fill_topic(bootstrap: str, topic: str, records: Sequence[Record]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        sent: list[asyncio.Future[Any]] = []
        for partition, recs in by_partition.items():
            batch = producer.create_batch()
            for r in recs:
                if batch.append(key=r.key, value=r.value, timestamp=r.ts_ms) is None:
                    sent.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=r.ts_ms)
                if len(sent) >= 64:
                    await asyncio.gather(*sent)
                    sent.clear()
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class Progress:
    """Counts events; the rate runs from the first call (its events excluded) to the last.

    `cpu` reads the CPU seconds of the process doing the work (this one by default), at the
    same instants, for the CPU time per event: steadier than the rate on a shared machine."""

    def __init__(
        self, target: int, max_run_s: float, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self.target = target
        self.max_run_s = max_run_s
        self.count = 0
        self.first_count = 0
        self.first: float | None = None
        self.first_wall = 0.0
        self.last = 0.0
        self.done = False
        self.cpu = cpu
        self.first_cpu = 0.0
        self.last_cpu = 0.0

    def mark(self) -> None:
        """Starts the clock before any event (for a consumer whose first fetch is all data)."""
        self.first, self.first_wall = time.perf_counter(), time.time()
        self.first_cpu = self.cpu()

    def add(self, n: int) -> bool:
        """True once, when the target is reached or the time is up."""
        now = time.perf_counter()
        cpu = self.cpu()
        if self.first is None:
            self.first, self.first_wall, self.first_count = now, time.time(), n
            self.first_cpu = cpu
        self.count += n
        self.last = now
        self.last_cpu = cpu
        if self.done or (self.count < self.target and now - self.first < self.max_run_s):
            return False
        self.done = True
        return True

    def result(self, started_wall: float) -> dict[str, float]:
        measured = self.count - self.first_count
        elapsed = self.last - (self.first or self.last)
        return {
            "events_per_s": measured / elapsed if elapsed > 0 else 0.0,
            "measured": measured,
            "counted": self.count,
            "startup_s": self.first_wall - started_wall,
            "cpu_us_per_event": (self.last_cpu - self.first_cpu) * 1e6 / measured
            if measured
            else 0.0,
        }


# --- raw ceiling: in this process ---------------------------------------------------------


async def raw_ceiling(bootstrap: str, topic: str, shape: str, n: int, max_run_s: float) -> Result:
    started = time.time()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    counts: dict[tuple[int, bytes | str], int] = defaultdict(int)
    progress = Progress(n, max_run_s)
    try:
        # Everything up to here is startup; the first fetch is part of the rate, since with
        # v2 records it may hold the whole backlog.
        progress.mark()
        while not progress.done:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            got = 0
            for messages in batches.values():
                for m in messages:
                    if shape == "per-event":
                        doc = orjson.loads(m.value)
                        counts[(doc["timestamp"] // 60_000, m.key)] += 1
                        got += 1
                    else:
                        for env in orjson.loads(m.value)["envelopes"]:
                            sid = env["envelope"]["session_id"]
                            for ev in env["events"]:
                                counts[(ev["timestamp"] // 60_000, sid)] += 1
                                got += 1
            if got:
                progress.add(got)
    finally:
        await consumer.stop()
    r = progress.result(started)
    return Result.of_progress(r)


# --- children: faust and quix workers, one process each -----------------------------------


def run_child(args: argparse.Namespace) -> None:
    progress = Progress(args.events, args.max_run_s)
    out = Path(args.result)

    def report() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress.result(args.started)))
        tmp.rename(out)

    if args.child == "quix":
        _run_quix(args, progress, report)
    else:
        _run_faust(args, progress, report)


def _run_faust(args: argparse.Namespace, progress: Progress, report: Callable[[], None]) -> None:
    import faust

    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=args.data_dir,
        web_enabled=False,
        topic_partitions=PARTITIONS,
    )
    if args.child == "faust-noop-v2":
        raw = app.topic(args.topic, value_type=bytes, value_serializer="raw")

        @app.agent(raw)
        async def noop_v2(stream: Any) -> None:
            async for value in stream:
                n = sum(len(env["events"]) for env in decode_record(value))
                if n and progress.add(n):
                    report()

    elif args.child == "faust-noop":
        events = app.topic(args.topic, value_serializer="json")

        @app.agent(events)
        async def noop(stream: Any) -> None:
            async for _value in stream:
                if progress.add(1):
                    report()

    else:
        events = app.topic(args.topic, value_serializer="json")
        counts = app.Table("counts", default=int).tumbling(60.0, expires=timedelta(minutes=10))

        @app.agent(events)
        async def naive(stream: Any) -> None:
            async for value in stream.group_by(lambda v: v["session_id"], name="by_session"):
                counts[value["session_id"]] += 1
                if progress.add(1):
                    report()

    faust.Worker(app, loglevel="info").execute_from_commandline()


def _run_quix(args: argparse.Namespace, progress: Progress, report: Callable[[], None]) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.app_id,
        auto_offset_reset="earliest",
        state_dir=args.data_dir,
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.tumbling_window(timedelta(minutes=1)).count().current()

    def counted(_row: Any) -> None:
        if progress.add(1):
            report()
            app.stop()

    sdf = sdf.update(counted)
    app.run()


def spawn(
    kind: str, bootstrap: str, topic: str, n: int, max_run_s: float, tmp: Path
) -> Result | None:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp))
    result = run_dir / "result.json"
    started = time.time()
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.bench_aggregate",
        "--child",
        kind,
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--events",
        str(n),
        "--max-run-s",
        str(max_run_s),
        "--app-id",
        f"bench-{kind}-{uuid.uuid4().hex[:8]}",
        "--data-dir",
        str(run_dir / "state"),
        "--result",
        str(result),
        "--started",
        repr(started),
    ]
    with open(run_dir / "worker.log", "wb") as log:
        child = subprocess.Popen(cmd, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90 + max_run_s
            while not result.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            _stop(child)
    if not result.exists():
        print(f"  {kind}: no result; log tail:", file=sys.stderr)
        print((run_dir / "worker.log").read_text()[-2000:], file=sys.stderr)
        return None
    r = json.loads(result.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    return Result.of_progress(r)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


# --- our aggregator: `playpulse aggregate` -------------------------------------------------


def run_aggregator(
    settings: AggregatorSettings,
    topic: str,
    data: Dataset,
    max_run_s: float,
    redis_db: int,
    tmp: Path,
) -> Result | None:
    # A database of the bench's own Redis per run, emptied first: the rollups' versions are
    # per partition, so a second run's rows would lose to the first run's.
    redis_url = urlunsplit(urlsplit(settings.redis_url)._replace(path=f"/{redis_db}"))
    asyncio.run(_flushdb(redis_url))
    port = _free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="aggregator-", dir=tmp))
    env = {
        **os.environ,
        "PLAYPULSE_AGGREGATOR_APP_ID": f"bench-agg-{uuid.uuid4().hex[:8]}",
        "PLAYPULSE_BEACONS_TOPIC": topic,
        "PLAYPULSE_BEACONS_PARTITIONS": str(PARTITIONS),
        "PLAYPULSE_AGGREGATOR_ADDR": f"127.0.0.1:{port}",
        "PLAYPULSE_AGGREGATOR_DATA_DIR": str(run_dir / "faust"),
        "PLAYPULSE_FLUSH_INTERVAL_S": "1",
        "PLAYPULSE_REDIS_URL": redis_url,
    }
    url = f"http://127.0.0.1:{port}/metrics"
    started = time.time()
    with open(run_dir / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "aggregate"],
            cwd=REPO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            progress = Progress(data.n_events, max_run_s, cpu=lambda: _cpu_s(worker.pid))
            deadline = time.monotonic() + 90 + max_run_s
            seen = 0
            timeline: list[tuple[float, int]] = []
            while not progress.done and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                count = _events_total(url)
                if count > seen:
                    progress.add(count - seen)
                    seen = count
                    timeline.append((time.perf_counter(), count))
            if not progress.count:
                print("  aggregator: no events; log tail:", file=sys.stderr)
                print((run_dir / "worker.log").read_text()[-2000:], file=sys.stderr)
                return None
            r = progress.result(started)
            lag = asyncio.run(_redis_caught_up(redis_url, data, seen, time.monotonic() + 30))
        finally:
            _stop(worker)
    shutil.rmtree(run_dir, ignore_errors=True)
    return Result(
        r["events_per_s"],
        int(r["measured"]),
        int(r["counted"]),
        r["startup_s"],
        lag,
        _quarters(timeline, data),
        r["cpu_us_per_event"],
    )


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (every thread), from /proc (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quarters(timeline: list[tuple[float, int]], data: Dataset) -> tuple[float, float] | None:
    if not timeline or timeline[-1][1] < data.n_events:
        return None

    def at(count: float) -> tuple[float, int]:
        return next(sample for sample in timeline if sample[1] >= count)

    def rate(a: tuple[float, int], b: tuple[float, int]) -> float:
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0

    n = data.n_events
    return rate(timeline[0], at(n / 4)), rate(at(3 * n / 4), timeline[-1])


async def _flushdb(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def _events_total(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("playpulse_aggregator_events_total "):
            return int(float(line.split()[1]))
    return 0


async def _redis_caught_up(url: str, data: Dataset, counted: int, deadline: float) -> float | None:
    """Seconds until the reader shows the playtime of the first `counted` events (and, once
    they are all counted, exactly the final totals), or None at the deadline."""
    redis = Redis.from_url(url)
    try:
        return await _poll_totals(RollupReader(redis), data, counted, deadline)
    finally:
        await redis.aclose()


async def _poll_totals(
    reader: RollupReader, data: Dataset, counted: int, deadline: float
) -> float | None:
    lo = floor(data.first_ts_ms, "day")
    hi = floor(data.last_ts_ms, "day") + DAY_MS
    want_mins = counted * PLAYING_MS / 60_000
    final = counted >= data.n_events
    start = time.monotonic()
    while time.monotonic() < deadline:
        rows = await reader.viewership(step="day", from_ms=lo, to_ms=hi, fields=())
        views = sum(r["viewCount"] for r in rows)
        mins = sum(r["playtimeMins"] for r in rows)
        if (abs(mins - want_mins) < 1e-6 and views == SESSIONS) if final else mins >= want_mins:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str  # what `--only` names it by
    name: str
    shape: str  # "v2" or "per-event"
    run: Callable[[int], Result | None]  # run index -> result
    runs: int


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each baseline")
    parser.add_argument("--max-run-s", type=float, default=8.0, help="cap of a baseline's run")
    # Our aggregator slows down as sessions accumulate state (event ids seen), so a capped run
    # would overstate it: by default it runs once, through the whole input.
    parser.add_argument("--aggregator-runs", type=int, default=1)
    parser.add_argument("--aggregator-max-s", type=float, default=600.0)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run (default all): " + ", ".join(SCENARIO_KEYS),
    )
    # internal: a worker process of one baseline
    parser.add_argument("--child", choices=CHILD_KINDS, help=argparse.SUPPRESS)
    for hidden in ("--bootstrap", "--topic", "--app-id", "--data-dir", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    bench_started = time.monotonic()
    settings = AggregatorSettings.from_env()
    bootstrap = settings.kafka_bootstrap
    data = make_dataset(args.events)
    tag = uuid.uuid4().hex[:6]
    v2_topic, ev_topic = f"bench-agg-v2-{tag}", f"bench-agg-ev-{tag}"
    asyncio.run(fill_topic(bootstrap, v2_topic, data.v2))
    asyncio.run(fill_topic(bootstrap, ev_topic, data.per_event))
    v2_bytes = sum(len(r.value) for r in data.v2)
    print(
        f"aggregator vs faust, quix-streams and raw aiokafka: {data.n_events:,} heartbeats "
        f"({data.event_bytes:.0f} B each) from {SESSIONS:,} sessions, {PARTITIONS} partitions, "
        f"{os.cpu_count()} cores, broker {bootstrap}"
    )
    print(
        f"  v2 input: {len(data.v2):,} records of {ENVELOPES_PER_RECORD} envelopes x 1 event "
        f"({v2_bytes / len(data.v2) / 1024:.1f} KiB per record, "
        f"{v2_bytes / data.n_events:.0f} B per event)"
    )
    print(
        f"  per-event input: {len(data.per_event):,} records "
        f"({sum(len(r.value) for r in data.per_event) / len(data.per_event):.0f} B each)"
    )
    n, cap, runs = data.n_events, args.max_run_s, args.runs
    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as tmp_dir:
        tmp = Path(tmp_dir)
        scenarios = [
            Scenario(
                "aggregate",
                "playpulse aggregate",
                "v2",
                lambda i: run_aggregator(
                    settings, v2_topic, data, args.aggregator_max_s, 10 + i % 6, tmp
                ),
                args.aggregator_runs,
            ),
            Scenario(
                "faust-noop",
                "faust no-op agent",
                "per-event",
                lambda i: spawn("faust-noop", bootstrap, ev_topic, n, cap, tmp),
                runs,
            ),
            Scenario(
                "faust-noop-v2",
                "faust no-op agent",
                "v2",
                lambda i: spawn("faust-noop-v2", bootstrap, v2_topic, n, cap, tmp),
                runs,
            ),
            Scenario(
                "faust-naive",
                "faust group_by+tumbling",
                "per-event",
                lambda i: spawn("faust-naive", bootstrap, ev_topic, n, cap, tmp),
                runs,
            ),
            Scenario(
                "quix",
                "quix tumbling count",
                "per-event",
                lambda i: spawn("quix", bootstrap, ev_topic, n, cap, tmp),
                runs,
            ),
            Scenario(
                "raw",
                "raw aiokafka+orjson",
                "per-event",
                lambda i: asyncio.run(raw_ceiling(bootstrap, ev_topic, "per-event", n, cap)),
                runs,
            ),
            Scenario(
                "raw-v2",
                "raw aiokafka+orjson",
                "v2",
                lambda i: asyncio.run(raw_ceiling(bootstrap, v2_topic, "v2", n, cap)),
                runs,
            ),
        ]
        if args.only:
            wanted = set(args.only.split(","))
            unknown = wanted - set(SCENARIO_KEYS)
            if unknown:
                parser.error(f"unknown scenarios {sorted(unknown)}; known: {SCENARIO_KEYS}")
            scenarios = [s for s in scenarios if s.key in wanted]
        results: dict[int, list[Result]] = defaultdict(list)
        for i in range(max(s.runs for s in scenarios)):  # interleaved: drift spreads evenly
            for k, scenario in enumerate(scenarios):
                if i >= scenario.runs:
                    continue
                r = scenario.run(i)
                if r is not None:
                    results[k].append(r)
                    print(
                        f"  run {i + 1} {scenario.name} ({scenario.shape}): "
                        f"{r.events_per_s:,.0f} ev/s over {r.measured:,} events, "
                        f"{r.cpu_us_per_event or 0:.1f} CPU us/ev, startup {r.startup_s:.1f}s"
                        + ("" if r.redis_lag_s is None else f", Redis +{r.redis_lag_s:.1f}s"),
                        file=sys.stderr,
                    )
    _table(scenarios, results, data.n_events)
    print(f"  total bench time {time.monotonic() - bench_started:.0f}s")


def _table(scenarios: list[Scenario], results: dict[int, list[Result]], n: int) -> None:
    median = {k: statistics.median(r.events_per_s for r in rs) for k, rs in results.items()}
    by_name = {(s.name, s.shape): k for k, s in enumerate(scenarios)}
    quix = median.get(by_name.get(("quix tumbling count", "per-event"), -1))
    print(
        f"{'scenario':<24} {'input':<10} {'ev/s/worker':>12} {'runs':>21} {'events':>7} "
        f"{'startup':>8} {'/quix':>6} {'/raw':>6} {'CPU us/ev':>9}"
    )
    notes = []
    for k, s in enumerate(scenarios):
        if k not in median:
            print(f"{s.name:<24} {s.shape:<10} {'failed':>12}")
            continue
        rs = results[k]
        raw = median.get(by_name.get(("raw aiokafka+orjson", s.shape), -1))
        runs = "/".join(f"{r.events_per_s / 1000:.1f}k" for r in rs)
        measured = min(r.measured for r in rs)
        vs_quix = f"{median[k] / quix:.3f}" if quix else "-"
        vs_raw = f"{median[k] / raw:.3f}" if raw else "-"
        startup = statistics.median(r.startup_s for r in rs)
        cpus = [r.cpu_us_per_event for r in rs if r.cpu_us_per_event]
        cpu = f"{statistics.median(cpus):.1f}" if cpus else "-"
        print(
            f"{s.name:<24} {s.shape:<10} {median[k]:>12,.0f} {runs:>21} "
            f"{measured / 1000:>6.0f}k {startup:>7.1f}s {vs_quix:>6} {vs_raw:>6} {cpu:>9}"
        )
        for r in rs:
            if r.quarters is not None:
                first, last = r.quarters
                notes.append(
                    f"{s.name}: {first:,.0f} ev/s over the first quarter of the input, "
                    f"{last:,.0f} over the last"
                )
            if r.redis_lag_s is not None:
                notes.append(
                    f"{s.name}: Redis showed what it had counted "
                    f"{'(the final totals) ' if r.counted >= n else ''}"
                    f"{r.redis_lag_s:.1f}s after its last count"
                )
    print(
        f"events: fewest counted in a run (of {n:,}; a baseline stops at --max-run-s). "
        "/raw: to the raw ceiling on the same input shape. CPU us/ev: the worker process's "
        "CPU time (all threads) per event over the same span, median (the raw ceilings: the "
        "bench process's own)."
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
