"""The faust-streaming worker (`playpulse aggregate`): beacons in, sessions and rollups out.

One agent (concurrency 1, at_least_once) reads `beacons`. Each record is either a batch of
enriched envelopes (`ingest.record`) or a tick: a record this worker writes to each partition
it owns every `tick_interval_s`, carrying the time, so that session timeouts are decided in the
stream and replay the same way after a crash. Sessions live in the `sessions` table
(changelog-backed); everything else is derived from it (`aggregator.partition`) and flushed to
Redis every `flush_interval_s` as absolute values under a version of (epoch, offset): the
epoch is drawn from Redis each time a worker takes a partition, so a worker that lost the
partition can never overwrite the new owner's rows.

Crash safety: the table may be ahead of the committed offset after a crash; the replayed
events are then duplicates of applied ones (same event ids) and change nothing, and the
rollups are rebuilt from the table before the partition's first record is processed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

import faust
import orjson
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from redis.exceptions import RedisError

from aggregator.changelog import ChangelogWriter
from aggregator.partition import PartitionAggregate, SessionEntry, view_summary
from aggregator.records import decode_held
from aggregator.redisclient import connect
from aggregator.settings import AggregatorSettings
from aggregator.store import ConcurrencyWriter, RollupWriter, TouchedWriter
from aggregator.watchdog import (
    EXIT_RECORD_SKIPPED,
    EXIT_RECOVERY_STALLED,
    RecoveryWatch,
    progress_key,
    progress_of,
    progress_record,
    skipped_offsets,
)
from ingest.record import envelopes_of
from ingest.runtime import tune_gc, use_uvloop

log = logging.getLogger(__name__)

EPOCH_KEY = "pp:epoch:{app}:{topic}:{partition}"
VERSION_EPOCH_SHIFT = 40  # version = epoch << 40 | (offset + 1)
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
PRODUCER_BATCH_BYTES = 512 * 1024  # under the broker's default message.max.bytes (1 MiB)
CONSUMER_FETCH_BYTES = (
    4 * 1024 * 1024
)  # per partition and fetch (aiokafka's max_partition_fetch_bytes)


def tick_record(now_ms: int) -> bytes:
    return orjson.dumps({"v": 2, "tick": now_ms, "envelopes": []})


class Aggregator:
    """Holds the worker's per-partition state and its connections; built by `create_app`."""

    def __init__(self, settings: AggregatorSettings) -> None:
        self.settings = settings
        self.redis = connect(settings.redis_url, socket_timeout=5.0)
        self.rollup_writer = RollupWriter(self.redis, settings.minute_retention_s)
        self.touched_writer = TouchedWriter(self.redis)
        self.concurrency_writer = ConcurrencyWriter(self.redis, settings.concurrency_retention_s)
        self.parts: dict[int, PartitionAggregate] = {}
        self.epochs: dict[int, int] = {}
        self.rebuilt: set[int] = set()  # partitions whose next flush replaces what they wrote
        self.table: Any = None  # the sessions table, set by `create_app`
        self.changelog: ChangelogWriter | None = None  # its changelog, set by `create_app`
        # the table decoded by partition, for rebuilds (None: decode it again)
        self.table_by_partition: dict[int, list[tuple[str, SessionEntry]]] | None = None
        # partition -> last offset whose changes the table holds (decoded with the table)
        self.progress: dict[int, int] = {}
        self.saved_offsets: dict[int, int] = {}  # partition -> last offset written to the table
        self.first_due: dict[int, int] = {}  # partition -> offset its next record must have
        self.held: list[tuple[Any, Any]] = []  # (stream, event) processed, not acked yet
        self.sending: list[asyncio.Future[Any]] = []  # changelog records not acknowledged yet
        self.stopping = False
        self.next_flush_at = 0.0  # monotonic time before which a busy worker skips flushes
        self.last_beacons_at = 0.0  # monotonic time of the last beacons record processed
        self.token = uuid.uuid4().hex
        self.registry = CollectorRegistry()
        self.records = Counter(
            "playpulse_aggregator_records",
            "beacons records by kind",
            ["kind"],
            registry=self.registry,
        )
        self.events = Counter(
            "playpulse_aggregator_events", "Events folded into sessions", registry=self.registry
        )
        self.flush_errors = Counter(
            "playpulse_aggregator_flush_errors", "Failed Redis flushes", registry=self.registry
        )
        self.flush_seconds = Histogram(
            "playpulse_aggregator_flush_seconds",
            "How long a flush to Redis took",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
        self.partitions_owned = Gauge(
            "playpulse_aggregator_partitions", "Partitions this worker owns", registry=self.registry
        )
        self.lag_s = Gauge(
            "playpulse_aggregator_stream_lag_seconds",
            "Wall clock minus the newest server timestamp processed",
            registry=self.registry,
        )

    async def partition(
        self, partition: int, table: Any, consumer: Any, tp: Any
    ) -> PartitionAggregate:
        """The partition's derived state, rebuilt from the sessions table if it has none; a
        rebuild also sets the offset its next record must have (`first_due`)."""
        part = self.parts.get(partition)
        if part is None:
            part = PartitionAggregate(
                partition,
                self.settings.policy,
                minute_retention_ms=self.settings.minute_retention_s * 1000,
            )
            # The memory store holds every partition this worker has: it is decoded once and
            # split by partition for the rebuilds that follow a `forget`.
            if self.table_by_partition is None:
                self.table_by_partition, self.progress = {}, {}
                for key, value in list(table.data.items()):
                    if (progress := progress_of(key, value)) is not None:
                        self.progress[progress[0]] = progress[1]
                        continue
                    entry = SessionEntry.from_bytes(value)
                    session_id = key.decode() if isinstance(key, bytes) else key
                    self.table_by_partition.setdefault(entry.partition, []).append(
                        (session_id, entry)
                    )
            part.rebuild(self.table_by_partition.pop(partition, []))
            # The first record is then checked against what the table has (`progress_of`).
            last = self.saved_offsets[partition] = self.progress.pop(partition, -1)
            if last >= 0:
                self.first_due[partition] = last + 1
            elif consumer._committed_offset.get(tp) is None:
                # Nothing in the table nor committed yet: the first record due is the
                # partition's earliest (in `beacons`, the first ever written if none expired).
                self.first_due[partition] = (await consumer.earliest_offsets(tp))[tp]
            else:
                self.first_due.pop(partition, None)
            key = EPOCH_KEY.format(
                app=self.settings.app_id, topic=self.settings.topic, partition=partition
            )
            self.epochs[partition] = int(await self.redis.incr(key))
            self.parts[partition] = part
            self.rebuilt.add(partition)
            log.info("partition %d: rebuilt, epoch %d", partition, self.epochs[partition])
        return part

    def forget(self, partition: int | None = None) -> None:
        """Drops the derived state of one partition (or all), after a checkpoint: it is
        rebuilt from the sessions table at the partition's next record."""
        self.checkpoint()
        if partition is None:
            self.parts.clear()
        else:
            self.parts.pop(partition, None)
        self.table_by_partition = None

    def hold(self, stream: Any, event: Any) -> None:
        """Keeps a processed record's ack until the next checkpoint (at once when stopping)."""
        self.held.append((stream, event))
        if self.stopping:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Writes every session changed since the last checkpoint to the table (one changelog
        record per session, not per envelope), and acks the records processed so far once
        Kafka has acknowledged those changelog records.

        Synchronous, so no record is processed half-way through it: every held record's
        changes are in the sessions written. The acks wait for the changelog because nothing
        else makes a commit wait for it: the records go to Kafka as record batches
        (`aggregator.changelog`, not through faust's producer buffer), and faust's own flush
        before a commit (`ProducerBuffer.flush_atmost`) gave up after 0.1 s without progress
        even when they went through it. Acked at once, a record's offset could be committed
        ahead of the changelog, and on a loaded machine a worker leaving the group lost
        updates that way (the two-workers fault test, about 1 run in 10). Nothing awaits
        here: the agent keeps going, and faust commits only what is acked.
        """
        records: list[tuple[int, bytes, bytes]] = []
        table = self.table
        if table is not None:
            for part in self.parts.values():
                for session_id, entry in part.take_unsaved().items():
                    key, value = session_id.encode(), entry.to_bytes()
                    table.data[key] = value
                    records.append((part.partition, key, value))
                if part.offset >= 0 and part.offset != self.saved_offsets.get(part.partition):
                    # after the sessions, in the same changelog partition: when recovery has
                    # this, it has them
                    key, value = progress_key(part.partition), progress_record(part.offset)
                    table.data[key] = value
                    records.append((part.partition, key, value))
                    self.saved_offsets[part.partition] = part.offset
        held, self.held = self.held, []
        # A record folded while an earlier checkpoint's records were on their way (the agent
        # awaits while publishing views) waits for those too.
        self.sending = [f for f in self.sending if not f.done()]
        if records and self.changelog is not None:
            self.sending.append(self.changelog.send(records))
        if not self.sending:
            _ack(held)
            return

        def when_written(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                # Not acked: those records are processed again by whoever owns them next.
                log.error("sessions changelog not written; records left unacked: %r", done)
                return
            _ack(held)

        asyncio.gather(*self.sending).add_done_callback(when_written)

    async def flush(self, owned: set[int]) -> None:
        for partition in list(self.parts):
            if partition not in owned:  # revoked: rebuilt with a new epoch if it comes back
                self.forget(partition)
        self.partitions_owned.set(len(self.parts))
        try:
            if await self.rollup_writer.redis_lost_data(self.token):
                # Rebuild every partition from the sessions table at its next record (a tick
                # comes within tick_interval_s): rows, unique viewers and who is watching now
                # are all written again, under new epochs.
                log.warning("redis lost its data (or first start): rebuilding what we own")
                self.forget()
                return
        except RedisError:
            self.flush_errors.inc()
            log.warning("redis unreachable; will retry", exc_info=True)
            return
        now_ms = time.time_ns() // 1_000_000
        for partition, part in list(self.parts.items()):
            part.prune_minutes()
            part.rollups.fold()
            writes = part.rollups.take_dirty()
            touched = part.take_touched()
            version = (self.epochs[partition] << VERSION_EPOCH_SHIFT) | (part.offset + 1)
            replace = partition in self.rebuilt
            part.concurrency.prune(now_ms - self.settings.concurrency_retention_s * 1000)
            counts = part.concurrency.take(everything=replace)
            try:
                await self.rollup_writer.write(partition, version, writes, replace=replace)
                await self.concurrency_writer.write(partition, version, counts, replace=replace)
                self.rebuilt.discard(partition)
                await self.touched_writer.write(touched, now_ms)
            except RedisError:
                self.flush_errors.inc()
                part.rollups.restore_unwritten(writes)
                part.restore_touched(touched)
                part.concurrency.restore(counts)
                log.warning("flush of partition %d failed; will retry", partition, exc_info=True)
        newest = [p.stream_time_ms for p in self.parts.values() if p.stream_time_ms]
        if newest:  # the partition furthest behind
            self.lag_s.set(max(0.0, (now_ms - min(newest)) / 1000))


def _ack(held: list[tuple[Any, Any]]) -> None:
    for stream, event in held:
        # `Stream.ack` without its coroutine wrapper (it awaits nothing), so that this can run
        # in a rebalance signal or a future's callback too.
        message = event.message
        last = event.ack()
        stream._on_stream_event_out(message.tp, message.offset, stream, event)
        if last:
            stream._on_message_out(message.tp, message.offset, message)


class BeaconsConsumer(FaustKafkaConsumer):
    """faust's Kafka consumer without its gap filling.

    When the offsets its fetch loop hands on jump (a compacted or transactional topic has such
    holes), faust marks the missing offsets acked, so the commit moves past them. `beacons` has
    no such holes; the jumps seen here were records faust dropped after a rebalance, and filling
    them lost those records for good (the agent's guard exits before acking past a hole, but a
    commit could still carry the gap). Without the filling a commit stops at the hole."""

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "%s: the consumer's fetch loop jumped from %d to %d; not counting the offsets "
            "between as processed",
            tp,
            offset_from - 1,
            offset_to,
        )


class AggregatorApp(faust.App):
    """faust's App with `BeaconsConsumer`, and that checkpoints before it waits for the
    streams' acks when it stops (its timers have stopped by then, so the flush's checkpoint
    would never come)."""

    aggregator: Aggregator

    def _new_consumer(self) -> Any:
        # `App._new_consumer` through `Transport.create_consumer`, with our class
        return BeaconsConsumer(
            self.transport,
            callback=self.topics.on_message,
            loop=self.transport.loop,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
        )

    async def on_stop(self) -> None:
        self.aggregator.stopping = True
        self.aggregator.checkpoint()
        await super().on_stop()


def create_app(settings: AggregatorSettings) -> faust.App:
    app = AggregatorApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        table_standby_replicas=0,
        web_host=settings.host,
        web_bind=settings.host,
        web_port=settings.port,
        web_in_thread=False,
        datadir=settings.data_dir,
        producer_acks=-1,
        # A checkpoint sends every changed session (a few KB each) at once: batches of 16 KB
        # (faust's default) took a produce round trip per few sessions and partition.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # aiokafka fetches a partition again only once its fetched records are used up: 1 MiB
        # (faust's default, about 50 records of 20 envelopes) lasted less than a fetch's round
        # trip when catching up, and the agent waited for records late in a benchmark pass.
        consumer_max_fetch_size=CONSUMER_FETCH_BYTES,
        broker_session_timeout=settings.group_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.group_session_timeout_s / 4),
        stream_wait_empty=True,
        # No leader topic (nothing here runs `on_leader`): its one empty partition made
        # aiokafka send fetches for it alone whenever the beacons partitions still had
        # records buffered, and each waited out the fetch's 1.5 s max wait while the agent ran
        # dry (one fetch in flight per broker). It halved the rate of a worker catching up.
        topic_disable_leader=True,
    )
    agg = Aggregator(settings)
    app.aggregator = agg

    def raw_topic(name: str) -> Any:
        """A topic of bytes both ways: records are orjson we decode ourselves."""
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    beacons = raw_topic(settings.topic)
    # Keys are session ids as bytes, values `SessionEntry.to_bytes()`: bytes types make faust
    # use the raw codec both ways, so the table holds what its changelog holds after recovery.
    sessions = app.Table(
        "sessions", key_type=bytes, value_type=bytes, partitions=settings.topic_partitions
    )

    agg.table = sessions
    # Checkpoints write the changelog as record batches (`aggregator.changelog`), on the
    # producer faust runs (aiokafka's, looked up when sending: faust starts it later).
    agg.changelog = ChangelogWriter(
        lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
        sessions.changelog_topic.get_topic_name(),
    )
    views = raw_topic(settings.views_topic)

    @app.agent(beacons, concurrency=1)
    async def aggregate(stream: Any) -> None:
        # Acks are manual: a record is acked only once the sessions it changed are written to
        # the table (`Aggregator.checkpoint`), so a committed offset never runs ahead of the
        # changelog.
        manual = stream.noack()
        async for event in manual.events():
            message = event.message
            part = await agg.partition(message.partition, sessions, app.consumer, message.tp)
            # no await from here to the fold: a `forget` cannot come between
            due = agg.first_due.pop(message.partition, None)
            if due is None and part.offset >= 0:
                due = part.offset + 1
            missing = skipped_offsets(due, message.offset)
            if missing:
                log.error(
                    "partition %d: offsets %d-%d never reached the agent (a record skipped by "
                    "the consumer): exiting with %d, before acking anything past them, for the "
                    "supervisor to restart this worker",
                    message.partition,
                    missing.start,
                    missing.stop - 1,
                    EXIT_RECORD_SKIPPED,
                )
                logging.shutdown()
                os._exit(EXIT_RECORD_SKIPPED)
            # Only what folding held sessions reads, when every session is held (the steady
            # state); else the whole record (`aggregator.records`).
            light = decode_held(event.value, part.sessions)
            if light is not None:
                tick, envelopes = light.tick, None
            try:
                if light is None:
                    doc = orjson.loads(event.value)
                    tick = doc.get("tick")
                    envelopes = [] if tick is not None else envelopes_of(doc)
            except (ValueError, AttributeError):
                agg.records.labels("unreadable").inc()
                log.warning(
                    "skipping unreadable record at %s:%d", message.partition, message.offset
                )
                part.offset = message.offset
                agg.hold(manual, event)
                continue
            # The whole record is folded without an await in between: a checkpoint (or a
            # `forget`, which checkpoints first) then sees all of it or none of it, so a
            # record is never acked with part of its changes unwritten.
            closed: list[tuple[str, bytes]] = []  # the views it closed, published after
            if tick is not None:
                agg.records.labels("tick").inc()
                for session_id, entry, was_closed in part.close_due(int(tick)):
                    if not was_closed and entry.state is not None and entry.state.closed:
                        closed.append((session_id, orjson.dumps(view_summary(session_id, entry))))
            else:
                agg.records.labels("beacons").inc()
                agg.last_beacons_at = time.monotonic()
                n_events = 0
                if light is not None:
                    for held in light.envelopes:
                        folded = part.fold_events(
                            held.session_id, held.server_timestamp, held.events
                        )
                        assert folded is not None  # every session is held (checked above)
                        entry, was_closed = folded
                        if not was_closed and entry.state is not None and entry.state.closed:
                            closed.append(
                                (
                                    held.session_id,
                                    orjson.dumps(view_summary(held.session_id, entry)),
                                )
                            )
                        n_events += len(held.events)
                else:
                    for envelope in envelopes or ():
                        session_id, entry, was_closed = part.fold_envelope(envelope)
                        if not was_closed and entry.state is not None and entry.state.closed:
                            closed.append(
                                (session_id, orjson.dumps(view_summary(session_id, entry)))
                            )
                        n_events += len(envelope["events"])
                agg.events.inc(n_events)
            part.offset = message.offset
            for session_id, summary in closed:  # at least once: see `view_summary`
                await views.send(key=session_id.encode(), value=summary)
            agg.hold(manual, event)

    def forget_derived_state(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """On every rebalance, drop what is derived from the sessions table: recovery may have
        rolled table entries back to their changelog, and the consumer resumes from the
        committed offsets, so the only consistent base is the table as recovered. Each
        partition is rebuilt (with a new epoch, in replace mode) at its next record."""
        agg.forget()

    app.on_partitions_revoked.connect(forget_derived_state)
    app.on_partitions_assigned.connect(forget_derived_state)

    @app.timer(interval=settings.tick_interval_s)
    async def tick() -> None:
        now_ms = time.time_ns() // 1_000_000
        for partition in _owned(app, settings.topic):
            await beacons.send(value=tick_record(now_ms), partition=partition)

    watch = RecoveryWatch(settings.recovery_stall_s)

    @app.timer(interval=5.0)
    async def recovery_watchdog() -> None:
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its type
        if watch.stalled(recovery.in_recovery, recovery.active_offsets, time.monotonic()):
            log.error(
                "table recovery read nothing for %.0f s (a faust recovery hang): exiting with "
                "%d for the supervisor to restart this worker",
                settings.recovery_stall_s,
                EXIT_RECOVERY_STALLED,
            )
            logging.shutdown()
            os._exit(EXIT_RECOVERY_STALLED)

    @app.timer(interval=settings.flush_interval_s)
    async def flush() -> None:
        # Checkpoint every interval, paced or not: it bounds how many records wait for their
        # acks (and how much of the backlog a crash makes the next owner read again).
        agg.checkpoint()
        started = time.monotonic()
        busy = started - agg.last_beacons_at < settings.flush_interval_s
        if busy and started < agg.next_flush_at:
            return  # the last flush was long: keep flushes within their share of the time
        await agg.flush(_owned(app, settings.topic))
        took = time.monotonic() - started
        agg.next_flush_at = started + took / settings.flush_max_share
        agg.flush_seconds.observe(took)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # faust's web layer wants the charset apart from the content type
        return web.bytes(generate_latest(agg.registry), content_type=PROMETHEUS_TEXT)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "partitions": sorted(agg.parts)})

    return app


def _owned(app: faust.App, topic: str) -> set[int]:
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def main() -> None:
    settings = AggregatorSettings.from_env()
    use_uvloop()  # before faust makes its loops (the consumer's thread has one of its own)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="info")
    # The app, its tables' machinery and the imported modules live as long as the process.
    tune_gc()
    worker.execute_from_commandline()
