"""Our own forward pass of a Llama-architecture model over one packed step.

It computes what transformers' ``LlamaForCausalLM`` computes (the same operations in the same
order, on the same tensors: ``exact`` weights are the transformers model's own, not copies), but
for a packed row of tokens from many sequences, with the paged KV pool, and with projections that
may run on the GGUF's 4-bit weights:

- ``exact``: every projection is a dense fp32 ``F.linear``; greedy answers equal ``model.generate``.
- ``native``: each projection holds the GGUF's Q4_1 blocks as stored, and the dense weights beside
  them. A step of at most ``int4_max_rows`` tokens (decoding: memory-bound, where 6-bit weights
  are read 5x faster than fp32) runs the block kernel; a larger one (prefill, big batches:
  compute-bound) the dense one. The head runs on the GGUF's Q8_0 blocks for up to ``q8_head_rows``
  sampled rows. The kernels dequantize each weight exactly as the dense model holds it and compute
  in fp32, so the two modes differ only in the order of the sums (and native's bf16 KV cache).
  Every row of a kernel is computed independently, so a sequence's answer does not depend on what
  shares its step, only on which kernel the step's size picks.

Norms, rotary embedding, the residual stream and every accumulation stay fp32 in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .gguf_weights import NativeWeights, Q4Weight
from .kernels import Kernels
from .kv_cache import KVPool, StepLayout, paged_attention, prefill_attention
from .shape import Shape


class Projection(Protocol):
    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor: ...

    def add_into(self, x: torch.Tensor, out: torch.Tensor, small: bool) -> None:
        """``out += x @ W.T`` (the residual stream, in place)."""


class Dense:
    """``F.linear`` over one or more weights (outputs concatenated), the model's own tensors."""

    def __init__(self, *weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor:
        if len(self.weights) == 1:
            return F.linear(x, self.weights[0])
        return torch.cat([F.linear(x, w) for w in self.weights], dim=-1)

    def add_into(self, x: torch.Tensor, out: torch.Tensor, small: bool) -> None:
        out.add_(self(x, small))


class Quantized:
    """The GGUF's Q4_1 blocks for small steps, ``dense`` for the others."""

    def __init__(self, weight: Q4Weight, dense: Dense, kernels: Kernels) -> None:
        self.weight = weight
        self.dense = dense
        self.kernels = kernels

    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor:
        return self.kernels.q4_1(x, self.weight) if small else self.dense(x, small)

    def add_into(self, x: torch.Tensor, out: torch.Tensor, small: bool) -> None:
        if small:
            self.kernels.q4_1(x, self.weight, out=out)
        else:
            self.dense.add_into(x, out, small)


@dataclass
class Layer:
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


class Llama:
    def __init__(self, model: Any, native: NativeWeights | None = None, kernels: Kernels | None = None,
                 int4_max_rows: int = 0) -> None:
        """Wrap a transformers ``LlamaForCausalLM`` (its tensors, shared); with ``native`` weights
        (from ``gguf_weights``) and ``kernels``, the projections of steps up to ``int4_max_rows``
        tokens run on the GGUF's 4-bit blocks."""
        self.shape = shape = Shape.of(model.config)
        inner = model.model
        self.embed: torch.Tensor = inner.embed_tokens.weight
        self.lm_head: torch.Tensor = model.lm_head.weight
        self.norm: torch.Tensor = inner.norm.weight
        self.kernels = kernels if native else None
        self.int4_max_rows = int4_max_rows if self.kernels else 0
        # The head's Q8_0 blocks are the dense head exactly, at 9 bits a weight instead of 32:
        # ``q8_head_rows`` (measured) says up to how many sampled rows their kernel is the faster one.
        self.head_q8 = native.head if native and self.kernels else None
        self.q8_head_rows = 0
        self.layers: list[Layer] = []
        for i, block in enumerate(inner.layers):
            attn, mlp = block.self_attn, block.mlp
            dense = {"qkv": Dense(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight),
                     "o": Dense(attn.o_proj.weight),
                     "gate_up": Dense(mlp.gate_proj.weight, mlp.up_proj.weight),
                     "down": Dense(mlp.down_proj.weight)}
            proj: dict[str, Projection] = dict(dense)
            if native and kernels:
                proj = {name: Quantized(native.layers[i][name], d, kernels) for name, d in dense.items()}
            self.layers.append(Layer(block.input_layernorm.weight, block.post_attention_layernorm.weight,
                                     proj["qkv"], proj["o"], proj["gate_up"], proj["down"]))
        inv_freq = inner.rotary_emb.inv_freq.float()
        scaling = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))
        positions = torch.arange(model.config.max_position_embeddings, device=inv_freq.device).float()
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * scaling).to(self.embed.dtype)
        self.sin = (emb.sin() * scaling).to(self.embed.dtype)
        self.scale = shape.head_dim ** -0.5
        self.one_call = True  # native steps whose rows all attend alone run every layer in one C call
        self._blocks = torch.empty(0, dtype=torch.int64)
        self._blocks_for: KVPool | None = None

    @property
    def native(self) -> bool:
        return self.kernels is not None

    def uses_kernels(self, pool: KVPool) -> bool:
        """Whether steps over ``pool`` run the C layers (native weights, bf16 KV)."""
        return self.kernels is not None and pool.k.dtype == torch.bfloat16

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, layout: StepLayout, pool: KVPool,
                logits_index: torch.Tensor, small: bool | None = None) -> torch.Tensor:
        """Logits ``[len(logits_index), vocab]`` for packed tokens ``ids`` at ``positions``;
        their keys and values go into ``pool`` as ``layout`` says. ``small`` forces the kernel choice."""
        if small is None:
            small = ids.shape[0] <= self.int4_max_rows
        if self.uses_kernels(pool):
            assert self.kernels is not None
            x = self._native_layers(ids, positions, layout, pool, small, self.kernels)
        else:
            x = self._layers(ids, positions, layout, pool, small)
        x = F.rms_norm(x[logits_index], (self.shape.hidden,), self.norm, self.shape.eps)
        if self.kernels is not None and self.head_q8 is not None and x.shape[0] <= self.q8_head_rows:
            return self.kernels.q8_0(x, self.head_q8)
        return F.linear(x, self.lm_head)

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, layout: StepLayout, pool: KVPool,
                small: bool) -> torch.Tensor:
        """The decoder layers in torch ops: the residual stream after the last one."""
        s = self.shape
        n = ids.shape[0]
        x = F.embedding(ids, self.embed)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (s.hidden,), layer.attn_norm, s.eps)
            qkv = layer.qkv(h, small)
            qk = qkv[:, :q_dim + kv_dim].view(n, s.heads + s.kv_heads, s.head_dim)
            qk = qk * cos + rotate_half(qk) * sin
            q, k = qk[:, :s.heads], qk[:, s.heads:]
            pool.write(i, layout.slots, k, qkv[:, q_dim + kv_dim:].view(n, s.kv_heads, s.head_dim))
            x = x + layer.o(paged_attention(pool, i, layout, q, self.scale), small)
            h = F.rms_norm(x, (s.hidden,), layer.mlp_norm, s.eps)
            gate, up = layer.gate_up(h, small).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up, small)
        return x

    def _native_layers(self, ids: torch.Tensor, positions: torch.Tensor, layout: StepLayout, pool: KVPool,
                       small: bool, k: Kernels) -> torch.Tensor:
        """The same layers with the C kernels for everything but dense projections and prompt
        attention: a handful of calls per layer instead of some thirty torch ops, which is most
        of a one-token step's time otherwise. Needs the bf16 pool (native's ``auto`` KV dtype).
        When a step on the blocks (``small``) has no prompt chunk attending in torch, so that every
        row attends alone (decoding, short prompt chunks), the same calls run from C in one
        ``decode_layers`` call: 20% off a one-token step, the same result to the bit."""
        s = self.shape
        n = ids.shape[0]
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        x = F.embedding(ids, self.embed)  # owned and contiguous: the projections add into it
        d = layout.decodes
        if self.one_call and small and d is not None and not layout.prefills:  # every row attends alone
            k.decode_layers(x, self._layer_blocks(pool, k), s, positions, self.cos, self.sin, layout.slots, d,
                            pool.block_size, self.scale)
            return x
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(k.rms_norm(x, layer.attn_norm, s.eps), small)
            k.rope(qkv, s.heads + s.kv_heads, s.head_dim, positions, self.cos, self.sin)
            k.kv_write(qkv, q_dim, q_dim + kv_dim, kv_dim, layout.slots, pool.k[i], pool.v[i])
            attn = x.new_empty(n, q_dim)
            if d is not None:
                k.decode_attention(qkv, d.index, d.tables, d.lengths, pool.block_size, pool.k[i], pool.v[i],
                                   s.heads, s.head_dim, self.scale, attn)
            if layout.prefills:
                prefill_attention(pool, i, layout.prefills, qkv[:, :q_dim].view(n, s.heads, s.head_dim), self.scale,
                                  attn.view(n, s.heads, s.head_dim))
            layer.o.add_into(attn, x, small)
            layer.down.add_into(k.silu_mul(layer.gate_up(k.rms_norm(x, layer.mlp_norm, s.eps), small)), x, small)
        return x

    def _layer_blocks(self, pool: KVPool, k: Kernels) -> torch.Tensor:
        """Each layer's addresses for ``decode_layers`` (``LayerBlocks`` in the C source), made
        once per pool. The pool is kept referenced with them, so its memory cannot go to another
        pool while they point into it; the weights live as long as the model."""
        if self._blocks_for is not pool:
            rows = []
            for i, layer in enumerate(self.layers):
                row = [layer.attn_norm, layer.mlp_norm]
                for proj in (layer.qkv, layer.o, layer.gate_up, layer.down):
                    assert isinstance(proj, Quantized)  # native: every projection has its blocks
                    row += [proj.weight.qs, proj.weight.d, proj.weight.m]
                rows.append([t.data_ptr() for t in (*row, pool.k[i], pool.v[i])])
            assert all(len(r) == k.layer_fields for r in rows)
            self._blocks, self._blocks_for = torch.tensor(rows, dtype=torch.int64), pool
        return self._blocks


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
