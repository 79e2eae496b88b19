"""Request limits per API key and per client IP, shared by every API process through Redis.

A request with a private key counts against that key; a request without a key, with a CORS key
(embedded in public pages, so shared by every visitor of a site) or with an unknown key counts
against its client's IP, taken like the collector does (`ingest.enrich.client_ip`: the TCP peer,
or `X-Forwarded-For` when the peer is a trusted proxy).

The counting is the `limits` library's moving window (`MovingWindowRateLimiter`) on its redis-py
storage, over the API's own connection pool: one Redis list of request times per identity,
`pp:rl:LIMITER/{key|ip}/{id}/{amount}/{multiples}/{granularity}`, pushed, trimmed and given its
TTL by one Lua script (one key, so it runs on Redis Cluster), so every process sees the same
count. A request's hit runs that script of the library's directly, under the key the library
names (`RateLimitItem.key_for`): the library's own `hit` wraps the same call in layers that
cost the realtime endpoint about a tenth of its throughput; a refusal's Retry-After is asked of
the library (`get_window_stats`), which reads the same list. A refused request is answered 429 with `Retry-After` = the seconds until the oldest
request in the window leaves it. Redis errors are not caught here: the edge answers them 503.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final, Literal

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.bridge import RedisBridge
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from aggregator.redisclient import TurnPipeline

KEY_PREFIX: Final = "pp:rl"
OFF: Final = ("", "0", "off", "none")

Kind = Literal["key", "ip"]


class RateLimited(Exception):
    """The identity used up its limit; `retry_after_s` is a whole number of seconds, >= 1."""

    def __init__(self, kind: Kind, limit: str, retry_after_s: int) -> None:
        super().__init__(f"rate limit of {limit} per {kind} exceeded")
        self.kind = kind
        self.limit = limit
        self.retry_after_s = retry_after_s


def parse_limit(text: str) -> RateLimitItem | None:
    """`"600/minute"`, `"10 per second"`, `"100/5 seconds"` (limits' notation); None when off
    (`""`, `"0"`, `"off"`, `"none"`). ValueError on anything else."""
    if text.strip().lower() in OFF:
        return None
    return parse(text)


def retry_after_s(reset_s: float, now_s: float) -> int:
    """Whole seconds until `reset_s`, rounded up, at least 1 (a 0 would invite a retry storm)."""
    return max(1, math.ceil(reset_s - now_s))


@dataclass(frozen=True, slots=True)
class Identity:
    kind: Kind
    value: str


def identity(private_key_id: str | None, client_ip: str | None) -> Identity:
    """Whom a request counts against: its private key, else its client address."""
    if private_key_id is not None:
        return Identity("key", private_key_id)
    return Identity("ip", client_ip or "unknown")


class RateLimiter:
    """Checks and counts one request against its identity's limit (raises `RateLimited`)."""

    def __init__(
        self,
        redis: Redis,
        *,
        per_key: RateLimitItem | None,
        per_ip: RateLimitItem | None,
        turn: TurnPipeline | None = None,
    ) -> None:
        self._limits: dict[Kind, RateLimitItem | None] = {"key": per_key, "ip": per_ip}
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # limits types options as scalars
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._redis = redis
        self._acquire = redis.register_script(RedisBridge.SCRIPT_ACQUIRE_MOVING_WINDOW)
        # Hits go with the other commands asked for in their turn of the event loop.
        self._turn = turn or TurnPipeline(redis)

    async def hit(self, who: Identity) -> None:
        item = self._limits[who.kind]
        if item is None:
            return
        key = f"{KEY_PREFIX}:{item.key_for(who.kind, who.value)}"
        # EVALSHA by hand: a pipeline given the `Script` asks SCRIPT EXISTS every time.
        command = (
            "EVALSHA",
            self._acquire.sha,
            1,
            key,
            time.time(),
            item.amount,
            item.get_expiry(),
            1,
        )
        [acquired] = await self._turn.run([command], reads=False)
        if isinstance(acquired, NoScriptError):  # a restarted Redis forgot the script
            await self._redis.script_load(self._acquire.script)
            [acquired] = await self._turn.run([command], reads=False)
        if isinstance(acquired, Exception):
            raise acquired
        if acquired:
            return
        stats = await self._limiter.get_window_stats(item, who.kind, who.value)
        raise RateLimited(who.kind, str(item), retry_after_s(stats.reset_time, time.time()))
