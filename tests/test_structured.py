"""Structured output with the real model: every answer follows its format (validated with the
``jsonschema`` package), free neighbours are untouched, bad formats are refused clearly."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
from conftest import chat

from benchmarks.schemas import PERSON, SCHEMAS
from graphql_api.schema import schema
from graphql_api.schema.context import Context
from graphql_api.schema.loaders import ChatLoader
from graphql_api.settings import ApiSettings
from inference.boundary import Completion, ResponseFormat
from inference.engine.structured import tokenizer_adapter

ANSWER = """
  __typename
  ... on ChatSuccess { chatId response json finishReason }
  ... on ChatError { chatId code message field partialText }
"""
BATCH = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { results {" + ANSWER + "} } }"
SUBJECTS = ["Ada Lovelace", "a bakery in Lyon", "the Eiffel Tower", "a jazz club", "Marie Curie", "a fishing village",
            "a tech startup", "Mount Fuji", "a football team", "a public library", "Frida Kahlo", "a coffee farm",
            "a night train", "an old lighthouse", "Nelson Mandela", "a science museum", "a street market", "a mountain hut",
            "a violin maker", "a city park", "Albert Einstein", "a small vineyard", "a ferry company", "a rock band",
            "a bicycle shop", "a desert oasis", "a chess champion", "a fashion house", "a rice farmer", "a space agency"]
PROMPTS = {
    "nested": "Give a name and the home city and country of {} as JSON.",
    "array": "List two or three things people associate with {} as JSON.",
    "enum": "Is this review positive, negative or neutral? Review: 'I visited {} and it was unforgettable.' Answer as JSON.",
}


def real_context(engine) -> Context:
    return Context(engine=engine, loader=ChatLoader(engine), settings=ApiSettings(), request_id="req-s", started_at=0.0)


async def chat_batched(engine, inputs: list[dict]) -> list[dict]:
    result = await schema.execute(BATCH, {"inputs": inputs}, context_value=real_context(engine))
    assert result.errors is None, result.errors
    return result.data["chatBatched"]["results"]


def test_the_tokenizer_adapter_tokenizes_like_the_hf_tokenizer(llm):
    adapter = tokenizer_adapter(llm.tokenizer, llm.eos_ids)
    assert adapter is tokenizer_adapter(llm.tokenizer, llm.eos_ids)  # built once per tokenizer
    texts = ["Hello world", '{"name":"Ada","age":36,"tags":["a","b"]}', "héllo 🙂 naïve café\n\ttabs  and   spaces",
             "def f(x):\n    return x ** 2  # comment", "数字 123 and ١٢٣", "  leading and trailing  ", "<|im_end|> a special token"]
    for text in texts:
        assert adapter.tokenize_str(text) == llm.tokenizer.encode(text, add_special_tokens=False), text
        assert adapter.decode_str(adapter.tokenize_str(text)) == text or text.startswith("<|im_end|>")
    assert adapter.vocab_size == llm.model.config.vocab_size and set(adapter.eos_tokens) == llm.eos_ids


async def test_thirty_prompts_three_schemas_greedy_and_sampled_all_valid_plus_regex_and_choice(engine):
    inputs, expect = [], []
    for i, subject in enumerate(SUBJECTS):
        for name, prompt in PROMPTS.items():
            sampled = {"temperature": 0.7, "topP": 0.95, "topK": 50, "seed": i} if i % 2 else {}
            options = {"maxTokens": 96, "responseFormat": {"jsonSchema": SCHEMAS[name]}, **sampled}
            inputs.append({"chatId": f"{name}-{i}", "userPrompt": prompt.format(subject), "options": options})
            expect.append(SCHEMAS[name])
    others = [("date", "When did the Apollo 11 landing happen?", {"regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"}),
              ("phone", "Make up a US phone number.", {"regex": r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"}),
              ("color", "What color is the sky on a clear day?", {"choice": ["red", "green", "blue"]}),
              ("yesno", "Is water wet?", {"choice": ["yes", "no"]})]
    inputs += [{"chatId": c, "userPrompt": p, "options": {"maxTokens": 24, "responseFormat": f}} for c, p, f in others]
    inputs.append(dict(inputs[1], chatId="again"))  # a sampled, seeded chat twice: the same text
    half = len(inputs) // 2
    first, second = await asyncio.gather(chat_batched(engine, inputs[:half]), chat_batched(engine, inputs[half:]))
    results = first + second
    for r, s in zip(results, expect, strict=False):
        assert r["__typename"] == "ChatSuccess" and r["finishReason"] == "STOP", r
        assert json.loads(r["response"]) == r["json"]
        jsonschema.validate(r["json"], s)
    answers = {r["chatId"]: r for r in results[len(expect):]}
    for chat_id, _, fmt in others:
        text = answers[chat_id]["response"]
        assert re.fullmatch(fmt["regex"], text) if "regex" in fmt else text in fmt["choice"], (chat_id, text)
        assert answers[chat_id]["json"] is None
    assert answers["again"]["response"] == results[1]["response"]


async def test_free_chats_beside_formatted_ones_get_the_same_greedy_text(engine):
    free = [chat(p, max_new_tokens=16) for p in ("What is the capital of France?", "Name three colors.")]
    alone = await engine.generate_batch(free)
    formatted = [chat(f"Describe {s} as JSON.", max_new_tokens=40, response_format=ResponseFormat.of(json_schema=PERSON))
                 for s in ("a teacher", "an artist")]
    mixed = await engine.generate_batch([formatted[0], free[0], formatted[1], free[1]])
    assert all(isinstance(c, Completion) for c in [*alone, *mixed])
    assert [c.text for c in alone] == [mixed[1].text, mixed[3].text]  # type: ignore[union-attr]
    for c in (mixed[0], mixed[2]):
        jsonschema.validate(json.loads(c.text), PERSON)  # type: ignore[union-attr]


async def test_invalid_or_unsupported_schemas_are_invalid_input_with_the_library_reason(engine):
    bad = {"nonsense": {"jsonSchema": {"type": "nonsense"}}, "keyword": {"jsonSchema": {"type": "object", "if": {}, "then": {}}},
           "regex": {"regex": "[unclosed"}, "two": {"jsonObject": True, "choice": ["a"]}}
    inputs = [{"chatId": k, "userPrompt": "x", "options": {"responseFormat": f}} for k, f in bad.items()]
    r = {x["chatId"]: x for x in await chat_batched(engine, inputs)}
    assert {x["code"] for x in r.values()} == {"INVALID_INPUT"} and {x["field"] for x in r.values()} == {"options.responseFormat"}
    assert "responseFormat.jsonSchema cannot be followed" in r["nonsense"]["message"]
    assert 'Unimplemented keys: ["if", "then"]' in r["keyword"]["message"]
    assert "unclosed character class" in r["regex"]["message"]
    assert "exactly one member, got 2" in r["two"]["message"]


async def test_max_tokens_before_the_value_is_complete_is_incomplete_output_with_the_partial_text(engine):
    [r] = await chat_batched(engine, [{"chatId": "short", "userPrompt": "Describe Ada Lovelace as JSON.",
                                       "options": {"maxTokens": 4, "responseFormat": {"jsonSchema": PERSON}}}])
    assert (r["__typename"], r["code"], r["field"]) == ("ChatError", "INCOMPLETE_OUTPUT", "options.responseFormat")
    assert r["partialText"].replace(" ", "").replace("\n", "").startswith('{"name') and "4 tokens" in r["message"]


async def test_a_stream_with_a_format_streams_the_text_and_ends_with_its_json(engine):
    query = "subscription($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatToken { delta } " \
            "... on ChatSuccess { response json finishReason } ... on ChatError { code message } } }"
    variables = {"input": {"chatId": "s", "userPrompt": "Extract: Bob, 41, is a doctor in Oslo.",
                           "options": {"maxTokens": 60, "responseFormat": {"jsonSchema": PERSON}}}}
    events = [e.data["chatStream"] async for e in await schema.subscribe(query, variable_values=variables,
                                                                          context_value=real_context(engine))]
    *tokens, final = events
    assert final["__typename"] == "ChatSuccess" and final["finishReason"] == "STOP"
    assert "".join(t["delta"] for t in tokens) == final["response"] and json.loads(final["response"]) == final["json"]
    jsonschema.validate(final["json"], PERSON)


