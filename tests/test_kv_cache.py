"""The paged KV pool with the real model: many short chats at once, preemption, prefix blocks shared
across the turns of a conversation, and resident memory bounded by the pool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import chat, engine_like, reference_text
from test_operations import free_port, wait_ready

from inference.boundary import ChatMessage, ChatRequest, SamplingParams
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

pytestmark = pytest.mark.model

# What a server process holds besides the pool and the weights: the interpreter, torch, the
# tokenizer, uvicorn, allocator slack. Measured at about 0.45 GB; the test allows this much.
MARGIN_BYTES = 700 * 2**20


def run(engine: LLMEngine, requests: list[ChatRequest]) -> tuple[list[str], int]:
    """Answers, and the most sequences that ran together."""
    ids = [engine.add(engine.prepare(r)) for r in requests]
    texts: dict[int, str] = {}
    most = 0
    while engine.has_work():
        most = max(most, len(engine.scheduler.running))
        for out in engine.step():
            assert out.error is None, out.error
            if out.completion is not None:
                texts[out.seq_id] = out.completion.text
    most = max(most, len(engine.scheduler.running))
    return [texts[i] for i in ids], most


def test_128_short_chats_run_together_within_the_default_pool(llm: LLMEngine):
    defaults = EngineConfig()
    engine = engine_like(llm, kv_cache_tokens=defaults.kv_cache_tokens, max_running=defaults.max_running,
                         max_prefill_tokens=4096)
    _, most = run(engine, [chat(f"Say a word about the number {i}.", max_new_tokens=4) for i in range(128)])
    assert most == 128 and engine.scheduler.preemptions == 0
    stats = engine.scheduler.blocks.stats()
    assert stats.used == 0 and stats.cached > 0  # every block back: free, or keeping a prefix


def test_a_dry_pool_preempts_and_every_answer_is_still_the_greedy_one(llm: LLMEngine):
    """Four chats that need about 400 tokens of KV together, in a pool of 160: sequences are
    preempted and recomputed, and each answer equals ``model.generate``'s."""
    engine = engine_like(llm, kv_cache_tokens=160, max_model_len=160, kv_block_size=16)
    requests = [chat(p, max_new_tokens=60) for p in ("Tell me about the sea.", "Describe a forest.",
                                                       "Explain rain to a child.", "Write about winter.")]
    texts, _ = run(engine, requests)
    assert engine.scheduler.preemptions > 0
    assert texts == [reference_text(engine, r, 60) for r in requests]
    assert engine.scheduler.blocks.stats().used == 0


def test_the_second_turn_of_a_conversation_prefills_only_its_new_tokens(llm: LLMEngine):
    engine = engine_like(llm)
    first = chat("Name three colours.", max_new_tokens=24)
    [answer], _ = run(engine, [first])
    second = ChatRequest(messages=(*first.messages, ChatMessage(role="assistant", content=answer),
                                   ChatMessage(role="user", content="And three fruits?")),
                         params=SamplingParams(max_new_tokens=8))
    before = engine.stats.prompt_tokens, engine.stats.cached_prompt_tokens
    prompt1 = engine.prepare(first).prompt_ids
    prompt2 = engine.prepare(second).prompt_ids
    run(engine, [second])
    computed = engine.stats.prompt_tokens - before[0]
    reused = engine.stats.cached_prompt_tokens - before[1]
    # The second prompt repeats the first and the answer; only what follows is new.
    shared = common_prefix(prompt1, prompt2)
    shared += common_prefix(engine.tokenizer.encode(answer), prompt2[shared:])
    new = len(prompt2) - shared
    assert computed + reused == len(prompt2)
    assert computed <= new + engine.config.kv_block_size, (computed, new)
    assert reused >= len(prompt1) - engine.config.kv_block_size


def test_a_prompt_sent_again_computes_one_token_and_one_leaving_a_block_midway_only_its_rest(llm: LLMEngine):
    """Token-level reuse: the KV of a cached block's first tokens is copied into the new prompt's
    own block. The answers stay ``model.generate``'s."""
    engine = engine_like(llm)
    first = chat("Name three colours of the rainbow.", max_new_tokens=16)
    other = chat("Name three colours of a zebra.", max_new_tokens=16)
    size = engine.config.kv_block_size
    for request, expected_computed in ((first, None), (first, 1), (other, None)):
        ids = engine.prepare(request).prompt_ids
        shared = common_prefix(engine.prepare(first).prompt_ids, ids)
        before = engine.stats.prompt_tokens
        [text], _ = run(engine, [request])
        computed = engine.stats.prompt_tokens - before
        if expected_computed is not None:
            assert computed == expected_computed
        elif request is other:
            assert shared % size, "the prompts should part within a block for this test"
            assert computed == len(ids) - shared, (computed, len(ids), shared)
        assert text == reference_text(engine, request, 16)


async def test_resident_memory_stays_within_pool_weights_and_margin_and_blocks_come_back():
    """A real service process with default settings: 64 concurrent chats, then long prompts."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--port", str(port)],
                            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=300) as client:
            await wait_ready(client, url)
            info = (await client.get(f"{url}/v1/models")).json()["data"][0]["smollm"]

            async def ask(content: str, max_tokens: int) -> None:
                r = await client.post(f"{url}/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
                assert r.status_code == 200, r.text

            await asyncio.gather(*(ask(f"Write about the number {i}.", 32) for i in range(64)))
            long_text = " ".join(f"Item {i} is a line of a long list of things to remember." for i in range(110))
            await asyncio.gather(*(ask(f"{k}: {long_text} Summarise.", 8) for k in range(4)))
            rss = resident_bytes(proc.pid)
            metrics = (await client.get(f"{url}/metrics")).text
        weights = weights_bytes(info)
        budget = info["kv_cache_bytes"] + weights + MARGIN_BYTES
        print(f"resident {rss / 2**30:.2f} GiB; pool {info['kv_cache_bytes'] / 2**30:.2f} GiB, "
              f"weights {weights / 2**30:.2f} GiB, margin {MARGIN_BYTES / 2**30:.2f} GiB")
        assert rss <= budget
        assert 'smollm_kv_cache_blocks{state="used"} 0.0' in metrics
        assert "smollm_prefix_cache_hit_rate" in metrics
    finally:
        proc.terminate()
        proc.wait(30)


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def weights_bytes(info: dict) -> int:
    """fp32 parameters, plus in native mode the packed 4-bit projections and the bf16 head (the
    head is about a fifth of the parameters; 4-bit weights with their scales take 5/32 of fp32)."""
    fp32 = info["parameters"] * 4
    return fp32 + (fp32 // 5 + fp32 // 6 if info["weights"] == "native" else 0)


def test_a_step_in_which_no_prompt_is_complete_samples_nothing_and_goes_on(llm: LLMEngine):
    """Regression: two prompts chunked 16 tokens a step, so early steps end no prompt."""
    engine = engine_like(llm, max_prefill_tokens=16)
    requests = [chat("Describe a quiet harbour at dawn in two sentences.", max_new_tokens=12),
                chat("Explain why the sky is blue, briefly.", max_new_tokens=12)]
    texts, _ = run(engine, requests)
    assert texts == [reference_text(engine, r, 12) for r in requests]
