"""Our own forward pass of a Llama-architecture model over one packed step.

It computes what transformers' ``LlamaForCausalLM`` computes (the same operations in the same
order, on the same tensors: ``exact`` weights are the transformers model's own, not copies), but
for a packed row of tokens from many sequences, with the paged KV pool, and with projections that
may run on the GGUF's 4-bit weights:

- ``exact``: every projection is a dense fp32 ``F.linear``; greedy answers equal ``model.generate``.
- ``native``: each projection holds the GGUF's Q4_1 blocks as stored, and the dense weights beside
  them. A step of at most ``int4_max_rows`` tokens (decoding: memory-bound, where 6-bit weights
  are a fifth of fp32's bytes) runs the block kernel; a larger one (prefill, big batches:
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
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def add_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out += x @ W.T`` (the residual stream, in place)."""


class Dense:
    """``F.linear`` over one or more weights (outputs concatenated), the model's own tensors."""

    def __init__(self, *weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.weights) == 1:
            return F.linear(x, self.weights[0])
        return torch.cat([F.linear(x, w) for w in self.weights], dim=-1)

    def add_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        out.add_(self(x))


class Blocks:
    """The GGUF's Q4_1 blocks of the same matrix, through the block kernel."""

    def __init__(self, weight: Q4Weight, kernels: Kernels) -> None:
        self.weight = weight
        self.kernels = kernels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.q4_1(x, self.weight)

    def add_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        self.kernels.q4_1(x, self.weight, out=out)


@dataclass(frozen=True, kw_only=True)
class Projections:
    """One layer's four projections, all of one kind."""

    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


@dataclass(frozen=True, kw_only=True)
class Layer:
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    dense: Projections
    blocks: Projections | None  # native weights only


class StepOps(Protocol):
    """The parts of a layer besides its projections, for one step; a step takes one kind
    throughout, chosen once."""

    def norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor: ...

    def attention(self, qkv: torch.Tensor, layer: int) -> torch.Tensor:
        """Rotary on the step's queries and keys, its keys and values into the pool, and the
        queries' attention ``[N, heads * dim]``."""
        ...

    def act(self, gate_up: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of the two halves of each row."""
        ...


@dataclass(frozen=True)
class TorchOps:
    """Torch's own operations, as transformers' Llama computes them (any KV dtype)."""

    llama: Llama
    positions: torch.Tensor
    layout: StepLayout
    pool: KVPool

    def norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.llama.shape.hidden,), weight, self.llama.shape.eps)

    def attention(self, qkv: torch.Tensor, layer: int) -> torch.Tensor:
        s, n = self.llama.shape, qkv.shape[0]
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        cos, sin = self.llama.cos[self.positions][:, None], self.llama.sin[self.positions][:, None]
        qk = qkv[:, :q_dim + kv_dim].view(n, s.heads + s.kv_heads, s.head_dim)
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk[:, :s.heads], qk[:, s.heads:]
        self.pool.write(layer, self.layout.slots, k, qkv[:, q_dim + kv_dim:].view(n, s.kv_heads, s.head_dim))
        return paged_attention(self.pool, layer, self.layout, q, self.llama.scale)

    def act(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up


@dataclass(frozen=True)
class KernelOps:
    """The C kernels, over the bf16 pool: a handful of calls per layer instead of some thirty torch
    ops. Rows that attend alone (decoding, short prompt chunks) take the C decode attention,
    prompt chunks attending as a whole torch's."""

    llama: Llama
    positions: torch.Tensor
    layout: StepLayout
    pool: KVPool
    k: Kernels

    def norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.k.rms_norm(x, weight, self.llama.shape.eps)

    def attention(self, qkv: torch.Tensor, layer: int) -> torch.Tensor:
        s, n, pool, k = self.llama.shape, qkv.shape[0], self.pool, self.k
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        k.rope(qkv, s.heads + s.kv_heads, s.head_dim, self.positions, self.llama.cos, self.llama.sin)
        k.kv_write(qkv, q_dim, q_dim + kv_dim, kv_dim, self.layout.slots, pool.k[layer], pool.v[layer])
        attn = qkv.new_empty(n, q_dim)
        d = self.layout.decodes
        if d is not None:
            k.decode_attention(qkv, d.index, d.tables, d.lengths, pool.block_size, pool.k[layer], pool.v[layer],
                               s.heads, s.head_dim, self.llama.scale, attn)
        if self.layout.prefills:
            prefill_attention(pool, layer, self.layout.prefills, qkv[:, :q_dim].view(n, s.heads, s.head_dim),
                              self.llama.scale, attn.view(n, s.heads, s.head_dim))
        return attn

    def act(self, gate_up: torch.Tensor) -> torch.Tensor:
        return self.k.silu_mul(gate_up)


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
            dense = Projections(qkv=Dense(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight),
                                o=Dense(attn.o_proj.weight), gate_up=Dense(mlp.gate_proj.weight, mlp.up_proj.weight),
                                down=Dense(mlp.down_proj.weight))
            blocks = None
            if native and self.kernels:
                w, k = native.layers[i], self.kernels
                blocks = Projections(qkv=Blocks(w["qkv"], k), o=Blocks(w["o"], k), gate_up=Blocks(w["gate_up"], k),
                                     down=Blocks(w["down"], k))
            self.layers.append(Layer(attn_norm=block.input_layernorm.weight, mlp_norm=block.post_attention_layernorm.weight,
                                     dense=dense, blocks=blocks))
        inv_freq = inner.rotary_emb.inv_freq.float()
        scaling = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))
        positions = torch.arange(model.config.max_position_embeddings, device=inv_freq.device).float()
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * scaling).to(self.embed.dtype)
        self.sin = (emb.sin() * scaling).to(self.embed.dtype)
        self.scale = shape.head_dim ** -0.5
        self.one_call = True  # native steps whose rows all attend alone run every layer in one C call
        self._blocks: Any = None
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
        their keys and values go into ``pool`` as ``layout`` says. ``small`` forces the choice of
        projections (the 4-bit blocks for small steps, dense for the others)."""
        if small is None:
            small = ids.shape[0] <= self.int4_max_rows
        x = F.embedding(ids, self.embed)  # owned and contiguous: the projections add into it
        k = self.kernels if self.uses_kernels(pool) else None
        if k is not None and small and self.one_call and layout.decodes is not None and not layout.prefills:
            k.decode_layers(x, self._layer_blocks(pool, k), self.shape, positions, self.cos, self.sin, layout.slots,
                            layout.decodes, pool.block_size, self.scale)
        else:
            ops: StepOps = KernelOps(self, positions, layout, pool, k) if k else TorchOps(self, positions, layout, pool)
            self._layers(x, ops, small and self.kernels is not None)
        x = F.rms_norm(x[logits_index], (self.shape.hidden,), self.norm, self.shape.eps)
        if self.kernels is not None and self.head_q8 is not None and x.shape[0] <= self.q8_head_rows:
            return self.kernels.q8_0(x, self.head_q8)
        return F.linear(x, self.lm_head)

    def _layers(self, x: torch.Tensor, ops: StepOps, blocks: bool) -> None:
        """The decoder layers over the residual stream ``x``, in place: the one layer loop. The
        fused ``decode_layers`` is the same loop in C (``KernelOps`` and the blocks), tested equal."""
        for i, layer in enumerate(self.layers):
            p = layer.blocks if blocks and layer.blocks is not None else layer.dense
            p.o.add_into(ops.attention(p.qkv(ops.norm(x, layer.attn_norm)), i), x)
            p.down.add_into(ops.act(p.gate_up(ops.norm(x, layer.mlp_norm))), x)

    def _layer_blocks(self, pool: KVPool, k: Kernels) -> Any:
        """Each layer's tensors for ``decode_layers``, made once per pool. The pool is kept
        referenced with them, so its memory cannot go to another pool while they point into it;
        the weights live as long as the model."""
        if self._blocks_for is not pool:
            rows = []
            for i, layer in enumerate(self.layers):
                assert layer.blocks is not None  # native: every projection has its blocks
                fields = {"attn_norm": layer.attn_norm, "mlp_norm": layer.mlp_norm, "k": pool.k[i], "v": pool.v[i]}
                for name in ("qkv", "o", "gate_up", "down"):
                    proj = getattr(layer.blocks, name)
                    assert isinstance(proj, Blocks)
                    w = proj.weight
                    fields |= {f"{name}_q": w.qs, f"{name}_d": w.d, f"{name}_m": w.m}
                rows.append(fields)
            self._blocks, self._blocks_for = k.layer_blocks(rows), pool
        return self._blocks


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
