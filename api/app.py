"""The query API's HTTP edge: Livepeer's metrics endpoints under `/api`, answered from Redis.

Rollups are read only through `aggregator.store` (`RollupReader`, `RealtimeReader`), playbacks
through `ingest.registry`. Parameters are checked by `api.params`, keys by `api.auth`; their
errors, and Redis being unreachable, are mapped to HTTP here, once, in `_edge`: 400 naming each
bad parameter, 401/403 from the key, 404, 429 with Retry-After from the rate limits
(`api.ratelimit`), 503 with Retry-After; never a stack trace. The OpenAPI description of it all
(`api.openapi`) is served at `/openapi.json`.

CORS: only the endpoints a CORS key may call (`/data/views/query/creator`, the public total)
answer preflights and carry `Access-Control-Allow-Origin`: the request's origin when a CORS key
allowed it, `*` on the public total called without a key. No response sets
`Access-Control-Allow-Credentials`: keys travel in the Authorization header, not in cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from cachetools import TTLCache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aggregator import redisclient
from aggregator.definitions import CONCURRENCY_WINDOW_MS
from aggregator.fragments import without_nulls
from aggregator.keys import ALIVE_KEY
from aggregator.redisclient import TurnPipeline
from aggregator.store import ALL_FIELDS, ConcurrencyReader, RealtimeReader, RollupReader
from aggregator.timebuckets import Step, steps
from api import live, openapi, params, playbacks
from api.auth import (
    ApiKey,
    AuthError,
    KnownKeys,
    bearer_secret,
    issue_live_token,
    key_by_id,
    normalize_origin,
    redeem_live_token,
)
from api.metrics import ApiMetrics
from api.ratelimit import RateLimited, RateLimiter, identity
from api.settings import ApiSettings
from ingest.app import serve
from ingest.enrich import client_ip
from ingest.registry import PlaybackRegistry, RegistryConflict

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], int]
Access = Literal["private", "cors", "public", "admin"]
Snapshot = dict[str, Any]

SETTINGS = web.AppKey("settings", ApiSettings)
METRICS = web.AppKey("metrics", ApiMetrics)
REDIS = web.AppKey("redis", Redis)
CORS_ORIGIN = web.RequestKey("cors_origin", str)
LIVE_STOP = web.AppKey("live_stop", asyncio.Event)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The live page loads only its own files; the key in its URL fragment never reaches a server,
# and no Referer carries the page's URL anywhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
LIVE_KEY_RECHECK_S = 15.0  # an open stream ends this long at most after its key is revoked
LIVE_RETRY_MS = 2_000  # EventSource's reconnection delay

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}

_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class NotFound(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _errors(status: int, *problems: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"errors": list(problems)}, headers)


def _check_rows(count: int) -> None:
    if count > params.MAX_ROWS:
        raise params.InvalidQuery(
            [
                f"{params.BREAKDOWN_PARAM}: the result has {count} rows, more than "
                f"{params.MAX_ROWS}; narrow from/to, use a coarser timeStep or fewer breakdowns"
            ]
        )


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _dims_key(values: Sequence[str | None]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is not None, v or "") for v in values)


def _playing_ms(row: dict[str, Any]) -> int:
    # playtimeMins is playing_ms / 60000 of an integer sum: multiplying back is exact.
    minutes: float = row["playtimeMins"]
    return round(minutes * 60_000)


def sum_additive(
    rows: Sequence[dict[str, Any]], dims: Sequence[str], *, by_time: bool = False
) -> list[dict[str, Any]]:
    """viewCount and playtimeMins summed per breakdown tuple (and `timestamp`, if `by_time`),
    exactly: minutes are summed as integer milliseconds."""
    totals: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        slot = (row["timestamp"] if by_time else 0, *(row[d] for d in dims))
        total = totals.setdefault(slot, [0, 0])
        total[0] += row["viewCount"]
        total[1] += _playing_ms(row)
    out = []
    for slot in sorted(totals, key=lambda s: (s[0], _dims_key(s[1:]))):
        views, playing_ms = totals[slot]
        row = {"timestamp": slot[0]} if by_time else {}
        row.update(zip(dims, slot[1:], strict=True))
        row.update(viewCount=views, playtimeMins=playing_ms / 60_000)
        out.append(row)
    return out


def usage_row(row: dict[str, Any], *, by_time: bool, by_creator: bool) -> dict[str, Any]:
    """Livepeer's `usage-metric`. We deliver but neither transcode nor store: those are 0."""
    out: dict[str, Any] = {}
    if by_time:
        out["TimeInterval"] = row["timestamp"]
    if by_creator:
        out["CreatorID"] = row["creatorId"]
    out["DeliveryUsageMins"] = row["playtimeMins"]
    out["TotalUsageMins"] = 0.0
    out["StorageUsageMins"] = 0.0
    return out


class Api:
    """The request handlers; one per application, holding its readers."""

    def __init__(self, app: web.Application, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        redis = app[REDIS]
        settings = app[SETTINGS]
        # One pipeline per event-loop turn for the rate-limit hits and the rollups' generation
        # reads: a query's hit and its first reads travel together.
        # Its own client, without redis-py's timeout per answer: the pipeline has one deadline.
        # A pipeline that finds its connection closed (Redis restarted while it sat in the
        # pool: the live-page test saw the first query after a restart answer 503) is sent
        # once more on a new connection, by redis-py. A hit lost with a connection mid-answer
        # may so be counted twice: over the limit sooner, never later.
        self.turn_redis = redisclient.without_read_timeout(redis, retry=Retry(NoBackoff(), 1))
        turn = TurnPipeline(self.turn_redis, timeout_s=settings.redis_timeout_s)
        self.rollups = RollupReader(
            redis, cache_bytes=int(settings.query_cache_mib * 2**20), turn=turn
        )
        self.realtime = RealtimeReader(redis, CONCURRENCY_WINDOW_MS)
        self.concurrency = ConcurrencyReader(redis)
        self.registry = PlaybackRegistry(redis, cache_s=settings.registry_cache_s)
        self.keys = KnownKeys(redis, settings.key_cache_s)
        self.limiter = RateLimiter(
            redis, per_key=settings.rate_limit_key, per_ip=settings.rate_limit_ip, turn=turn
        )
        self.totals: TTLCache[str, dict[str, Any]] = TTLCache(
            10_000, settings.total_cache_s, timer=time.monotonic
        )
        # One Redis read per scope and interval, shared by every stream watching that scope.
        self.live_reads: TTLCache[tuple[str | None, str | None], asyncio.Future[Snapshot]] = (
            TTLCache(10_000, settings.live_interval_s / 2, timer=time.monotonic)
        )
        self.openapi = orjson.dumps(openapi.document())

    async def _redis(self, op: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self.app[METRICS].redis_seconds.labels(op).observe(time.perf_counter() - started)

    async def _count(self, request: web.Request, key: ApiKey | None) -> None:
        """Counts the request against its private or admin key, else its client IP (429 when
        over)."""
        private_id = key.key_id if key is not None and key.kind != "cors" else None
        ip = None
        if private_id is None:
            forwarded = ", ".join(request.headers.getall("X-Forwarded-For", [])) or None
            ip = client_ip(request.remote, forwarded, self.app[SETTINGS].trusted_proxies)
        await self._redis("ratelimit", self.limiter.hit(identity(private_id, ip)))

    async def _authorize(self, request: web.Request, access: Access) -> ApiKey | None:
        """The request's key (None: public access without one), counted against its limit."""
        secret, key = await self._lookup(request, access)
        await self._count(request, key)  # an unknown key counts against its IP: no guessing
        self._check_key(request, access, secret, key)
        return key

    async def _authorize_deferred(
        self, request: web.Request, access: Access
    ) -> tuple[ApiKey | None, asyncio.Task[None]]:
        """`_authorize`, with the count under way rather than done: the request's key and its
        rate-limit hit, which the caller must await (it raises `RateLimited`) before it
        answers or does anything costly. A hit sent in the same turn of the event loop as the
        caller's first reads goes to Redis in the same round trip (`TurnPipeline`)."""
        secret, key = await self._lookup(request, access)
        # An unknown key counts against its IP: no guessing.
        counted = asyncio.ensure_future(self._count(request, key))
        try:
            self._check_key(request, access, secret, key)
        except BaseException:
            await counted  # over the limit is answered first, as if counted before checking
            raise
        return key, counted

    async def _lookup(
        self, request: web.Request, access: Access
    ) -> tuple[str | None, ApiKey | None]:
        """The request's bearer secret and the key it names (None: unknown, or no secret)."""
        secret = bearer_secret(request.headers.get("Authorization"))
        if secret is not None:
            return secret, await self._redis("auth", self.keys.lookup(secret))
        if access != "public":  # not counted: nothing was looked up
            raise AuthError(401, "authorization: an API key is required (Bearer <key>)")
        return None, None

    @staticmethod
    def _check_key(
        request: web.Request, access: Access, secret: str | None, key: ApiKey | None
    ) -> None:
        if secret is None:
            return  # public access (`_authorize_deferred` refused the others)
        if key is None:
            raise AuthError(401, "authorization: unknown or revoked API key")
        if access == "admin" and key.kind != "admin":
            raise AuthError(403, "authorization: this endpoint needs an admin key")
        if key.kind == "admin" and access != "admin":
            raise AuthError(403, "authorization: admin keys open only /api/admin endpoints")
        if key.kind == "cors":
            if access == "private":
                raise AuthError(403, "authorization: CORS keys cannot call this endpoint")
            origin = request.headers.get("Origin")
            try:
                allowed = origin is not None and normalize_origin(origin) in key.origins
            except ValueError:
                allowed = False
            if not allowed or origin is None:
                raise AuthError(403, f"origin: {origin!r} is not allowed for this API key")
            request[CORS_ORIGIN] = origin

    @staticmethod
    def _creator(key: ApiKey | None, asked: str | None) -> str | None:
        """The creator filter: a scoped key's own creator, whatever was asked (403 if other)."""
        if key is None or key.creator_id is None:
            return asked
        if asked is not None and asked != key.creator_id:
            raise AuthError(403, "creatorId: this API key sees only its own creator's data")
        return key.creator_id

    async def _within_creator(
        self, key: ApiKey | None, playback_id: str | None, creator_id: str | None
    ) -> tuple[str | None, bool]:
        """(creatorId to read, whether anyone can match) for data kept per scope (realtime
        sets, concurrency counts): a playbackId within a creator reads the playback's scope
        when the playback is that creator's, else matches nobody."""
        if playback_id is None:
            return creator_id, True
        await self._check_owner(key, playback_id, "playbackId")
        if creator_id is None:
            return None, True
        playback = await self._redis("registry", self.registry.lookup(playback_id))
        return None, playback is not None and playback.creator_id == creator_id

    async def _check_owner(self, key: ApiKey | None, playback_id: str, param: str) -> None:
        if key is None or key.creator_id is None:
            return
        playback = await self._redis("registry", self.registry.lookup(playback_id))
        if playback is None or playback.creator_id != key.creator_id:
            raise AuthError(403, f"{param}: not a playback of this API key's creator")

    async def _target(self, key: ApiKey | None, q: params.ViewsQuery) -> str | None:
        """The playback a views query is about: given, or resolved from its asset or stream."""
        if q.asset_id is not None:
            param, found = "assetId", self.registry.playback_for_asset(q.asset_id)
        elif q.stream_id is not None:
            param, found = "streamId", self.registry.playback_for_stream(q.stream_id)
        elif q.playback_id is not None:
            await self._check_owner(key, q.playback_id, "playbackId")
            return q.playback_id
        else:
            return None
        playback_id = await self._redis("registry", found)
        if playback_id is None:
            raise NotFound(f"{param}: {q.asset_id or q.stream_id!r} not found")
        await self._check_owner(key, playback_id, param)
        return playback_id

    async def _viewership(self, step: Step | None, **kw: Any) -> list[dict[str, Any]]:
        rows = await self._redis("viewership", self.rollups.viewership(step=step, **kw))
        _check_rows(len(rows))
        return rows

    async def views_query(self, request: web.Request) -> web.Response:
        # The rate-limit hit and the query's first reads share a round trip: the hit is
        # awaited before the query does anything else (and before any answer, 400s too).
        key, counted = await self._authorize_deferred(request, "private")
        try:
            q = params.views_query(request.query.items(), self.clock())
            creator_id = self._creator(key, q.creator_id)
            playback_id = await self._target(key, q)
            answer = await self._redis(
                "viewership",
                self.rollups.viewership_json(
                    step=q.time_step,  # without a step: one row per tuple for the whole range
                    from_ms=q.from_ms,
                    to_ms=q.to_ms,
                    breakdown=q.breakdown,
                    playback_id=playback_id,
                    creator_id=creator_id,
                    fields=ALL_FIELDS,
                    omit_nulls=self.app[SETTINGS].nulls == "omit",
                    admitted=counted,
                ),
            )
        finally:
            await counted  # RateLimited, if over, is the answer
        _check_rows(answer.rows)
        # Encoded by the reader (combined breakdowns spliced from steps kept encoded).
        return web.Response(body=answer.body, content_type="application/json")

    def _nulls(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return without_nulls(rows) if self.app[SETTINGS].nulls == "omit" else rows

    async def creator_query(self, request: web.Request) -> web.Response:
        key = await self._authorize(request, "cors")
        q = params.creator_query(request.query.items(), self.clock())
        creator_id = self._creator(key, q.creator_id)
        playback_id = await self._target(key, q)
        rows = await self._viewership(
            q.time_step,
            from_ms=q.from_ms,
            to_ms=q.to_ms,
            breakdown=q.breakdown,
            playback_id=playback_id,
            creator_id=creator_id,
            fields=(),
        )
        # Only viewCount and playtimeMins (Livepeer's detailed=false), per step when one is given.
        summed = sum_additive(rows, q.breakdown, by_time=q.time_step is not None)
        return _json(200, self._nulls(summed))

    async def views_now(self, request: web.Request) -> web.Response:
        key = await self._authorize(request, "private")
        q = params.now_query(request.query.items())
        creator_id, anyone = await self._within_creator(
            key, q.playback_id, self._creator(key, q.creator_id)
        )
        if not anyone:
            return _json(200, [] if q.breakdown else [{"viewCount": 0, "errorRate": 0.0}])
        rows = await self._redis(
            "now",
            self.realtime.now(
                self.clock(),
                breakdown=q.breakdown,
                playback_id=q.playback_id,
                creator_id=creator_id,
            ),
        )
        return _json(200, self._nulls(rows))

    async def views_concurrent(self, request: web.Request) -> web.Response:
        """Peak concurrent viewers per minute or hour (ours, beyond Livepeer): a bare array of
        `{"timestamp", "peakConcurrentViewers"}`, one per step of the range, zeros included."""
        key = await self._authorize(request, "private")
        now_ms = self.clock()
        q = params.concurrent_query(request.query.items(), now_ms)
        creator_id, anyone = await self._within_creator(
            key, q.playback_id, self._creator(key, q.creator_id)
        )
        if not anyone:
            nobody = [
                {"timestamp": start, "peakConcurrentViewers": 0}
                for start in steps(q.from_ms, q.to_ms, q.time_step)
            ]
            return _json(200, nobody)
        rows = await self._redis(
            "concurrent",
            self.concurrency.peaks(
                step=q.time_step,
                from_ms=q.from_ms,
                to_ms=q.to_ms,
                playback_id=q.playback_id,
                creator_id=creator_id,
                now_ms=now_ms,
            ),
        )
        return _json(200, rows)

    async def views_total(self, request: web.Request) -> web.Response:
        request[CORS_ORIGIN] = "*"  # public data; a CORS key narrows it to its origin
        await self._authorize(request, "public")
        playback_id = params.playback_path(request.match_info["playbackId"])
        cache_s = self.app[SETTINGS].total_cache_s
        headers = {"Cache-Control": f"public, max-age={int(cache_s)}"}
        cached = self.totals.get(playback_id)
        if cached is not None:
            return _json(200, cached, headers)
        now_ms = self.clock()
        rows = await self._viewership(
            None,
            from_ms=max(0, now_ms - params.RETAINED_MS),
            to_ms=now_ms,
            playback_id=playback_id,
            fields=(),
        )
        total = sum_additive(rows, ()) or [{"viewCount": 0, "playtimeMins": 0.0}]
        body = {"playbackId": playback_id, **total[0]}
        self.totals[playback_id] = body
        return _json(200, body, headers)

    async def usage_query(self, request: web.Request) -> web.Response:
        key = await self._authorize(request, "private")
        q = params.usage_query(request.query.items(), self.clock())
        creator_id = self._creator(key, q.creator_id)
        rows = await self._viewership(
            q.time_step,
            from_ms=q.from_ms,
            to_ms=q.to_ms,
            breakdown=q.breakdown,
            creator_id=creator_id,
            fields=(),
        )
        by_time, by_creator = q.time_step is not None, bool(q.breakdown)
        summed = sum_additive(rows, q.breakdown, by_time=by_time)
        if not by_time and not by_creator:
            total = summed[0] if summed else {"playtimeMins": 0.0}
            return _json(200, usage_row(total, by_time=False, by_creator=False))
        out = [usage_row(r, by_time=by_time, by_creator=by_creator) for r in summed]
        return _json(200, self._nulls(out))

    # -- the live page -----------------------------------------------------------------------

    async def live_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "live.html", headers=PAGE_HEADERS)

    @staticmethod
    def _live_allowed(key: ApiKey) -> None:
        # A CORS key lives in web pages: it may watch live only when scoped to one creator.
        if key.kind == "cors" and key.creator_id is None:
            raise AuthError(
                403, "authorization: a CORS key must be scoped to a creator to watch live"
            )

    async def live_token(self, request: web.Request) -> web.Response:
        """`POST /api/live/token[?playbackId=...|?creatorId=...]` with the key as a bearer
        header: a token for the stream's URL. The filter is checked here too, so that a page
        learns of a refused filter (EventSource does not show a stream's status)."""
        key = await self._authorize(request, "cors")
        assert key is not None  # "cors" access requires a key
        self._live_allowed(key)
        await self._live_scope(key, params.live_query(request.query.items()))
        ttl_s = self.app[SETTINGS].live_token_ttl_s
        token = await self._redis("auth", issue_live_token(self.app[REDIS], key, ttl_s))
        body = {"token": token, "expiresInS": ttl_s, "kind": key.kind, "creatorId": key.creator_id}
        return _json(200, body, {"Cache-Control": "no-store"})

    async def _live_scope(self, key: ApiKey, q: params.LiveQuery) -> tuple[str | None, str | None]:
        """(playbackId, creatorId) the stream reads: a scoped key's own creator, or one of its
        playbacks (403 for anything else)."""
        creator_id = self._creator(key, q.creator_id)
        if q.playback_id is not None:
            await self._check_owner(key, q.playback_id, "playbackId")
            return q.playback_id, None
        return None, creator_id

    async def _read_live(self, playback_id: str | None, creator_id: str | None) -> Snapshot:
        now_ms = self.clock()
        scope = {"playbackId": playback_id, "creatorId": creator_id}
        reads = [
            self.realtime.now(
                now_ms, breakdown=dims, playback_id=playback_id, creator_id=creator_id
            )
            for dims in [(), *((dim,) for _, dim in live.BREAKDOWNS)]
        ]
        realtime, qoe_rows, minute_peaks, last_beacon = await self._redis(
            "live",
            asyncio.gather(
                asyncio.gather(*reads),
                self.rollups.minutes(
                    from_ms=live.qoe_window(now_ms)[0],
                    to_ms=now_ms,
                    fields=live.QOE_FIELDS,
                    playback_id=playback_id,
                    creator_id=creator_id,
                ),
                self.concurrency.peaks(
                    step="minute",
                    from_ms=now_ms - live.CHART_RANGE_MS,
                    to_ms=now_ms,
                    playback_id=playback_id,
                    creator_id=creator_id,
                    now_ms=now_ms,
                ),
                self.realtime.last_seen(playback_id=playback_id, creator_id=creator_id),
            ),
        )
        total, *broken = realtime
        settings = self.app[SETTINGS]
        return live.snapshot(
            now_ms=now_ms,
            total=total,
            breakdowns={dim: rows for (_, dim), rows in zip(live.BREAKDOWNS, broken, strict=True)},
            qoe_rows=qoe_rows,
            minute_peaks=minute_peaks,
            last_beacon_ms=last_beacon,
            thresholds=settings.live_thresholds,
            scope=scope,
            interval_ms=round(settings.live_interval_s * 1000),
        )

    async def _live_snapshot(self, playback_id: str | None, creator_id: str | None) -> Snapshot:
        scope = (playback_id, creator_id)
        read = self.live_reads.get(scope)
        if read is None:
            read = asyncio.ensure_future(self._read_live(playback_id, creator_id))
            self.live_reads[scope] = read
        return await asyncio.shield(read)

    async def live_stream(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/live/stream?token=...[&playbackId=...|&creatorId=...]`: Server-Sent Events,
        a whole `snapshot` every interval, `unavailable` while Redis cannot be read, `revoked`
        (then the end) when the key is revoked. The stream ends when the API shuts down; the
        browser's EventSource reconnects by itself."""
        q = params.live_query(request.query.items())
        if q.token is None:
            raise AuthError(401, "token: required (POST /api/live/token with your API key)")
        redis = self.app[REDIS]
        key = await self._redis("auth", redeem_live_token(redis, q.token))
        if key is None:
            raise AuthError(401, "token: unknown or expired live token, or its key was revoked")
        self._live_allowed(key)
        playback_id, creator_id = await self._live_scope(key, q)
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
        origin = request.headers.get("Origin")
        if key.kind == "cors" and origin is not None:
            try:
                allowed = normalize_origin(origin) in key.origins
            except ValueError:
                allowed = False
            if not allowed:
                raise AuthError(403, f"origin: {origin!r} is not allowed for this API key")
            headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        metrics, stop = self.app[METRICS], self.app[LIVE_STOP]
        interval_s = self.app[SETTINGS].live_interval_s
        loop = asyncio.get_running_loop()
        metrics.live_streams.inc()
        retry: int | None = LIVE_RETRY_MS
        checked = started = loop.time()
        try:
            while not stop.is_set():
                try:
                    chunk = live.sse(
                        "snapshot",
                        await self._live_snapshot(playback_id, creator_id),
                        retry_ms=retry,
                    )
                except RedisError:
                    problem = {"serverTime": self.clock(), "errors": ["redis: not reachable"]}
                    chunk = live.sse("unavailable", problem, retry_ms=retry)
                retry = None
                await response.write(chunk)
                if loop.time() - checked >= LIVE_KEY_RECHECK_S:
                    checked = loop.time()
                    try:
                        revoked = await key_by_id(redis, key.key_id) is None
                    except RedisError:
                        revoked = False  # cannot tell now; the next check will
                    if revoked:
                        await response.write(live.sse("revoked", {"serverTime": self.clock()}))
                        break
                started += interval_s
                delay = max(0.0, started - loop.time())
                if delay == 0.0:
                    started = loop.time()  # fell behind: do not burst to catch up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            metrics.live_streams.dec()
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        headers = dict(PREFLIGHT_HEADERS)
        origin = request.headers.get("Origin")
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
        return web.Response(status=204, headers=headers)

    async def refresh_gauges(self) -> None:
        """Reads the business gauges from Redis once (RedisError when it cannot)."""
        metrics = self.app[METRICS]
        viewers, erroring = await self._redis("gauges", self.realtime.totals(self.clock()))
        metrics.concurrent_viewers.set(viewers)
        metrics.concurrent_viewers_erroring.set(erroring)
        metrics.gauges_refreshed.set(time.time())

    async def keep_gauges(self, interval_s: float) -> None:
        """Refreshes the gauges every `interval_s` until cancelled, so a scrape never waits on
        Redis; while Redis is unreachable they keep their last values (see the refresh time)."""
        while True:
            try:
                await self.refresh_gauges()
            except RedisError as exc:
                log.warning("gauges not refreshed: %s", exc)
            await asyncio.sleep(interval_s)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        # Reads one key (the aggregator's restart marker; absent is fine): Redis answers reads.
        # The API benchmark's trivial baseline is this route.
        try:
            await self._redis("ready", self.app[REDIS].get(ALIVE_KEY))
        except RedisError:
            return _errors(503, "redis: not reachable")
        return _json(200, {"status": "ready"})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type="application/json")

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.app[METRICS].registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    # -- the playback registry, for admin keys (`api.playbacks`, `ingest.registry`) ----------

    async def admin_list_playbacks(self, request: web.Request) -> web.Response:
        await self._authorize(request, "admin")
        q = playbacks.list_query(request.query.items())
        page = await self._redis("registry", self.registry.page(after=q.cursor, limit=q.limit))
        body = {"playbacks": [p.to_json() for p in page.playbacks], "nextCursor": page.next_cursor}
        return _json(200, body)

    async def admin_get_playback(self, request: web.Request) -> web.Response:
        await self._authorize(request, "admin")
        playback_id = params.playback_path(request.match_info["playbackId"])
        playback = await self._redis("registry", self.registry.fetch(playback_id))
        if playback is None:
            raise NotFound(f"playbackId: {playback_id!r} not found")
        return _json(200, playback.to_json())

    async def admin_put_playback(self, request: web.Request) -> web.Response:
        await self._authorize(request, "admin")
        playback_id = params.playback_path(request.match_info["playbackId"])
        body = await _read_body(request, playbacks.MAX_BODY_BYTES)
        playback = playbacks.playback_body(playback_id, body)
        created = await self._redis("registry", self.registry.put(playback))
        return _json(201 if created else 200, playback.to_json())

    async def admin_delete_playback(self, request: web.Request) -> web.Response:
        await self._authorize(request, "admin")
        playback_id = params.playback_path(request.match_info["playbackId"])
        if not await self._redis("registry", self.registry.remove(playback_id)):
            raise NotFound(f"playbackId: {playback_id!r} not found")
        return web.Response(status=204)


async def _read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The body, refused (413) past `limit_bytes` by its Content-Length or as it is read."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise playbacks.BodyTooLarge(limit_bytes)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit_bytes:
            raise playbacks.BodyTooLarge(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def _edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Maps every error to `{"errors": [...]}` once, adds CORS headers, counts the request."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except params.InvalidQuery as exc:
        response = _errors(400, *exc.problems)
    except AuthError as exc:
        response = _errors(exc.status, exc.reason)
    except NotFound as exc:
        response = _errors(404, exc.reason)
    except RegistryConflict as exc:
        response = _errors(409, str(exc))
    except playbacks.BodyTooLarge as exc:
        response = _errors(413, str(exc))
    except RateLimited as exc:
        response = _errors(
            429,
            f"{exc}; retry in {exc.retry_after_s} s",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    except RedisError:
        log.warning("redis unreachable", exc_info=True)
        retry = str(request.app[SETTINGS].retry_after_s)
        response = _errors(
            503, "metrics store unavailable, retry later", headers={"Retry-After": retry}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep what the exception says besides its body, e.g. a 405's `Allow` (RFC 9110).
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        response = _errors(exc.status, exc.reason, headers=kept)
    except Exception:
        log.exception("unhandled error")
        response = _errors(500, "internal error")
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        if origin != "*":
            response.headers["Vary"] = "Origin"
    metrics, route = request.app[METRICS], _route(request)
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
    return response


def create_app(
    settings: ApiSettings,
    *,
    metrics: ApiMetrics | None = None,
    redis: Redis | None = None,
    clock: Clock = _wall_clock_ms,
) -> web.Application:
    """The API application. An injected `redis` is the caller's to close."""
    app = web.Application(middlewares=[_edge])
    app[SETTINGS] = settings
    app[METRICS] = metrics or ApiMetrics.create()
    app[LIVE_STOP] = asyncio.Event()
    owns_redis = redis is None
    app[REDIS] = redis or redisclient.connect(  # commands packed by hiredis
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    api = Api(app, clock)
    r = app.router
    r.add_get("/api/data/views/query", api.views_query)
    r.add_get("/api/data/views/now", api.views_now)
    r.add_get("/api/data/views/concurrent", api.views_concurrent)
    r.add_get("/api/data/views/query/creator", api.creator_query)
    r.add_route("OPTIONS", "/api/data/views/query/creator", api.preflight)
    r.add_get("/api/data/views/query/total/{playbackId}", api.views_total)
    r.add_route("OPTIONS", "/api/data/views/query/total/{playbackId}", api.preflight)
    r.add_get("/api/data/usage/query", api.usage_query)
    r.add_get("/live", api.live_page)
    r.add_static("/live/static/", STATIC_DIR, append_version=False)
    r.add_post("/api/live/token", api.live_token)
    r.add_route("OPTIONS", "/api/live/token", api.preflight)
    r.add_get("/api/live/stream", api.live_stream)
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_get("/metrics", api.metrics_view)
    r.add_get("/openapi.json", api.openapi_json)
    r.add_get("/api/admin/playbacks", api.admin_list_playbacks)
    r.add_get("/api/admin/playbacks/{playbackId}", api.admin_get_playback)
    r.add_put("/api/admin/playbacks/{playbackId}", api.admin_put_playback)
    r.add_delete("/api/admin/playbacks/{playbackId}", api.admin_delete_playback)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        gauges = asyncio.create_task(api.keep_gauges(settings.gauges_interval_s))
        yield
        gauges.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gauges
        await api.turn_redis.aclose()
        if owns_redis:
            await app[REDIS].aclose()

    async def end_streams(app: web.Application) -> None:
        app[LIVE_STOP].set()  # open live streams return; their browsers reconnect elsewhere

    app.on_shutdown.append(end_streams)
    app.cleanup_ctx.append(lifespan)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = ApiSettings.from_env()
    serve(create_app(settings), settings.host, settings.port)
