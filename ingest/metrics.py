"""The collector's Prometheus metrics, in one catalogue bound to an injectable registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    registry: CollectorRegistry
    envelopes: Counter  # labels: outcome (accepted|rejected), reason
    events: Counter  # labels: outcome, reason
    request_seconds: Histogram  # labels: status
    produce_seconds: Histogram
    in_flight: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> IngestMetrics:
        registry = CollectorRegistry() if registry is None else registry
        return cls(
            registry=registry,
            envelopes=Counter(
                "playpulse_ingest_envelopes",
                "Beacon envelopes by outcome and rejection reason",
                ["outcome", "reason"],
                registry=registry,
            ),
            events=Counter(
                "playpulse_ingest_events",
                "Beacon events by outcome and rejection reason",
                ["outcome", "reason"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "playpulse_ingest_request_seconds",
                "Time to answer POST /analytics/log, by status",
                ["status"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            produce_seconds=Histogram(
                "playpulse_ingest_produce_seconds",
                "Time from handing a record to the producer until Kafka acknowledged it",
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            in_flight=Gauge(
                "playpulse_ingest_in_flight",
                "Records handed to Kafka and not yet acknowledged",
                registry=registry,
            ),
        )
