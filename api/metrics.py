"""The query API's Prometheus metrics, in one catalogue bound to an injectable registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REDIS_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class ApiMetrics:
    registry: CollectorRegistry
    requests: Counter  # labels: route (the route's pattern, or "unmatched"), status
    request_seconds: Histogram  # labels: route
    # labels: op (viewership, now, registry, auth, ratelimit, ping, gauges, live)
    redis_seconds: Histogram
    # Business gauges, read from Redis in the background every PLAYPULSE_API_GAUGES_INTERVAL_S.
    concurrent_viewers: Gauge
    concurrent_viewers_erroring: Gauge
    gauges_refreshed: Gauge  # unix time of the last successful read: staleness is visible
    live_streams: Gauge  # live-page streams open now

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ApiMetrics:
        registry = CollectorRegistry() if registry is None else registry
        return cls(
            registry=registry,
            requests=Counter(
                "playpulse_api_requests",
                "API requests by route pattern and status",
                ["route", "status"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "playpulse_api_request_seconds",
                "Time to answer an API request, by route pattern",
                ["route"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            redis_seconds=Histogram(
                "playpulse_api_redis_seconds",
                "Time of the API's Redis reads, by operation",
                ["op"],
                buckets=REDIS_BUCKETS_S,
                registry=registry,
            ),
            concurrent_viewers=Gauge(
                "playpulse_concurrent_viewers",
                "Sessions with a beacon in the last 30 s (GET /api/data/views/now, no filter)",
                registry=registry,
            ),
            concurrent_viewers_erroring=Gauge(
                "playpulse_concurrent_viewers_erroring",
                "Of the concurrent viewers, sessions that had an error",
                registry=registry,
            ),
            gauges_refreshed=Gauge(
                "playpulse_api_gauges_refreshed_timestamp_seconds",
                "When the concurrent-viewer gauges were last read from Redis (unix seconds)",
                registry=registry,
            ),
            live_streams=Gauge(
                "playpulse_api_live_streams",
                "Live-page event streams open now",
                registry=registry,
            ),
        )
