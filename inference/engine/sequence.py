"""A sequence: one request's tokens and progress through the engine. No torch here."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from ..boundary import FinishReason, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Everything the engine keeps of one request, in one place: tokens, progress, its text so far
    (``text``, the incremental detokenizer) and its sampler's random state (``generator``).

    Invariant: the KV blocks of ``block_table`` hold the first ``num_computed`` tokens of
    ``prompt_ids + output_ids`` (token ``i`` in block ``block_table[i // block_size]``). Prefill is
    done when ``num_computed >= len(prompt_ids)``.
    """

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    eos_ids: frozenset[int]
    status: Status = Status.WAITING
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    arrived: float = field(default_factory=time.perf_counter)
    scheduled_at: float | None = None
    first_token_at: float | None = None
    request_id: str = ""
    priority: int = 0  # lower is admitted first (the request's priority)
    text: Any = None  # IncrementalText; the scheduler neither knows nor needs its type
    generator: Any = None  # torch.Generator, made by the model runner on first sampled token
    matcher: Any = None  # structured output: llguidance LLMatcher of its response format, or None
    logprob: Any = None  # (token, logprob, top ids, top logprobs) of the last sampled token, when the params ask
    logprobs: list[Any] = field(default_factory=list)  # TokenLogprob of every generated token, when asked
    penalty: Any = None  # penalties.TokenCounts, made by the model runner on first use when the params ask
    prompt_logprobs: list[Any] | None = None  # when asked: (token, logprob, top ids, top logprobs) of prompt tokens 1..
    calls: bool = False  # the chat offers tools: its answer is read for calls at the end
    parent: Sequence | None = None  # another answer to the same prompt, whose prefill this one shares; None once admitted
    lookup: Any = None  # lookup.Lookup, the n-gram index of its tokens, made on its first draft
    drafted: int = 0  # draft tokens proposed for it so far
    accepted: int = 0  # of which the model's own greedy choice confirmed
    draft_room: int = 0  # how long its next draft may be (0: not drafted yet; the speculator sets it)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def prefill_done(self) -> bool:
        return self.num_computed >= len(self.prompt_ids)

    def tokens(self, start: int, stop: int) -> list[int]:
        """Tokens ``start:stop`` of prompt followed by output."""
        n = len(self.prompt_ids)
        if stop <= n:
            return self.prompt_ids[start:stop]
        if start >= n:  # decoding: no copy of the prompt
            return self.output_ids[start - n:stop - n]
        return self.prompt_ids[start:] + self.output_ids[:stop - n]

    def append(self, token: int) -> FinishReason | None:
        """Record a sampled token; return why the sequence ends, if it does."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.output_ids.append(token)
        if token in self.eos_ids:
            return FinishReason.STOP
        if len(self.output_ids) >= self.max_new_tokens:
            return FinishReason.LENGTH
        return None
