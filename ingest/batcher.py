"""Coalesces concurrent envelopes into one Kafka record per partition.

Faust and aiokafka pay a fixed cost per Kafka record, far above the cost of an event, so the
collector does not write one record per envelope: envelopes accepted at about the same time
for the same partition travel as one record (format in `ingest.record`). The partition is
chosen from the session id the way Kafka's default partitioner chooses it from a key
(murmur2), so every envelope of a session lands in the same partition, in acceptance order.

Contract of `PartitionBatcher.add`: it returns the item's own future (no coroutine between the
request and its record), resolved once the record holding the item was acknowledged, or set to
whatever the injected `send` raised for that record; every item of a record shares its outcome,
and cancelling one item's future touches no other. A batch is sent when it reaches `max_items` or `max_bytes`, or
`linger_s` after its first item, whichever comes first. Nothing here blocks or buffers without
bound: each request waits for its own batch, and the sink bounds how long that takes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from aiokafka.partitioner import murmur2

Send = Callable[[int, bytes], Awaitable[None]]


@functools.lru_cache(maxsize=16384)  # murmur2 is pure Python; a session posts every 5 s
def partition_for(session_id: bytes, partitions: int) -> int:
    """Kafka's default partitioner on the session id (Java client and aiokafka agree)."""
    return (murmur2(session_id) & 0x7FFFFFFF) % partitions


class _Batch:
    __slots__ = ("items", "loop", "size", "timer", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[bytes] = []
        self.size = 0
        # One future per item, resolved together: a waiter that gives up cancels only its own
        # (asyncio.shield per item cost a second future and an extra turn of the loop each).
        self.waiters: list[asyncio.Future[None]] = []
        self.timer: asyncio.TimerHandle | None = None


class PartitionBatcher:
    def __init__(
        self,
        send: Send,
        encode: Callable[[list[bytes]], bytes],
        *,
        linger_s: float = 0.002,
        max_items: int = 500,
        max_bytes: int = 768 * 1024,
    ) -> None:
        self._send = send
        self._encode = encode
        self._linger_s = linger_s
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._open: dict[int, _Batch] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.pending = 0  # items added whose record is not answered yet

    def add(self, partition: int, item: bytes) -> asyncio.Future[None]:
        batch = self._open.get(partition)
        if batch is not None and batch.size + len(item) > self._max_bytes:
            self._flush(partition)
            batch = None
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._open[partition] = _Batch(loop)
            if self._linger_s > 0:
                batch.timer = loop.call_later(self._linger_s, self._flush, partition)
            else:  # at the end of this turn of the loop: whatever arrived meanwhile rides along
                loop.call_soon(self._flush_if_current, partition, batch)
        batch.items.append(item)
        batch.size += len(item)
        waiter = batch.loop.create_future()
        batch.waiters.append(waiter)
        self.pending += 1
        if len(batch.items) >= self._max_items:
            self._flush(partition)
        return waiter

    def _flush_if_current(self, partition: int, batch: _Batch) -> None:
        if self._open.get(partition) is batch:
            self._flush(partition)

    def _flush(self, partition: int) -> None:
        batch = self._open.pop(partition, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(partition, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, partition: int, batch: _Batch) -> None:
        try:
            await self._send(partition, self._encode(batch.items))
        except Exception as exc:
            self.pending -= len(batch.waiters)
            for waiter in batch.waiters:
                if not waiter.done():  # cancelled: its request gave up
                    waiter.set_exception(exc)
        else:
            self.pending -= len(batch.waiters)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def drain(self) -> None:
        """Sends what is open and waits for every record under way (used at shutdown)."""
        for partition in list(self._open):
            self._flush(partition)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
