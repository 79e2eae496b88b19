"""The collector's Kafka sink: an idempotent producer that answers only once Kafka has acknowledged.

Contract of `BeaconSink.publish`: the future it returns resolves after the broker acknowledged
the record holding the envelope (acks=all; envelopes are coalesced per partition by
`ingest.batcher`), or fails with `SinkUnavailable` within `produce_timeout_s`. It never buffers
beyond aiokafka's own bounded accumulator (about one batch per partition), and refuses at once
while more than `max_in_flight` envelopes wait, or while Kafka is known to be down, so a Kafka outage turns into fast 503s instead of
growing memory. A record whose wait timed out may still be delivered later (aiokafka cannot cancel
a send): that outcome is ambiguous, the player re-sends the same event ids, and the aggregator
deduplicates on event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from prometheus_client import Histogram

from ingest.batcher import PartitionBatcher, partition_for
from ingest.record import encode_record
from ingest.settings import IngestSettings

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """Kafka did not acknowledge in time, or is known to be down; the client should retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BeaconSink:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        max_in_flight: int = 10_000,
        produce_seconds: Histogram | None = None,
    ) -> None:
        self._settings = settings
        # Observed once per record (a record carries the envelopes of many requests).
        self._produce_seconds = produce_seconds
        self._max_in_flight = max_in_flight
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._partitions = 0
        self._batcher = PartitionBatcher(
            self._send_record, encode_record, linger_s=settings.batch_linger_ms / 1000
        )
        # Monotonic time until which publish fails fast after a timeout; a probe may lift it earlier.
        self._down_until = 0.0

    @property
    def in_flight(self) -> int:
        return self._batcher.pending

    @property
    def ready(self) -> bool:
        return self._producer is not None and time.monotonic() >= self._down_until

    async def start(self) -> None:
        """Connects in the background: the collector serves (503s) while Kafka is still unreachable."""
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-connect")

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._batcher.drain()
            await self._producer.stop()
            self._producer = None

    async def _connect_forever(self) -> None:
        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                enable_idempotence=True,
                acks="all",
                linger_ms=2,
                max_batch_size=256 * 1024,
                max_request_size=4 * 1024 * 1024,
                request_timeout_ms=10_000,
                compression_type=None,
            )
            try:
                await producer.start()
                await self._ensure_topic()
                self._partitions = len(await producer.partitions_for(self._settings.topic))
            except (KafkaError, OSError) as exc:
                log.warning("kafka not reachable yet (%s); retrying", exc)
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
                await asyncio.sleep(1.0)
                continue
            except asyncio.CancelledError:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
                raise
            self._producer = producer
            log.info("connected to kafka at %s", self._settings.kafka_bootstrap)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap)
        try:
            await admin.start()
            topic = NewTopic(self._settings.topic, self._settings.topic_partitions, 1)
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    def publish(self, session_id: bytes, item: bytes) -> asyncio.Future[None]:
        """A future resolved once Kafka acknowledged the record carrying `item` (an
        `envelope_item`), or set to SinkUnavailable; raises SinkUnavailable at once when Kafka
        is not connected, known to be down, or too many envelopes wait."""
        if self._producer is None:
            raise SinkUnavailable("kafka not connected")
        if time.monotonic() < self._down_until:
            raise SinkUnavailable("kafka unavailable")
        if self._batcher.pending >= self._max_in_flight:
            raise SinkUnavailable("too many records in flight")
        return self._batcher.add(partition_for(session_id, self._partitions), item)

    async def _send_record(self, partition: int, value: bytes) -> None:
        producer = self._producer
        if producer is None:
            raise SinkUnavailable("kafka not connected")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                fut = await producer.send(self._settings.topic, value=value, partition=partition)
                await asyncio.shield(fut)
        except (TimeoutError, KafkaError) as exc:
            # Fail fast for a little while: every waiting request would time out the same way.
            self._down_until = time.monotonic() + self._settings.retry_after_s / 2
            raise SinkUnavailable(f"kafka did not acknowledge: {type(exc).__name__}") from exc
        if self._produce_seconds is not None:
            self._produce_seconds.observe(time.perf_counter() - started)
