"""The KV pool: every layer's keys and values in fixed-size blocks, and attention over them.

One tensor per layer and kind, ``[num_blocks * block_size, kv_heads, head_dim]``, allocated (and
so resident) once at start-up: memory is the pool's size, whatever the load. Which blocks belong
to which sequence is the block manager's business; here a step only brings, per token, the flat
index it writes to (``slots``) and, per sequence, its block table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class KVPool:
    def __init__(self, layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (layers, num_blocks * block_size, kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_blocks = num_blocks
        self.block_size = block_size

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Block ``dst``'s first ``n`` tokens take block ``src``'s keys and values, in every layer."""
        s, d = src * self.block_size, dst * self.block_size
        self.k[:, d:d + n] = self.k[:, s:s + n]
        self.v[:, d:d + n] = self.v[:, s:s + n]

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the step's keys and values ``[N, kv_heads, dim]`` at flat token indices ``slots``."""
        self.k[layer].index_copy_(0, slots, k.to(self.k.dtype))
        self.v[layer].index_copy_(0, slots, v.to(self.v.dtype))

    def gather(self, layer: int, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of sequences with block tables ``[B, blocks]`` as ``[B, kv_heads, blocks * size, dim]``."""
        b, n = tables.shape
        shape = (b, n * self.block_size, *self.k.shape[2:])
        k = self.k[layer].view(self.num_blocks, self.block_size, *self.k.shape[2:])[tables].view(shape)
        v = self.v[layer].view(self.num_blocks, self.block_size, *self.v.shape[2:])[tables].view(shape)
        return k.transpose(1, 2), v.transpose(1, 2)


@dataclass
class Prefill:
    """One sequence's prompt chunk: packed tokens ``start:end``, the first at position ``pos0``."""

    start: int
    end: int
    pos0: int
    table: torch.Tensor  # [1, blocks] covering positions 0 .. pos0 + end - start
    mask: torch.Tensor | None  # None: no earlier tokens, plain causal attention


@dataclass
class Decodes:
    """Tokens that attend one by one: each decoding token (and, with the C attention, each token of
    a short prompt chunk): packed indices, their sequences' block tables, what each may see."""

    index: torch.Tensor  # [B] packed index of each such token
    tables: torch.Tensor  # [B, blocks]
    lengths: torch.Tensor  # [B] keys each sees: its position + 1 (causal)
    mask: torch.Tensor  # [B, 1, 1, blocks * size]: key positions below the sequence's length


@dataclass
class StepLayout:
    """Where the tokens of one packed step write their KV and which keys each attends to."""

    slots: torch.Tensor  # [N] flat pool index of each token
    decodes: Decodes | None
    prefills: list[Prefill]


def paged_attention(pool: KVPool, layer: int, step: StepLayout, q: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of the step's queries ``[N, heads, dim]`` over their sequences' KV, after this
    layer's keys and values were written; computed in the pool's dtype (bf16 attention reads half
    the bytes and runs several times faster on a CPU without AVX-512). Returns ``[N, heads * dim]``."""
    n, heads, dim = q.shape
    kv_heads = pool.k.shape[2]
    out = q.new_empty(n, heads, dim)
    q = q.to(pool.k.dtype)
    d = step.decodes
    if d is not None:
        k, v = pool.gather(layer, d.tables)
        # Grouped-query decode: the heads sharing a KV head become that head's query rows.
        qd = q[d.index].view(-1, kv_heads, heads // kv_heads, dim)
        o = F.scaled_dot_product_attention(qd, k, v, attn_mask=d.mask, scale=scale)
        out[d.index] = o.reshape(-1, heads, dim).to(out.dtype)
    prefill_attention(pool, layer, step.prefills, q, scale, out)
    return out.view(n, heads * dim)


def prefill_attention(pool: KVPool, layer: int, prefills: list[Prefill], q: torch.Tensor, scale: float,
                      out: torch.Tensor) -> None:
    """Each prompt chunk's queries (rows of ``q [N, heads, dim]``) over its sequence's KV so far,
    causal within the chunk; results into the same rows of ``out``."""
    q = q.to(pool.k.dtype)
    for p in prefills:
        length = p.pos0 + p.end - p.start
        k, v = pool.gather(layer, p.table)
        o = F.scaled_dot_product_attention(
            q[p.start:p.end].transpose(0, 1)[None], k[:, :, :length], v[:, :, :length],
            attn_mask=p.mask, is_causal=p.mask is None, scale=scale, enable_gqa=True)
        out[p.start:p.end] = o[0].transpose(0, 1).to(out.dtype)
