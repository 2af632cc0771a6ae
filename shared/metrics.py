"""Prometheus metrics: each service has its own registry, served at `/metrics`.

The shared plumbing counts what it does (events published, applied, duplicated, dead-lettered);
gauges that need a query (outbox backlog, consumer lag) are refreshed when `/metrics` is
scraped, not on the hot path. Services add their own metrics with `counter`, `gauge` and
`histogram`. Counts of work done in a transaction go through `count_after_commit`, so a
rolled-back attempt (a batch retried event by event, a savepoint) is not counted. Labels never
carry personal data: lead ids at most, usually not even those.

Each registry also holds the process's standard collectors (CPU, memory, file descriptors,
garbage collections, Python version): the registry is the service's own rather than
prometheus_client's global one, so they are registered here, not by default. The HTTP request
metrics are counted by `shared.http_telemetry`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.ext.asyncio import AsyncSession

from shared.after_commit import defer_until_commit

NAMESPACE = "leadrelay"


class ServiceMetrics:
    """The metrics of one service process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            self.registry.register(collector)
        self.http_requests = self.counter(
            "http_requests_total", "HTTP requests answered, by route template, method, status",
            ["route", "method", "status"],
        )
        self.http_request_duration = self.histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template, "
            "method, status", ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events_published = self.counter(
            "events_published_total", "Events the outbox relay published to Kafka", ["type"]
        )
        self.events_applied = self.counter(
            "events_applied_total", "Consumed events applied to the database", ["type"]
        )
        self.events_duplicate = self.counter(
            "events_duplicate_total", "Consumed events already applied (redeliveries)", ["type"]
        )
        self.events_dead_lettered = self.counter(
            "events_dead_lettered_total", "Consumed events kept aside because they failed", []
        )
        self.outbox_backlog = self.gauge(
            "outbox_backlog", "Outbox events committed but not yet published", []
        )
        self.broker_epochs_adopted = self.counter(
            "broker_epochs_adopted_total",
            "Broker epochs this service adopted: its first start on a broker, or a new broker "
            "that lost the records of the one before", [],
        )
        self.events_republished = self.counter(
            "events_republished_total",
            "Outbox events marked unpublished again because the broker was a new one", [],
        )
        self.consumer_lag = self.gauge(
            "consumer_lag", "Messages behind the partition's high watermark",
            ["topic", "partition"],
        )

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=NAMESPACE,
                       registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (),
        buckets: Sequence[float] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                    30, 60, 120, 300, 600, 1800, 3600),
    ) -> Histogram:
        return Histogram(name, documentation, labels, namespace=NAMESPACE,
                         registry=self.registry, buckets=buckets)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def count_after_commit(session: AsyncSession, counter: Counter, amount: float = 1) -> None:
    """Add `amount` to `counter` (a labelled child, or a counter without labels) once
    `session`'s transaction commits; nothing if the work counted is rolled back."""
    defer_until_commit(session, _COUNTS, (counter, amount), _add_counts)


_COUNTS = "shared.metrics.counts"


def _add_counts(counts: list[tuple[Counter, float]]) -> None:
    for counter, amount in counts:
        counter.inc(amount)
