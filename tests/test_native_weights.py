"""``native`` weights (the GGUF's own blocks) against ``exact`` (dense fp32), on the real model.

The quality test teacher-forces a fixed text of 2,048 tokens through both and forces the native
kernels (Q4_1 projections, Q8_0 head) at every position: that is what every decoded token sees.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chat, engine_like

from inference.engine import kernels as kernels_module
from inference.engine.config import EngineConfig
from inference.engine.gguf_weights import Q4Weight, Q8Weight, q4_1_split, q8_0_split, rotary_row_order
from inference.engine.kv_cache import KVPool, Prefill, StepLayout
from inference.engine.llm_engine import LLMEngine

pytestmark = pytest.mark.model

TEXT = Path(__file__).parent / "data" / "quality_text.md"
TOKENS = 2048
CHUNK = 256


def teacher_forced(engine: LLMEngine, ids: list[int], small: bool | None) -> torch.Tensor:
    """Logits at every position of ``ids`` (one sequence), computed in chunks as prefill is, with
    the engine's weights and KV dtype (``small``: as ``Llama.forward`` takes it)."""
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


@pytest.mark.parametrize("panel_dtype", ["float32", "bfloat16"])
def test_native_keeps_top1_agreement_and_perplexity_over_2048_tokens(llm: LLMEngine, panel_dtype: str):
    """Prompt chunks of 256 rows take the panels: in fp32, and in bf16 where the CPU has it (the default there)."""
    native = engine_like(llm, weights="native", panel_dtype=panel_dtype)
    assert native.runner.llama.kernels is not None
    if panel_dtype == "bfloat16" and not native.runner.llama.kernels.bf16_panels:
        pytest.skip("this CPU lacks AVX512-BF16")
    ids = native.tokenizer(TEXT.read_text()).input_ids[:TOKENS]
    assert len(ids) == TOKENS
    assert native.runner.pool.k.dtype == torch.bfloat16  # native keeps KV and computes attention in bf16
    exact = teacher_forced(llm, ids, small=False)
    llama = native.runner.llama
    rows, llama.q8_head_rows = llama.q8_head_rows, CHUNK  # the Q8_0 head at every position too
    try:
        quant = teacher_forced(native, ids, small=True)
    finally:
        llama.q8_head_rows = rows
    agreement = float((exact[:-1].argmax(-1) == quant[:-1].argmax(-1)).float().mean())
    ppl_exact, ppl_native = perplexity(exact, ids), perplexity(quant, ids)
    print(f"top-1 agreement {agreement:.4f}; perplexity exact {ppl_exact:.3f}, native {ppl_native:.3f}")
    assert agreement >= 0.98
    assert abs(ppl_native / ppl_exact - 1) <= 0.01


def test_native_weights_are_the_gguf_tensors_exactly(llm: LLMEngine):
    """Q4_1 and Q8_0 blocks as split from the file, rows put back in the Hugging Face order, equal
    the dequantized model bit for bit."""
    import gguf

    assert llm.source is not None
    reader = gguf.GGUFReader(llm.source.path)
    tensors = {t.name: t for t in reader.tensors}
    cfg = llm.model.config
    layer = llm.model.model.layers[3]
    for name, weight, heads in (("attn_q", layer.self_attn.q_proj.weight, cfg.num_attention_heads),
                                ("attn_k", layer.self_attn.k_proj.weight, cfg.num_key_value_heads),
                                ("ffn_down", layer.mlp.down_proj.weight, None)):
        qs, d, m = (torch.from_numpy(a) for a in q4_1_split(np.asarray(tensors[f"blk.3.{name}.weight"].data)))
        w = Q4Weight(qs, d, m).dequantize()
        if heads:
            w = w[rotary_row_order(w.shape[0], heads)]
        assert torch.equal(w, weight.detach()), name
    hq, hd = q8_0_split(np.asarray(tensors["token_embd.weight"].data))
    assert torch.equal(Q8Weight(torch.from_numpy(hq), torch.from_numpy(hd)).dequantize(), llm.model.lm_head.weight.detach())


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 9, 17, 24, 70])
def test_block_kernels_compute_the_dense_products(native: LLMEngine, rows: int):
    """Every path of the Q4_1 and Q8_0 kernels against ``F.linear`` on the dense weights (which
    are the same weights dequantized): row tiles of 1 to 4 (and several), panels of 16 and 8
    rows, panels with the last row in a tile (17), and more rows than one pass over the panels takes."""
    llama = native.runner.llama
    assert llama.kernels is not None and llama.head_q8 is not None
    layer = llama.layers[0]
    assert layer.blocks is not None
    x = torch.randn(rows, llama.shape.hidden)
    # bf16 panels (where the CPU has them) round x and the weights: a step's panel rows (all of a
    # step of panel_rows or more, but for a tail under 4 past a multiple of 8) are compared with the
    # product of the rounded operands.
    panel = 0
    if llama.kernels.bf16_panels and rows >= llama.kernels.panel_rows:
        panel = rows - rows % 8 if rows % 8 < 4 else rows
    with torch.inference_mode():
        for got, w in ((layer.blocks.gate_up(x), torch.cat(layer.dense.gate_up.weights)), (llama.kernels.q8_0(x, llama.head_q8), llama.lm_head)):
            want = torch.cat([(x[:panel].bfloat16().double() @ w.bfloat16().double().T).float(), x[panel:] @ w.T])
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_native_falls_back_to_exact_where_the_kernels_cannot_be_built(llm: LLMEngine, monkeypatch):
    from inference.engine.model_runner import build_llama

    def unavailable(*args):
        raise kernels_module.KernelsUnavailable("this CPU lacks avx2")

    monkeypatch.setattr(kernels_module, "load", unavailable)
    llama, plan = build_llama(llm.model, EngineConfig(weights="native"), llm.source)
    assert (plan.mode, plan.reason, llama.native) == ("exact", "this CPU lacks avx2", False)


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
    """Each step of a batch of 8 decodes runs the same 4-bit kernel as a step of one (8 is within
    the calibrated range, forced here), and rows are computed independently."""
    engine = engine_like(native, int4_max_rows=8, kv_cache_tokens=4096)
    requests = [chat(p, max_new_tokens=24) for p in PROMPTS]
    alone = [run_alone(engine, r) for r in requests]
    assert run_together(engine, requests) == alone


def row_by_row(engine: LLMEngine, ids: list[int], chunk: int) -> tuple[torch.Tensor, KVPool]:
    """Logits of ``ids`` (one sequence) fed in chunks whose every row attends alone, and the pool."""
    from inference.engine.kv_cache import Decodes

    llama, size = engine.runner.llama, 16
    s = llama.shape
    pool = KVPool(s.layers, -(-len(ids) // size), size, s.kv_heads, s.head_dim, torch.bfloat16, torch.device("cpu"))
    table = torch.arange(pool.num_blocks)[None]
    got = []
    with torch.inference_mode():
        for start in range(0, len(ids), chunk):
            n = min(chunk, len(ids) - start)
            lengths = torch.arange(start + 1, start + n + 1)
            mask = (torch.arange(pool.num_blocks * size)[None, :] < lengths[:, None])[:, None, None, :]
            rows = Decodes(torch.arange(n), table.expand(n, -1).contiguous(), lengths, mask)
            layout = StepLayout(torch.arange(start, start + n), rows, [])
            got.append(llama.forward(torch.tensor(ids[start:start + n]), torch.arange(start, start + n), layout, pool,
                                     torch.arange(n), small=True))
    return torch.cat(got), pool


def test_prompt_tokens_attending_row_by_row_in_c_match_torch_prompt_attention(native: LLMEngine):
    """Short prompt chunks go through the C attention one row each (its causal length): over 192
    tokens in chunks of 32, the logits match those of whole-chunk torch attention."""
    ids = native.tokenizer(TEXT.read_text()).input_ids[:192]
    want = teacher_forced(native, ids, small=True)
    logits, _ = row_by_row(native, ids, 32)
    assert float((logits.argmax(-1) == want.argmax(-1)).float().mean()) >= 0.99
    torch.testing.assert_close(logits, want, rtol=0, atol=0.05 * float(want.abs().max()))


@pytest.mark.parametrize("chunk", [1, 5, 32])
def test_layers_in_one_c_call_equal_the_layer_by_layer_calls_to_the_bit(native: LLMEngine, chunk: int):
    """``decode_layers`` (every layer in one call) against the same kernels called per layer from
    Python: the same logits and the same keys and values in the pool, bit for bit."""
    llama = native.runner.llama
    ids = native.tokenizer(TEXT.read_text()).input_ids[:70]
    try:
        llama.one_call = False
        want, want_pool = row_by_row(native, ids, chunk)
    finally:
        llama.one_call = True
    got, pool = row_by_row(native, ids, chunk)
    assert torch.equal(got, want)
    assert torch.equal(pool.k, want_pool.k) and torch.equal(pool.v, want_pool.v)


def test_calibration_is_kept_and_measured_again_for_an_older_one(native: LLMEngine, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """A kept calibration is used on the machine it was measured on; one from before the crossover
    was timed with the weights coming from memory (no version) is measured again, then kept."""
    from inference.engine import model_runner

    llama = native.runner.llama
    calls: list[str] = []
    monkeypatch.setattr(model_runner, "calibrate_int4_rows", lambda _: calls.append("blocks") or 128)
    monkeypatch.setattr(model_runner, "calibrate_q8_head_rows", lambda _: calls.append("head") or 16)
    path = tmp_path / "calibration.json"
    key = model_runner.machine_key(llama.kernels.panels)
    path.write_text(json.dumps({"machine": key, "int4_max_rows": 256, "q8_head_rows": 256}))
    assert model_runner.calibration(llama, path) == (128, 16)  # measured again
    assert model_runner.calibration(llama, path) == (128, 16)  # then read back
    assert calls == ["blocks", "head"]
    assert json.loads(path.read_text())["version"] == model_runner.CALIBRATION_VERSION


def test_the_crossover_is_timed_on_real_projections_and_ends_where_dense_wins_twice(native: LLMEngine):
    from inference.engine import model_runner

    calls: list[int] = []

    def fast(x: torch.Tensor) -> None:
        calls.append(x.shape[0])
        time.sleep(0.0002 if x.shape[0] <= 16 else 0.004)

    def slow(x: torch.Tensor) -> None:
        time.sleep(0.002)

    assert model_runner.crossover((1, 4, 16, 64, 256, 512), 8, fast, slow, repeats=2, reps=1) == 16
    assert 512 not in calls  # two losses in a row (64, 256) end the scan
    rows = model_runner.calibrate_int4_rows(native.runner.llama)
    assert rows in model_runner.INT4_CALIBRATION_ROWS


def test_panel_dtype_is_checked_and_bf16_is_taken_only_where_the_cpu_has_it(caplog: pytest.LogCaptureFixture):
    from pydantic import ValidationError

    from inference.engine.model_runner import panel_kernels

    with pytest.raises(ValidationError, match="panel_dtype"):
        EngineConfig(panel_dtype="int8")
    kernels = kernels_module.load()
    assert not panel_kernels(kernels, "float32").bf16_panels
    assert panel_kernels(kernels, "auto").bf16_panels == kernels.bf16_supported
    kernels = kernels.with_bf16_panels(False)
    kernels.bf16_supported = False  # as on a CPU without AVX512-BF16
    with caplog.at_level("WARNING"):
        assert not panel_kernels(kernels, "bfloat16").bf16_panels
    assert "lacks" in caplog.text
