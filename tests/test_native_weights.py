"""``native`` weights (the GGUF's own 4-bit tensors) against ``exact`` (dense fp32), on the real model.

The quality test teacher-forces a fixed text of 2,048 tokens through both and forces the native
kernels (int4 projections, bf16 head) at every position: that is what every decoded token sees.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chat, engine_like

from inference.engine.gguf_weights import q4_1_blocks, read_int4_layers, rotary_row_order
from inference.engine.kv_cache import KVPool, Prefill, StepLayout
from inference.engine.llm_engine import LLMEngine

pytestmark = pytest.mark.model

TEXT = Path(__file__).parent / "data" / "quality_text.md"
TOKENS = 2048
CHUNK = 256


def teacher_forced(engine: LLMEngine, ids: list[int], small: bool) -> torch.Tensor:
    """Logits at every position of ``ids`` (one sequence), computed in chunks as prefill is, with
    the engine's weights and KV dtype."""
    llama = engine.runner.llama
    s, size = llama.shape, 16
    pool = KVPool(s.layers, -(-len(ids) // size), size, s.kv_heads, s.head_dim, engine.runner.pool.k.dtype,
                  torch.device("cpu"))
    table = torch.arange(pool.num_blocks)[None]
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), CHUNK):
            end = min(start + CHUNK, len(ids))
            n = end - start
            mask = None if start == 0 else torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]
            layout = StepLayout(torch.arange(start, end), None, [Prefill(0, n, start, table, mask)])
            out.append(llama.forward(torch.tensor(ids[start:end]), torch.arange(start, end), layout, pool,
                                     torch.arange(n), small=small))
    return torch.cat(out)


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    return math.exp(float(nll))


def test_native_keeps_top1_agreement_and_perplexity_over_2048_tokens(native: LLMEngine, llm: LLMEngine):
    ids = native.tokenizer(TEXT.read_text()).input_ids[:TOKENS]
    assert len(ids) == TOKENS
    assert native.runner.pool.k.dtype == torch.bfloat16  # native keeps KV and computes attention in bf16
    exact = teacher_forced(llm, ids, small=False)
    llama = native.runner.llama
    rows, llama.bf16_head_rows = llama.bf16_head_rows, CHUNK  # the bf16 head at every position too
    try:
        quant = teacher_forced(native, ids, small=True)
    finally:
        llama.bf16_head_rows = rows
    agreement = float((exact[:-1].argmax(-1) == quant[:-1].argmax(-1)).float().mean())
    ppl_exact, ppl_native = perplexity(exact, ids), perplexity(quant, ids)
    print(f"top-1 agreement {agreement:.4f}; perplexity exact {ppl_exact:.3f}, native {ppl_native:.3f}")
    assert agreement >= 0.98
    assert abs(ppl_native / ppl_exact - 1) <= 0.01


def test_native_weights_are_the_gguf_tensors_exactly(llm: LLMEngine):
    """Unpacked Q4_1 blocks, rows put back in the Hugging Face order, equal the dequantized model."""
    import gguf

    assert llm.source is not None
    reader = gguf.GGUFReader(llm.source.path)
    tensors = {t.name: t for t in reader.tensors}
    cfg = llm.model.config
    layer = llm.model.model.layers[3]
    for name, weight, heads in (("attn_q", layer.self_attn.q_proj.weight, cfg.num_attention_heads),
                                ("attn_k", layer.self_attn.k_proj.weight, cfg.num_key_value_heads),
                                ("ffn_down", layer.mlp.down_proj.weight, None)):
        q, d, m = q4_1_blocks(np.asarray(tensors[f"blk.3.{name}.weight"].data))
        w = (q.reshape(q.shape[0], -1, 32) * d[..., None] + m[..., None]).reshape(q.shape)
        if heads:
            w = w[rotary_row_order(w.shape[0], heads)]
        assert np.array_equal(w, weight.detach().numpy()), name


def test_packed_int4_kernel_computes_the_dequantized_weights(llm: LLMEngine):
    assert llm.source is not None
    cfg = llm.model.config
    packed = read_int4_layers(llm.source.path, 1, cfg.num_attention_heads, cfg.num_key_value_heads)[0]["gate_up"]
    x = torch.randn(3, cfg.hidden_size)
    mlp = llm.model.model.layers[0].mlp
    with torch.inference_mode():
        want = torch.cat([x @ mlp.gate_proj.weight.T, x @ mlp.up_proj.weight.T], dim=-1)
        got = torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), packed.packed, 32, packed.scales_zeros).float()
    assert torch.allclose(got, want, atol=0.05 * float(want.abs().max()))


def test_native_answers_the_capital_question(native: LLMEngine):
    assert native.weights.mode == "native"
    assert "Paris" in run_alone(native, chat("What is the capital of France?", max_new_tokens=12))


PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain gravity in one sentence.",
           "List three fruits.", "What is 2+2?", "Who wrote Hamlet?", "Name a color.", "Say hello in Spanish."]


def run_alone(engine: LLMEngine, request) -> str:
    return run_together(engine, [request])[0]


def run_together(engine: LLMEngine, requests) -> list[str]:
    ids = [engine.add(engine.prepare(r)) for r in requests]
    texts: dict[int, str] = {}
    while engine.has_work():
        for out in engine.step():
            if out.completion is not None:
                texts[out.seq_id] = out.completion.text
    return [texts[i] for i in ids]


def test_native_greedy_answer_alone_equals_its_answer_in_a_batch_of_8(native: LLMEngine):
    """Each step of a batch of 8 decodes runs the same int4 kernel as a step of one (8 is within
    the calibrated int4 range, forced here), and rows are computed independently."""
    engine = engine_like(native, int4_max_rows=8, kv_cache_tokens=4096)
    requests = [chat(p, max_new_tokens=24) for p in PROMPTS]
    alone = [run_alone(engine, r) for r in requests]
    assert run_together(engine, requests) == alone
