"""The collector's HTTP edge, aiohttp against granian (RSGI): CPU per request, measured in one run.

A prototype measurement for issue #2, not a benchmark of the shipped collector. It starts, on
loopback against the same Kafka and Redis:

- `aiohttp`: the real `playpulse ingest` process;
- `granian`: the same collector dependencies (`ingest.app.create_app`'s sink, registry, geo
  locator, metrics) behind granian's embedded RSGI server (one Rust runtime thread, the
  process's uvloop), with `POST /analytics/log` doing what `Collector._log` does (content type,
  Content-Length cap, validation, registry, enrichment, sink, the same answers);

then alternates `wrk` runs against them (a 20-event envelope, and `/healthz` as the trivial
baseline), reading each server process's utime+stime from /proc/PID/stat around every run, and
prints CPU microseconds per request and events/s, next to the raw aiokafka producer ceiling of
`bench_ingest` measured before and after, and each server's accepted and rejected envelopes.
It asserts nothing. `--servers aiohttp,granian,granian-rust-tasks` adds granian with its Rust
task implementation instead of asyncio tasks.

usage: python -m tests.bench.bench_collector_edge [--seconds S] [--rounds N] [--connections C]
              [--servers aiohttp,granian]
       python -m tests.bench.bench_collector_edge serve-granian   (the granian server alone)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from ingest.app import (
    ACCEPTED_CONTENT_TYPES,
    CORS_HEADERS,
    GEO,
    REDIS,
    REGISTRY,
    SINK,
    Collector,
    create_app,
    enriched_record,
)
from ingest.beacon import InvalidBeacon, parse_beacon
from ingest.runtime import tune_gc
from ingest.settings import IngestSettings
from ingest.sink import SinkUnavailable
from tests.bench.bench_ingest import (
    WRK_SCRIPT,
    collector_record,
    make_envelope,
    producer_ceiling,
)

CORS_LIST = list(CORS_HEADERS.items())
JSON_LIST = [*CORS_LIST, ("content-type", "application/json")]


class GranianCollector:
    """`POST /analytics/log`, `/healthz`, `/readyz`, `/metrics` over RSGI, on `Collector`'s deps."""

    def __init__(self, settings: IngestSettings) -> None:
        self.app = create_app(settings)
        self.collector = Collector(self.app)
        self.settings = settings
        self.sink = self.app[SINK]
        self.registry = self.app[REGISTRY]
        self.geo = self.app[GEO]

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        if path == "/analytics/log":
            if scope.method == "POST":
                started = time.perf_counter()
                status, body, headers = await self._log(scope, proto)
                self.collector.metrics.request_seconds.labels(str(status)).observe(
                    time.perf_counter() - started
                )
                proto.response_bytes(status, headers, body)
            elif scope.method == "OPTIONS":
                proto.response_empty(204, CORS_LIST)
            else:
                proto.response_bytes(405, JSON_LIST, b'{"errors":["method not allowed"]}')
        elif path == "/healthz":
            proto.response_bytes(200, JSON_LIST, b'{"status":"ok"}')
        elif path == "/metrics":
            text = generate_latest(self.collector.metrics.registry)
            proto.response_bytes(200, [("content-type", CONTENT_TYPE_LATEST)], text)
        elif path == "/readyz":
            ok = self.sink.ready
            try:
                await self.app[REDIS].ping()
            except RedisError:
                ok = False
            proto.response_bytes(200 if ok else 503, JSON_LIST, b"{}")
        else:
            proto.response_bytes(404, JSON_LIST, b'{"errors":["not found"]}')

    def _reject(
        self, status: int, reason: str, events: int, *problems: str, retry: bool = False
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        metrics = self.collector.metrics
        metrics.envelopes.labels("rejected", reason).inc()
        if events:
            metrics.events.labels("rejected", reason).inc(events)
        headers = JSON_LIST
        if retry:
            headers = [*JSON_LIST, ("retry-after", str(self.settings.retry_after_s))]
        return status, orjson.dumps({"errors": list(problems)}), headers

    async def _log(self, scope: Any, proto: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
        settings = self.settings
        headers = scope.headers
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            return self._reject(415, "content_type", 0, f"content-type: got {content_type!r}")
        length = headers.get("content-length")
        if length is not None and int(length) > settings.max_body_bytes:
            return self._reject(413, "too_large", 0, "body: too large")
        body = await proto()
        if len(body) > settings.max_body_bytes:
            return self._reject(413, "too_large", 0, "body: too large")
        try:
            envelope = parse_beacon(body, max_events=settings.max_events)
        except InvalidBeacon as exc:
            return self._reject(400, exc.reason, 0, *exc.problems)
        if envelope.rejected:
            self.collector._events_invalid.inc(len(envelope.rejected))
        fields = envelope.fields
        playback_id = fields["playback_id"]
        try:
            playback = self.registry.cached(playback_id)
        except KeyError:
            try:
                playback = await self.registry.lookup(playback_id)
            except RedisError:
                logging.warning("playback registry unreachable", exc_info=True)
                return self._reject(
                    503, "registry_unavailable", envelope.count, "registry", retry=True
                )
        server_ts_ms = time.time_ns() // 1_000_000
        record = enriched_record(
            envelope,
            playback,
            server_ts_ms,
            peer=scope.client.rpartition(":")[0],
            forwarded=", ".join(headers.get_all("x-forwarded-for")) or None,
            headers=headers,
            settings=settings,
            geo=self.geo,
        )
        produce_started = time.perf_counter()
        try:
            await self.sink.publish(fields["session_id"].encode(), record)
        except SinkUnavailable as exc:
            return self._reject(503, "kafka_unavailable", envelope.count, exc.reason, retry=True)
        self.collector.metrics.produce_seconds.observe(time.perf_counter() - produce_started)
        self.collector._envelopes_accepted.inc()
        self.collector._events_accepted.inc(envelope.count)
        answer = {
            "accepted": envelope.count,
            "rejected": [{"index": r.index, "errors": list(r.problems)} for r in envelope.rejected],
            "server_timestamp": server_ts_ms,
        }
        return 200, orjson.dumps(answer), JSON_LIST


async def serve_granian(settings: IngestSettings) -> None:
    from granian.constants import Interfaces, TaskImpl
    from granian.server.embed import Server

    target = GranianCollector(settings)
    await target.sink.start()
    server = Server(
        target,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        runtime_threads=1,
        backlog=1024,
        websockets=False,
        log_enabled=os.environ.get("BENCH_GRANIAN_LOG") == "1",
        task_impl=TaskImpl(os.environ.get("BENCH_GRANIAN_TASK_IMPL", "asyncio")),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve()
    finally:
        await target.sink.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(name: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PLAYPULSE_INGEST_ADDR": f"127.0.0.1:{port}"}
    if name == "granian-rust-tasks":
        env["BENCH_GRANIAN_TASK_IMPL"] = "rust"
    if name == "aiohttp":
        cmd = [sys.executable, "-m", "api.cli", "ingest"]
    else:
        cmd = [sys.executable, "-m", "tests.bench.bench_collector_edge", "serve-granian"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        ready = subprocess.run(
            ["curl", "-fs", f"http://127.0.0.1:{port}/readyz"], capture_output=True
        )
        if ready.returncode == 0:
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{name} did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--servers", default="aiohttp,granian")
    args = parser.parse_args()
    settings = IngestSettings.from_env()
    if args.mode == "serve-granian":
        import uvloop

        tune_gc()  # the collector's own GC tuning
        uvloop.run(serve_granian(settings))
        return

    ports = {name: free_port() for name in args.servers.split(",")}
    procs = {name: start(name, port) for name, port in ports.items()}
    try:
        body = orjson.dumps(make_envelope(20))
        record = collector_record(body)
        before = asyncio.run(producer_ceiling(settings, record, 20, args.seconds))
        print(
            f"edge vs edge, {args.seconds:.0f}s per run, {args.connections} connections, "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        print(f"{'server':>18} {'path':>15} {'req/s':>9} {'events/s':>9} {'cpu us/req':>11}")
        for _ in range(args.rounds):
            for path, n_events in (("/healthz", 0), ("/analytics/log", 20)):
                for name, port in ports.items():
                    pid = procs[name].pid
                    cpu0 = cpu_seconds(pid)
                    url = f"http://127.0.0.1:{port}{path}"
                    requests, rps = run_wrk(
                        url, body if n_events else None, args.seconds, args.connections
                    )
                    cpu = cpu_seconds(pid) - cpu0
                    print(
                        f"{name:>18} {path:>15} {rps:>9,.0f} {rps * n_events:>9,.0f} "
                        f"{cpu / requests * 1e6:>11.1f}"
                    )
        after = asyncio.run(producer_ceiling(settings, record, 20, args.seconds))
        print(f"raw producer ceiling, 20-event records: {before:,.0f} / {after:,.0f} events/s")
        for name, port in ports.items():
            text = subprocess.run(
                ["curl", "-fs", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True
            ).stdout
            counts = [
                line for line in text.splitlines() if line.startswith("playpulse_ingest_envelopes")
            ]
            print(f"{name} envelopes: {'; '.join(counts)}")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=15)


def run_wrk(url: str, body: bytes | None, seconds: float, connections: int) -> tuple[int, float]:
    """(requests answered, requests/s) of one wrk run; POSTs `body` as JSON when given."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url]
        if body is not None:
            body_path = Path(tmp) / "body.json"
            body_path.write_bytes(body)
            script = Path(tmp) / "post.lua"
            script.write_text(WRK_SCRIPT.format(body=body_path))
            cmd[1:1] = ["-s", str(script)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if total is None or rps is None:
        raise RuntimeError(out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  warning: {url}: {non2xx.group(1)} non-2xx answers", file=sys.stderr)
    return int(total.group(1)), float(rps.group(1))


if __name__ == "__main__":
    main()
