"""The model side of a step: KV slots, one packed forward pass, sampling.

All tokens of a step (decodes and prefill chunks of many sequences) are packed into one row and
run through the transformers model's own forward, so every linear layer sees one matrix with no
padding. Only attention is ours: a registered attention function writes each token's key and
value into its sequence's KV slot and attends over that slot.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ..boundary import SamplingParams
from .scheduler import Scheduled
from .structured import FormatMasks  # structured output (issue 15)

ATTENTION_NAME = "slot_kv"


class SlotKVCache:
    """Keys and values per layer as ``[slots, kv_heads, max_len, head_dim]``.

    On CPU the buffer comes from calloc (numpy.zeros), so pages are resident only once touched:
    memory grows with the longest sequences actually served, up to slots * max_len tokens.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (layers, 2, slots, kv_heads, max_len, head_dim)
        if device.type == "cpu" and dtype == torch.float32:
            buf = torch.from_numpy(np.zeros(shape, dtype=np.float32))
        else:
            buf = torch.zeros(shape, dtype=dtype, device=device)
        self.k = buf[:, 0]
        self.v = buf[:, 1]
        self.max_len = max_len
        self.bytes_per_token = layers * 2 * kv_heads * head_dim * buf.element_size()


class PrefixCache:
    """Keys and values of recent prompts, so a new prompt that starts the same way (the system
    prompt and chat template, earlier turns) skips prefilling that part. Least recently used
    entries go first; memory is at most ``entries * max_tokens`` tokens of KV."""

    def __init__(self, cache: SlotKVCache, entries: int, max_tokens: int = 1024, min_match: int = 4) -> None:
        self.cache = cache
        self.capacity = entries
        self.max_tokens = max_tokens
        self.min_match = min_match
        self._entries: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def reuse(self, prompt: list[int], slot: int) -> int:
        """Copy the longest cached prefix of ``prompt`` into ``slot``; return its length.
        At least the prompt's last token is left to compute (its logits give the first token)."""
        best, best_kv = 0, None
        for ids, kv in self._entries.items():
            n = common_prefix(ids, prompt, len(prompt) - 1)
            if n > best:
                best, best_kv, best_ids = n, kv, ids
        if best < self.min_match or best_kv is None:
            return 0
        self._entries.move_to_end(best_ids)
        self.cache.k[:, slot, :, :best] = best_kv[:, 0, :, :best]
        self.cache.v[:, slot, :, :best] = best_kv[:, 1, :, :best]
        return best

    def store(self, prompt: list[int], slot: int) -> None:
        if self.capacity == 0:
            return
        n = min(len(prompt), self.max_tokens)
        key = tuple(prompt[:n])
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = torch.stack((self.cache.k[:, slot, :, :n], self.cache.v[:, slot, :, :n]), dim=1).clone()
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def common_prefix(a: tuple[int, ...], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class Prefill:
    """A chunk of one sequence: packed tokens ``start:end`` at positions ``pos0:pos0+end-start``."""

    start: int
    end: int
    slot: int
    pos0: int
    mask: torch.Tensor | None  # None: no cached prefix, plain causal attention


@dataclass
class StepBatch:
    """What the attention function needs to know about the packed tokens of one step."""

    cache: SlotKVCache
    tok_slot: torch.Tensor  # [N] slot of each packed token
    tok_pos: torch.Tensor  # [N] position of each packed token
    dec_tok: torch.Tensor | None  # [Bd] packed index of each decoding token
    dec_rows: torch.Tensor | None  # [Bd] its row in the slot span
    dec_span: tuple[int, int]  # slots lo:hi covering every decoding sequence
    dec_mask: torch.Tensor | None  # [hi-lo, 1, 1, kv_len] keys each row may see
    prefills: list[Prefill]


def slot_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: torch.Tensor | None,
                   scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """Attention over KV slots for packed tokens (query ``[1, heads, N, dim]``).

    Outside an engine step (no ``step_batch``, e.g. ``model.generate``) it is transformers' SDPA.
    """
    step: StepBatch | None = kwargs.pop("step_batch", None)
    if step is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    layer: int = module.layer_idx  # type: ignore[assignment]  # set on each attention module by transformers
    k_cache, v_cache = step.cache.k[layer], step.cache.v[layer]
    k_cache[step.tok_slot, :, step.tok_pos] = key[0].transpose(0, 1)
    v_cache[step.tok_slot, :, step.tok_pos] = value[0].transpose(0, 1)
    heads, n, dim = query.shape[1:]
    kv_heads = key.shape[1]
    out = query.new_empty(n, heads, dim)
    if step.dec_tok is not None and step.dec_mask is not None:
        lo, hi = step.dec_span
        kv_len = step.dec_mask.shape[-1]
        # Grouped-query decode: the heads sharing a KV head become that head's query rows.
        q = query[0][:, step.dec_tok].transpose(0, 1).reshape(-1, kv_heads, heads // kv_heads, dim)
        q_span = query.new_zeros(hi - lo, kv_heads, heads // kv_heads, dim)
        q_span[step.dec_rows] = q
        o = F.scaled_dot_product_attention(
            q_span, k_cache[lo:hi, :, :kv_len], v_cache[lo:hi, :, :kv_len],
            attn_mask=step.dec_mask, scale=scaling)
        out[step.dec_tok] = o[step.dec_rows].reshape(-1, heads, dim)
    for p in step.prefills:
        end_pos = p.pos0 + p.end - p.start
        o = F.scaled_dot_product_attention(
            query[:, :, p.start:p.end], k_cache[p.slot:p.slot + 1, :, :end_pos],
            v_cache[p.slot:p.slot + 1, :, :end_pos], attn_mask=p.mask,
            is_causal=p.mask is None, scale=scaling, enable_gqa=True)
        out[p.start:p.end] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


AttentionInterface.register(ATTENTION_NAME, slot_attention)


class ModelRunner:
    """Runs steps of the model for a list of scheduled sequences and samples their next tokens."""

    def __init__(self, model: torch.nn.Module, max_slots: int, max_len: int, prefix_cache_entries: int = 16) -> None:
        cfg: Any = model.config  # a transformers config; torch types it as a Module attribute
        self.model = model
        self.device = next(model.parameters()).device
        cfg._attn_implementation = ATTENTION_NAME
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.cache = SlotKVCache(cfg.num_hidden_layers, max_slots, cfg.num_key_value_heads, max_len,
                                 head_dim, next(model.parameters()).dtype, self.device)
        self.prefix_cache = PrefixCache(self.cache, prefix_cache_entries)
        self._dummy_mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=self.device)
        self.last_forward_seconds = 0.0
        self.masks = FormatMasks()  # structured output (issue 15)

    @torch.inference_mode()
    def step(self, plan: list[Scheduled]) -> list[int | Exception]:
        """Compute the plan's tokens; return the next token (or why sampling failed) of each entry
        whose ``samples`` is set."""
        ids, batch, keep = self._pack(plan)
        started = time.perf_counter()
        logits = self.model(
            input_ids=ids[None], position_ids=batch.tok_pos[None], attention_mask=self._dummy_mask,
            use_cache=False, logits_to_keep=keep, step_batch=batch,
        ).logits[0]
        self.last_forward_seconds = time.perf_counter() - started
        return self._sample(logits, [s.seq for s in plan if s.samples])

    def _pack(self, plan: list[Scheduled]) -> tuple[torch.Tensor, StepBatch, torch.Tensor]:
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        keep: list[int] = []
        decodes: list[tuple[int, int, int]] = []  # packed index, slot, kv length
        prefills: list[Prefill] = []
        for s in plan:
            seq, start, p0 = s.seq, len(ids), s.seq.num_computed
            slot = seq.slot
            assert slot is not None  # the scheduler plans running sequences only
            ids += seq.tokens(p0, p0 + s.num_new)
            pos += range(p0, p0 + s.num_new)
            slots += [slot] * s.num_new
            if s.num_new == 1:
                decodes.append((start, slot, p0 + 1))
            else:
                prefills.append(Prefill(start, len(ids), slot, p0, self._prefix_mask(p0, s.num_new)))
            if s.samples:
                keep.append(len(ids) - 1)
        dev = self.device
        batch = StepBatch(self.cache, torch.tensor(slots, device=dev), torch.tensor(pos, device=dev),
                          None, None, (0, 0), None, prefills)
        if decodes:
            self._pack_decodes(batch, decodes)
        return torch.tensor(ids, device=dev), batch, torch.tensor(keep, device=dev)

    def _pack_decodes(self, batch: StepBatch, decodes: list[tuple[int, int, int]]) -> None:
        lo = min(d[1] for d in decodes)
        hi = max(d[1] for d in decodes) + 1
        lengths = torch.ones(hi - lo, dtype=torch.long)  # rows not decoding attend to position 0
        rows = torch.tensor([d[1] - lo for d in decodes])
        lengths[rows] = torch.tensor([d[2] for d in decodes])
        kv_len = int(lengths.max())
        dev = self.device
        batch.dec_tok = torch.tensor([d[0] for d in decodes], device=dev)
        batch.dec_rows = rows.to(dev)
        batch.dec_span = (lo, hi)
        batch.dec_mask = (torch.arange(kv_len)[None, :] < lengths[:, None])[:, None, None, :].to(dev)

    def _prefix_mask(self, pos0: int, n: int) -> torch.Tensor | None:
        if pos0 == 0:
            return None
        q_pos = torch.arange(pos0, pos0 + n)[:, None]
        return (torch.arange(pos0 + n)[None, :] <= q_pos).to(self.device)

    def _sample(self, logits: torch.Tensor, seqs: list) -> list[int | Exception]:
        """One token per sequence; a sequence whose sampling fails gets its exception instead,
        and only that sequence ends with an error."""
        logits = logits.float()
        self.masks.apply(logits, seqs)  # structured output (issue 15): formatted rows, one batched call
        out: list[int | Exception] = list(logits.argmax(dim=-1).tolist())
        for i, seq in enumerate(seqs):
            if not seq.params.greedy:
                try:
                    out[i] = sample_token(logits[i], seq.params, self._generator(seq))
                except Exception as exc:
                    out[i] = exc
        return out

    def _generator(self, seq) -> torch.Generator:
        gen = seq.generator
        if gen is None:
            gen = torch.Generator(device=self.device)
            if seq.params.seed is None:
                gen.seed()
            else:
                gen.manual_seed(seq.params.seed)
            seq.generator = gen
        return gen


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Temperature, then top-k, then top-p (nucleus) sampling of one row of logits.

    Numerically safe for every valid option: temperatures below ``GREEDY_BELOW`` never get here
    (they are greedy), and top-p always keeps the likeliest token, however small ``top_p`` is."""
    logits = logits / params.temperature
    index = None
    if params.top_k:  # topk returns the largest first, as top-p needs
        logits, index = logits.topk(min(params.top_k, logits.numel()))
    elif params.top_p < 1.0:
        logits, index = logits.sort(descending=True)
    probs = logits.softmax(-1)
    if params.top_p < 1.0:
        drop = probs.cumsum(-1) - probs >= params.top_p
        drop[0] = False
        probs = probs.masked_fill(drop, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return int(choice if index is None else index[choice])
