"""The collector's HTTP edge: `POST /analytics/log` in, enriched records to Kafka out.

A request is answered 200 only after Kafka acknowledged its record, 503 with Retry-After when Kafka
(or, for an uncached playback, Redis) cannot take it in time, 4xx with `{"errors": [...]}` naming
each problem for bad input. See `ingest.beacon` for what a valid envelope is and what happens to the
valid events of a partly bad one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest.beacon import Envelope, InvalidBeacon, parse_beacon
from ingest.enrich import GeoLocator, client_ip, dimensions, parse_user_agent, viewer_hash
from ingest.metrics import IngestMetrics
from ingest.record import envelope_item
from ingest.registry import Playback, PlaybackRegistry
from ingest.runtime import new_event_loop, tune_gc
from ingest.settings import IngestSettings
from ingest.sink import BeaconSink, SinkUnavailable

log = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = frozenset({"application/json", "text/plain"})
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}

SETTINGS = web.AppKey("settings", IngestSettings)
METRICS = web.AppKey("metrics", IngestMetrics)
SINK = web.AppKey("sink", BeaconSink)
REGISTRY = web.AppKey("registry", PlaybackRegistry)
GEO = web.AppKey("geo", GeoLocator)
REDIS = web.AppKey("redis", Redis)


JSON_HEADERS = {**CORS_HEADERS, "Content-Type": "application/json"}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
    )


def _errors(status: int, *problems: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"errors": list(problems)}, headers)


class Collector:
    """The request handlers; one per application, holding its dependencies."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        metrics = app[METRICS]
        # The hot path's metric children, bound once: a labels() lookup costs more than an inc().
        self._envelopes_accepted = metrics.envelopes.labels("accepted", "")
        self._events_accepted = metrics.events.labels("accepted", "")
        self._events_invalid = metrics.events.labels("rejected", "invalid_event")
        self._request_seconds: dict[int, Any] = {}
        # Read when scraped, instead of two updates per request.
        metrics.in_flight.set_function(lambda: app[SINK].in_flight)

    @property
    def settings(self) -> IngestSettings:
        return self.app[SETTINGS]

    @property
    def metrics(self) -> IngestMetrics:
        return self.app[METRICS]

    def _reject(
        self, status: int, reason: str, events: int, *problems: str, **kw: Any
    ) -> web.Response:
        self.metrics.envelopes.labels("rejected", reason).inc()
        if events:
            self.metrics.events.labels("rejected", reason).inc(events)
        return _errors(status, *problems, **kw)

    def _unavailable(self, reason: str, events: int, problem: str) -> web.Response:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        return self._reject(503, reason, events, problem, headers=retry)

    async def log(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._log(request)
        status = response.status
        histogram = self._request_seconds.get(status)
        if histogram is None:  # statuses are a handful: bound on first use
            histogram = self.metrics.request_seconds.labels(str(status))
            self._request_seconds[status] = histogram
        histogram.observe(time.perf_counter() - started)
        return response

    async def _log(self, request: web.Request) -> web.Response:
        settings = self.settings
        if request.content_type not in ACCEPTED_CONTENT_TYPES:
            return self._reject(
                415,
                "content_type",
                0,
                f"content-type: expected application/json or text/plain, got {request.content_type!r}",
            )
        too_large = f"body: larger than {settings.max_body_bytes} bytes"
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return self._reject(413, "too_large", 0, too_large)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "too_large", 0, too_large)
        try:
            envelope = parse_beacon(body, max_events=settings.max_events)
        except InvalidBeacon as exc:
            return self._reject(400, exc.reason, 0, *exc.problems)
        rejected = len(envelope.rejected)
        if rejected:
            self._events_invalid.inc(rejected)

        playback_id = envelope.fields["playback_id"]
        registry = self.app[REGISTRY]
        try:
            playback = registry.cached(playback_id)  # no await for the common case
        except KeyError:
            try:
                playback = await registry.lookup(playback_id)
            except RedisError:
                log.warning("playback registry unreachable", exc_info=True)
                return self._unavailable(
                    "registry_unavailable",
                    envelope.count,
                    "playback registry unavailable, retry later",
                )
        if playback is None and settings.strict_playbacks:
            return self._reject(
                403,
                "unknown_playback",
                envelope.count,
                f"playback_id: {playback_id!r} is not registered",
            )

        server_ts_ms = time.time_ns() // 1_000_000
        record = self._record(request, envelope, playback, server_ts_ms)
        try:
            await self.app[SINK].publish(envelope.fields["session_id"].encode(), record)
        except SinkUnavailable as exc:
            return self._unavailable(
                "kafka_unavailable",
                envelope.count,
                f"event store unavailable ({exc.reason}), retry later",
            )
        self._envelopes_accepted.inc()
        self._events_accepted.inc(envelope.count)
        if not envelope.rejected:  # the common answer, without building and encoding a dict
            body = b'{"accepted":%d,"rejected":[],"server_timestamp":%d}' % (
                envelope.count,
                server_ts_ms,
            )
            return web.Response(status=200, body=body, headers=JSON_HEADERS)
        return _json(
            200,
            {
                "accepted": envelope.count,
                "rejected": [
                    {"index": r.index, "errors": list(r.problems)} for r in envelope.rejected
                ],
                "server_timestamp": server_ts_ms,
            },
        )

    def _record(
        self, request: web.Request, envelope: Envelope, playback: Playback | None, server_ts_ms: int
    ) -> bytes:
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", [])) or None
        return enriched_record(
            envelope,
            playback,
            server_ts_ms,
            peer=request.remote,
            forwarded=forwarded,
            headers=request.headers,
            settings=self.settings,
            geo=self.app[GEO],
        )

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS_HEADERS)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        if not self.app[SINK].ready:
            problems.append("kafka: not reachable")
        try:
            await self.app[REDIS].ping()
        except RedisError:
            problems.append("redis: not reachable")
        if problems:
            return _errors(503, *problems)
        return _json(200, {"status": "ready"})

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


def enriched_record(
    envelope: Envelope,
    playback: Playback | None,
    server_ts_ms: int,
    *,
    peer: str | None,
    forwarded: str | None,
    headers: Mapping[str, str],
    settings: IngestSettings,
    geo: GeoLocator,
) -> bytes:
    """The Kafka record of an accepted envelope: enriched with the client's place, device and
    viewer hash (the client is the TCP `peer`, or `forwarded` from a trusted proxy)."""
    fields = envelope.fields
    ip = client_ip(peer, forwarded, settings.trusted_proxies)
    viewer = viewer_hash(
        fields.get("uid"),
        fields.get("domain"),
        fields["user_agent"],
        ip,
        settings.viewer_hash_salt,
    )
    return envelope_item(
        envelope,
        server_ts_ms=server_ts_ms,
        viewer_hash=viewer,
        dims=dimensions(parse_user_agent(fields["user_agent"]), geo.locate(ip, headers)),
        playback=playback,
    )


@web.middleware
async def _no_stack_traces(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _errors(exc.status, exc.reason)
        raise
    except Exception:
        log.exception("unhandled error")
        return _errors(500, "internal error")


def create_app(
    settings: IngestSettings,
    *,
    metrics: IngestMetrics | None = None,
    redis: Redis | None = None,
    sink: BeaconSink | None = None,
) -> web.Application:
    # aiohttp refuses bodies over client_max_size while reading; we check Content-Length first.
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_no_stack_traces])
    app[SETTINGS] = settings
    app[METRICS] = metrics or IngestMetrics.create()
    app[REDIS] = redis or Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    app[SINK] = sink or BeaconSink(settings, produce_seconds=app[METRICS].produce_seconds)
    app[REGISTRY] = PlaybackRegistry(app[REDIS], cache_s=settings.registry_cache_s)
    app[GEO] = GeoLocator(settings)
    collector = Collector(app)
    app.router.add_post("/analytics/log", collector.log)
    app.router.add_route("OPTIONS", "/analytics/log", collector.preflight)
    app.router.add_get("/healthz", collector.healthz)
    app.router.add_get("/readyz", collector.readyz)
    app.router.add_get("/metrics", collector.metrics_view)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        await app[SINK].start()
        yield
        await app[SINK].stop()
        app[GEO].close()
        await app[REDIS].aclose()

    app.cleanup_ctx.append(lifespan)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = IngestSettings.from_env()
    app = create_app(settings)
    # What exists now (modules, regexes, the app) lives as long as the process: keep it out of
    # every later collection.
    tune_gc()
    serve(app, settings.host, settings.port)


def serve(app: web.Application, host: str, port: int) -> None:
    """Runs an aiohttp app in the foreground on uvloop (when installed) until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(app, host=host, port=port, access_log=None, print=None, loop=new_event_loop())
