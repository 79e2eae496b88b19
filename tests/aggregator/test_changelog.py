"""Packing a checkpoint's changelog records into record batches (`aggregator.changelog.batches`)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from hypothesis import given
from hypothesis import strategies as st

from aggregator.changelog import Record, batches


class Bounded:
    """A batch that takes records until their values reach `capacity` bytes (the first always
    fits unless `capacity` is 0), like aiokafka's builder."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, timestamp: float | None, key: bytes, value: bytes) -> Any:
        size = sum(len(v) for _, v in self.records)
        if self.capacity == 0 or (self.records and size + len(value) > self.capacity):
            return None
        self.records.append((key, value))
        return object()


records_st = st.lists(
    st.tuples(st.integers(0, 3), st.binary(min_size=1, max_size=4), st.binary(max_size=40)),
    max_size=60,
)


@given(records_st, st.integers(1, 100))
def test_every_record_in_one_batch_of_its_partition_in_order(
    records: list[Record], capacity: int
) -> None:
    packed = batches(records, lambda: Bounded(capacity))
    for partition in {p for p, _, _ in records}:
        mine = [(k, v) for p, k, v in records if p == partition]
        theirs = [kv for p, b in packed if p == partition for kv in b.records]
        assert theirs == mine
    assert sum(len(b.records) for _, b in packed) == len(records)
    assert all(b.records for _, b in packed)  # no empty batch is sent
    for _, batch in packed:  # a batch was closed only when the next record did not fit
        assert len(batch.records) == 1 or sum(len(v) for _, v in batch.records) <= capacity


def test_a_record_that_fits_no_batch_is_refused() -> None:
    with pytest.raises(ValueError):
        batches([(0, b"k", b"v")], lambda: Bounded(0))


def test_aiokafka_batches_hold_the_records_in_order() -> None:
    """With aiokafka's own builder (16 KB batches): its `append` returns None when full."""
    records = [(p, f"s{i}".encode(), bytes([i % 256]) * 3000) for i in range(40) for p in (0, 1)]
    packed = batches(records, lambda: BatchBuilder(16_384, 0))
    assert len(packed) > 2  # 60 KB per partition needs several batches
    for partition in (0, 1):
        got = []
        for p, builder in packed:
            if p != partition:
                continue
            buffer = builder._build()  # what the producer sends
            got += [(r.key, r.value) for r in DefaultRecordBatch(bytes(buffer))]
        assert got == [(k, v) for p, k, v in records if p == partition]
