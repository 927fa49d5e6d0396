"""JSON the model can write: the extraction set's first two cases of each schema, greedy through the
engine as users run it (native weights), all valid against their schemas; and the whitespace rule
that allows indented JSON but no run of whitespace the model could loop on."""

from __future__ import annotations

import json

import jsonschema
import llguidance
import pytest

from benchmarks.extraction_set import CASES, SCHEMAS, prompt, score
from inference.boundary import ChatMessage, ChatRequest, Completion, ResponseFormat, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.structured import JSON_OPTIONS, tokenizer_adapter

SUBSET = [c for s in SCHEMAS for c in [c for c in CASES if c["schema"] == s][:2]]


def request(case: dict) -> ChatRequest:
    fmt = ResponseFormat.of(json_schema=SCHEMAS[case["schema"]])
    return ChatRequest(messages=(ChatMessage(role="system", content="You are a helpful assistant."), ChatMessage(role="user", content=prompt(case))),
                       params=SamplingParams(max_new_tokens=200, response_format=fmt), request_id=case["id"])


async def test_the_extraction_subset_answers_valid_json_with_most_fields_right(native):
    engine = AsyncEngine(native)
    await engine.start()
    try:
        results = await engine.generate_batch([request(c) for c in SUBSET])
    finally:
        await engine.stop()
    right = total = 0
    for case, result in zip(SUBSET, results, strict=True):
        assert isinstance(result, Completion), (case["id"], result)
        value = json.loads(result.text)
        jsonschema.validate(value, SCHEMAS[case["schema"]])
        r, t = score(case["expected"], value)
        right, total = right + r, total + t
    assert right / total >= 0.5, (right, total)


@pytest.mark.parametrize("text, allowed", [
    ('{"a":1,"b":["x"]}', True), ('{"a": 1, "b": ["x"]}', True), ('{\n  "a": 1,\n  "b": [\n    "x"\n  ]\n}', True),
    ('{\n\n  "a": 1,\n  "b": []\n}', True), ('{' + " " * 2 + '"a":1,"b":[]}', False), ('{\n' + " " * 21 + '"a":1,"b":[]}', False),
    ('{\n\n\n"a":1,"b":[]}', False)])
def test_json_formats_allow_indented_json_but_no_run_of_whitespace(llm, text, allowed):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}},
              "required": ["a", "b"], "additionalProperties": False}
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)
    matcher = llguidance.LLMatcher(tokenizer_adapter(llm.tokenizer, llm.eos_ids), grammar, log_level=0)
    accepted = matcher.consume_tokens(llm.tokenizer.encode(text)) and not matcher.is_error() and matcher.is_accepting()
    assert bool(accepted) is allowed
