"""The GraphQL types: inputs, results as unions (errors are data), health and model info."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from inference import boundary

# The boundary's enums, as GraphQL types: declared once, there.
strawberry.enum(boundary.FinishReason, name="FinishReason", description="Why generation ended.")
strawberry.enum(boundary.ErrorCode, name="ChatErrorCode", description="What went wrong for one chat.")
FinishReason = boundary.FinishReason
ChatErrorCode = boundary.ErrorCode


@strawberry.enum
class ChatRole(Enum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@strawberry.input(description="A call an assistant turn made (as ChatSuccess.toolCalls gave it).")
class ToolCallInput:
    id: str
    name: str
    arguments: JSON


@strawberry.input(description="An earlier turn of the conversation. An ASSISTANT turn may carry the toolCalls it made; "
                              "a TOOL turn is one call's result, naming the call by toolCallId.")
class ChatMessageInput:
    role: ChatRole
    content: str
    tool_calls: list[ToolCallInput] | None = None
    tool_call_id: str | None = None


@strawberry.input(description="A function the model may call.")
class ToolInput:
    name: str = strawberry.field(description="1 to 64 letters, digits, _ or -; unique among the chat's tools.")
    description: str | None = None
    parameters: JSON | None = strawberry.field(default=None, description="Its arguments' JSON Schema (an object); "
                                                                          "absent: any object.")


@strawberry.enum(description="How the model may use the tools.")
class ToolChoiceMode(Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


@strawberry.input(one_of=True, description="AUTO (the default: text or calls), NONE (no tool is offered), REQUIRED "
                                           "(at least one call), or the name of the one tool to call.")
class ToolChoiceInput:
    mode: ToolChoiceMode | None = strawberry.UNSET
    tool: str | None = strawberry.UNSET


@strawberry.input(description="Structured output: the answer follows exactly one of these (set one member).")
class ResponseFormatInput:
    json_schema: JSON | None = strawberry.field(default=None, description="A JSON Schema (an object); the answer is JSON valid against it, compact.")
    json_object: bool | None = strawberry.field(default=None, description="true: the answer is a JSON object, compact.")
    regex: str | None = strawberry.field(default=None, description="The answer matches this regular expression (Rust regex syntax), whole.")
    choice: list[str] | None = strawberry.field(default=None, description="The answer is exactly one of these strings.")


@strawberry.input(description="A bias added to one token's logit.")
class LogitBiasInput:
    token: int = strawberry.field(description="A token id of the model's vocabulary.")
    bias: float = strawberry.field(description="-100 to 100; -100 in effect bans the token, 100 forces it.")


@strawberry.input(description="Generation options; absent ones take the server's defaults.")
class GenerationOptions:
    max_tokens: int | None = strawberry.field(default=None, description="New tokens at most (default 256).")
    temperature: float | None = strawberry.field(default=None, description="0 (default) is greedy; up to 2.")
    top_p: float | None = strawberry.field(default=None, description="Nucleus sampling, in (0, 1].")
    top_k: int | None = strawberry.field(default=None, description="Sample from the k likeliest; 0 is off.")
    seed: int | None = strawberry.field(default=None, description="Same seed, same sampled text.")
    stop: list[str] | None = strawberry.field(default=None, description="Strings that end the answer (cut from it).")
    response_format: ResponseFormatInput | None = strawberry.field(default=None, description="Structured output; absent: free text.")
    min_p: float | None = strawberry.field(
        default=None, description="Sampling: drop tokens less likely than minP times the likeliest (after temperature); 0 (default) is off.")
    repetition_penalty: float | None = strawberry.field(
        default=None, description="Over every token of the prompt and the answer so far: divides a positive logit, "
                                  "multiplies a negative one (transformers' and vLLM's form); in (0, 2], 1 (default) is off.")
    frequency_penalty: float | None = strawberry.field(
        default=None, description="Subtracted from a token's logit once per time it is in the answer so far (OpenAI's form); -2 to 2.")
    presence_penalty: float | None = strawberry.field(
        default=None, description="Subtracted from the logit of each token already in the answer (OpenAI's form); -2 to 2.")
    logprobs: bool | None = strawberry.field(default=None, description="Return each generated token's log probability.")
    top_logprobs: int | None = strawberry.field(
        default=None, description="With logprobs: also the 0 to 20 likeliest tokens at each step.")
    logit_bias: list[LogitBiasInput] | None = strawberry.field(
        default=None, description="Added to these tokens' logits before sampling (greedy too); at most 300 tokens.")
    n: int | None = strawberry.field(
        default=None, description="Answers to sample for this prompt, 1 (default) to model.limits.maxChoices, in "
                                  "ChatSuccess.choices; the prompt is computed once. With a seed, answer i samples with "
                                  "seed + i. Greedy answers are all the same. Each counts against quotas.")


@strawberry.input
class ChatInput:
    chat_id: strawberry.ID
    user_prompt: str
    system_prompt: str | None = strawberry.field(default=None, description="A sensible default when absent.")
    history: list[ChatMessageInput] | None = None
    options: GenerationOptions | None = None
    tools: list[ToolInput] | None = strawberry.field(
        default=None, description="Functions the model may call (at most 128); their calls come back in ChatSuccess.toolCalls.")
    tool_choice: ToolChoiceInput | None = None
    parallel_tool_calls: bool | None = strawberry.field(
        default=None, description="Allow several calls in one answer (default false: one).")


@strawberry.type
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@strawberry.type(description="Milliseconds from arrival.")
class Timings:
    queued_ms: float | None = strawberry.field(description="null where nobody measured it (a foreign upstream).")
    time_to_first_token_ms: float | None
    total_ms: float


@strawberry.type(description="One of the likeliest tokens at a step.")
class TopLogprob:
    token: str
    logprob: float


@strawberry.type(description="A generated token and its log probability, from the model's raw distribution: before "
                             "penalties, logitBias, temperature and responseFormat's mask (vLLM's default). With "
                             "responseFormat.choice, the first token's topLogprobs are a classifier's probabilities.")
class TokenLogprob:
    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = strawberry.field(description="The topLogprobs likeliest tokens, likeliest first.")

    @classmethod
    def of(cls, entry: Any) -> TokenLogprob:
        return cls(token=entry.token, logprob=entry.logprob,
                   top_logprobs=[TopLogprob(token=t, logprob=v) for t, v in entry.top])


@strawberry.type(description="A call of one of the chat's tools; arguments are valid against its parameters schema.")
class ToolCall:
    id: str
    name: str
    arguments: JSON

    @classmethod
    def of(cls, call: Any) -> ToolCall:
        return cls(id=call.id, name=call.name, arguments=json.loads(call.arguments))


@strawberry.type(description="One of a chat's options.n answers.")
class ChatChoice:
    index: int
    response: str
    finish_reason: FinishReason
    tool_calls: list[ToolCall] = strawberry.field(default_factory=list)
    json: JSON | None = strawberry.field(
        default=None, description="The answer parsed (responseFormat jsonSchema or jsonObject); null for other formats, "
                                  "and when this answer did not complete its format (finishReason says why).")
    logprobs: list[TokenLogprob] | None = strawberry.field(
        default=None, description="Every generated token's log probability, when options.logprobs asked; else null.")


@strawberry.type(description="response, finishReason, json and logprobs are the first answer's; choices holds every "
                             "answer (one unless options.n asked for more). usage counts the prompt once and the "
                             "tokens of every answer. With options.n > 1 the chat is INCOMPLETE_OUTPUT only when no "
                             "answer completed its responseFormat.")
class ChatSuccess:
    chat_id: strawberry.ID
    response: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    json: JSON | None = strawberry.field(default=None, description="The answer parsed (responseFormat jsonSchema or jsonObject); else null.")
    logprobs: list[TokenLogprob] | None = strawberry.field(
        default=None, description="Every generated token's log probability, when options.logprobs asked; else null.")
    choices: list[ChatChoice] = strawberry.field(default_factory=list)
    tool_calls: list[ToolCall] = strawberry.field(
        default_factory=list, description="The first answer's calls of the chat's tools (finishReason TOOL_CALLS); "
                                          "response is the text before them. Send each result back as a TOOL turn.")


@strawberry.type(description="Why one chat got no answer. chatId is the id as sent (it may be blank when "
                              "that is the error), non-null like ChatSuccess.chatId so both can be selected together.")
class ChatError:
    chat_id: strawberry.ID
    code: ChatErrorCode
    message: str
    field: str | None = None
    retry_after_ms: int | None = strawberry.field(default=None, description="RATE_LIMITED: when the quota allows again.")
    partial_text: str | None = strawberry.field(default=None, description="INCOMPLETE_OUTPUT: the text generated before it stopped.")
    used_tokens: strawberry.Private[int] = 0  # tokens the chat consumed all the same (charged to quotas)


ChatResult = Annotated[ChatSuccess | ChatError, strawberry.union("ChatResult")]


@strawberry.type
class ChatBatchResult:
    results: list[ChatResult]
    partial_success: bool
    succeeded: int
    failed: int


@strawberry.type(description="One piece of streamed text; index counts from 0, per choice.")
class ChatToken:
    chat_id: strawberry.ID
    index: int
    delta: str
    choice: int = strawberry.field(default=0, description="Which of options.n answers this delta belongs to (from 0).")
    logprobs: list[TokenLogprob] | None = strawberry.field(
        default=None, description="The log probabilities of the tokens in this delta, when options.logprobs asked.")


ChatStreamEvent = Annotated[ChatToken | ChatSuccess | ChatError, strawberry.union("ChatStreamEvent")]


@strawberry.type
class Health:
    ready: bool
    waiting: int
    running: int
    uptime_seconds: float


@strawberry.type
class Limits:
    max_batch_items: int
    max_tokens: int
    default_max_tokens: int
    max_running: int
    max_waiting: int
    max_prompt_chars: int
    max_choices: int = strawberry.field(description="The largest options.n.")


@strawberry.type(description="An API key's quotas; 0 is unlimited.")
class KeyLimits:
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_streams: int


@strawberry.type(description="What the key has used in this minute's window (tokens reserved, then settled).")
class KeyUsage:
    requests_this_minute: int
    tokens_this_minute: int
    open_streams: int


@strawberry.type(description="The caller: its API key's name (anonymous when keys are off).")
class Viewer:
    name: str
    limits: KeyLimits
    usage: KeyUsage


@strawberry.type(description="A text's tokens: what it counts against the context and the quotas.")
class Tokenization:
    count: int
    ids: list[int]


@strawberry.type
class ModelInfo:
    name: str
    source: str
    parameters: int
    context_length: int
    device: str
    dtype: str
    limits: Limits

    @strawberry.field(description="The model's tokens of text alone, without the chat template (a chat adds its "
                                  "template's few tokens); text has at most limits.maxPromptChars characters.")
    async def tokenize(self, info: strawberry.Info, text: str) -> Tokenization:
        limit = info.context.settings.max_prompt_chars
        if len(text) > limit:
            raise GraphQLError(f"text has {len(text)} characters; the limit is {limit}",
                               extensions={"code": boundary.ErrorCode.INVALID_INPUT.value, "field": "text"})
        try:
            boundary.request.check_text("text", text)
            ids = await info.context.engine.tokenize(text)
        except boundary.EngineError as exc:
            raise GraphQLError(exc.message, extensions={"code": exc.code.value, "field": exc.field}) from None
        return Tokenization(count=len(ids), ids=ids)
