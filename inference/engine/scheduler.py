"""Which sequences compute which tokens at the next step. No torch here.

Continuous batching: every running sequence that has finished its prefill decodes one token per
step; prompts are prefilled in chunks of at most ``max_prefill_tokens`` per step (shared first
come, first served), so a long prompt never stalls the decoding batch for long. A sequence is
admitted when the KV pool has blocks for all its tokens (shared cached prefix blocks count as
computed); a finished sequence leaves at once and its blocks go back to the pool.

The answers of one request with ``n > 1`` are sequences of the same prompt; all but the first
carry it as ``parent`` and are admitted only once the parent's prefill is done, so they take its
KV blocks by reference (the block manager's prefix sharing) and compute one token each. A parent
that is not running (waiting, preempted, ended) holds nobody back.

When the pool runs dry as decoding sequences grow, the newest running sequence is preempted: its
blocks are returned and it goes back to the front of the queue, to be recomputed (prompt and the
tokens it already produced) when blocks free up. Nobody fails for lack of KV memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..boundary import FinishReason
from .block_manager import BlockManager
from .lookup import Speculator
from .sequence import Sequence, Status


@dataclass(frozen=True)
class Scheduled:
    """``num_new`` tokens of ``seq`` to compute this step, starting at ``seq.num_computed``; for a
    drafted decode, its last token and then ``draft`` (``num_new == 1 + len(draft)``), to verify."""

    seq: Sequence
    num_new: int
    draft: tuple[int, ...] = ()

    @property
    def samples(self) -> bool:
        """True when this step computes the sequence's last known token, so a new one is sampled."""
        return self.seq.num_computed + self.num_new >= self.seq.num_tokens


def ready(seq: Sequence) -> bool:
    """False while ``seq``'s parent is running its prefill: its blocks are about to be shareable."""
    parent = seq.parent
    return parent is None or parent.status is not Status.RUNNING or parent.prefill_done


class Scheduler:
    def __init__(self, max_running: int, max_prefill_tokens: int, blocks: BlockManager | None = None,
                 on_admit: Callable[[Sequence], None] | None = None, speculator: Speculator | None = None) -> None:
        """``on_admit`` runs when a sequence gets its blocks, after its cached prefix (if any) is
        counted in ``num_computed``; the step then computes only the rest. Without ``blocks``, a
        pool large enough for ``max_running`` sequences of 4096 tokens (for tests)."""
        self.on_admit = on_admit
        self.speculator = speculator
        self.max_running = max_running
        self.max_prefill_tokens = max_prefill_tokens
        self.blocks = blocks or BlockManager(max_running * 256, 16)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

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
        self._grow_running()
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
        while (self.waiting and budget > 0 and len(self.running) < self.max_running and ready(self.waiting[0])
               and self.blocks.can_allocate(self.waiting[0])):
            seq = self.waiting.popleft()
            self._admit(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            budget -= n
            plan.append(Scheduled(seq, n))
        return self._drafted(plan) if self.speculator is not None else plan

    def _drafted(self, plan: list[Scheduled]) -> list[Scheduled]:
        """``plan`` with drafts for its decodes, when it holds decodes only, at most ``max_batch``
        of them, and within ``max_rows`` rows in all: the kernels sum each row of such a step as
        they sum a row alone, so verifying a draft computes what decoding it would. A draft the
        pool has no room for is dropped (nobody is preempted for one)."""
        spec = self.speculator
        assert spec is not None
        if len(plan) > spec.max_batch or any(not s.seq.prefill_done or s.num_new != 1 for s in plan):
            return plan
        rows, out = len(plan), []
        for s in plan:
            draft = spec.draft(s.seq, spec.max_rows - rows)
            if draft and self.blocks.grow(s.seq, s.seq.num_tokens + len(draft)):
                rows += len(draft)
                s = Scheduled(s.seq, 1 + len(draft), tuple(draft))
            out.append(s)
        return out

    def _grow_running(self) -> None:
        """Every running sequence gets room for its next token, preempting the newest if need be."""
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if self.blocks.grow(seq, seq.num_tokens):
                i += 1
            else:
                self._preempt(self.running[-1])  # may be ``seq`` itself: then the loop ends

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed = 0
        if seq.prompt_logprobs is not None:
            seq.prompt_logprobs = []  # recomputed with the prompt
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _admit(self, seq: Sequence) -> None:
        seq.num_computed = self.blocks.allocate(seq)
        seq.parent = None  # shared what it could; a later preemption recomputes its own
        seq.status = Status.RUNNING
        self.running.append(seq)
        if self.on_admit is not None:
            self.on_admit(seq)

    def commit(self, plan: list[Scheduled]) -> None:
        """After a step: the blocks it completed become shareable prefixes."""
        for s in plan:
            if s.seq.status is Status.RUNNING:
                self.blocks.commit(s.seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Take ``seq`` out of the scheduler (waiting or running) and return its blocks."""
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.blocks.free(seq)
        self.blocks.forget(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
