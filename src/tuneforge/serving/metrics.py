"""What ``GET /metrics`` reports, in Prometheus' text format (``prometheus-client``).

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tuneforge_requests", "Prediction requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.errors = Counter("tuneforge_request_errors", "Requests answered with an error, by model and error code",
                              ["model", "code"], registry=r)
        self.latency = Histogram("tuneforge_request_latency_seconds", "Time from request to response, by model",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inputs = Counter("tuneforge_inputs", "Texts predicted, by model", ["model"], registry=r)
        self.batch_size = Histogram("tuneforge_batch_size", "Inputs per micro-batch, by model", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("tuneforge_batch_requests", "Requests per micro-batch, by model",
                                        ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("tuneforge_batch_seconds", "Model time per micro-batch, by model",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("tuneforge_queue_depth", "Inputs waiting for a batch, by model", ["model"],
                                 registry=r)

        # generative runs
        self.tokens_generated = Counter("tuneforge_generated_tokens", "Tokens generated, by model", ["model"], registry=r)
        self.first_token = Histogram("tuneforge_time_to_first_token_seconds",
                                     "Time from request to its first generated token, by model", ["model"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.tokens_per_second = Histogram("tuneforge_request_tokens_per_second",
                                           "Tokens a second one request received, after its first, by model",
                                           ["model"], buckets=RATE_BUCKETS, registry=r)
        self.generation_queue = Gauge("tuneforge_generation_queue_depth",
                                      "Generation requests waiting for a row of a running batch", registry=r)
        self.occupancy = Histogram("tuneforge_batch_occupancy", "Sequences advanced by one generation step, by model",
                                   ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.running = Gauge("tuneforge_running_sequences", "Sequences in the running batch after the last step, by model",
                             ["model"], registry=r)

    def add_models(self, names) -> None:
        """Start every model's series at zero, so dashboards see them before the first request."""
        for name in names:
            self.queue_depth.labels(name).set(0)
            self.inputs.labels(name)
            self.batch_size.labels(name)

    def record_batch(self, stats) -> None:
        self.batch_size.labels(stats.key).observe(stats.inputs)
        self.batch_requests.labels(stats.key).observe(stats.requests)
        self.batch_seconds.labels(stats.key).observe(stats.seconds)
        self.inputs.labels(stats.key).inc(stats.inputs)

    def record_step(self, stats) -> None:
        self.occupancy.labels(stats.key).observe(stats.rows)

    def record_running(self, key, rows: int) -> None:
        self.running.labels(key).set(rows)

    def record_generation(self, model: str, tokens: int, first_token_s: float | None, rest_s: float) -> None:
        """One answer finished: its tokens, its time to first token, its rate after that."""
        self.tokens_generated.labels(model).inc(tokens)
        if first_token_s is not None:
            self.first_token.labels(model).observe(first_token_s)
        if tokens > 1 and rest_s > 0:
            self.tokens_per_second.labels(model).observe((tokens - 1) / rest_s)

    def record_queue(self, key, waiting: int) -> None:
        self.queue_depth.labels(key).set(waiting)

    def record_request(self, model: str, status: int, seconds: float, code: str | None = None) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)
        if code is not None:
            self.errors.labels(model, code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
