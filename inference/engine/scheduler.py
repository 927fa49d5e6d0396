"""Which sequences compute which tokens at the next step. No torch here.

Continuous batching: every running sequence that has finished its prefill decodes one token per
step; prompts are prefilled in chunks of at most ``max_prefill_tokens`` per step (shared first
come, first served), so a long prompt never stalls the decoding batch for long. A finished
sequence leaves at once and its KV slot goes back to the pool.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..boundary import FinishReason
from .sequence import Sequence, Status


@dataclass(frozen=True)
class Scheduled:
    """``num_new`` tokens of ``seq`` to compute this step, starting at ``seq.num_computed``."""

    seq: Sequence
    num_new: int

    @property
    def samples(self) -> bool:
        """True when this step computes the sequence's last known token, so a new one is sampled."""
        return self.seq.num_computed + self.num_new >= self.seq.num_tokens


class Scheduler:
    def __init__(self, max_running: int, max_prefill_tokens: int,
                 on_admit: Callable[[Sequence], None] | None = None) -> None:
        """``on_admit`` runs when a sequence gets its slot; it may advance ``num_computed``
        (a reused cached prefix), and the step then computes only the rest."""
        self.on_admit = on_admit
        self.max_running = max_running
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots = list(range(max_running))

    def add(self, seq: Sequence) -> None:
        """Queue ``seq`` behind every waiting sequence of its priority or a more urgent one, so an
        interactive chat is admitted before batch-job items that arrived earlier (FCFS within one)."""
        seq.status = Status.WAITING
        if self.waiting and self.waiting[-1].priority > seq.priority:
            self.waiting.insert(next(i for i, w in enumerate(self.waiting) if w.priority > seq.priority), seq)
        else:
            self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Scheduled]:
        """Plan one step: all decodes, then prefill chunks within the token budget (FCFS)."""
        plan: list[Scheduled] = []
        budget = self.max_prefill_tokens
        for seq in self.running:
            remaining = seq.num_tokens - seq.num_computed
            if seq.prefill_done:
                plan.append(Scheduled(seq, remaining))
            elif budget > 0:
                n = min(remaining, budget)
                budget -= n
                plan.append(Scheduled(seq, n))
        while self.waiting and self._free_slots and budget > 0:
            seq = self.waiting.popleft()
            self._admit(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            budget -= n
            plan.append(Scheduled(seq, n))
        return plan

    def _admit(self, seq: Sequence) -> None:
        seq.slot = heapq.heappop(self._free_slots)
        seq.status = Status.RUNNING
        self.running.append(seq)
        if self.on_admit is not None:
            self.on_admit(seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Take ``seq`` out of the scheduler (waiting or running) and free its slot."""
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
            assert seq.slot is not None  # a running sequence holds a slot
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None
        seq.status = Status.FINISHED
        seq.finish_reason = reason
