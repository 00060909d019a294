"""Prometheus metrics of the server (`GET /metrics`, text exposition format, via prometheus-client).

Each app has its own registry, so two servers in one process (tests, benchmarks) never share
counts. Requests are counted by adapter, route and status; durations by adapter; every model
call observes its batch size; requests are counted per key too; the queue depth (windows waiting) and the number of loaded
adapters are read when scraped. Label values come from bounded sets, so no client can grow the
exposition: routes as declared (`unmatched` for any other URL), adapters that were loaded
(`unknown` for any other name, `mixed` for a request answered by several), status codes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class ServerMetrics:
    def __init__(self, queue_depth, adapters_loaded):
        self.registry = CollectorRegistry()
        # key: the key's name from the keys file (the operator's few), LORAQA_API_KEY/LORAQA_ADMIN_KEY,
        # or '-' for requests without a valid key
        self.requests = Counter(
            "loraqa_requests",
            "HTTP requests answered, by adapter, route, status code and key.",
            ["adapter", "route", "status", "key"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "loraqa_request_duration_seconds",
            "Time from request to response, by adapter.",
            ["adapter"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.batch_size = Histogram(
            "loraqa_batch_size",
            "Windows answered per model call.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        # the adapter cache (--adapter-root): labels are the root's adapter names, a set the
        # server's operator controls, not its clients
        self.adapter_loads = Counter(
            "loraqa_adapter_loads",
            "Adapters loaded on demand from the adapter root.",
            ["adapter"],
            registry=self.registry,
        )
        self.adapter_evictions = Counter(
            "loraqa_adapter_evictions",
            "Adapters detached to make room (least recently used first).",
            ["adapter"],
            registry=self.registry,
        )
        self.adapter_hits = Counter(
            "loraqa_adapter_hits", "Requests whose adapter was already loaded.", ["adapter"], registry=self.registry
        )
        self.adapter_misses = Counter(
            "loraqa_adapter_misses",
            "Requests that waited for their adapter to load.",
            ["adapter"],
            registry=self.registry,
        )
        self.adapter_load_seconds = Histogram(
            "loraqa_adapter_load_seconds",
            "Time to load an adapter on demand.",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        Gauge("loraqa_queue_depth", "Windows waiting for a model call.", registry=self.registry).set_function(
            queue_depth
        )
        Gauge("loraqa_adapters_loaded", "Adapters loaded on the base model.", registry=self.registry).set_function(
            adapters_loaded
        )

    def observe_request(self, adapter: str, route: str, status: int, seconds: float, key: str = "-") -> None:
        self.requests.labels(adapter=adapter, route=route, status=str(status), key=key).inc()
        self.duration.labels(adapter=adapter).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
