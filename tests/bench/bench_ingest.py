"""Collector throughput next to the raw aiokafka producer ceiling, measured in one run.

Prints events/s and accept latency (p50/p99, from wrk) for envelopes of 1 and of 20 events posted
to a real `playpulse ingest` process on loopback, and the events/s that a bare idempotent aiokafka
producer reaches writing the same envelopes, one record each, as a ratio. The producer writes the
very record the collector would write for one envelope (enriched, in the `beacons` format), and is
measured just before and just after the collector, so that a neighbour's load drifting during the
run weighs on both sides; the ratio is against the mean of the two. Not a test: it asserts
nothing, it reports.

usage: python -m tests.bench.bench_ingest [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from ingest.beacon import parse_beacon
from ingest.enrich import NO_GEO, dimensions, parse_user_agent
from ingest.record import encode_record, envelope_item
from ingest.settings import IngestSettings

REPO_DIR = Path(__file__).resolve().parents[2]

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def make_envelope(n_events: int) -> dict[str, object]:
    now = int(time.time() * 1000)
    return {
        "session_id": uuid.uuid4().hex[:22],
        "playback_id": "pb-bench",
        "protocol": "application/vnd.apple.mpegurl",
        "source_url": "https://cdn.example/hls/pb-bench/index.m3u8",
        "player": "hls",
        "version": "@livepeer/core@3.3.1",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/131.0.0.0 Safari/537.36",
        "uid": "viewer-1",
        "domain": "example.com",
        "events": [
            {
                "id": uuid.uuid4().hex[:22],
                "type": "heartbeat",
                "timestamp": now + i,
                "errors": 0,
                "warnings": 0,
                "stalled_count": 0,
                "waiting_count": 0,
                "time_errored_ms": 0,
                "time_warning_ms": 0,
                "time_stalled_ms": 0,
                "time_playing_ms": 5000,
                "time_waiting_ms": 0,
            }
            for i in range(n_events)
        ],
    }


async def producer_ceiling(
    settings: IngestSettings, record: bytes, n_events: int, seconds: float
) -> float:
    """Events/s of an idempotent acks=all producer sending `record` as fast as it is acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    sent = 0
    try:
        await (await producer.send(topic, record, key=b"warm"))
        started = time.perf_counter()
        pending: list[asyncio.Future[object]] = []
        while time.perf_counter() - started < seconds:
            for i in range(200):
                pending.append(await producer.send(topic, record, key=str(sent + i).encode()))
            sent += 200
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return sent * n_events / elapsed


def collector_record(body: bytes) -> bytes:
    """The record the collector writes for `body` alone (no playback registered, no location)."""
    envelope = parse_beacon(body, max_events=1000)
    fields = envelope.fields
    item = envelope_item(
        envelope,
        server_ts_ms=time.time_ns() // 1_000_000,
        viewer_hash=fields["uid"],
        dims=dimensions(parse_user_agent(fields["user_agent"]), NO_GEO),
        playback=None,
    )
    return encode_record([item])


def wrk(url: str, body: bytes, seconds: float, connections: int) -> tuple[float, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=body_path))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  warning: {non2xx.group(1)} non-2xx responses", file=sys.stderr)
    return rps, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=128)
    args = parser.parse_args()
    settings = IngestSettings.from_env()
    # A free port: other benchmark runs may share the machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PLAYPULSE_INGEST_ADDR": f"127.0.0.1:{port}"}
    collector = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"{base}/analytics/log"
        for _ in range(300):
            ready = subprocess.run(["curl", "-fs", f"{base}/readyz"], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("collector did not become ready")
        print(
            f"collector vs raw aiokafka producer, {args.seconds:.0f}s each, "
            f"{args.connections} connections, {os.cpu_count()} cores"
        )
        print(
            f"{'envelope':>10} {'collector ev/s':>15} {'p50':>9} {'p99':>9} "
            f"{'raw producer ev/s (before/after)':>34} {'ratio':>6}"
        )
        for n_events in (1, 20):
            doc = make_envelope(n_events)
            body = orjson.dumps(doc)
            # The ceiling: a bare producer writing each envelope as its own record, the record the
            # collector would write for it (the collector coalesces concurrent envelopes per partition).
            record = collector_record(body)
            before = asyncio.run(producer_ceiling(settings, record, n_events, args.seconds))
            rps, p50, p99 = wrk(url, body, args.seconds, args.connections)
            after = asyncio.run(producer_ceiling(settings, record, n_events, args.seconds))
            raw = (before + after) / 2
            collector_eps = rps * n_events
            print(
                f"{n_events:>7} ev {collector_eps:>15,.0f} {p50:>9} {p99:>9} "
                f"{f'{raw:,.0f} ({before:,.0f}/{after:,.0f})':>34} {collector_eps / raw:>6.2f}"
            )
    finally:
        collector.terminate()
        collector.wait(timeout=15)


if __name__ == "__main__":
    main()
