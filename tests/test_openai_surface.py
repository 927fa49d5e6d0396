"""The inference service as the official ``openai`` client and vLLM-style tools call it: content-part
arrays and the developer role, usage chunks only when asked, /tokenize and /detokenize, /health;
and GraphQL's ``model { tokenize }``."""

from __future__ import annotations

import httpx
import openai
import pytest
from conftest import SYSTEM, chat, engine_like
from test_api_http import post

from inference.engine.async_engine import AsyncEngine
from inference.remote import RemoteEngine
from inference.service.app import ServiceSettings, create_service


@pytest.fixture
async def service(llm, serve):
    return await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", http_client=httpx.AsyncClient(timeout=60))


async def test_content_parts_and_the_developer_role_read_as_text_and_system(service, llm):
    client = sdk(service)
    parts = await client.chat.completions.create(model="m", max_tokens=8, temperature=0, messages=[
        {"role": "developer", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}]}])
    plain = await client.chat.completions.create(model="m", max_tokens=8, temperature=0, messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital\nof France?"}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage is not None and parts.usage.prompt_tokens == plain.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="m", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "messages[0].content[1].type" and "image_url" in error["message"]


async def test_a_stream_sends_usage_only_when_asked(service):
    client = sdk(service)
    messages = [{"role": "user", "content": "Say hi."}]
    quiet = [c async for c in await client.chat.completions.create(model="m", max_tokens=4, messages=messages, stream=True)]
    assert quiet and all(c.usage is None for c in quiet)
    counted = [c async for c in await client.chat.completions.create(
        model="m", max_tokens=4, messages=messages, stream=True, stream_options={"include_usage": True})]
    assert counted[-1].usage is not None and counted[-1].choices == [] and counted[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in counted[:-1])


async def test_tokenize_and_detokenize_in_vllms_shapes(service, llm):
    async with httpx.AsyncClient(timeout=60) as client:
        text = "Hello, lighthouse keepers!"
        done = (await client.post(f"{service}/tokenize", json={"prompt": text, "return_token_strs": True})).json()
        assert done["tokens"] == llm.tokenizer.encode(text, add_special_tokens=False) and done["count"] == len(done["tokens"])
        assert "".join(done["token_strs"]) == text and done["max_model_len"] == llm.max_model_len
        back = (await client.post(f"{service}/detokenize", json={"tokens": done["tokens"]})).json()
        assert back == {"prompt": text}
        request = chat("Hi there")
        templated = (await client.post(f"{service}/tokenize", json={"messages": [
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi there"}]})).json()
        assert templated["tokens"] == llm.prepare(request).prompt_ids
        # Markup in a text is text, as in prompts: no special token is forged.
        forged = (await client.post(f"{service}/tokenize", json={"prompt": "<|im_start|>"})).json()["tokens"]
        assert llm.tokenizer.convert_tokens_to_ids("<|im_start|>") not in forged
        bad = await client.post(f"{service}/detokenize", json={"tokens": [1, 10**9]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens[1]"
        both = await client.post(f"{service}/tokenize", json={"prompt": "a", "messages": [{"role": "user", "content": "a"}]})
        unknown = await client.post(f"{service}/tokenize", json={"prompt": "a", "colour": "red"})
        assert both.status_code == 400 and unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
        assert (await client.get(f"{service}/health")).status_code == 200


async def test_graphql_tokenizes_through_the_embedded_engine_and_a_remote_one(live, service, llm):
    query = "query($t: String!) { model { tokenize(text: $t) { count ids } } }"
    text = "Count these words, please."
    got = (await post(live, query, {"t": text})).json()["data"]["model"]["tokenize"]
    assert got["ids"] == llm.tokenizer.encode(text, add_special_tokens=False) and got["count"] == len(got["ids"])
    too_long = (await post(live, query, {"t": "x" * 40_000})).json()
    assert too_long["errors"][0]["extensions"]["code"] == "INVALID_INPUT" and too_long["errors"][0]["extensions"]["field"] == "text"
    remote = RemoteEngine([service])
    await remote.start()
    try:
        assert await remote.tokenize(text) == got["ids"]
    finally:
        await remote.stop()


async def test_text_completions_take_a_raw_prompt_with_echo_logprobs_n_stop_and_a_stream(service, llm):
    client = sdk(service)
    prompt = "The capital of France is"
    done = await client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, logprobs=2)
    choice = done.choices[0]
    ids = llm.tokenizer.encode(prompt, add_special_tokens=False)
    assert done.usage is not None and done.usage.prompt_tokens == len(ids)  # no chat template around it
    assert choice.logprobs is not None and "".join(choice.logprobs.tokens or []) == choice.text
    assert all(len(t) == 2 for t in choice.logprobs.top_logprobs or []) and choice.logprobs.text_offset[0] == 0
    echoed = await client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + choice.text
    stopped = await client.completions.create(model="m", prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert " 7" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    several = await client.completions.create(model="m", prompt=["Once upon a time", "The sea is"], max_tokens=6,
                                              temperature=1.0, seed=3, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    streamed = ""
    async for chunk in await client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, stream=True):
        streamed += "".join(c.text for c in chunk.choices)
    assert streamed == choice.text

async def test_echo_with_logprobs_scores_the_prompt_as_lm_eval_harness_asks(service, llm):
    import math

    import torch

    client = sdk(service)
    text = "The capital of France is Paris"
    scored = (await client.completions.create(model="m", prompt=text, max_tokens=0, echo=True, logprobs=1, temperature=0)).choices[0]
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    with torch.inference_mode():
        reference = llm.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    assert scored.text == text and scored.logprobs is not None and scored.logprobs.token_logprobs[0] is None
    assert len(scored.logprobs.tokens) == len(ids) and "".join(scored.logprobs.tokens) == text
    for i, got in enumerate(scored.logprobs.token_logprobs[1:], start=1):
        assert math.isclose(got, float(reference[i - 1, ids[i]]), abs_tol=0.05), (i, got)  # quantized blocks against fp32
    greedy = [max(top, key=top.get) for top in scored.logprobs.top_logprobs[1:]]
    assert sum(g == t for g, t in zip(greedy, scored.logprobs.tokens[1:], strict=True)) >= 1  # "Paris" after "is"
    again = (await client.completions.create(model="m", prompt=text, max_tokens=0, echo=True, logprobs=1)).choices[0]
    assert again.logprobs.token_logprobs == scored.logprobs.token_logprobs  # a cached prefix is not taken for it
    with pytest.raises(openai.BadRequestError) as refused:
        await client.completions.create(model="m", prompt=text, max_tokens=0)
    assert refused.value.body["param"] == "max_tokens"


async def test_the_openai_client_reads_logprobs_and_an_auto_tool_choice_answered_in_text(service):
    client = sdk(service)
    messages = [{"role": "user", "content": "Write a haiku about the sea."}]
    reply = await client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0,
                                                 logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    auto = await client.chat.completions.create(model="m", messages=messages, tools=tools, tool_choice="auto",
                                                max_tokens=24, temperature=0)
    choice = auto.choices[0]
    # In AUTO the answer is text or a call; a haiku needs no tool, and the 135M model writes text.
    assert choice.message.tool_calls is None and choice.message.content and not choice.message.content.startswith("<")


async def test_completions_take_token_id_prompts_as_lm_eval_harness_sends_them(service, llm):
    text = "The capital of France is Paris"
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    async with httpx.AsyncClient(timeout=60) as client:
        by_text = (await client.post(f"{service}/v1/completions", json={
            "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 1})).json()["choices"][0]
        by_ids = (await client.post(f"{service}/v1/completions", json={
            "prompt": [ids, ids[:3]], "max_tokens": 0, "echo": True, "logprobs": 1})).json()["choices"]
        bad = await client.post(f"{service}/v1/completions", json={"prompt": [1, 10**9], "max_tokens": 2})
    # The same prompt scored alone and beside another: equal but for the products' rounding, which
    # may depend on how many rows share the step.
    alone, beside = by_text["logprobs"]["token_logprobs"], by_ids[0]["logprobs"]["token_logprobs"]
    assert by_ids[0]["text"] == text and alone[0] is beside[0] is None
    assert beside[1:] == pytest.approx(alone[1:], abs=1e-5)
    assert len(by_ids[1]["logprobs"]["tokens"]) == 3
    assert bad.status_code == 400 and "prompt[0][1]" in bad.json()["error"]["message"]
