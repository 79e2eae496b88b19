"""The query API's settings, read from the environment once (`ApiSettings.from_env`).

Nothing else in `api` reads `os.environ`; the settings object is passed down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from api.live import Thresholds


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
    # The live page: how often the stream pushes (at most 2 s), how long a stream token
    # opens the stream, and the quality thresholds it colours (`api.live.Thresholds.parse`).
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
        host, _, port = env.get("PLAYPULSE_API_ADDR", f"{d.host}:{d.port}").rpartition(":")
        return cls(
            host=host or d.host,
            port=int(port),
            redis_url=env.get("PLAYPULSE_REDIS_URL", d.redis_url),
            redis_timeout_s=float(env.get("PLAYPULSE_API_REDIS_TIMEOUT_S", d.redis_timeout_s)),
            retry_after_s=int(env.get("PLAYPULSE_API_RETRY_AFTER_S", d.retry_after_s)),
            total_cache_s=float(env.get("PLAYPULSE_API_TOTAL_CACHE_S", d.total_cache_s)),
            registry_cache_s=float(env.get("PLAYPULSE_REGISTRY_CACHE_S", d.registry_cache_s)),
            live_interval_s=live_interval,
            live_token_ttl_s=int(env.get("PLAYPULSE_LIVE_TOKEN_TTL_S", d.live_token_ttl_s)),
            live_thresholds=Thresholds.parse(env.get("PLAYPULSE_LIVE_THRESHOLDS", "")),
        )
