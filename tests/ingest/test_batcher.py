"""The batcher's coalescing rules, with an in-memory `send` (pure logic, no Kafka)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner

from ingest.batcher import PartitionBatcher, partition_for
from ingest.record import decode_record, encode_record


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[int, list[bytes]]] = []
        self.fail = fail

    async def __call__(self, partition: int, value: bytes) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.sent.append((partition, value.split(b"|")))


def join(items: list[bytes]) -> bytes:
    return b"|".join(items)


async def test_concurrent_items_share_one_record_per_partition() -> None:
    send = Recorder()
    batcher = PartitionBatcher(send, join, linger_s=0.01)
    items = [(i % 3, f"item-{i}".encode()) for i in range(9)]
    await asyncio.gather(*(batcher.add(p, item) for p, item in items))
    assert sorted(send.sent) == [
        (0, [b"item-0", b"item-3", b"item-6"]),
        (1, [b"item-1", b"item-4", b"item-7"]),
        (2, [b"item-2", b"item-5", b"item-8"]),
    ]


async def test_a_full_batch_goes_at_once_and_order_is_kept() -> None:
    send = Recorder()
    batcher = PartitionBatcher(send, join, linger_s=60, max_items=2)
    await asyncio.wait_for(asyncio.gather(*(batcher.add(0, bytes([65 + i])) for i in range(4))), 1)
    assert send.sent == [(0, [b"A", b"B"]), (0, [b"C", b"D"])]


async def test_an_item_that_would_overflow_the_bytes_cap_starts_a_new_record() -> None:
    send = Recorder()
    batcher = PartitionBatcher(send, join, linger_s=0.01, max_bytes=10)
    await asyncio.gather(batcher.add(0, b"x" * 6), batcher.add(0, b"y" * 6))
    assert send.sent == [(0, [b"x" * 6]), (0, [b"y" * 6])]


async def test_every_waiter_of_a_failed_record_gets_the_error() -> None:
    batcher = PartitionBatcher(Recorder(fail=RuntimeError("nope")), join, linger_s=0.001)
    results = await asyncio.gather(
        *(batcher.add(1, b"a") for _ in range(3)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["nope"] * 3


async def test_a_cancelled_waiter_does_not_cancel_the_record() -> None:
    send = Recorder()
    batcher = PartitionBatcher(send, join, linger_s=0.01)
    impatient = asyncio.ensure_future(batcher.add(0, b"a"))
    patient = asyncio.ensure_future(batcher.add(0, b"b"))
    await asyncio.sleep(0)
    impatient.cancel()
    await patient
    assert send.sent == [(0, [b"a", b"b"])]


async def test_a_cancelled_waiter_of_a_failed_record_leaves_the_others_their_error() -> None:
    batcher = PartitionBatcher(Recorder(fail=RuntimeError("nope")), join, linger_s=0.01)
    impatient = asyncio.ensure_future(batcher.add(0, b"a"))
    patient = asyncio.ensure_future(batcher.add(0, b"b"))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(RuntimeError, match="nope"):
        await patient
    assert impatient.cancelled()


async def test_drain_sends_what_is_open() -> None:
    send = Recorder()
    batcher = PartitionBatcher(send, join, linger_s=60)
    waiter = asyncio.ensure_future(batcher.add(4, b"last"))
    await asyncio.sleep(0)
    await batcher.drain()
    await waiter
    assert send.sent == [(4, [b"last"])]


@pytest.mark.parametrize("key", [b"", b"a", b"session-1", b"JloQVZZcL9YKKb1ZXLWMmP"])
@pytest.mark.parametrize("partitions", [1, 3, 6, 64])
def test_partition_matches_kafkas_default_partitioner(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), [])
    assert partition_for(key, partitions) == expected


def test_record_round_trip() -> None:
    items = [b'{"envelope":{"session_id":"a"},"events":[]}', b'{"envelope":{},"events":[1]}']
    assert decode_record(encode_record(items)) == [
        {"envelope": {"session_id": "a"}, "events": []},
        {"envelope": {}, "events": [1]},
    ]
    with pytest.raises(ValueError, match="version"):
        decode_record(b'{"v":1,"envelopes":[]}')
