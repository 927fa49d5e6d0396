"""Penalties, logit bias and min-p: against transformers' processors on the real model's logits and
its own ``generate``, per row inside a batch, and through both edges (GraphQL and the service)."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import torch
from conftest import SYSTEM, chat, engine_like
from test_api_http import CHAT, post
from transformers import MinPLogitsWarper, RepetitionPenaltyLogitsProcessor

from inference.boundary import ChatRequest, SamplingParams
from inference.boundary.options import InvalidOption
from inference.engine.async_engine import AsyncEngine
from inference.engine.model_runner import min_p_filter
from inference.engine.penalties import apply_penalties
from inference.engine.sequence import Sequence
from inference.remote import RemoteEngine
from inference.service.app import ServiceSettings, create_service

LOOPING = "List the word 'cat' twenty times, separated by commas."


def last_logits(llm, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return llm.model(torch.tensor([ids])).logits[0, -1].float()


def seq_of(ids: list[int], split: int, **params) -> Sequence:
    seq = Sequence(0, ids[:split], SamplingParams(**params), 64, frozenset())
    seq.output_ids = ids[split:]
    return seq


def test_penalties_and_min_p_equal_transformers_processors_and_openai_formulas_on_real_logits(llm):
    ids = llm.prepare(chat(LOOPING)).prompt_ids
    ids = ids + [llm.tokenizer.encode(" cat")[0], 11] * 4  # an answer so far that repeats itself
    split = len(ids) - 8
    logits = last_logits(llm, ids)

    ours = logits.clone()[None]
    apply_penalties(ours, [seq_of(ids, split, repetition_penalty=1.3)])
    reference = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([ids]), logits.clone()[None])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)

    ours = logits.clone()[None]
    apply_penalties(ours, [seq_of(ids, split, frequency_penalty=0.7, presence_penalty=-0.4, logit_bias=((5, 3.0), (7, -100.0)))])
    expected = logits.clone()
    for token, n in Counter(ids[split:]).items():  # OpenAI: over the output only
        expected[token] -= 0.7 * n - 0.4
    expected[5] += 3.0
    expected[7] -= 100.0
    torch.testing.assert_close(ours[0], expected, rtol=0, atol=1e-5)

    for min_p in (0.05, 0.3):
        scaled = logits / 0.8
        reference = MinPLogitsWarper(min_p)(torch.tensor([ids]), scaled.clone()[None])[0]
        assert torch.equal(min_p_filter(scaled, min_p).isinf(), reference.isinf())


def test_only_the_rows_that_ask_are_changed_and_counts_follow_the_output(llm):
    ids = [*llm.prepare(chat("Hi")).prompt_ids, 42, 42, 7]
    logits = torch.randn(3, llm.model.config.vocab_size)
    plain, penalized = seq_of(ids, len(ids) - 3), seq_of(ids, len(ids) - 3, frequency_penalty=1.0)
    out = logits.clone()
    apply_penalties(out, [plain, penalized, plain])
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert out[1, 42] == pytest.approx(float(logits[1, 42]) - 2.0) and out[1, 7] == pytest.approx(float(logits[1, 7]) - 1.0)
    penalized.output_ids.append(7)  # the next step: one more 7
    out = logits.clone()
    apply_penalties(out, [plain, penalized, plain])
    assert out[1, 7] == pytest.approx(float(logits[1, 7]) - 2.0)


async def test_greedy_with_repetition_penalty_equals_transformers_generate_and_plain_rows_keep_their_text(llm):
    request = chat(LOOPING, max_new_tokens=40, repetition_penalty=1.3)
    ids = llm.prepare(request).prompt_ids
    with torch.inference_mode():
        out = llm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=40, do_sample=False, repetition_penalty=1.3)
    reference = llm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

    engine = AsyncEngine(engine_like(llm))
    await engine.start()
    try:
        plain = chat(LOOPING, max_new_tokens=40)
        alone = (await engine.generate(plain)).text
        mixed = await engine.generate_batch([plain, request, chat(LOOPING, max_new_tokens=40, presence_penalty=1.5,
                                                                  frequency_penalty=0.5), plain])
        assert mixed[1].text == reference
        assert mixed[0].text == alone == mixed[3].text
        assert mixed[2].text != alone and mixed[1].text != alone  # the penalties did change the answers
        # A bias of -100 on the greedy first token: the answer starts otherwise.
        first = llm.prepare(plain)
        token = int(last_logits(llm, first.prompt_ids).argmax())
        banned = await engine.generate(chat(LOOPING, max_new_tokens=40, logit_bias=((token, -100.0),)))
        assert not banned.text.startswith(llm.tokenizer.decode([token]).strip() or "\0")
        # Seeds and streams: a sampled, penalized answer streams the same text as it answers.
        sampled = chat(LOOPING, max_new_tokens=30, temperature=0.9, seed=7, min_p=0.1, presence_penalty=1.0)
        unary = (await engine.generate(sampled)).text
        streamed = "".join([e.text async for e in engine.stream(sampled) if hasattr(e, "index")])
        assert streamed == unary
        # With a response format: the bias applies inside the grammar's choices.
        from inference.boundary import ResponseFormat

        fmt = ResponseFormat.of(choice=["cat", "dog", "bird"])
        assert (await engine.generate(chat("Which animal meows?", response_format=fmt))).text == "cat"
        assert (await engine.generate(chat("Which animal meows?", response_format=fmt,
                                           logit_bias=((llm.tokenizer.encode("bird")[0], 100.0),)))).text == "bird"
    finally:
        await engine.stop()


def test_ranges_are_checked_naming_the_option(llm):
    for params, field in ((dict(repetition_penalty=0.0), "repetition_penalty"), (dict(frequency_penalty=2.5), "frequency_penalty"),
                          (dict(presence_penalty=-3), "presence_penalty"), (dict(min_p=1.5), "min_p"),
                          (dict(logit_bias=((1, 101.0),)), "logit_bias"), (dict(logit_bias=((1, 1.0), (1, 2.0))), "logit_bias"),
                          (dict(logit_bias=tuple((i, 1.0) for i in range(301))), "logit_bias")):
        with pytest.raises(InvalidOption) as caught:
            SamplingParams(**params).validate(1024)
        assert caught.value.field == field
    with pytest.raises(InvalidOption, match="below the vocabulary size 49152"):
        llm.prepare(ChatRequest(messages=chat("Hi").messages, params=SamplingParams(logit_bias=((49152, 1.0),))))


async def test_graphql_takes_the_options_and_names_the_bad_one(live):
    answer = (await post(live, CHAT, {"input": {"chatId": "p1", "userPrompt": LOOPING, "options": {
        "maxTokens": 12, "repetitionPenalty": 1.2, "frequencyPenalty": 0.5, "presencePenalty": 0.5, "minP": 0.1,
        "logitBias": [{"token": 28, "bias": -5}]}}})).json()
    assert answer["data"]["chat"]["__typename"] == "ChatSuccess", answer
    for options, field, words in (({"repetitionPenalty": 3}, "options.repetitionPenalty", "repetitionPenalty must be"),
                                  ({"logitBias": [{"token": 10**6, "bias": 1}]}, "options.logitBias", "vocabulary size")):
        error = (await post(live, CHAT, {"input": {"chatId": "p2", "userPrompt": "Hi", "options": options}})).json()
        error = error["data"]["chat"]
        assert error["code"] == "INVALID_INPUT" and error["field"] == field and words in error["message"], error


async def test_the_service_takes_openai_and_vllm_fields_and_refuses_unknown_ones(llm, serve):
    url = await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))
    base = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Is the sky blue?"}],
            "max_tokens": 4, "temperature": 0}
    async with httpx.AsyncClient(timeout=60) as client:
        ok = await client.post(f"{url}/v1/chat/completions", json=base | {
            "frequency_penalty": 0.5, "presence_penalty": 0.2, "repetition_penalty": 1.1, "min_p": 0.05,
            "logit_bias": {"28": -1}, "user": "someone", "model": "x"})
        assert ok.status_code == 200, ok.text
        guided = await client.post(f"{url}/v1/chat/completions", json=base | {"guided_choice": ["yes", "no"]})
        assert guided.json()["choices"][0]["message"]["content"] in ("yes", "no")
        for extra, field in (({"frobnicate": 1}, "frobnicate"), ({"logit_bias": {"x": 1}}, "logit_bias"),
                             ({"messages": [{"role": "user", "content": "Hi", "colour": "red"}]}, "messages.0.colour")):
            refused = await client.post(f"{url}/v1/chat/completions", json=base | extra)
            assert refused.status_code == 400 and field in refused.text, refused.text


def test_the_remote_client_refuses_what_its_upstream_kind_does_not_honour():
    engine = RemoteEngine(["http://127.0.0.1:9"])
    request = chat("Hi", repetition_penalty=1.2)
    engine.kind = "llama.cpp"  # its repeat_penalty covers the last 64 tokens only
    assert engine.refused_option(request).field == "repetition_penalty"
    assert engine.refused_option(chat("Hi", min_p=0.1, frequency_penalty=1.0)) is None
    engine.kind = "openai-compatible"
    assert engine.refused_option(chat("Hi", min_p=0.1)).field == "min_p"
    engine.kind = "vllm"
    assert engine.refused_option(request) is None
    from inference.boundary import Tool, ToolMode, Tools

    tools = Tools(tools=(Tool.of("f", None, None, 0),), mode=ToolMode.REQUIRED)
    with_tools = ChatRequest(messages=request.messages, tools=tools)
    assert engine.refused_option(with_tools) is None
    engine.kind = "llama.cpp"  # it takes the field and answers in text with this model's template
    assert engine.refused_option(with_tools).field == "tools"
    assert engine.refused_option(ChatRequest(messages=request.messages, tools=Tools(tools=tools.tools, mode=ToolMode.NONE))) is None
