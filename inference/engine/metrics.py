"""Prometheus metrics of one engine, named in the style of vLLM's and TGI's."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..boundary import Completion, EngineStats
from .llm_engine import EngineCounters

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
PER_TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class EngineMetrics:
    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self.registry = r = CollectorRegistry()
        Gauge("smollm_num_requests_running", "Sequences in the decode batch.", registry=r).set_function(
            lambda: stats().running)
        Gauge("smollm_num_requests_waiting", "Requests queued for a slot.", registry=r).set_function(
            lambda: stats().waiting)
        self.batch_size = Histogram("smollm_batch_size", "Sequences computed per engine step.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_time = Histogram("smollm_request_queue_time_seconds", "Arrival to first scheduled.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("smollm_time_to_first_token_seconds", "Arrival to first generated token.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("smollm_e2e_request_latency_seconds", "Arrival to finish.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("smollm_time_per_output_token_seconds", "Decode time per token after the first.",
                              buckets=PER_TOKEN_BUCKETS, registry=r)
        self.prompt_tokens = Counter("smollm_prompt_tokens", "Prompt tokens computed (prefix-cache hits excluded).",
                                     registry=r)
        self.generation_tokens = Counter("smollm_generation_tokens", "Tokens generated, of every request.", registry=r)
        self.finished = Counter("smollm_request_success", "Ended requests by reason (stop, length, cancelled, error).",
                                ["finished_reason"],
                                registry=r)

    def observe_step(self, before: EngineCounters, after: EngineCounters) -> None:
        """Tokens count when computed, so aborted and failed requests' tokens are counted too."""
        self.batch_size.observe(after.last_batch_size)
        self.prompt_tokens.inc(after.prompt_tokens - before.prompt_tokens)
        self.generation_tokens.inc(after.tokens_generated - before.tokens_generated)

    def observe(self, c: Completion) -> None:
        t = c.timings
        if t.queued_ms is not None:
            self.queue_time.observe(t.queued_ms / 1000)
        self.e2e.observe(t.total_ms / 1000)
        if t.first_token_ms is not None:
            self.ttft.observe(t.first_token_ms / 1000)
            if c.usage.completion_tokens > 1:
                self.tpot.observe((t.total_ms - t.first_token_ms) / 1000 / (c.usage.completion_tokens - 1))
        self.finished.labels(c.finish_reason.value).inc()
