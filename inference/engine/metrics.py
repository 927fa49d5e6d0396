"""Prometheus metrics of one engine, named in the style of vLLM's and TGI's."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..boundary import Completion, EngineInfo, EngineStats
from .llm_engine import EngineCounters

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
PER_TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class EngineMetrics:
    def __init__(self, stats: Callable[[], EngineStats], info: EngineInfo | None = None) -> None:
        self.registry = r = CollectorRegistry()
        Gauge("smollm_num_requests_running", "Sequences in the decode batch.", registry=r).set_function(
            lambda: stats().running)
        Gauge("smollm_num_requests_waiting", "Requests queued for a slot.", registry=r).set_function(
            lambda: stats().waiting)
        blocks = Gauge("smollm_kv_cache_blocks", "KV pool blocks: total, used (by running sequences), cached "
                       "(free, keeping a prefix).", ["state"], registry=r)
        blocks.labels("total").set_function(lambda: stats().kv_blocks_total)
        blocks.labels("used").set_function(lambda: stats().kv_blocks_used)
        blocks.labels("cached").set_function(lambda: stats().kv_blocks_cached)
        Gauge("smollm_kv_cache_usage_perc", "Share of KV blocks held by running sequences.", registry=r).set_function(
            lambda: stats().kv_blocks_used / max(stats().kv_blocks_total, 1))
        Gauge("smollm_prefix_cache_hit_rate", "Share of prompt tokens whose KV came from cached prefix blocks.",
              registry=r).set_function(lambda: stats().prefix_hit_rate)
        Gauge("smollm_num_preemptions", "Running sequences put back in the queue because the KV pool ran dry.",
              registry=r).set_function(lambda: stats().preemptions)
        if info is not None:
            Gauge("smollm_kv_cache_tokens", "Tokens the KV pool holds (KV_CACHE_TOKENS).", registry=r).set(
                info.kv_cache_tokens)
            Gauge("smollm_kv_cache_bytes", "Bytes of the KV pool, allocated at start-up.", registry=r).set(
                info.kv_cache_bytes)
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
        self.cached_tokens = Counter("smollm_prefix_cache_hit_tokens", "Prompt tokens reused from cached prefix blocks.",
                                     registry=r)
        self.generation_tokens = Counter("smollm_generation_tokens", "Tokens generated, of every request.", registry=r)
        self.draft_tokens = Counter("smollm_spec_decode_num_draft_tokens", "Speculative decoding: tokens drafted by prompt "
                                    "lookup and verified.", registry=r)
        self.accepted_tokens = Counter("smollm_spec_decode_num_accepted_tokens", "Speculative decoding: drafted tokens the "
                                       "model's own choice confirmed (accepted / drafted is the acceptance rate).", registry=r)
        self.finished = Counter("smollm_request_success", "Ended requests by reason (stop, length, cancelled, error).",
                                ["finished_reason"],
                                registry=r)

    def observe_step(self, before: EngineCounters, after: EngineCounters) -> None:
        """Tokens count when computed, so aborted and failed requests' tokens are counted too."""
        self.batch_size.observe(after.last_batch_size)
        self.prompt_tokens.inc(after.prompt_tokens - before.prompt_tokens)
        self.cached_tokens.inc(after.cached_prompt_tokens - before.cached_prompt_tokens)
        self.generation_tokens.inc(after.tokens_generated - before.tokens_generated)
        self.draft_tokens.inc(after.draft_tokens - before.draft_tokens)
        self.accepted_tokens.inc(after.accepted_tokens - before.accepted_tokens)

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
