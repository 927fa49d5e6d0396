"""Penalties and biases on one step's logits, for the rows that ask, in one vectorised pass.

``SamplingParams`` defines them (logit bias, then the repetition penalty over prompt and output,
then frequency and presence penalties over the output). Each touches only the tokens a sequence
has seen, so they are applied sparsely: one gather and one scatter over the flat ``(row, token)``
positions of every penalized row, never a pass over the whole vocabulary per row. A sequence's
seen tokens live on it (``Sequence.penalty``), kept up to date from its ``output_ids`` at each
step, so a preempted and resumed sequence counts right; rows without penalties cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from .sequence import Sequence


class TokenCounts:
    """One sequence's seen tokens: ``seen`` (prompt and output, each id once, in first-seen order)
    and ``output_seen`` (the output's, each once); ``output_ids`` themselves give the counts. Both
    cover the first ``counted`` output tokens."""

    def __init__(self, prompt_ids: list[int]) -> None:
        self.seen: list[int] = list(dict.fromkeys(prompt_ids))
        self._seen = set(self.seen)
        self.output_seen: list[int] = []
        self._output_seen: set[int] = set()
        self.counted = 0

    def update(self, output_ids: list[int]) -> None:
        for token in output_ids[self.counted:]:
            if token not in self._seen:
                self._seen.add(token)
                self.seen.append(token)
            if token not in self._output_seen:
                self._output_seen.add(token)
                self.output_seen.append(token)
        self.counted = len(output_ids)


def counts(seq: Sequence) -> TokenCounts:
    if seq.penalty is None:
        seq.penalty = TokenCounts(seq.prompt_ids)
    state: TokenCounts = seq.penalty
    state.update(seq.output_ids)
    return state


def _flat(rows: list[tuple[int, list[int]]], vocab: int, device: torch.device) -> torch.Tensor:
    """Flat positions ``row * vocab + token`` of each row's tokens."""
    return torch.tensor([r * vocab + t for r, tokens in rows for t in tokens], dtype=torch.long, device=device)


def _per_token(rows: list[tuple[int, list[int]]], values: list[float], device: torch.device) -> torch.Tensor:
    """Each row's value repeated once per token of that row, aligned with ``_flat``."""
    return torch.tensor([v for (_, tokens), v in zip(rows, values, strict=True) for _ in tokens],
                        dtype=torch.float32, device=device)


def apply_penalties(logits: torch.Tensor, seqs: Seq[Sequence]) -> None:
    """Change ``logits`` (``[len(seqs), vocab]``, float32, contiguous) in place for the rows whose
    parameters ask for a penalty or a bias; the other rows are untouched."""
    chosen = [(i, seq) for i, seq in enumerate(seqs) if seq.params.penalized]
    if not chosen:
        return
    vocab, device = logits.shape[-1], logits.device
    flat = logits.view(-1)
    bias = [(i, seq.params.logit_bias) for i, seq in chosen if seq.params.logit_bias]
    if bias:
        where = torch.tensor([i * vocab + t for i, pairs in bias for t, _ in pairs], dtype=torch.long, device=device)
        flat.index_add_(0, where, torch.tensor([b for _, pairs in bias for _, b in pairs], dtype=torch.float32, device=device))
    states = {i: counts(seq) for i, seq in chosen}
    repeated = [(i, seq.params.repetition_penalty) for i, seq in chosen if seq.params.repetition_penalty != 1.0]
    if repeated:
        rows = [(i, states[i].seen) for i, _ in repeated]
        where = _flat(rows, vocab, device)
        penalty = _per_token(rows, [p for _, p in repeated], device)
        values = flat[where]
        flat[where] = torch.where(values > 0, values / penalty, values * penalty)
    additive = [(i, seq.params) for i, seq in chosen if seq.params.frequency_penalty or seq.params.presence_penalty]
    if additive:
        counted = [(i, seqs[i].output_ids[:states[i].counted]) for i, _ in additive]
        flat.index_add_(0, _flat(counted, vocab, device), -_per_token(counted, [p.frequency_penalty for _, p in additive], device))
        present = [(i, states[i].output_seen) for i, _ in additive]
        flat.index_add_(0, _flat(present, vocab, device), -_per_token(present, [p.presence_penalty for _, p in additive], device))
