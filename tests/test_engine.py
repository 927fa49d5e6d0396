"""The engine with the real model: answers, batching equivalence, streaming, cancel, errors."""

from __future__ import annotations

import asyncio

import pytest
from conftest import chat, engine_like, reference_text

from inference.boundary import (
    Completion,
    EngineFault,
    FinishReason,
    InvalidRequest,
    Overloaded,
    PromptTooLong,
    TokenDelta,
)
from inference.engine.async_engine import AsyncEngine

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colors.",
    "Explain gravity in one sentence.",
    "Translate 'good morning' to Spanish.",
    "What is 12 times 7?",
    "Name a famous painter.",
    "Give me a tip for sleeping better.",
]


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_capital_of_france(engine: AsyncEngine):
    result = await engine.generate(chat("What is the capital of France?", max_new_tokens=32))
    assert "Paris" in result.text
    assert result.finish_reason is FinishReason.STOP
    assert result.usage.prompt_tokens > 10 and 0 < result.usage.completion_tokens <= 32
    assert 0 <= result.timings.queued_ms <= result.timings.first_token_ms <= result.timings.total_ms


async def test_batch_of_8_equals_each_prompt_alone_through_generate(engine: AsyncEngine):
    requests = [chat(p, max_new_tokens=64) for p in PROMPTS]
    results = await engine.generate_batch(requests)
    for request, result in zip(requests, results, strict=True):
        assert result.text == reference_text(engine.engine, request, 64)


async def test_request_joining_a_decoding_batch_equals_it_alone(engine: AsyncEngine):
    early = [chat(p, max_new_tokens=48) for p in PROMPTS[:4]]
    late = chat("Describe a sunset in two sentences.", max_new_tokens=48)
    steps_before = engine.engine.stats.steps
    batch = asyncio.ensure_future(engine.generate_batch(early))
    await wait_for(lambda: engine.engine.stats.steps >= steps_before + 5)
    assert engine.stats().running == 4, "the late request must arrive while the batch decodes"
    joined = await engine.generate(late)
    assert joined.text == reference_text(engine.engine, late, 48)
    for request, result in zip(early, await batch, strict=True):
        assert result.text == reference_text(engine.engine, request, 48)


async def test_seeded_sampling_is_the_same_whatever_else_is_in_the_batch(engine: AsyncEngine):
    sampled = chat("Tell me a short story about a cat.", temperature=0.9, top_p=0.95, top_k=50,
                   seed=1234, max_new_tokens=40)
    alone = await engine.generate(sampled)
    others = [chat(p, temperature=1.0, max_new_tokens=40) for p in PROMPTS[:6]]
    in_batch = (await engine.generate_batch([*others[:3], sampled, *others[3:]]))[3]
    assert in_batch.text == alone.text
    other_seed = await engine.generate(chat("Tell me a short story about a cat.", temperature=0.9,
                                            top_p=0.95, top_k=50, seed=99, max_new_tokens=40))
    assert other_seed.text != alone.text


@pytest.mark.parametrize("prompt", [
    "Écris une phrase en français sur l'été, avec des accents: é, è, à, ç.",
    "Reply only with five emoji about the ocean, like 🌊🐠🐳.",
])
async def test_stream_deltas_join_to_the_final_text_with_no_broken_characters(engine: AsyncEngine, prompt: str):
    request = chat(prompt, max_new_tokens=48)
    deltas: list[str] = []
    final = None
    async for event in engine.stream(request):
        if isinstance(event, TokenDelta):
            assert event.index == len(deltas)
            deltas.append(event.text)
        else:
            final = event
    assert isinstance(final, Completion)
    reference = reference_text(engine.engine, request, 48)
    # 48 tokens cut the emoji prompt's answer inside a 4-byte emoji: the half character is dropped.
    assert "".join(deltas) == final.text == reference.rstrip("\ufffd")
    assert not any("\ufffd" in d for d in deltas)
    assert any(ord(ch) > 127 for ch in final.text), "the prompt should produce non-ASCII text"


async def test_a_stream_read_late_gets_the_text_that_waited_in_fewer_deltas(engine: AsyncEngine):
    """A consumer that falls behind the steps is not sent one event per token: what waited goes
    out as one delta, and the deltas still join to the final text."""
    request = chat("Write a haiku about the sea.", max_new_tokens=24)
    events = engine.stream(request)
    first = await anext(events)
    assert isinstance(first, TokenDelta)
    while engine.stats().running:  # let the whole answer be computed while nobody reads
        await asyncio.sleep(0.05)
    rest = [event async for event in events]
    final = rest.pop()
    assert isinstance(final, Completion) and final.usage.completion_tokens > 3  # several tokens waited
    assert len(rest) == 1 and isinstance(rest[0], TokenDelta) and rest[0].index == 1
    assert first.text + rest[0].text == final.text


async def test_stop_string_ends_the_text_and_is_cut_from_it(engine: AsyncEngine):
    full = await engine.generate(chat("What is the capital of France?", max_new_tokens=32))
    assert "Paris" in full.text
    deltas = []
    async for event in engine.stream(chat("What is the capital of France?", max_new_tokens=32, stop=("Paris",))):
        deltas.append(event)
    final = deltas[-1]
    assert final.text == full.text[: full.text.index("Paris")]
    assert "".join(d.text for d in deltas[:-1]) == final.text
    assert final.finish_reason is FinishReason.STOP


async def test_closing_a_stream_frees_its_slot_at_the_next_step(engine: AsyncEngine):
    stream = engine.stream(chat("Write a very long essay about the history of Rome.", max_new_tokens=400))
    async for event in stream:
        if isinstance(event, TokenDelta) and event.index >= 3:
            break
    assert engine.stats().running == 1
    await stream.aclose()
    await wait_for(lambda: engine.stats().running == 0 and engine.stats().waiting == 0, timeout=2.0)
    tokens = engine.engine.stats.tokens_generated
    await asyncio.sleep(0.3)
    assert engine.engine.stats.tokens_generated == tokens, "no tokens computed after cancel"


async def test_cancelled_task_frees_its_slot(engine: AsyncEngine):
    task = asyncio.ensure_future(engine.generate(chat("Count from one to five hundred.", max_new_tokens=400)))
    await wait_for(lambda: engine.stats().running == 1)
    task.cancel()
    await wait_for(lambda: engine.stats().running == 0, timeout=2.0)


async def test_invalid_options_and_too_long_prompts_get_typed_errors_beside_valid_ones(engine: AsyncEngine):
    cap = engine.engine.config.max_new_tokens_cap
    results = await engine.generate_batch([
        chat("Hi", temperature=3.0),
        chat("What is the capital of France?", max_new_tokens=16),
        chat("word " * 9000, max_new_tokens=16),
        chat("Hi", max_new_tokens=cap + 1),
        chat("Hi", top_p=0.0),
    ])
    assert isinstance(results[0], InvalidRequest) and results[0].field == "temperature"
    assert "between 0 and 2" in results[0].message
    assert "Paris" in results[1].text
    assert isinstance(results[2], PromptTooLong)
    assert str(engine.engine.max_model_len) in results[2].message and "16" in results[2].message
    assert isinstance(results[3], InvalidRequest) and str(cap) in results[3].message
    assert isinstance(results[4], InvalidRequest) and results[4].field == "top_p"  # neutral: GraphQL says options.topP


async def test_past_capacity_the_engine_refuses_at_once(llm):
    small = AsyncEngine(engine_like(llm, max_running=2, max_waiting=1))
    await small.start()
    try:
        results = await small.generate_batch([chat(f"Say the number {i}.", max_new_tokens=8) for i in range(5)])
        assert [type(r).__name__ for r in results] == ["Completion"] * 3 + ["Overloaded"] * 2
        assert "capacity (3 requests" in results[3].message
        assert isinstance(results[4], Overloaded)
        assert small.stats().running == 0 and small.stats().waiting == 0
    finally:
        await small.stop()


async def test_a_failing_step_ends_every_request_in_flight_and_the_engine_serves_on(llm, monkeypatch):
    ae = AsyncEngine(engine_like(llm, max_running=8))
    await ae.start()
    try:
        real_step = ae.engine.runner.step
        calls = {"n": 0}

        def flaky(plan):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected fault")
            return real_step(plan)

        monkeypatch.setattr(ae.engine.runner, "step", flaky)
        results = await ae.generate_batch([chat(p, max_new_tokens=30) for p in PROMPTS[:4]])
        assert all(isinstance(r, EngineFault) for r in results)
        assert ae.stats().running == 0
        after = await ae.generate(chat("What is the capital of France?", max_new_tokens=16))
        assert "Paris" in after.text
    finally:
        await ae.stop()


async def test_a_shared_prompt_prefix_is_reused_and_the_answer_is_unchanged(engine: AsyncEngine):
    await engine.generate(chat("Name a fruit.", max_new_tokens=4))
    cached = engine.engine.stats.cached_prompt_tokens
    request = chat("Name a large animal that lives in Africa.", max_new_tokens=32)
    result = await engine.generate(request)
    reused = engine.engine.stats.cached_prompt_tokens - cached
    assert reused >= 10, "the system prompt and template tokens should come from the prefix cache"
    assert reused < result.usage.prompt_tokens
    assert result.text == reference_text(engine.engine, request, 32)
