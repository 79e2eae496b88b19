"""The query API's settings, read from the environment once (`ApiSettings.from_env`).

Nothing else in `api` reads `os.environ`; the settings object is passed down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from limits import RateLimitItem

from api.live import Thresholds
from api.ratelimit import parse_limit
from ingest.settings import IPNetwork, trusted_networks

DEFAULT_KEY_LIMIT: Final = parse_limit("1200/minute")
DEFAULT_IP_LIMIT: Final = parse_limit("300/minute")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A Redis call slower than this fails the request with 503 instead of hanging it.
    redis_timeout_s: float = 2.0
    retry_after_s: int = 5
    # How long the public all-time total of a playback is cached (and its Cache-Control max-age).
    total_cache_s: float = 60.0
    # How long playback -> creator lookups are cached (ownership checks of scoped keys).
    registry_cache_s: float = 30.0
    # How long a key found by its secret is remembered by the process: a revoked key stops
    # working within this long (0: look every request's key up in Redis).
    key_cache_s: float = 1.0
    # Memory for the encoded steps of combined breakdowns (`RollupReader`), LRU, in MiB
    # (0: none kept).
    query_cache_mib: float = 32.0
    # Requests per private key, and per client IP (no key, a CORS key or an unknown key);
    # None: unlimited. Counted in Redis, so shared by every API process.
    rate_limit_key: RateLimitItem | None = DEFAULT_KEY_LIMIT
    rate_limit_ip: RateLimitItem | None = DEFAULT_IP_LIMIT
    # Peers whose X-Forwarded-For names the client (the collector's setting, read the same way).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # How often the business gauges (concurrent viewers now) are read from Redis.
    gauges_interval_s: float = 5.0
    # The live page: how often the stream pushes (at most 2 s), how long a stream token
    # opens the stream, and the quality thresholds it colours (`api.live.Thresholds.parse`).
    # "keep": a metric asked for with no data, or an unknown dimension value, is null, as
    # Livepeer's server answers; "omit": left out of the row, for Livepeer's JS SDK.
    nulls: Literal["keep", "omit"] = "keep"
    live_interval_s: float = 1.0
    live_token_ttl_s: int = 600
    live_thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        d = cls()
        live_interval = float(env.get("PLAYPULSE_LIVE_INTERVAL_S", d.live_interval_s))
        if not 0.1 <= live_interval <= 2.0:
            raise ValueError(f"PLAYPULSE_LIVE_INTERVAL_S must be in [0.1, 2], not {live_interval}")
        raw_nulls = env.get("PLAYPULSE_API_NULLS", d.nulls)
        if raw_nulls not in ("keep", "omit"):
            raise ValueError(f"PLAYPULSE_API_NULLS must be keep or omit, not {raw_nulls!r}")
        nulls: Literal["keep", "omit"] = "omit" if raw_nulls == "omit" else "keep"
        host, _, port = env.get("PLAYPULSE_API_ADDR", f"{d.host}:{d.port}").rpartition(":")
        return cls(
            host=host or d.host,
            port=int(port),
            redis_url=env.get("PLAYPULSE_REDIS_URL", d.redis_url),
            redis_timeout_s=float(env.get("PLAYPULSE_API_REDIS_TIMEOUT_S", d.redis_timeout_s)),
            retry_after_s=int(env.get("PLAYPULSE_API_RETRY_AFTER_S", d.retry_after_s)),
            total_cache_s=float(env.get("PLAYPULSE_API_TOTAL_CACHE_S", d.total_cache_s)),
            registry_cache_s=float(env.get("PLAYPULSE_REGISTRY_CACHE_S", d.registry_cache_s)),
            key_cache_s=float(env.get("PLAYPULSE_API_KEY_CACHE_S", d.key_cache_s)),
            query_cache_mib=float(env.get("PLAYPULSE_API_QUERY_CACHE_MIB", d.query_cache_mib)),
            rate_limit_key=_limit(env, "PLAYPULSE_API_RATE_LIMIT_KEY", d.rate_limit_key),
            rate_limit_ip=_limit(env, "PLAYPULSE_API_RATE_LIMIT_IP", d.rate_limit_ip),
            trusted_proxies=trusted_networks(env.get("PLAYPULSE_TRUSTED_PROXIES", "")),
            gauges_interval_s=float(
                env.get("PLAYPULSE_API_GAUGES_INTERVAL_S", d.gauges_interval_s)
            ),
            nulls=nulls,
            live_interval_s=live_interval,
            live_token_ttl_s=int(env.get("PLAYPULSE_LIVE_TOKEN_TTL_S", d.live_token_ttl_s)),
            live_thresholds=Thresholds.parse(env.get("PLAYPULSE_LIVE_THRESHOLDS", "")),
        )


def _limit(
    env: Mapping[str, str], name: str, default: RateLimitItem | None
) -> RateLimitItem | None:
    if name not in env:
        return default
    try:
        return parse_limit(env[name])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
