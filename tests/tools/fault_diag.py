"""Diagnose a failed fault test: which session lost what, and where the group committed.

Run the fault test against servers whose data outlives it (not `deploy/test.sh`, which wipes
them), e.g. start Kafka and Redis with `PLAYPULSE_STATE=/tmp/repro deploy/stack.sh servers`, point
`PLAYPULSE_TEST_*` at them and run pytest with `--basetemp`; then, from the failing test's
messages (app id, beacons topic) and its `simulate.jsonl`:

    python -m tests.tools.fault_diag BOOTSTRAP APP_ID BEACONS_TOPIC SIMULATE_JSONL [PARTITIONS]

Prints, per session whose playing time in the final sessions changelog differs from the
simulator's accepted heartbeats: the beacons records holding its envelopes (partition, offset,
server time, events), its changelog history, and the group's offset commits of that partition
(decoded from `__consumer_offsets`, key versions 0 and 1).
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from aggregator.partition import SessionEntry
from aggregator.watchdog import progress_of
from aggregator.worker import envelopes_of


async def read_all(boot: str, topic: str, partitions: int) -> list[ConsumerRecord[Any, Any]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=boot, enable_auto_commit=False, exclude_internal_topics=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[Any, Any]] = []
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                return out
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out += records
    finally:
        await consumer.stop()


def accepted_playing(log: str) -> dict[str, dict[str, int]]:
    """Session id -> heartbeat id -> time_playing_ms, over envelopes answered 2xx."""
    out: dict[str, dict[str, int]] = {}
    with open(log, "rb") as f:
        for line in f:
            sent = orjson.loads(line)
            if not 200 <= (sent.get("status") or 0) < 300:
                continue
            envelope = sent["envelope"]
            for event in envelope["events"]:
                if event.get("type") == "heartbeat":
                    by_id = out.setdefault(envelope["session_id"], {})
                    by_id[event.get("id")] = event.get("time_playing_ms", 0)
    return out


def commits(records: list[ConsumerRecord[Any, Any]], group: str, topic: str) -> list[str]:
    out = []
    for r in sorted(records, key=lambda r: r.timestamp):
        key, value = r.key, r.value
        if key is None or value is None or struct.unpack(">h", key[:2])[0] not in (0, 1):
            continue
        i = 2
        n = struct.unpack(">h", key[i : i + 2])[0]
        g = key[i + 2 : i + 2 + n].decode()
        i += 2 + n
        n = struct.unpack(">h", key[i : i + 2])[0]
        t = key[i + 2 : i + 2 + n].decode()
        i += 2 + n
        p = struct.unpack(">i", key[i : i + 4])[0]
        if g == group and t == topic:
            out.append(f"{r.timestamp} p{p} committed {struct.unpack('>q', value[2:10])[0]}")
    return out


async def main(boot: str, app_id: str, topic: str, log: str, partitions: int) -> None:
    want = accepted_playing(log)
    changelog = await read_all(boot, f"{app_id}-sessions-changelog", partitions)
    last = {r.key.decode(): r for r in changelog if progress_of(r.key, r.value) is None}
    got = {
        sid: sum(c.playing_ms for c in SessionEntry.from_bytes(r.value).totals.values())
        for sid, r in last.items()
    }
    progress = [p for r in changelog if (p := progress_of(r.key, r.value)) is not None]
    print("changelog progress (partition, last offset):", dict(progress))
    bad = [sid for sid, hbs in want.items() if got.get(sid) != sum(hbs.values())]
    print(f"{len(want)} sessions in the log, {len(got)} in the changelog, {len(bad)} differ")
    if not bad:
        return
    beacons = await read_all(boot, topic, partitions)
    offsets = await read_all(boot, "__consumer_offsets", 6)
    for sid in bad:
        print(f"session {sid}: log {sum(want[sid].values())} ms playing, changelog {got.get(sid)}")
        for r in beacons:
            doc = orjson.loads(r.value)
            if doc.get("tick") is not None:
                continue
            for env in envelopes_of(doc):
                if env["envelope"]["session_id"] == sid:
                    kinds = [(e["type"], e.get("time_playing_ms")) for e in env["events"]]
                    print(
                        f"  beacons p{r.partition} o{r.offset} ts {env['server_timestamp']} {kinds}"
                    )
        for r in changelog:
            if r.key.decode() == sid:
                state = orjson.loads(r.value)["state"] or {}
                print(f"  changelog p{r.partition} o{r.offset} at {r.timestamp}: {state}")
    for line in commits(offsets, app_id, topic):
        print(" ", line)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(*args[:4], int(args[4]) if len(args) > 4 else 3))
