"""The pure pieces, without the model: the boundary types, the wire codecs, the upstream error
mapping, and the torch-free import of the API tier. ``pytest -m "not model"`` runs these."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from inference.boundary import (
    ChatMessage,
    ChatRequest,
    Completion,
    EngineFault,
    ErrorCode,
    FinishReason,
    InvalidRequest,
    PromptTooLong,
    SamplingParams,
    Timings,
    Usage,
)
from inference.boundary.options import MAX_SEED, InvalidOption
from inference.remote import upstream_error
from inference.service.wire import (
    BatchItem,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    parse_request,
)


def test_the_api_tier_in_remote_mode_does_not_import_torch():
    code = ("import sys, graphql_api.app, graphql_api.__main__, inference.remote; "
            "from graphql_api.app import create_app; from graphql_api.settings import ApiSettings; "
            "create_app(ApiSettings(inference_url='http://127.0.0.1:9')); "
            "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "INFERENCE_URL": "http://127.0.0.1:9"})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("params, field", [
    (SamplingParams(max_new_tokens=0), "max_new_tokens"), (SamplingParams(temperature=2.5), "temperature"),
    (SamplingParams(top_p=0.0), "top_p"), (SamplingParams(top_k=1001), "top_k"),
    (SamplingParams(seed=MAX_SEED + 1), "seed"), (SamplingParams(stop=("x",) * 9), "stop"),
    (SamplingParams(stop=("",)), "stop"),
])
def test_options_are_validated_once_under_neutral_names(params, field):
    with pytest.raises(InvalidOption) as raised:
        params.validate(1024)
    assert raised.value.field == field and raised.value.message.startswith(field)
    assert field not in raised.value.detail  # each edge names it in its own words


def test_requests_name_what_is_wrong():
    with pytest.raises(InvalidRequest) as blank:
        ChatRequest(messages=(ChatMessage(role="user", content="  "),)).validate(1024)
    assert blank.value.field == "messages"
    with pytest.raises(InvalidRequest) as surrogate:
        ChatRequest(messages=(ChatMessage(role="system", content="\ud800"), ChatMessage(role="user", content="hi"))).validate(1024)
    assert surrogate.value.field == "messages[0].content" and "U+D800" in surrogate.value.message


def test_graphql_and_openai_edges_each_name_an_option_in_their_own_words():
    from graphql_api.schema.errors import chat_error

    exc = InvalidOption("max_new_tokens", "must be between 1 and 1024, got 0")
    graphql = chat_error("c", exc)
    assert graphql.field == "options.maxTokens" and graphql.message == "maxTokens must be between 1 and 1024, got 0"
    assert graphql.code is ErrorCode.INVALID_INPUT
    openai = ErrorBody.of(exc)
    assert openai.param == "max_tokens" and openai.message == "max_tokens must be between 1 and 1024, got 0"
    assert chat_error("c", PromptTooLong(3000, 10, 2048)).field == "userPrompt"


def test_wire_request_round_trips_a_chat_request():
    request = ChatRequest(messages=(ChatMessage(role="system", content="s"), ChatMessage(role="user", content="hi")),
                          params=SamplingParams(max_new_tokens=5, temperature=0.5, top_p=0.9, top_k=4, seed=7, stop=("x",)))
    back = parse_request(ChatCompletionRequest.of(request).body()).to_request()
    assert back.messages == request.messages and back.params == request.params


def test_wire_results_round_trip_completions_and_errors():
    completion = Completion(request_id="r", text="text", finish_reason=FinishReason.LENGTH, usage=Usage(prompt_tokens=3, completion_tokens=4),
                            timings=Timings(queued_ms=None, first_token_ms=1.5, total_ms=9.0))
    assert BatchItem.model_validate_json(BatchItem.of(completion).model_dump_json()).to_result("r") == completion
    error = BatchItem.of(EngineFault("boom")).to_result("r")
    assert error.code is ErrorCode.INTERNAL and error.message == "boom"
    answer = ChatCompletion.of(completion, "m")
    assert answer.choices[0].message.content == "text" and answer.usage.total_tokens == 7
    assert ChatCompletionChunk.model_validate_json('{"choices": [{"delta": {"content": "a"}}]}').choices[0].delta.content == "a"


@pytest.mark.parametrize("status, body, code", [
    (400, b'{"error": {"message": "the request exceeds the available context size, try increasing it", '
          b'"type": "exceed_context_size_error", "code": 400}}', ErrorCode.PROMPT_TOO_LONG),  # llama.cpp
    (400, b'{"object": "error", "message": "This model\'s maximum context length is 2048 tokens. However, you '
          b'requested 3000 tokens", "type": "BadRequestError", "param": null, "code": 400}', ErrorCode.PROMPT_TOO_LONG),
    (400, b'{"error": {"message": "temperature must be between 0 and 2", "param": "temperature", '
          b'"code": "INVALID_INPUT", "field": "temperature"}}', ErrorCode.INVALID_INPUT),
    (429, b'{"error": {"message": "busy"}}', ErrorCode.OVERLOADED),
    (503, b"down", ErrorCode.UNAVAILABLE),
])
def test_upstream_errors_are_mapped_to_our_codes(status, body, code):
    error = upstream_error(status, body)
    assert error.code is code, (error.code, error.message)
    assert not error.message.startswith("{"), "the upstream's message, not its raw body"


def test_a_vllm_context_error_is_prompt_too_long():
    body = (b'{"error": {"message": "This model\'s maximum context length is 2048 tokens. However, you requested '
            b'3000 tokens.", "type": "BadRequestError", "param": null, "code": 400}}')
    error = upstream_error(400, body)
    assert error.code is ErrorCode.PROMPT_TOO_LONG and "2048" in error.message and error.field == "messages"


def test_every_boundary_type_resolves_its_annotations():
    """No name is left to a TYPE_CHECKING import (an import circle's workaround): tools that read
    annotations at run time (pydantic, typing.get_type_hints) see every type."""
    import dataclasses
    import typing

    import inference.boundary as boundary

    types = [getattr(boundary, n) for n in boundary.__all__ if dataclasses.is_dataclass(getattr(boundary, n))]
    assert len(types) >= 10
    for cls in types:
        assert typing.get_type_hints(cls), cls
