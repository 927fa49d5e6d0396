"""Log probabilities: from the model's raw distribution, the greedy token the likeliest, top lists
sorted and of the asked length, streamed equal to unary, and the same through GraphQL, the service's
OpenAI shape and the remote client."""

from __future__ import annotations

import math

import httpx
import pytest
import torch
from conftest import SYSTEM, chat, engine_like
from test_api_http import post

from inference.boundary import Completion, SamplingParams, TokenDelta
from inference.boundary.options import InvalidOption
from inference.engine.async_engine import AsyncEngine
from inference.remote import RemoteEngine
from inference.service.app import ServiceSettings, create_service

ASK = ("mutation($input: ChatInput!) { chat(input: $input) { __typename ... on ChatSuccess { response "
       "usage { completionTokens } logprobs { token logprob topLogprobs { token logprob } } } "
       "... on ChatError { code field message } } }")


async def test_greedy_logprobs_are_the_raw_distribution_with_the_chosen_token_likeliest(engine, llm):
    request = chat("What is the capital of France?", max_new_tokens=8, logprobs=True, top_logprobs=5)
    done = await engine.generate(request)
    assert done.logprobs is not None and len(done.logprobs) == done.usage.completion_tokens
    ids = llm.prepare(request).prompt_ids
    with torch.inference_mode():
        raw = llm.model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
    assert math.isclose(done.logprobs[0].logprob, float(raw.max()), abs_tol=1e-4)
    assert math.isclose(sum(math.exp(v) for v in raw.tolist()), 1.0, abs_tol=1e-4)
    for entry in done.logprobs:
        values = [v for _, v in entry.top]
        assert len(entry.top) == 5 and values == sorted(values, reverse=True)
        assert entry.top[0][0] == entry.token and math.isclose(entry.logprob, values[0])
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
    assert "".join(e.token for e in done.logprobs).strip().startswith(done.text.strip()[:5])
    plain = await engine.generate(chat("What is the capital of France?", max_new_tokens=8))
    assert plain.logprobs is None and plain.text == done.text


async def test_streamed_logprobs_equal_the_unary_ones_for_the_same_seed(engine):
    request = chat("Write a line about the sea.", max_new_tokens=24, temperature=0.8, seed=3, logprobs=True, top_logprobs=2)
    unary = await engine.generate(request)
    deltas, final = [], None
    async for event in engine.stream(request):
        if isinstance(event, TokenDelta):
            deltas += event.logprobs
        else:
            final = event
    # The same tokens with the same logprobs (to float noise: the second run reads the prompt's cached KV blocks).
    assert isinstance(final, Completion) and same(final.logprobs, unary.logprobs)
    assert same(tuple(deltas), unary.logprobs[:len(deltas)]) and len(deltas) >= len(unary.logprobs) - 1


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.token == y.token and math.isclose(x.logprob, y.logprob, abs_tol=1e-4) and [t for t, _ in x.top] == [t for t, _ in y.top]
        for x, y in zip(a, b, strict=True))


def test_ranges_name_the_option():
    with pytest.raises(InvalidOption, match="between 0 and 20") as caught:
        SamplingParams(logprobs=True, top_logprobs=21).validate(64)
    assert caught.value.field == "top_logprobs"
    with pytest.raises(InvalidOption, match="needs logprobs"):
        SamplingParams(top_logprobs=2).validate(64)


async def test_graphql_gives_logprobs_and_a_choice_gives_a_classifiers_probabilities(live):
    answer = (await post(live, ASK, {"input": {"chatId": "l1", "userPrompt": "Is the Pacific an ocean?", "options": {
        "logprobs": True, "topLogprobs": 3, "responseFormat": {"choice": ["yes", "no"]}}}})).json()["data"]["chat"]
    assert answer["__typename"] == "ChatSuccess" and answer["response"] in ("yes", "no"), answer
    assert len(answer["logprobs"]) == answer["usage"]["completionTokens"]
    first = answer["logprobs"][0]
    assert len(first["topLogprobs"]) == 3 and first["logprob"] <= 0
    refused = (await post(live, ASK, {"input": {"chatId": "l2", "userPrompt": "Hi", "options": {"topLogprobs": 30, "logprobs": True}}})).json()
    assert refused["data"]["chat"]["code"] == "INVALID_INPUT" and refused["data"]["chat"]["field"] == "options.topLogprobs"


async def test_the_service_answers_in_openais_shape_and_the_remote_client_reads_it(llm, serve):
    url = await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))
    body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}],
            "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    async with httpx.AsyncClient(timeout=60) as client:
        reply = (await client.post(f"{url}/v1/chat/completions", json=body)).json()
        content = reply["choices"][0]["logprobs"]["content"]
        assert len(content) == reply["usage"]["completion_tokens"]
        assert set(content[0]) == {"token", "logprob", "bytes", "top_logprobs"} and len(content[0]["top_logprobs"]) == 2
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body | {"stream": True}) as stream:
            lines = [line async for line in stream.aiter_lines() if line.startswith("data: {")]
        assert any('"logprobs":{"content":[' in line for line in lines)
    remote = RemoteEngine([url])
    await remote.start()
    try:
        request = chat("Name a colour.", max_new_tokens=6, logprobs=True, top_logprobs=2)
        [ticket] = await remote.submit([request])
        got = await ticket.result()
        assert isinstance(got, Completion) and got.logprobs is not None
        assert [e.token for e in got.logprobs] == [c["token"] for c in content]
        streamed = [e async for e in remote.stream(request)]
        assert streamed[-1].logprobs == got.logprobs
    finally:
        await remote.stop()

