"""The collector's settings, read from the environment once (`IngestSettings.from_env`).

Nothing else in `ingest` reads `os.environ`; the settings object is passed down.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def trusted_networks(value: str) -> tuple[IPNetwork, ...]:
    """`PLAYPULSE_TRUSTED_PROXIES`: comma-separated CIDRs (or addresses) whose
    X-Forwarded-For is believed."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in _split(value))


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class GeoHeaders:
    """Names of the trusted CDN headers that carry a viewer's location (Livepeer's catalyst names)."""

    country_code: str = "X-City-Country-Code"
    subdivision: str = "X-Region-Name"
    timezone: str = "X-Time-Zone"
    latitude: str = "X-Latitude"
    longitude: str = "X-Longitude"


@dataclass(frozen=True, slots=True)
class IngestSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic: str = "beacons"
    topic_partitions: int = 6
    # Request limits: the body cap is checked against Content-Length before reading, and again while reading.
    max_body_bytes: int = 256 * 1024
    max_events: int = 1000
    # How long a request may wait for Kafka's acknowledgement before answering 503.
    produce_timeout_s: float = 5.0
    # How long an envelope may wait for others bound to the same partition (0: the loop's turn).
    batch_linger_ms: float = 0.0
    retry_after_s: int = 5
    # Enrichment.
    viewer_hash_salt: str = "playpulse"
    geoip_db: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    trust_cdn_geo_headers: bool = False
    geo_headers: GeoHeaders = field(default_factory=GeoHeaders)
    # Playback registry: refuse playback IDs that are not registered (403) when on.
    strict_playbacks: bool = False
    registry_cache_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        env = os.environ if env is None else env
        d = cls()
        host, _, port = env.get("PLAYPULSE_INGEST_ADDR", f"{d.host}:{d.port}").rpartition(":")
        return cls(
            host=host or d.host,
            port=int(port),
            kafka_bootstrap=env.get("PLAYPULSE_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            redis_url=env.get("PLAYPULSE_REDIS_URL", d.redis_url),
            topic=env.get("PLAYPULSE_BEACONS_TOPIC", d.topic),
            topic_partitions=int(env.get("PLAYPULSE_BEACONS_PARTITIONS", d.topic_partitions)),
            max_body_bytes=int(env.get("PLAYPULSE_INGEST_MAX_BODY_BYTES", d.max_body_bytes)),
            max_events=int(env.get("PLAYPULSE_INGEST_MAX_EVENTS", d.max_events)),
            produce_timeout_s=float(
                env.get("PLAYPULSE_INGEST_PRODUCE_TIMEOUT_S", d.produce_timeout_s)
            ),
            batch_linger_ms=float(env.get("PLAYPULSE_INGEST_BATCH_LINGER_MS", d.batch_linger_ms)),
            retry_after_s=int(env.get("PLAYPULSE_INGEST_RETRY_AFTER_S", d.retry_after_s)),
            viewer_hash_salt=env.get("PLAYPULSE_VIEWER_HASH_SALT", d.viewer_hash_salt),
            geoip_db=env.get("PLAYPULSE_GEOIP_DB") or None,
            trusted_proxies=trusted_networks(env.get("PLAYPULSE_TRUSTED_PROXIES", "")),
            trust_cdn_geo_headers=_bool(env.get("PLAYPULSE_TRUST_CDN_GEO_HEADERS", "0")),
            strict_playbacks=_bool(env.get("PLAYPULSE_STRICT_PLAYBACKS", "0")),
            registry_cache_s=float(env.get("PLAYPULSE_REGISTRY_CACHE_S", d.registry_cache_s)),
        )
