"""The inference service's wire format, as pydantic models that both sides use: the service
(``inference.service.app``) writes them, the remote client (``inference.remote``) reads them.

OpenAI's chat completion subset, plus ``/generate_batch``. OpenAI's names map to the boundary's in
one table, ``OPENAI_PARAM``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..boundary import (
    ChatMessage,
    ChatRequest,
    Completion,
    EngineError,
    EngineInfo,
    ErrorCode,
    FinishReason,
    InvalidFormat,
    InvalidRequest,
    ResponseFormat,
    SamplingParams,
    Timings,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolMode,
    Tools,
    UpstreamError,
    Usage,
)
from ..boundary.options import InvalidOption
from ..boundary.result import Choice as BoundaryChoice

# Boundary names -> OpenAI's; the one table of this edge.
OPENAI_PARAM = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                "seed": "seed", "stop": "stop", "messages": "messages", "response_format": "response_format",
                "min_p": "min_p", "repetition_penalty": "repetition_penalty", "frequency_penalty": "frequency_penalty",
                "presence_penalty": "presence_penalty", "logit_bias": "logit_bias", "logprobs": "logprobs",
                "top_logprobs": "top_logprobs", "n": "n", "tools": "tools"}

HTTP_STATUS = {ErrorCode.INVALID_INPUT: 400, ErrorCode.PROMPT_TOO_LONG: 400, ErrorCode.OVERLOADED: 429,
               ErrorCode.UNAVAILABLE: 503, ErrorCode.TIMEOUT: 504, ErrorCode.CANCELLED: 499,
               ErrorCode.UNAUTHENTICATED: 401}

# OpenAI parameters this server does not honour, with the values that ask for nothing: any other
# value is refused (400 naming the parameter) rather than silently ignored.
UNSUPPORTED: dict[str, tuple[object, ...]] = {
    "best_of": (None, 1), "echo": (None, False),
    "functions": (None, []), "function_call": (None, "none"),
    "suffix": (None,), "audio": (None,), "prediction": (None,),
}
# Request fields taken and ignored, as OpenAI's API defines them (they ask nothing of generation).
# Any field neither here, nor in UNSUPPORTED, nor in ChatCompletionRequest is refused by name.
IGNORED = frozenset({"user", "store", "metadata", "service_tier"})
MAX_DETOKENIZE = 131_072  # ids in one /detokenize
# vLLM's older names for structured_outputs' members.
GUIDED = {"guided_json": "json", "guided_choice": "choice", "guided_regex": "regex"}


class ContentPart(BaseModel):
    """One part of OpenAI's content array; only ``text`` parts are taken (others are refused by name)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCallBody(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallBody(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallBody

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallBody:
        return cls(id=call.id, function=FunctionCallBody(name=call.name, arguments=call.arguments))

    def to_call(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.function.name, arguments=self.function.arguments)


class Message(BaseModel):
    """A chat message. OpenAI's ``developer`` role is the system prompt; content is a string or an
    array of text parts (joined with newlines, as vLLM does); an assistant turn may carry its
    ``tool_calls``, and a ``tool`` turn answers one by ``tool_call_id``."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # OpenAI's participant name: taken, not used
    tool_calls: list[ToolCallBody] | None = None
    tool_call_id: str | None = None

    def to_message(self, index: int) -> ChatMessage:
        """Raises InvalidRequest naming a part that is not text, or a tool turn without its call's id."""
        role = "system" if self.role == "developer" else self.role
        if role == "tool" and not self.tool_call_id:
            raise InvalidRequest(f"messages[{index}].tool_call_id is required in a tool message",
                                 field=f"messages[{index}].tool_call_id")
        calls = tuple(c.to_call() for c in self.tool_calls or ())
        if isinstance(self.content, str) or self.content is None:
            return ChatMessage(role=role, content=self.content or "", tool_calls=calls, tool_call_id=self.tool_call_id)
        texts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                where = f"messages[{index}].content[{j}]"
                raise InvalidRequest(f"{where}.type: only text parts are supported, got {part.type[:40]!r}"
                                     if part.type != "text" else f"{where}.text is required", field=f"{where}.type")
            texts.append(part.text)
        return ChatMessage(role=role, content="\n".join(texts), tool_calls=calls, tool_call_id=self.tool_call_id)

    @classmethod
    def of(cls, m: ChatMessage) -> Message:
        return cls(role=m.role, content=m.content,
                   tool_calls=[ToolCallBody.of(c) for c in m.tool_calls] or None, tool_call_id=m.tool_call_id)


class FunctionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # arguments always follow the schema here


class ToolBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionBody


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


def tools_of(tools: list[ToolBody] | None, choice: str | NamedToolChoice | None, parallel: bool | None) -> Tools | None:
    """The boundary's Tools of OpenAI's three fields; raises InvalidRequest naming the bad tool."""
    if not tools:
        if choice not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools", field="tool_choice")
        return None
    offered = tuple(Tool.of(t.function.name, t.function.description, t.function.parameters, i) for i, t in enumerate(tools))
    if isinstance(choice, NamedToolChoice):
        return Tools(tools=offered, mode=ToolMode.REQUIRED, name=choice.function.name, parallel=bool(parallel))
    return Tools(tools=offered, mode=ToolMode(choice or "auto"), name=None, parallel=bool(parallel))


def tool_fields(tools: Tools | None) -> dict[str, Any]:
    """What a client sends for ``tools`` (nothing for none)."""
    if tools is None:
        return {}
    choice: str | NamedToolChoice = tools.mode.value
    if tools.name is not None:
        choice = NamedToolChoice(type="function", function=NamedFunction(name=tools.name))
    return {"tools": [ToolBody(type="function", function=FunctionBody(name=t.name, description=t.description or None,
                                                                     parameters=json.loads(t.parameters)))
                      for t in tools.tools],
            "tool_choice": choice, "parallel_tool_calls": tools.parallel}


class JsonSchemaBody(BaseModel):
    """OpenAI's ``response_format.json_schema``: the schema with a name (``strict`` is implied)."""

    name: str = "answer"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ResponseFormatBody(BaseModel):
    """OpenAI's ``response_format``: ``{"type": "json_schema", "json_schema": {"name", "schema"}}``,
    ``{"type": "json_object"}``, ``{"type": "text"}``. llama.cpp's own flat form,
    ``{"type": "json_object", "schema": {...}}``, is read too."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaBody | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    def members(self) -> dict[str, Any]:
        if self.type == "json_schema":
            if self.json_schema is None and self.schema_ is None:
                raise InvalidFormat("type json_schema needs json_schema.schema", "json_schema")
            return {"json_schema": self.json_schema.schema_ if self.json_schema else self.schema_}
        if self.type == "json_object":
            return {"json_schema": self.schema_} if self.schema_ is not None else {"json_object": True}
        return {}


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs`` (also ours): the members OpenAI's response_format lacks."""

    json_: dict[str, Any] | None = Field(default=None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, extra="forbid")

    def members(self) -> dict[str, Any]:
        given = {"json_schema": self.json_, "json_object": self.json_object, "regex": self.regex, "choice": self.choice}
        return {k: v for k, v in given.items() if v not in (None, False)}


def response_format(body: ResponseFormatBody | None, structured: StructuredOutputs | None) -> ResponseFormat | None:
    """The one ResponseFormat of a request's two fields; together they may set one member."""
    members = (body.members() if body else {}) | (structured.members() if structured else {})
    if body and structured and body.members() and structured.members():
        raise InvalidFormat("and structured_outputs cannot both be set")
    return ResponseFormat.of(**members) if members else None


def format_fields(fmt: ResponseFormat | None) -> dict[str, Any]:
    """What a client sends for ``fmt``: JSON formats as OpenAI's response_format (every
    OpenAI-compatible server reads it), regex and choice as vLLM's structured_outputs."""
    if fmt is None:
        return {}
    if fmt.json_schema is not None:
        schema = JsonSchemaBody(schema_=json.loads(fmt.json_schema), strict=True)
        return {"response_format": ResponseFormatBody(type="json_schema", json_schema=schema)}
    if fmt.json_object:
        return {"response_format": ResponseFormatBody(type="json_object")}
    return {"structured_outputs": StructuredOutputs(regex=fmt.regex, choice=list(fmt.choice) if fmt.choice else None)}


class StreamOptions(BaseModel):
    """OpenAI's: the usage chunk before ``[DONE]`` is sent only when asked."""

    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The sampling fields OpenAI's chat and text completion requests share, read one way."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int | None = None

    def sampling(self, max_new_tokens: int | None, logprobs: bool, top_logprobs: int | None,
                 fmt: ResponseFormat | None = None) -> SamplingParams:
        """The boundary's SamplingParams of these fields (absent ones keep the boundary's defaults)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        given: dict[str, Any] = {name: getattr(self, name) for name in PENALTY_FIELDS if getattr(self, name) is not None}
        if self.logit_bias:
            given["logit_bias"] = logit_bias(self.logit_bias)
        if logprobs:
            given["logprobs"] = True
        if top_logprobs is not None:
            given["top_logprobs"] = top_logprobs
        if self.n is not None:
            given["n"] = self.n
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, seed=self.seed, stop=stop, response_format=fmt, **given)


class ChatCompletionRequest(SamplingFields):
    """The subset of OpenAI's chat completion request that matters here. As in OpenAI's API,
    temperature defaults to 1; send 0 for greedy."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: ResponseFormatBody | None = None
    structured_outputs: StructuredOutputs | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[ToolBody] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def to_request(self) -> ChatRequest:
        """Raises InvalidFormat for a response format that sets no or several members."""
        params = self.sampling(self.max_completion_tokens or self.max_tokens, bool(self.logprobs), self.top_logprobs,
                               response_format(self.response_format, self.structured_outputs))
        return ChatRequest(messages=tuple(m.to_message(i) for i, m in enumerate(self.messages)), params=params,
                           request_id=f"chatcmpl-{uuid.uuid4().hex}",
                           tools=tools_of(self.tools, self.tool_choice, self.parallel_tool_calls))

    @classmethod
    def of(cls, request: ChatRequest, stream: bool = False) -> ChatCompletionRequest:
        """What a client sends for ``request`` (every option explicit)."""
        p = request.params
        return cls(messages=[Message.of(m) for m in request.messages], **tool_fields(request.tools),
                   max_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                   seed=p.seed, stop=list(p.stop) or None, stream=stream,
                   stream_options=StreamOptions(include_usage=True) if stream else None,
                   **format_fields(p.response_format), **sent_penalties(p))

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


PENALTY_FIELDS = ("min_p", "repetition_penalty", "frequency_penalty", "presence_penalty")


def logit_bias(given: dict[str, float]) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``{"token id": bias}`` as the boundary's (id, bias) pairs, in id order."""
    pairs = []
    for key, bias in given.items():
        if not key.isdigit() or len(key) > 9:
            raise InvalidOption("logit_bias", f"keys must be token ids (decimal integers), got {key[:20]!r}")
        pairs.append((int(key), bias))
    return tuple(sorted(pairs))


def sent_penalties(p: SamplingParams) -> dict[str, Any]:
    """The penalty fields a client sends for ``p``: only those set to other than their defaults, so a
    server that does not know them is asked for nothing it would refuse."""
    defaults = SamplingParams()
    sent: dict[str, Any] = {n: getattr(p, n) for n in PENALTY_FIELDS if getattr(p, n) != getattr(defaults, n)}
    if p.logit_bias:
        sent["logit_bias"] = {str(token): bias for token, bias in p.logit_bias}
    if p.logprobs:
        sent |= {"logprobs": True, "top_logprobs": p.top_logprobs}
    if p.n != 1:
        sent["n"] = p.n
    return sent


def parse_request(body: object) -> ChatCompletionRequest:
    """Parse one request body; a malformed one, one with a field this server does not know, or one
    asking for what it does not do, is an InvalidRequest naming the field. vLLM's ``guided_*`` fields
    are read as ``structured_outputs``."""
    if isinstance(body, dict):
        for name, neutral in UNSUPPORTED.items():
            if name in body and not any(body[name] == v and type(body[name]) is type(v) for v in neutral):
                raise InvalidRequest(f"{name} is not supported by this server (got {str(body[name])[:60]})", field=name)
        guided = {GUIDED[k]: body[k] for k in GUIDED if k in body}
        if guided:
            if "structured_outputs" in body:
                raise InvalidRequest("guided_* fields and structured_outputs cannot both be set", field="structured_outputs")
            body = {k: v for k, v in body.items() if k not in GUIDED} | {"structured_outputs": guided}
        known = set(ChatCompletionRequest.model_fields) | set(UNSUPPORTED)
        for name in body:
            if name not in known and name not in IGNORED:
                raise InvalidRequest(f"{str(name)[:60]} is not a field this server takes", field=str(name)[:60])
        body = {k: v for k, v in body.items() if k not in IGNORED and k not in UNSUPPORTED}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> InvalidRequest:
    """A body that does not parse, as the InvalidRequest naming its first wrong field."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidRequest(f"{where}: {first['msg']}", field=where)


class ErrorBody(BaseModel):
    """OpenAI's error shape, plus our code and field so that a client of ours loses nothing."""

    message: str
    type: str = "server_error"
    param: str | None = None
    code: str | int | None = None  # ours: an ErrorCode; foreign servers send an HTTP status or their own
    field: str | None = None

    @classmethod
    def of(cls, exc: EngineError) -> ErrorBody:
        param = OPENAI_PARAM.get(exc.field or "", exc.field)
        member = exc.member if isinstance(exc, InvalidFormat) else None
        message = f"{param}{'.' + member if member else ''} {exc.detail}" if isinstance(exc, InvalidOption) else exc.message
        client_side = exc.code in (ErrorCode.INVALID_INPUT, ErrorCode.PROMPT_TOO_LONG)
        return cls(message=message, type="invalid_request_error" if client_side else "server_error",
                   param=param, code=exc.code.value, field=exc.field)

    def to_error(self) -> EngineError:
        return UpstreamError(ErrorCode.parse(self.code), self.message, self.field)


class ErrorResponse(BaseModel):
    error: ErrorBody


class UsageBody(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> UsageBody:
        return cls(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   total_tokens=usage.total_tokens)

    def to_usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


class TopLogprobBody(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class LogprobEntry(TopLogprobBody):
    top_logprobs: list[TopLogprobBody] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """OpenAI's ``choices[].logprobs``: one entry per generated token."""

    content: list[LogprobEntry] | None = None

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...] | None) -> ChoiceLogprobs | None:
        if entries is None:
            return None
        utf8 = lambda text: list(text.encode("utf-8", "replace"))
        return cls(content=[LogprobEntry(token=e.token, logprob=e.logprob, bytes=utf8(e.token), top_logprobs=[
            TopLogprobBody(token=t, logprob=v, bytes=utf8(t)) for t, v in e.top]) for e in entries])

    def entries(self) -> tuple[TokenLogprob, ...]:
        return tuple(TokenLogprob(token=e.token, logprob=e.logprob, top=tuple((t.token, t.logprob) for t in e.top_logprobs))
                     for e in self.content or ())


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str | None = ""
    tool_calls: list[ToolCallBody] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None

    @classmethod
    def of(cls, a: BoundaryChoice) -> Choice:
        calls = [ToolCallBody.of(c) for c in a.tool_calls] or None
        return cls(index=a.index, message=AssistantMessage(content=a.text or (None if calls else ""), tool_calls=calls),
                   finish_reason=a.finish_reason.value, logprobs=ChoiceLogprobs.of(a.logprobs))

    def to_choice(self) -> BoundaryChoice:
        return BoundaryChoice(index=self.index, text=self.message.content or "", finish_reason=FinishReason.parse(self.finish_reason),
                              logprobs=self.logprobs.entries() if self.logprobs is not None else None,
                              tool_calls=tuple(c.to_call() for c in self.message.tool_calls or ()))


def completion_of(request_id: str, choices: list[BoundaryChoice], usage: Usage, timings: Timings) -> Completion:
    """A Completion of the answers a server sent (in index order; the first on top)."""
    choices = sorted(choices, key=lambda c: c.index)
    first = choices[0] if choices else BoundaryChoice(index=0, text="", finish_reason=FinishReason.STOP)
    return Completion(request_id=request_id, text=first.text, finish_reason=first.finish_reason, usage=usage, timings=timings,
                      logprobs=first.logprobs, choices=tuple(choices) if len(choices) > 1 else (), tool_calls=first.tool_calls)


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str = ""
    choices: list[Choice]
    usage: UsageBody | None = None

    @classmethod
    def of(cls, c: Completion, model: str) -> ChatCompletion:
        return cls(id=c.request_id, model=model, usage=UsageBody.of(c.usage), choices=[Choice.of(a) for a in c.answers])


class FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A call in a stream, as OpenAI sends it: ``index`` among the answer's calls, and the call whole."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class Delta(BaseModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a stream. The usage chunk has no choices; an error event has only ``error``."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: UsageBody | None = None
    error: ErrorBody | None = None


class TimingsBody(BaseModel):
    queued_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0


class BatchItem(BaseModel):
    """One result of ``/generate_batch``: the completion, or ``error``."""

    text: str | None = None
    finish_reason: str | None = None
    usage: UsageBody | None = None
    timings: TimingsBody | None = None
    error: ErrorBody | None = None
    logprobs: ChoiceLogprobs | None = None
    choices: list[Choice] | None = None  # every answer, when the request asked for n > 1
    tool_calls: list[ToolCallBody] | None = None

    @classmethod
    def of(cls, result: Completion | EngineError) -> BatchItem:
        if isinstance(result, EngineError):
            return cls(error=ErrorBody.of(result))
        t = result.timings
        return cls(text=result.text, finish_reason=result.finish_reason.value, usage=UsageBody.of(result.usage),
                   timings=TimingsBody(queued_ms=t.queued_ms, first_token_ms=t.first_token_ms, total_ms=t.total_ms),
                   logprobs=ChoiceLogprobs.of(result.logprobs),
                   choices=[Choice.of(a) for a in result.choices] if result.choices else None,
                   tool_calls=[ToolCallBody.of(c) for c in result.tool_calls] or None)

    def to_result(self, request_id: str) -> Completion | EngineError:
        if self.error is not None:
            return self.error.to_error()
        t = self.timings or TimingsBody()
        first = BoundaryChoice(index=0, text=self.text or "", finish_reason=FinishReason.parse(self.finish_reason),
                               logprobs=self.logprobs.entries() if self.logprobs is not None else None,
                               tool_calls=tuple(c.to_call() for c in self.tool_calls or ()))
        return completion_of(request_id, [c.to_choice() for c in self.choices] if self.choices else [first],
                             (self.usage or UsageBody()).to_usage(),
                             Timings(queued_ms=t.queued_ms, first_token_ms=t.first_token_ms, total_ms=t.total_ms))


class BatchRequest(BaseModel):
    requests: list[Any]


class BatchResponse(BaseModel):
    results: list[BatchItem]


class TokenizeRequest(BaseModel):
    """vLLM's ``/tokenize``: a ``prompt`` alone, or ``messages`` through the chat template."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = False  # SmolLM2's tokenizer adds none either way
    add_generation_prompt: bool = True  # with messages: the template always ends with the assistant's turn
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int = 0
    max_model_len: int | None = None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[int] = Field(max_length=MAX_DETOKENIZE)


class DetokenizeResponse(BaseModel):
    prompt: str


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "smollm-graphql"
    max_model_len: int | None = None
    smollm: EngineInfo | None = None  # our own service says all it knows


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class CompletionRequest(SamplingFields):
    """OpenAI's (legacy) text completion, as lm-eval-harness and other harnesses call it: a raw
    prompt, no chat template. As in OpenAI's API, ``max_tokens`` defaults to 16 and temperature to 1;
    ``logprobs`` is the number of alternatives (0 to 5) and asks for the generated tokens'. ``echo``
    puts the prompt before the answer; with ``logprobs`` the prompt's tokens come with theirs (the
    first one's is null), which is how lm-eval-harness scores log-likelihoods, with ``max_tokens``
    0 (the prompt alone)."""

    prompt: str | list[str] | list[int] | list[list[int]]  # texts, or token ids (lm-eval-harness sends ids)
    max_tokens: int | None = 16
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    user: str | None = None

    @property
    def prompts(self) -> list[str | list[int]]:
        """The prompts, each a text or a list of token ids."""
        given: Any = self.prompt
        if isinstance(given, str) or (given and isinstance(given[0], int)):
            return [given]  # one prompt
        return list(given)

    def to_requests(self, texts: list[str] | None = None) -> list[ChatRequest]:
        """One raw-prompt request per prompt; raises InvalidRequest naming what is wrong. ``texts``:
        the prompts as text, where they came as token ids (the service decodes them)."""
        if self.max_tokens == 0 and not self.echo:
            raise InvalidOption("max_tokens", "may be 0 only with echo (the prompt alone), got 0")
        if not 1 <= len(self.prompts) <= MAX_PROMPTS:
            raise InvalidRequest(f"prompt takes 1 to {MAX_PROMPTS} strings, got {len(self.prompts)}", field="prompt")
        texts = texts if texts is not None else [p for p in self.prompts if isinstance(p, str)]
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequest(f"prompt{'' if isinstance(self.prompt, str) else f'[{i}]'} must not be blank", field="prompt")
        params = self.sampling(self.max_tokens or (1 if self.max_tokens == 0 else None), self.logprobs is not None,
                               self.logprobs or None)
        base = ChatRequest(messages=(), params=params)
        return [replace(base, messages=(ChatMessage(role="user", content=text),), template=False, request_id=f"cmpl-{uuid.uuid4().hex}",
                        prompt_ids=None if isinstance(given, str) else tuple(given),
                        prompt_logprobs=self.echo and self.logprobs is not None)
                for text, given in zip(texts, self.prompts, strict=True)]


MAX_PROMPTS = 64  # prompts in one /v1/completions request


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs: parallel lists over the generated tokens."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...], start: int, top: bool, first: str | None = None) -> CompletionLogprobs:
        """``first``: a leading token without a logprob (an echoed prompt's first), null in the lists."""
        tokens = ([first] if first is not None else []) + [e.token for e in entries]
        offsets, at = [], start
        for token in tokens:
            offsets.append(at)
            at += len(token)
        lead: list[float | None] = [None] if first is not None else []
        return cls(tokens=tokens, token_logprobs=lead + [e.logprob for e in entries],
                   top_logprobs=([{}] if first is not None else []) + [dict(e.top) for e in entries] if top else None,
                   text_offset=offsets)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class TextCompletion(BaseModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str = ""
    choices: list[CompletionChoice]
    usage: UsageBody | None = None
