"""The sessions table's changelog records, written as record batches straight to the producer.

A checkpoint (`aggregator.worker.Aggregator.checkpoint`) writes every session changed since the
last one, about a thousand changelog records at a time when a worker catches up. Sent one by
one through faust (`Table.send_changelog`), they queue in faust's `ProducerBuffer`, which hands
one record per event-loop turn to the producer; while more than `ProducerBuffer.max_messages`
(100) wait there, faust's conductor stops handing fetched records to the agent
(`ProducerBuffer.wait_until_ebb`, awaited for every record the consumer delivers), so the agent
ran dry while a checkpoint drained (1.4 s of a 13 s benchmark run). Here a checkpoint's records
become one aiokafka record batch per changelog partition (more when one fills up), submitted by
one task in checkpoint order: nothing waits in faust's buffer, and the per-record cost of
faust's send path (a future, a queue hop, sensors and callbacks per record) is gone.

Order: records of one partition keep their order within a checkpoint, and the checkpoints' batches
are submitted one after another; aiokafka's accumulator holds one batch per partition at a time
and its sender has one request in flight per partition, so the changelog has them in the order
they were made (a session's later value after its earlier one).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

Record = tuple[int, bytes, bytes]  # (partition, key, value)


class Batch(Protocol):
    """What `batches` needs of aiokafka's `BatchBuilder`."""

    def append(self, *, timestamp: float | None, key: bytes, value: bytes) -> Any: ...


B = TypeVar("B", bound=Batch)


def batches(records: Iterable[Record], new_batch: Callable[[], B]) -> list[tuple[int, B]]:
    """Packs records into batches of one partition each, in order: a batch is closed when the
    next record does not fit (`append` returns None) and that record opens the next one. Every
    record lands in exactly one batch; a partition's records keep their order across its
    batches, which are listed in the order they were opened."""
    out: list[tuple[int, B]] = []
    open_: dict[int, B] = {}
    for partition, key, value in records:
        batch = open_.get(partition)
        if batch is None or batch.append(timestamp=None, key=key, value=value) is None:
            batch = open_[partition] = new_batch()
            out.append((partition, batch))
            if batch.append(timestamp=None, key=key, value=value) is None:
                raise ValueError(f"a changelog record of {len(value)} bytes fits no batch")
    return out


class ChangelogWriter:
    """Submits checkpoints' changelog records to an aiokafka producer, one checkpoint after
    another; `send` returns a future done once Kafka acknowledged all of a checkpoint's records
    (with the first error otherwise)."""

    def __init__(self, producer: Callable[[], Any], topic: str) -> None:
        self._producer = producer  # the running AIOKafkaProducer (faust starts it late)
        self.topic = topic
        self._queue: collections.deque[tuple[list[Record], asyncio.Future[None]]] = (
            collections.deque()
        )
        self._task: asyncio.Task[None] | None = None

    def send(self, records: list[Record]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._submit())
        return done

    async def _submit(self) -> None:
        while self._queue:
            records, done = self._queue.popleft()
            try:
                producer = self._producer()
                sent = []
                for partition, batch in batches(records, producer.create_batch):
                    batch.close()  # else `producer.send` to the partition could add to it
                    sent.append(await producer.send_batch(batch, self.topic, partition=partition))
            except Exception as exc:  # handed to the checkpoint's waiter
                if not done.done():
                    done.set_exception(exc)
                continue
            _resolve_when_all(sent, done)


def _resolve_when_all(sent: list[asyncio.Future[Any]], done: asyncio.Future[None]) -> None:
    if not sent:
        done.set_result(None)
        return

    def on_acked(all_sent: asyncio.Future[Any]) -> None:
        if done.done():
            return
        if all_sent.cancelled():
            done.cancel()
        elif (exc := all_sent.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(None)

    asyncio.gather(*sent).add_done_callback(on_acked)
