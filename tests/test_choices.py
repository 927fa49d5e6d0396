"""n > 1: several answers to one prompt, prefilled once, through the engine, GraphQL, the service's
OpenAI shape (read by the official ``openai`` client) and the remote client."""

from __future__ import annotations

import httpx
import openai
import pytest
from conftest import SYSTEM, chat, engine_like
from test_api_http import post

from graphql_api.quotas import estimate_tokens
from inference.boundary import Completion, Overloaded, SamplingParams, TokenDelta
from inference.boundary.options import InvalidOption
from inference.engine.async_engine import AsyncEngine
from inference.engine.block_manager import BlockManager
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import Sequence
from inference.remote import RemoteEngine
from inference.service.app import ServiceSettings, create_service

LONG = " ".join(f"Fact {i}: the {i}th lighthouse on the coast is painted a different colour." for i in range(30))
ASK = ("mutation($input: ChatInput!) { chat(input: $input) { __typename ... on ChatSuccess { response json "
       "usage { promptTokens completionTokens } choices { index response finishReason json } } "
       "... on ChatError { code field message } } }")


def test_n_is_checked_at_the_boundary():
    with pytest.raises(InvalidOption, match="between 1 and 16") as caught:
        SamplingParams(n=17).validate(64)
    assert caught.value.field == "n"
    with pytest.raises(InvalidOption):
        SamplingParams(n=0).validate(64)


def test_a_sibling_waits_for_its_parents_prefill_and_copies_its_partial_block():
    copied = []
    blocks = BlockManager(64, 4, copy_kv=lambda src, dst, n: copied.append((src, dst, n)))
    sch = Scheduler(max_running=4, max_prefill_tokens=6, blocks=blocks)
    parent = Sequence(0, list(range(10)), SamplingParams(), 5, frozenset({-1}))
    child = Sequence(1, list(range(10)), SamplingParams(), 5, frozenset({-1}), parent=parent)
    sch.add(parent)
    sch.add(child)
    plan = sch.schedule()  # the parent's first chunk; the child waits although the budget is not spent
    assert [(s.seq.seq_id, s.num_new) for s in plan] == [(0, 6)]
    parent.num_computed += 6
    sch.commit(plan)
    plan = sch.schedule()
    assert [(s.seq.seq_id, s.num_new) for s in plan] == [(0, 4)]
    parent.num_computed += 4
    parent.append(7)
    sch.commit(plan)
    plan = sch.schedule()  # two full blocks by reference, the partial third copied: one token left to compute
    assert [(s.seq.seq_id, s.num_new) for s in plan] == [(0, 1), (1, 1)]
    assert child.block_table[:2] == parent.block_table[:2] and child.block_table[2] != parent.block_table[2]
    assert copied == [(parent.block_table[2], child.block_table[2], 1)] and child.parent is None


async def test_n_answers_are_reproducible_share_one_prefill_and_each_equals_its_own_seed(engine):
    request = chat(LONG + " Write one sentence about a lighthouse.", max_new_tokens=12, temperature=1.0, seed=11, n=4)
    before = engine.stats()
    done = await engine.generate(request)
    after = engine.stats()
    assert len(done.choices) == 4 and [c.index for c in done.choices] == [0, 1, 2, 3]
    assert done.text == done.choices[0].text and len({c.text for c in done.choices}) >= 2, done.choices
    assert 4 < done.usage.completion_tokens <= 4 * 12  # every answer's tokens
    prompt = done.usage.prompt_tokens
    # One prefill: the other three computed one token each (the rest taken from the first's blocks).
    assert after.prompt_tokens - before.prompt_tokens <= prompt + 3
    assert after.cached_prompt_tokens - before.cached_prompt_tokens >= 3 * (prompt - 1)
    again = await engine.generate(request)
    assert [c.text for c in again.choices] == [c.text for c in done.choices]
    for i in (0, 2):
        alone = await engine.generate(chat(LONG + " Write one sentence about a lighthouse.", max_new_tokens=12,
                                           temperature=1.0, seed=11 + i))
        assert alone.text == done.choices[i].text


async def test_greedy_choices_are_identical_and_streams_say_whose_delta(engine):
    greedy = await engine.generate(chat("Name a fruit.", max_new_tokens=6, n=2))
    assert greedy.choices[0].text == greedy.choices[1].text
    request = chat("Write a line about rain.", max_new_tokens=16, temperature=0.9, seed=5, n=3)
    texts, final = ["", "", ""], None
    async for event in engine.stream(request):
        if isinstance(event, TokenDelta):
            texts[event.choice] += event.text
        else:
            final = event
    assert isinstance(final, Completion) and texts == [c.text for c in final.choices]


async def test_each_answer_takes_a_place_of_the_engines_capacity(llm):
    engine = AsyncEngine(engine_like(llm, max_running=2, max_waiting=2))
    await engine.start()
    try:
        [too_many] = await engine.submit([chat("hi", max_new_tokens=2, n=5)])
        assert isinstance(too_many, Overloaded)
        fits = await engine.generate(chat("hi", max_new_tokens=2, n=4))
        assert len(fits.choices) == 4
    finally:
        await engine.stop()


def test_quotas_reserve_every_answers_tokens():
    one, four = chat("hello there", max_new_tokens=10), chat("hello there", max_new_tokens=10, n=4)
    assert estimate_tokens(four, 256) - estimate_tokens(one, 256) == 30


async def test_graphql_gives_every_choice_and_checks_n_against_its_limit(live):
    answer = (await post(live, ASK, {"input": {"chatId": "n1", "userPrompt": "Pick a number from 1 to 9.", "options": {
        "n": 3, "temperature": 1.0, "seed": 2, "maxTokens": 8, "responseFormat": {"regex": "[1-9]"}}}})).json()["data"]["chat"]
    assert answer["__typename"] == "ChatSuccess", answer
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2] and answer["response"] == answer["choices"][0]["response"]
    assert all(c["response"] in "123456789" and c["finishReason"] == "STOP" for c in answer["choices"])
    one = (await post(live, ASK, {"input": {"chatId": "n2", "userPrompt": "Hi", "options": {"maxTokens": 2}}})).json()
    assert len(one["data"]["chat"]["choices"]) == 1
    refused = (await post(live, ASK, {"input": {"chatId": "n3", "userPrompt": "Hi", "options": {"n": 9}}})).json()["data"]["chat"]
    assert refused["code"] == "INVALID_INPUT" and refused["field"] == "options.n" and "between 1 and 8" in refused["message"]
    limits = (await post(live, "{ model { limits { maxChoices } } }")).json()
    assert limits["data"]["model"]["limits"]["maxChoices"] == 8


async def test_the_openai_client_reads_n_choices_unary_and_streamed_and_so_does_the_remote_client(llm, serve):
    url = await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", http_client=httpx.AsyncClient(timeout=60))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}]
    reply = await client.chat.completions.create(model="m", messages=messages, max_tokens=6, n=3, temperature=1.0, seed=4)
    assert [c.index for c in reply.choices] == [0, 1, 2] and all(c.message.content for c in reply.choices)
    stream = await client.chat.completions.create(model="m", messages=messages, max_tokens=6, n=3, temperature=1.0, seed=4,
                                                  stream=True)
    texts, finished = ["", "", ""], set()
    async for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
    assert texts == [c.message.content for c in reply.choices] and finished == {0, 1, 2}
    remote = RemoteEngine([url])
    await remote.start()
    try:
        request = chat("Name a colour.", max_new_tokens=6, n=3, temperature=1.0, seed=4)
        [ticket] = await remote.submit([request])
        result = await ticket.result()
        assert isinstance(result, Completion) and [c.text for c in result.choices] == texts
        streamed = ["", "", ""]
        async for event in remote.stream(request):
            if isinstance(event, TokenDelta):
                streamed[event.choice] += event.text
        assert streamed == texts
    finally:
        await remote.stop()
