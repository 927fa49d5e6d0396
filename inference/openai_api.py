"""The wire format of the inference service: OpenAI-style chat requests and our batch format."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine import Completion
from .errors import EngineError, InvalidRequest
from .params import ChatMessage, ChatRequest, SamplingParams

# Our option names (as InvalidRequest.field gives them) and OpenAI's.
OPENAI_PARAM = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p", "topK": "top_k",
                "seed": "seed", "stop": "stop", "userPrompt": "messages", "messages": "messages"}


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = True


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request that matters here. As in OpenAI's API,
    temperature defaults to 1; send 0 for greedy."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def to_request(self) -> ChatRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        params = SamplingParams(max_new_tokens=self.max_completion_tokens or self.max_tokens,
                                temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                seed=self.seed, stop=stop)
        return ChatRequest(tuple(ChatMessage(m.role, m.content) for m in self.messages), params,
                           request_id=f"chatcmpl-{uuid.uuid4().hex}")


# OpenAI parameters this server does not honour, with the values that ask for nothing: any other
# value is refused (400 naming the parameter) rather than silently ignored.
UNSUPPORTED: dict[str, tuple[object, ...]] = {
    "n": (None, 1), "best_of": (None, 1), "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False),
    "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}), "suffix": (None,), "audio": (None,), "prediction": (None,),
}


def parse(body: object) -> ChatCompletionRequest:
    """Parse one request body; a malformed one is an InvalidRequest naming the field."""
    if isinstance(body, dict):
        for name, neutral in UNSUPPORTED.items():
            if name in body and not any(body[name] == v and type(body[name]) is type(v) for v in neutral):
                raise InvalidRequest(f"{name} is not supported by this server (got {str(body[name])[:60]})", field=name)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None


def request_body(request: ChatRequest, stream: bool = False) -> dict:
    """What a client sends for ``request`` (every option explicit)."""
    p = request.params
    body = {"messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": p.temperature, "top_p": p.top_p, "stream": stream}
    if p.max_new_tokens is not None:
        body["max_tokens"] = p.max_new_tokens
    if p.top_k:
        body["top_k"] = p.top_k
    if p.seed is not None:
        body["seed"] = p.seed
    if p.stop:
        body["stop"] = list(p.stop)
    return body


def completion_json(c: Completion, model: str) -> dict:
    return {"id": c.request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason.value}],
            "usage": usage_json(c)}


def usage_json(c: Completion) -> dict:
    return {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens,
            "total_tokens": c.usage.total_tokens}


def chunk_json(request_id: str, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def result_json(result: Completion | EngineError) -> dict:
    """One item of a /generate_batch answer."""
    if isinstance(result, EngineError):
        return {"error": error_json(result)}
    t = result.timings
    return {"text": result.text, "finish_reason": result.finish_reason.value, "usage": usage_json(result),
            "timings": {"queued_ms": t.queued_ms, "first_token_ms": t.first_token_ms, "total_ms": t.total_ms}}


def error_json(exc: EngineError) -> dict:
    return {"code": exc.code, "message": exc.message, "field": exc.field,
            "type": "invalid_request_error" if exc.code in ("INVALID_INPUT", "PROMPT_TOO_LONG") else "server_error",
            "param": OPENAI_PARAM.get(exc.field or "", exc.field)}


HTTP_STATUS = {"INVALID_INPUT": 400, "PROMPT_TOO_LONG": 400, "OVERLOADED": 429, "UNAVAILABLE": 503,
               "TIMEOUT": 504, "CANCELLED": 499}
