"""Prometheus metrics of one running daemon (a registry per app, so tests don't collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "instaset_events", "Webhook events acknowledged, by kind (redeliveries included:"
            " instaset_webhook_duplicates counts those not stored)", ["kind"],
            registry=self.registry,
        )
        self.webhook_requests = Counter(
            "instaset_webhook_requests", "POST /webhook requests by HTTP status", ["status"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "instaset_webhook_rejections", "Rejected webhook requests by reason", ["reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "instaset_webhook_duplicates", "Events already stored (redeliveries)",
            registry=self.registry,
        )
        self.dropped = Counter(
            "instaset_webhook_dropped", "Events not stored: their account is not connected",
            registry=self.registry,
        )
        self.jobs = Gauge("instaset_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.queue_depth = Gauge(
            "instaset_queue_depth", "Jobs due to run now or running (not those scheduled "
            "for later)", registry=self.registry
        )
        self.staged_events = Gauge(
            "instaset_staged_events", "Events acknowledged under load and not yet moved into "
            "the events table (each gets its process_event job when moved)",
            registry=self.registry,
        )
        self.job_latency = Histogram(
            "instaset_job_latency_seconds", "From a job being due to it finishing, by kind",
            ["kind", "outcome"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.sends = Counter(
            "instaset_sends", "Outgoing actions by kind and outcome", ["kind", "outcome"],
            registry=self.registry,
        )

        # Children looked up once per label value, not once per webhook (prometheus_client's
        # labels() takes a lock and builds a tuple on every call).
        self._events_by_kind: dict[str, Counter] = {}
        self.webhook_ok = self.webhook_requests.labels("200")

    def event_counter(self, kind: str) -> Counter:
        child = self._events_by_kind.get(kind)
        if child is None:
            child = self._events_by_kind[kind] = self.events.labels(kind)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
