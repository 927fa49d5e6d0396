"""What a client may know of an engine: the model and its limits, and how busy it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineInfo:
    name: str
    source: str  # a file name or "remote", never a path or an upstream URL
    parameters: int
    context_length: int
    device: str
    dtype: str
    max_new_tokens_cap: int
    default_max_new_tokens: int
    max_running: int
    max_waiting: int
    max_batch_items: int = 0  # the largest batch one submit may carry upstream; 0: no limit

    @classmethod
    def unknown(cls, name: str) -> EngineInfo:
        return cls(name, name, 0, 0, "", "", 0, 0, 0, 0)


@dataclass(frozen=True)
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
