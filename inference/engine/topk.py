"""Row-wise top-k and argmax over the vocabulary, by blocks.

On CPU, torch's ``argmax``, ``max`` and ``topk`` over a 49,152-wide last dimension run an order
of magnitude slower than ``amax`` (which is vectorised); ``benchmarks/options_cost.py`` shows
what that costs a step. So each row is cut into blocks of ``BLOCK`` logits: the ``k`` blocks with
the largest maxima hold the row's ``k`` largest values (a block holding one of them has a maximum at
least that large, and at most ``k - 1`` other values are larger), and top-k runs over those
``k * BLOCK`` candidates only. ``top_k``'s values are ``topk``'s (between equal values the indices
may differ); ``argmax`` takes the first maximum, as ``torch.argmax`` does. A width that is not a
multiple of ``BLOCK``, or a tensor off the CPU, takes torch's own functions.
"""

from __future__ import annotations

import torch

BLOCK = 256


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of each row's ``k`` largest, largest first: ``x.topk(k)`` of a 2-D ``x``."""
    rows, width = x.shape
    if width % BLOCK or k * BLOCK >= width or x.device.type != "cpu":
        return x.topk(k)
    blocks = x.view(rows, width // BLOCK, BLOCK)
    chosen = blocks.amax(-1).topk(k).indices  # [rows, k]
    candidates = blocks.gather(1, chosen[:, :, None].expand(-1, -1, BLOCK)).reshape(rows, k * BLOCK)
    values, at = candidates.topk(k)
    return values, chosen.gather(1, at // BLOCK) * BLOCK + at % BLOCK


def argmax(x: torch.Tensor) -> torch.Tensor:
    """Each row's index of its largest value (the first, on ties): ``x.argmax(-1)`` of a 2-D ``x``."""
    rows, width = x.shape
    if width % BLOCK or x.device.type != "cpu":
        return x.argmax(-1)
    blocks = x.view(rows, width // BLOCK, BLOCK)
    block = blocks.amax(-1).argmax(-1)  # the first block holding the maximum
    inside = blocks[torch.arange(rows, device=x.device), block].argmax(-1)
    return block * BLOCK + inside
