from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from ingest.fleet import BEACON_CONTENT_TYPE, FleetSpec, schedule
from ingest.geodb import DemoNetwork
from ingest.simulate import Summary, accepted_events, main, run

START_MS = 1_795_441_630_000
NETWORKS = (DemoNetwork("198.51.100.0/24", "NA", "US", "Texas", "America/Chicago", 30.27, -97.74),)
SPEC = FleetSpec(players=15, duration_s=40, networks=NETWORKS)


@dataclass
class FakeCollector:
    """Answers 503 (Retry-After: 0) to the first POST of about a third of the bodies, else 200,
    rejecting every `can-play` event by index, as the collector's response format says."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if body not in self.seen and zlib.crc32(body) % 3 == 0:
            self.seen.add(body)
            return web.json_response(
                {"errors": ["kafka down"]}, status=503, headers={"Retry-After": "0"}
            )
        self.seen.add(body)
        events = orjson.loads(body)["events"]
        rejected = [i for i, e in enumerate(events) if e["type"] == "can-play"]
        self.accepted_ids += [e["id"] for i, e in enumerate(events) if i not in rejected]
        return web.json_response(
            {
                "accepted": len(events) - len(rejected),
                "rejected": [{"index": i, "errors": ["type: not wanted"]} for i in rejected],
                "server_timestamp": 1_800_000_000_000,
            }
        )


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    fake = FakeCollector()
    app = web.Application()
    app.router.add_post("/analytics/log", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def read_log(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_every_attempt_is_logged_and_retries_resend_the_same_events(
    collector: FakeCollector, tmp_path: Path
) -> None:
    log_path = tmp_path / "sim.jsonl"
    summary = await run(
        SPEC, collector.url, log_path, speed=math.inf, seed=3, now_ms=lambda: START_MS
    )
    records = read_log(log_path)
    expected = schedule(SPEC, seed=3, start_ms=START_MS)

    assert len(records) == len(collector.requests) == summary.attempts
    assert summary.scheduled == len(expected) and summary.gave_up == 0
    assert summary.unavailable > 0 and summary.ok == len(expected)
    assert summary.ok + summary.unavailable == summary.attempts
    final = [r for r in records if r["status"] == 200]
    assert sorted(orjson.dumps(r["envelope"]) for r in final) == sorted(
        orjson.dumps(s.envelope) for s in expected
    )
    # A 503 is followed by another attempt at the very same envelope.
    retried = [r for r in records if r["status"] == 503]
    for r in retried:
        again = [
            x
            for x in records
            if x["envelope"] == r["envelope"] and x["attempt"] == r["attempt"] + 1
        ]
        assert again, "a 503 was not retried"
        assert [e["id"] for e in again[0]["envelope"]["events"]] == [
            e["id"] for e in r["envelope"]["events"]
        ]
    for r in records:
        assert r["sent_at_ms"] == START_MS
        assert r["headers"]["X-Forwarded-For"] == r["truth"]["clientIp"]
        assert r["response"] is not None and r["error"] is None

    # What the server took is exactly what accepted_events reports.
    got = list(accepted_events(log_path.read_bytes().splitlines()))
    assert Counter(e.event["id"] for e in got) == Counter(collector.accepted_ids)
    assert summary.events == len(got)
    assert all(e.event["type"] != "can-play" for e in got)
    assert all(
        e.server_timestamp_ms == 1_800_000_000_000 and "events" not in e.envelope for e in got
    )


async def test_beacons_go_as_text_plain_with_the_player_headers(
    collector: FakeCollector, tmp_path: Path
) -> None:
    await run(SPEC, collector.url, tmp_path / "sim.jsonl", speed=math.inf, seed=3)
    content_types = Counter(h["Content-Type"] for h, _ in collector.requests)
    assert set(content_types) == {"application/json", BEACON_CONTENT_TYPE}
    for headers, body in collector.requests:
        envelope = orjson.loads(body)
        assert headers["User-Agent"] == envelope["user_agent"]
        assert headers["X-Forwarded-For"].startswith("198.51.100.")


def test_accepted_events_keeps_2xx_events_minus_rejected_indexes() -> None:
    envelope = {"session_id": "s", "events": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
    truth = {"sessionId": "s"}
    ok = {"accepted": 2, "rejected": [{"index": 1, "errors": ["x"]}], "server_timestamp": 7}
    lines: list[Any] = [
        orjson.dumps(
            {"status": 503, "response": {"errors": []}, "envelope": envelope, "truth": truth}
        ),
        orjson.dumps({"status": 200, "response": ok, "envelope": envelope, "truth": truth}),
        b"",
        orjson.dumps(
            {"status": 400, "response": {"errors": ["bad"]}, "envelope": envelope, "truth": truth}
        ).decode(),
        {
            "status": 202,
            "response": {"accepted": 3, "server_timestamp": 9},
            "envelope": envelope,
            "truth": truth,
        },
        {"status": None, "response": None, "envelope": envelope, "truth": truth},
        {"status": 204, "response": None, "envelope": envelope, "truth": truth},
    ]
    got = [(e.server_timestamp_ms, e.event["id"]) for e in accepted_events(lines)]
    assert got == [(7, "a"), (7, "c"), (9, "a"), (9, "b"), (9, "c")]
    first = next(accepted_events(lines))
    assert first.envelope == {"session_id": "s"} and first.truth == truth


async def test_connection_errors_are_retried_then_given_up(tmp_path: Path) -> None:
    log_path = tmp_path / "sim.jsonl"
    spec = FleetSpec(players=3, duration_s=12, networks=NETWORKS)
    summary = await run(
        spec,
        f"http://127.0.0.1:{closed_port()}",
        log_path,
        speed=math.inf,
        max_attempts=2,
        retry_backoff_s=0.01,
    )
    records = read_log(log_path)
    assert summary.scheduled > 0 and summary.gave_up == summary.scheduled
    assert len(records) == summary.failed == 2 * summary.scheduled
    assert all(r["status"] is None and r["response"] is None and r["error"] for r in records)
    assert Counter(r["attempt"] for r in records) == {1: summary.scheduled, 2: summary.scheduled}
    assert list(accepted_events(records)) == []


async def test_cancelling_a_run_keeps_the_log_and_the_counts(
    collector: FakeCollector, tmp_path: Path
) -> None:
    log_path = tmp_path / "sim.jsonl"
    summary = Summary()
    spec = FleetSpec(players=40, duration_s=120, networks=NETWORKS)
    task = asyncio.create_task(
        run(spec, collector.url, log_path, speed=100, seed=1, summary=summary)
    )
    # Cancel once the first attempts are logged (a fixed sleep saw none on a loaded CI machine),
    # long before the 1.2 s the run would take.
    for _ in range(3000):  # 30 s at most
        if summary.attempts:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert 0 < summary.attempts < summary.scheduled
    assert len(read_log(log_path)) == summary.attempts


async def test_speed_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        await run(SPEC, "http://127.0.0.1:1", tmp_path / "x.jsonl", speed=0)


def test_main_runs_a_bounded_fleet_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "cli.jsonl"
    argv = [
        "--collector",
        f"http://127.0.0.1:{closed_port()}",
        "--players",
        "2",
        "--duration",
        "11",
        "--speed",
        "inf",
        "--seed",
        "4",
        "--log",
        str(log_path),
        "--max-attempts",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("simulate: ") and "2xx=0" in out and "503=0" in out
    assert f"sent={len(read_log(log_path))}" in out
