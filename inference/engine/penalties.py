"""Penalties and biases on one step's logits, for the rows that ask, in one vectorised pass.

``SamplingParams`` defines them (logit bias, then the repetition penalty over prompt and output,
then frequency and presence penalties over the output). A sequence's token counts live on the
sequence (``Sequence.penalty``), kept up to date from its ``output_ids`` at each step, so a
preempted and resumed sequence counts right; rows without penalties cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from .sequence import Sequence


class TokenCounts:
    """One sequence's counts over the vocabulary: which tokens its prompt holds, and how often each
    token occurs in its output (the first ``counted`` output tokens)."""

    def __init__(self, prompt_ids: list[int], vocab_size: int, device: torch.device) -> None:
        self.in_prompt = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.in_prompt[torch.tensor(prompt_ids, dtype=torch.long, device=device)] = True
        self.output = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        self.counted = 0

    def update(self, output_ids: list[int]) -> None:
        new = output_ids[self.counted:]
        if new:
            ids = torch.tensor(new, dtype=torch.long, device=self.output.device)
            self.output.index_add_(0, ids, torch.ones(len(new), device=self.output.device))
            self.counted = len(output_ids)


def counts(seq: Sequence, vocab_size: int, device: torch.device) -> TokenCounts:
    if seq.penalty is None:
        seq.penalty = TokenCounts(seq.prompt_ids, vocab_size, device)
    state: TokenCounts = seq.penalty
    state.update(seq.output_ids)
    return state


def apply_penalties(logits: torch.Tensor, seqs: Seq[Sequence]) -> None:
    """Change ``logits`` (``[len(seqs), vocab]``, float32) in place for the rows whose parameters
    ask for a penalty or a bias; the other rows are untouched."""
    rows = [i for i, seq in enumerate(seqs) if seq.params.penalized]
    if not rows:
        return
    vocab, device = logits.shape[-1], logits.device
    chosen = [seqs[i] for i in rows]
    index = torch.tensor(rows, dtype=torch.long, device=device)
    sub = logits.index_select(0, index)
    for r, seq in enumerate(chosen):
        for token, bias in seq.params.logit_bias:
            sub[r, token] += bias
    states = [counts(seq, vocab, device) for seq in chosen]
    output = torch.stack([s.output for s in states])
    params = [seq.params for seq in chosen]
    if any(p.repetition_penalty != 1.0 for p in params):
        penalty = torch.tensor([p.repetition_penalty for p in params], device=device)[:, None]
        seen = torch.stack([s.in_prompt for s in states]) | (output > 0)
        sub = torch.where(seen, torch.where(sub > 0, sub / penalty, sub * penalty), sub)
    if any(p.frequency_penalty or p.presence_penalty for p in params):
        frequency = torch.tensor([p.frequency_penalty for p in params], device=device)[:, None]
        presence = torch.tensor([p.presence_penalty for p in params], device=device)[:, None]
        sub = sub - frequency * output - presence * (output > 0)
    logits.index_copy_(0, index, sub)
