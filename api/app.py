"""The query API's HTTP edge: Livepeer's metrics endpoints under `/api`, answered from Redis.

Rollups are read only through `aggregator.store` (`RollupReader`, `RealtimeReader`), playbacks
through `ingest.registry`. Parameters are checked by `api.params`, keys by `api.auth`; their
errors, and Redis being unreachable, are mapped to HTTP here, once, in `_edge`: 400 naming each
bad parameter, 401/403 from the key, 404, 503 with Retry-After; never a stack trace.

CORS: only the endpoints a CORS key may call (`/data/views/query/creator`, the public total)
answer preflights and carry `Access-Control-Allow-Origin`: the request's origin when a CORS key
allowed it, `*` on the public total called without a key. No response sets
`Access-Control-Allow-Credentials`: keys travel in the Authorization header, not in cookies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from cachetools import TTLCache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aggregator.definitions import CONCURRENCY_WINDOW_MS
from aggregator.keys import ALIVE_KEY
from aggregator.store import ALL_FIELDS, RealtimeReader, RollupReader
from aggregator.timebuckets import Step
from api import params
from api.auth import ApiKey, AuthError, bearer_secret, lookup_key, normalize_origin
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from ingest.app import serve
from ingest.registry import PlaybackRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], int]
Access = Literal["private", "cors", "public"]

SETTINGS = web.AppKey("settings", ApiSettings)
METRICS = web.AppKey("metrics", ApiMetrics)
REDIS = web.AppKey("redis", Redis)
CORS_ORIGIN = web.RequestKey("cors_origin", str)

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


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


def _without_nulls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Livepeer's schemas declare no nullable field and its JS SDK refuses a null: a metric with
    no data, or a dimension whose value is unknown, is left out of its row instead."""
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


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
        self.rollups = RollupReader(redis)
        self.realtime = RealtimeReader(redis, CONCURRENCY_WINDOW_MS)
        self.registry = PlaybackRegistry(redis, cache_s=settings.registry_cache_s)
        self.totals: TTLCache[str, dict[str, Any]] = TTLCache(
            10_000, settings.total_cache_s, timer=time.monotonic
        )

    async def _redis(self, op: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self.app[METRICS].redis_seconds.labels(op).observe(time.perf_counter() - started)

    async def _authorize(self, request: web.Request, access: Access) -> ApiKey | None:
        secret = bearer_secret(request.headers.get("Authorization"))
        if secret is None:
            if access == "public":
                return None
            raise AuthError(401, "authorization: an API key is required (Bearer <key>)")
        key = await self._redis("auth", lookup_key(self.app[REDIS], secret))
        if key is None:
            raise AuthError(401, "authorization: unknown or revoked API key")
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
        return key

    @staticmethod
    def _creator(key: ApiKey | None, asked: str | None) -> str | None:
        """The creator filter: a scoped key's own creator, whatever was asked (403 if other)."""
        if key is None or key.creator_id is None:
            return asked
        if asked is not None and asked != key.creator_id:
            raise AuthError(403, "creatorId: this API key sees only its own creator's data")
        return key.creator_id

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
        if len(rows) > params.MAX_ROWS:
            raise params.InvalidQuery(
                [
                    f"{params.BREAKDOWN_PARAM}: the result has {len(rows)} rows, more than "
                    f"{params.MAX_ROWS}; narrow from/to, use a coarser timeStep or fewer breakdowns"
                ]
            )
        return rows

    async def views_query(self, request: web.Request) -> web.Response:
        key = await self._authorize(request, "private")
        q = params.views_query(request.query.items(), self.clock())
        creator_id = self._creator(key, q.creator_id)
        playback_id = await self._target(key, q)
        rows = await self._viewership(
            q.time_step,  # without a step: one row per tuple for the whole range
            from_ms=q.from_ms,
            to_ms=q.to_ms,
            breakdown=q.breakdown,
            playback_id=playback_id,
            creator_id=creator_id,
            fields=ALL_FIELDS,
        )
        return _json(200, _without_nulls(rows))

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
        return _json(200, _without_nulls(summed))

    async def views_now(self, request: web.Request) -> web.Response:
        key = await self._authorize(request, "private")
        q = params.now_query(request.query.items())
        creator_id = self._creator(key, q.creator_id)
        if q.playback_id is not None:
            await self._check_owner(key, q.playback_id, "playbackId")
            if creator_id is not None:
                # Realtime sets are per scope: a playback within a creator is the playback's,
                # when it is that creator's, else nothing.
                playback = await self._redis("registry", self.registry.lookup(q.playback_id))
                if playback is None or playback.creator_id != creator_id:
                    empty = [] if q.breakdown else [{"viewCount": 0, "errorRate": 0.0}]
                    return _json(200, empty)
                creator_id = None
        rows = await self._redis(
            "now",
            self.realtime.now(
                self.clock(),
                breakdown=q.breakdown,
                playback_id=q.playback_id,
                creator_id=creator_id,
            ),
        )
        return _json(200, _without_nulls(rows))

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
        return _json(200, _without_nulls(out))

    async def preflight(self, request: web.Request) -> web.Response:
        headers = dict(PREFLIGHT_HEADERS)
        origin = request.headers.get("Origin")
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
        return web.Response(status=204, headers=headers)

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

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.app[METRICS].registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


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
    except RedisError:
        log.warning("redis unreachable", exc_info=True)
        retry = str(request.app[SETTINGS].retry_after_s)
        response = _errors(
            503, "metrics store unavailable, retry later", headers={"Retry-After": retry}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _errors(exc.status, exc.reason)
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
    owns_redis = redis is None
    app[REDIS] = redis or Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    api = Api(app, clock)
    r = app.router
    r.add_get("/api/data/views/query", api.views_query)
    r.add_get("/api/data/views/now", api.views_now)
    r.add_get("/api/data/views/query/creator", api.creator_query)
    r.add_route("OPTIONS", "/api/data/views/query/creator", api.preflight)
    r.add_get("/api/data/views/query/total/{playbackId}", api.views_total)
    r.add_route("OPTIONS", "/api/data/views/query/total/{playbackId}", api.preflight)
    r.add_get("/api/data/usage/query", api.usage_query)
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_get("/metrics", api.metrics_view)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        yield
        if owns_redis:
            await app[REDIS].aclose()

    app.cleanup_ctx.append(lifespan)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = ApiSettings.from_env()
    serve(create_app(settings), settings.host, settings.port)
