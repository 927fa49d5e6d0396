"""Our own forward pass of a Llama-architecture model over one packed step.

It computes what transformers' ``LlamaForCausalLM`` computes (the same operations in the same
order, on the same tensors: ``exact`` weights are the transformers model's own, not copies), but
for a packed row of tokens from many sequences, with the paged KV pool, and with projections that
may run on the GGUF's 4-bit weights:

- ``exact``: every projection is a dense fp32 ``F.linear``; greedy answers equal ``model.generate``.
- ``native``: each projection holds the GGUF's Q4_1 weights packed for torch's int4 kernel (bf16
  activations, fp32 accumulation) and the dense weights beside them. A step of at most
  ``int4_max_rows`` tokens (decoding: memory-bound, where 4-bit weights are read 7x faster than
  fp32) runs the int4 kernel; a larger one (prefill, big batches: compute-bound) the dense one.
  Every row of a kernel is computed independently, so a sequence's answer does not depend on
  what shares its step, only on which kernel the step's size picks.

Norms, rotary embedding, attention, the residual stream and the (tied, Q8_0-exact) lm_head stay
fp32 in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .gguf_weights import GROUP_SIZE, Int4Weight
from .kv_cache import KVPool, StepLayout, paged_attention

RESCORED_LOGITS = 16  # per row, recomputed in fp32 after the bf16 head


class Projection(Protocol):
    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor: ...


class Dense:
    """``F.linear`` over one or more weights (outputs concatenated), the model's own tensors."""

    def __init__(self, *weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor:
        if len(self.weights) == 1:
            return F.linear(x, self.weights[0])
        return torch.cat([F.linear(x, w) for w in self.weights], dim=-1)


class Int4:
    """The GGUF's 4-bit weights for small steps, ``dense`` for the others."""

    def __init__(self, weight: Int4Weight, dense: Dense) -> None:
        self.weight = weight
        self.dense = dense

    def __call__(self, x: torch.Tensor, small: bool) -> torch.Tensor:
        if not small:
            return self.dense(x, small)
        w = self.weight
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), w.packed, GROUP_SIZE, w.scales_zeros).float()


@dataclass
class Layer:
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float

    @classmethod
    def of(cls, config: Any) -> Shape:
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.num_key_value_heads,
                   getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
                   config.intermediate_size, config.rms_norm_eps)


class Llama:
    def __init__(self, model: Any, int4_layers: list[dict[str, Int4Weight]] | None = None,
                 int4_max_rows: int = 0) -> None:
        """Wrap a transformers ``LlamaForCausalLM`` (its tensors, shared); with ``int4_layers``
        (from ``gguf_weights``) the projections of steps up to ``int4_max_rows`` tokens run in 4 bits."""
        self.shape = shape = Shape.of(model.config)
        inner = model.model
        self.embed: torch.Tensor = inner.embed_tokens.weight
        self.lm_head: torch.Tensor = model.lm_head.weight
        self.norm: torch.Tensor = inner.norm.weight
        self.int4_max_rows = int4_max_rows if int4_layers else 0
        # Small steps read the tied head in bf16 (half the bytes); each row's likeliest logits are
        # then recomputed in fp32, so greedy picks and the top of the distribution stay fp32.
        # bf16 GEMMs are slow past a row or two on CPUs without AVX-512 BF16: ``bf16_head_rows``
        # (measured) says up to how many rows the bf16 head is the faster one.
        self.lm_head_bf16 = self.lm_head.to(torch.bfloat16) if int4_layers else None
        self.bf16_head_rows = 1 if int4_layers else 0
        self.layers: list[Layer] = []
        for i, block in enumerate(inner.layers):
            attn, mlp = block.self_attn, block.mlp
            dense = {"qkv": Dense(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight),
                     "o": Dense(attn.o_proj.weight),
                     "gate_up": Dense(mlp.gate_proj.weight, mlp.up_proj.weight),
                     "down": Dense(mlp.down_proj.weight)}
            proj: dict[str, Projection] = dict(dense)
            if int4_layers:
                proj = {name: Int4(int4_layers[i][name], d) for name, d in dense.items()}
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

    @property
    def native(self) -> bool:
        return self.int4_max_rows > 0

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, layout: StepLayout, pool: KVPool,
                logits_index: torch.Tensor, small: bool | None = None) -> torch.Tensor:
        """Logits ``[len(logits_index), vocab]`` for packed tokens ``ids`` at ``positions``;
        their keys and values go into ``pool`` as ``layout`` says. ``small`` forces the kernel choice."""
        s = self.shape
        if small is None:
            small = ids.shape[0] <= self.int4_max_rows
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
        x = F.rms_norm(x[logits_index], (s.hidden,), self.norm, s.eps)
        if not small or self.lm_head_bf16 is None or x.shape[0] > self.bf16_head_rows:
            return F.linear(x, self.lm_head)
        logits = F.linear(x.to(torch.bfloat16), self.lm_head_bf16).float()
        top = logits.topk(RESCORED_LOGITS, dim=-1).indices
        exact = torch.einsum("rd,rkd->rk", x, self.lm_head[top])
        return logits.scatter_(1, top, exact)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
