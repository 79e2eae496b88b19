"""`playpulse simulate`: play a planned fleet (`ingest.fleet`) against a collector over HTTP.

Each scheduled send is POSTed to `{collector}/analytics/log` when its offset comes due: fetch-style
`application/json` for the 5 s envelopes, `text/plain;charset=UTF-8` for the page-close beacon,
the player's address in `X-Forwarded-For` (the demo collector trusts 127.0.0.1 as a proxy).
One `aiohttp.ClientSession` reuses connections; at most `concurrency` requests are in flight.

Time: offset 0 is the run's start (wall clock, `start_ms`). An event's client `timestamp` is
`start_ms + offset + skew` whatever the speed, so with `speed` > 1 the sends come `speed` times
faster than the timestamps advance and the client clocks run ahead of the server's.

A 503 (Kafka down; `Retry-After` honoured) or a connection error is retried with the very same
envelope (same event ids), at most `max_attempts` times. Every attempt, whatever its outcome, is
appended to the JSONL log as one line::

    {"sent_at_ms", "attempt", "kind", "offset_ms", "status" (null on connection error),
     "response" (parsed JSON body or null), "error" (null or why the request failed),
     "headers", "envelope", "truth"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import aiohttp
import orjson

from ingest.fleet import FleetSpec, ScheduledSend, schedule

DEFAULT_COLLECTOR = "http://127.0.0.1:8081"
LOG_PATH = "/analytics/log"
MAX_RETRY_DELAY_S = 30.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Summary:
    sessions: int = 0  # sessions with at least one send within the run
    scheduled: int = 0  # sends planned within the run
    attempts: int = 0  # requests made, retries included (= log lines)
    ok: int = 0  # 2xx
    client_errors: int = 0  # 4xx
    unavailable: int = 0  # 503
    failed: int = 0  # other statuses and connection errors
    gave_up: int = 0  # sends still failing after max_attempts
    events: int = 0  # events the collector accepted (its `accepted` counts)
    interrupted: bool = False

    def line(self) -> str:
        return (
            f"simulate: sessions={self.sessions} sent={self.attempts} 2xx={self.ok} "
            f"4xx={self.client_errors} 503={self.unavailable} failed={self.failed} "
            f"gave_up={self.gave_up} events={self.events}"
            + (" (interrupted)" if self.interrupted else "")
        )


class AcceptedEvent(NamedTuple):
    server_timestamp_ms: int
    envelope: dict[str, Any]  # the envelope's fields without `events`
    event: dict[str, Any]
    truth: dict[str, Any]


def accepted_events(
    log_lines: Iterable[str | bytes | Mapping[str, Any]],
) -> Iterator[AcceptedEvent]:
    """The events the collector took: those of 2xx attempts, minus the `rejected` indexes.

    Nothing is deduplicated: a re-sent event shows up once per accepted attempt. Attempts whose
    2xx body is not the collector's JSON (no `server_timestamp`) are skipped.
    """
    for line in log_lines:
        if isinstance(line, Mapping):
            record = line
        elif not line.strip():
            continue
        else:
            record = orjson.loads(line)
        status, response = record.get("status"), record.get("response")
        if not isinstance(status, int) or not 200 <= status < 300:
            continue
        if not isinstance(response, dict) or "server_timestamp" not in response:
            continue
        rejected = {r["index"] for r in response.get("rejected") or ()}
        envelope = record["envelope"]
        fields = {k: v for k, v in envelope.items() if k != "events"}
        for index, event in enumerate(envelope["events"]):
            if index not in rejected:
                yield AcceptedEvent(response["server_timestamp"], fields, event, record["truth"])


def _retry_delay_s(retry_after: str | None, attempt: int, backoff_s: float) -> float:
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(MAX_RETRY_DELAY_S, max(0.0, float(retry_after)))
    return min(MAX_RETRY_DELAY_S, backoff_s * 2 ** (attempt - 1))


class _Sender:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        log: IO[bytes],
        summary: Summary,
        *,
        concurrency: int,
        max_attempts: int,
        backoff_s: float,
        now_ms: Callable[[], int],
    ) -> None:
        self.http, self.url, self.log, self.summary = http, url, log, summary
        self.slots = asyncio.Semaphore(concurrency)
        self.max_attempts, self.backoff_s, self.now_ms = max_attempts, backoff_s, now_ms

    async def deliver(self, send: ScheduledSend) -> None:
        body = orjson.dumps(send.envelope)
        truth = send.truth.to_json()
        for attempt in range(1, self.max_attempts + 1):
            status, response, error, retry_after = None, None, None, None
            async with self.slots:
                sent_at = self.now_ms()
                try:
                    async with self.http.post(self.url, data=body, headers=send.headers) as resp:
                        status, raw = resp.status, await resp.read()
                        retry_after = resp.headers.get("Retry-After")
                    with contextlib.suppress(orjson.JSONDecodeError):
                        response = orjson.loads(raw) if raw else None
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
            self._record(send, attempt, sent_at, status, response, error, truth)
            if status is not None and status != 503:
                return
            if attempt == self.max_attempts:
                self.summary.gave_up += 1
                return
            await asyncio.sleep(_retry_delay_s(retry_after, attempt, self.backoff_s))

    def _record(
        self,
        send: ScheduledSend,
        attempt: int,
        sent_at: int,
        status: int | None,
        response: Any,
        error: str | None,
        truth: dict[str, Any],
    ) -> None:
        s = self.summary
        s.attempts += 1
        if status is not None and 200 <= status < 300:
            s.ok += 1
            if isinstance(response, dict) and isinstance(response.get("accepted"), int):
                s.events += response["accepted"]
        elif status == 503:
            s.unavailable += 1
        elif status is not None and 400 <= status < 500:
            s.client_errors += 1
        else:
            s.failed += 1
        record = {
            "sent_at_ms": sent_at,
            "attempt": attempt,
            "kind": send.kind,
            "offset_ms": send.offset_ms,
            "status": status,
            "response": response,
            "error": error,
            "headers": send.headers,
            "envelope": send.envelope,
            "truth": truth,
        }
        self.log.write(orjson.dumps(record) + b"\n")


async def run(
    spec: FleetSpec,
    collector_url: str,
    log_path: str | Path,
    *,
    speed: float = 1.0,
    concurrency: int = 64,
    seed: int = 0,
    max_attempts: int = 5,
    retry_backoff_s: float = 0.5,
    request_timeout_s: float = 10.0,
    summary: Summary | None = None,
    now_ms: Callable[[], int] = wall_ms,
) -> Summary:
    """Send the fleet's schedule; returns when every send is done (or given up).

    `speed` > 1 compresses the time between sends (`math.inf`: no waiting at all). Pass your own
    `summary` to read the counts even if the run is cancelled (Ctrl-C): cancellation stops the
    sends in flight, and the log keeps every attempt made so far.
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    summary = summary if summary is not None else Summary()
    loop = asyncio.get_running_loop()
    start_ms, t0 = now_ms(), loop.time()
    sends = schedule(spec, seed=seed, start_ms=start_ms)
    summary.sessions = len({s.truth.session_id for s in sends})
    summary.scheduled = len(sends)
    url = collector_url.rstrip("/") + LOG_PATH
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)
    tasks: set[asyncio.Task[None]] = set()
    path = Path(log_path)
    # Opened off the loop; the appends are small buffered writes, flushed when the file closes.
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    log = await asyncio.to_thread(path.open, "ab")
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            sender = _Sender(
                http,
                url,
                log,
                summary,
                concurrency=concurrency,
                max_attempts=max_attempts,
                backoff_s=retry_backoff_s,
                now_ms=now_ms,
            )
            try:
                for send in sends:
                    delay = t0 + send.offset_ms / 1000 / speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    task = asyncio.create_task(sender.deliver(send))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        log.close()
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="playpulse simulate",
        description="Simulated Livepeer players posting beacons to a collector.",
    )
    p.add_argument("--collector", default=DEFAULT_COLLECTOR, help="collector base URL")
    p.add_argument("--players", type=int, default=50, help="player sessions to start")
    p.add_argument("--duration", type=float, default=120.0, help="simulated seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--speed", type=float, default=1.0, help="time compression; 'inf' sends without waiting"
    )
    p.add_argument("--log", default="simulate.jsonl", help="JSONL file every attempt is added to")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    p.add_argument("--max-attempts", type=int, default=5, help="per send, on 503/network errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = FleetSpec(players=args.players, duration_s=args.duration)
    summary = Summary()
    try:
        asyncio.run(
            run(
                spec,
                args.collector,
                args.log,
                speed=args.speed,
                concurrency=args.concurrency,
                seed=args.seed,
                max_attempts=args.max_attempts,
                summary=summary,
            )
        )
    except KeyboardInterrupt:
        summary.interrupted = True
    print(summary.line(), flush=True)
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
