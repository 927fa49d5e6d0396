"""What a client may know of an engine: the model and its limits, and how busy it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """Built by keyword only: 0 and "" mean unknown (a foreign upstream, an engine still loading)."""

    name: str
    source: str = ""  # a file name or "remote", never a path or an upstream URL
    parameters: int = 0
    context_length: int = 0
    device: str = ""
    dtype: str = ""
    max_new_tokens_cap: int = 0
    default_max_new_tokens: int = 0
    max_running: int = 0
    max_waiting: int = 0
    max_batch_items: int = 0  # the largest batch one submit may carry upstream; 0: no limit
    weights: str = ""  # "exact" or "native" (the GGUF's own 4-bit weights); "" where unknown
    kv_cache_tokens: int = 0  # the KV pool's size in tokens; 0 where unknown
    kv_cache_bytes: int = 0

    @classmethod
    def unknown(cls, name: str) -> EngineInfo:
        return cls(name=name, source=name)


@dataclass(frozen=True, kw_only=True)
class EngineStats:
    """The same meaning for every backend: ``running`` and ``waiting`` count chats (not HTTP calls),
    as the engine's own loop last published them."""

    running: int = 0
    waiting: int = 0
    steps: int = 0
    tokens_generated: int = 0
    prompt_tokens: int = 0  # prompt tokens computed
    cached_prompt_tokens: int = 0  # prompt tokens reused from the prefix cache
    last_batch_size: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0  # held by running sequences
    kv_blocks_cached: int = 0  # free, but keeping a computed prefix until the pool needs them
    preemptions: int = 0  # running sequences put back in the queue because the pool ran dry

    @property
    def prefix_hit_rate(self) -> float:
        """Share of prompt tokens whose KV came from cached prefix blocks."""
        total = self.prompt_tokens + self.cached_prompt_tokens
        return self.cached_prompt_tokens / total if total else 0.0
