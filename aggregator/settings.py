"""The aggregator's settings, read from the environment once (`AggregatorSettings.from_env`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aggregator.definitions import SessionPolicy
from aggregator.keys import MINUTE_RETENTION_S

MINUTE_RETENTION_MIN_S = 600


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    app_id: str = "playpulse-aggregator"
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic: str = "beacons"
    topic_partitions: int = 6
    views_topic: str = "views"
    host: str = "127.0.0.1"
    port: int = 8082
    # How often dirty rollups go to Redis, and how often each owned partition gets a tick
    # (a record carrying the time, so session timeouts are decided in-stream, replayably).
    flush_interval_s: float = 1.0
    tick_interval_s: float = 1.0
    # The most of a busy worker's time flushes may take: after a flush that took d seconds,
    # the next waits at least d / share - d while beacons keep coming (so a worker catching
    # up flushes less often instead of rewriting the same rows; one that has caught up, or
    # whose flushes are short, flushes every interval).
    flush_max_share: float = 0.25
    # Session rules (aggregator.definitions); the timeout is configurable, the rest are constants.
    session_timeout_s: float = 60.0
    # Kafka consumer-group session timeout: how long a dead worker keeps its partitions.
    group_session_timeout_s: float = 60.0
    # How long the concurrent-viewers series is kept in Redis (and in the worker's memory).
    concurrency_retention_s: int = 40 * 86_400
    # How long the minute rows (the live page's quality window) are kept in Redis, and the
    # per-minute contributions in each session, behind its newest beacon.
    minute_retention_s: int = MINUTE_RETENTION_S
    # A table recovery that reads nothing for this long is given up: the worker exits for its
    # supervisor to restart it (`aggregator.watchdog`).
    recovery_stall_s: float = 60.0
    # Where faust keeps its local state (tables are memory://; this is for its data dir).
    data_dir: str = ".state/aggregator"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AggregatorSettings:
        env = os.environ if env is None else env
        d = cls()
        host, _, port = env.get("PLAYPULSE_AGGREGATOR_ADDR", f"{d.host}:{d.port}").rpartition(":")
        state = env.get("PLAYPULSE_STATE", ".state")
        return cls(
            app_id=env.get("PLAYPULSE_AGGREGATOR_APP_ID", d.app_id),
            kafka_bootstrap=env.get("PLAYPULSE_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            redis_url=env.get("PLAYPULSE_REDIS_URL", d.redis_url),
            topic=env.get("PLAYPULSE_BEACONS_TOPIC", d.topic),
            topic_partitions=int(env.get("PLAYPULSE_BEACONS_PARTITIONS", d.topic_partitions)),
            views_topic=env.get("PLAYPULSE_VIEWS_TOPIC", d.views_topic),
            host=host or d.host,
            port=int(port),
            flush_interval_s=float(env.get("PLAYPULSE_FLUSH_INTERVAL_S", d.flush_interval_s)),
            tick_interval_s=float(env.get("PLAYPULSE_TICK_INTERVAL_S", d.tick_interval_s)),
            flush_max_share=float(env.get("PLAYPULSE_FLUSH_MAX_SHARE", d.flush_max_share)),
            session_timeout_s=float(env.get("PLAYPULSE_SESSION_TIMEOUT_S", d.session_timeout_s)),
            group_session_timeout_s=float(
                env.get("PLAYPULSE_AGGREGATOR_GROUP_SESSION_TIMEOUT_S", d.group_session_timeout_s)
            ),
            concurrency_retention_s=int(
                env.get("PLAYPULSE_CONCURRENCY_RETENTION_S", d.concurrency_retention_s)
            ),
            minute_retention_s=int(env.get("PLAYPULSE_MINUTE_RETENTION_S", d.minute_retention_s)),
            recovery_stall_s=float(env.get("PLAYPULSE_RECOVERY_STALL_S", d.recovery_stall_s)),
            data_dir=env.get("PLAYPULSE_AGGREGATOR_DATA_DIR", f"{state}/aggregator"),
        )

    def __post_init__(self) -> None:
        if not 0 < self.flush_max_share <= 1:
            raise ValueError("flush_max_share must be in (0, 1]")
        if self.minute_retention_s < MINUTE_RETENTION_MIN_S:
            raise ValueError(
                f"minute_retention_s must be at least {MINUTE_RETENTION_MIN_S} "
                "(the live page reads the last 6 minutes)"
            )

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy(timeout_ms=int(self.session_timeout_s * 1000))
