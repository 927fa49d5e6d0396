"""Draft tokens by prompt lookup (vLLM's n-gram speculator, llama.cpp's lookup decoding). No torch.

A sequence's last ``n`` tokens are looked up among its earlier tokens (prompt and answer so far);
where they occurred before, the tokens that followed them then are the draft: an answer that
copies from its prompt (extraction, "repeat with corrections", summaries) or repeats itself is
drafted right. The longest ``n`` that matches wins, and its latest occurrence.

The index is kept per sequence and grows with each token (``extend``), so a proposal costs a few
dictionary lookups whatever the length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Lookup:
    """The n-grams of one token history, ``min_n`` to ``max_n`` long, each mapped to the position
    just after its latest occurrence that has a successor."""

    def __init__(self, min_n: int = 2, max_n: int = 4) -> None:
        self.min_n, self.max_n = min_n, max_n
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the history. The n-grams ending just before each new token gain it as
        their successor."""
        for t in tokens:
            end = len(self.tokens)  # the n-grams ending here are followed by t
            for n in range(self.min_n, self.max_n + 1):
                if end >= n:
                    self._after[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(t)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the history's longest
        matching suffix; empty when none of its suffixes occurred before."""
        end = len(self.tokens)
        for n in range(min(self.max_n, end - 1), self.min_n - 1, -1):
            start = self._after.get(tuple(self.tokens[end - n:]))
            if start is not None:
                return self.tokens[start:min(start + k, end)]
        return []


class Speculator:
    """Which decoding sequences get a draft, and how long (the scheduler says which steps).

    Only sequences whose logits nothing else changes are drafted (no penalties, bias or logprobs),
    so a verified draft is what decoding one token a step would have produced: greedy, the very
    tokens; sampling, tokens of the same distribution (the runner's rejection rule). A greedy
    sequence with a format (a response format, or tools) is drafted too, its draft cut where the
    format would refuse a token: a draft token the model's unmasked choice agrees with is then
    its masked choice as well, since masking only takes tokens away.

    Drafting stops where it does not pay: in steps of more than ``max_batch`` decoding sequences
    or over ``max_rows`` rows (no longer bound by reading the weights, so the extra rows cost their
    full compute), and for a sequence whose drafts keep failing (after ``PROBATION`` drafted
    tokens, a quarter or fewer accepted). A draft's length follows the last one's fate
    (``settle``). A match must be at least ``min_n`` tokens long: shorter ones are common words,
    not copied text."""

    PROBATION = 16
    MIN_ACCEPTANCE = 0.25

    def __init__(self, tokens: int, max_batch: int, max_rows: int, min_n: int = 3, max_n: int = 5,
                 first: int = 2) -> None:
        """``tokens``: the longest draft; ``first``: the length of a sequence's first one."""
        self.tokens, self.max_batch, self.max_rows, self.min_n, self.max_n = tokens, max_batch, max_rows, min_n, max_n
        self.first = first

    def settle(self, seq: Any, drafted: int, accepted: int) -> None:
        """After a draft's verification: the next draft may be longer when this one was taken
        whole, and no longer than what was taken and one more when it was not. Each draft token
        costs a row whether taken or not, so the length follows how far the answer copies now
        (a whole quotation, or a few words of one)."""
        seq.drafted += drafted
        seq.accepted += accepted
        seq.draft_room = min(self.tokens, 2 * drafted) if accepted == drafted else accepted + 1

    def eligible(self, seq: Any) -> bool:
        p = seq.params
        return not p.penalized and not p.logprobs and seq.prompt_logprobs is None and (seq.matcher is None or p.greedy)

    def draft(self, seq: Any, rows: int) -> list[int]:
        """Up to ``tokens`` (and ``rows``) draft tokens for ``seq``'s next step, which always
        yields one token more than the draft, so never past its ``max_new_tokens``."""
        room = min(seq.draft_room or self.first, self.tokens, rows, seq.max_new_tokens - len(seq.output_ids) - 1)
        if room <= 0 or not self.eligible(seq):
            return []
        if seq.drafted >= self.PROBATION and seq.accepted < self.MIN_ACCEPTANCE * seq.drafted:
            return []
        if seq.lookup is None:
            seq.lookup = Lookup(self.min_n, self.max_n)
        known = len(seq.lookup.tokens)
        seq.lookup.extend(seq.tokens(known, seq.num_tokens))
        if seq.matcher is None:
            return seq.lookup.propose(room)
        if seq.matcher.is_stopped():
            return []
        # What the format forces next (a schema's keys and punctuation), else the lookup's tokens
        # as far as the format takes them.
        draft = seq.matcher.compute_ff_tokens()[:room] or seq.lookup.propose(room)
        return draft[:seq.matcher.validate_tokens(draft)]
