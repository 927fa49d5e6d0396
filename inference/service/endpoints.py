"""The service's endpoints, each a function of its request that finds the engine on ``app.state``
(``Served``). Every body is a model of ``wire``.

- ``POST /v1/chat/completions``: OpenAI-compatible, ``stream`` as SSE (a usage chunk when
  ``stream_options.include_usage`` asks).
  Errors in OpenAI's shape: 400 for invalid input, 429 when overloaded, 503 when unavailable.
- ``POST /v1/completions``: OpenAI's text completion (a raw prompt or a list of them, ``echo``,
  ``logprobs``, ``n``, ``stop``, ``stream``), as evaluation harnesses call it.
- ``POST /generate_batch``: ``{"requests": [...]}`` of chat completion requests, answered as
  ``{"results": [...]}`` with a result or an ``error`` per item, in order; one bad item never
  sinks the batch. This is what the GraphQL tier sends one DataLoader batch as.
- ``POST /tokenize`` and ``/detokenize`` in vLLM's shapes (a prompt alone, or messages through the
  chat template).
- ``GET /v1/models`` (with the engine's info and limits), ``/healthz``, ``/readyz`` (``/health`` too,
  which routers and peers' clients probe), ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..boundary import ChatRequest, Completion, EngineError, InvalidRequest
from .replies import error_response, json_body, reply
from .state import Served
from .streams import chat_events, completion_events
from .wire import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ChatCompletion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TextCompletion,
    TokenizeRequest,
    TokenizeResponse,
    UsageBody,
    invalid,
    parse_request,
)


async def chat_completions(request: Request) -> Response:
    served = Served.of(request)
    try:
        body = parse_request(await json_body(request))
        [entry] = await served.engine.submit([body.to_request()])
    except EngineError as exc:
        return error_response(exc)
    if isinstance(entry, EngineError):
        return error_response(entry)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        calls = body.tools is not None and body.tool_choice != "none" and bool(body.tools)
        return StreamingResponse(chat_events(entry, served.model, include_usage, bool(body.logprobs), calls),
                                 media_type="text/event-stream")
    result = await entry.result()
    if isinstance(result, EngineError):
        return error_response(result)
    return reply(ChatCompletion.of(result, served.model))


async def completions(request: Request) -> Response:
    served = Served.of(request)
    engine = served.engine
    try:
        body = CompletionRequest.model_validate(await json_body(request))
        texts = [p if isinstance(p, str) else engine.detokenize(p, f"prompt[{i}]") for i, p in enumerate(body.prompts)]
        requests = body.to_requests(texts)
        if body.stream and len(requests) > 1:
            raise InvalidRequest("a stream takes one prompt", field="prompt")
        if body.stream and body.echo and body.logprobs is not None:
            raise InvalidRequest("echo with logprobs is answered whole, not streamed", field="stream")
    except ValidationError as exc:
        return error_response(invalid(exc))
    except EngineError as exc:
        return error_response(exc)
    if body.stream:
        [entry] = await engine.submit(requests)
        if isinstance(entry, EngineError):
            return error_response(entry)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(completion_events(entry, served.model, body, texts[0], include_usage),
                                 media_type="text/event-stream")
    results = await engine.generate_batch(requests)
    failed = next((r for r in results if isinstance(r, EngineError)), None)
    if failed is not None:
        return error_response(failed)
    done = [r for r in results if isinstance(r, Completion)]
    prompt_only = body.max_tokens == 0  # echo alone: the one token generated is not part of the answer
    choices = []
    for i, (text, given, c) in enumerate(zip(texts, body.prompts, done, strict=True)):
        ids = given if not isinstance(given, str) else await engine.tokenize(given)
        first = engine.detokenize(ids[:1]) if c.prompt_logprobs is not None else None
        for a in c.answers:
            generated = () if prompt_only else a.logprobs or ()
            logprobs = None
            if c.prompt_logprobs is not None:
                logprobs = CompletionLogprobs.of(c.prompt_logprobs + generated, 0, bool(body.logprobs), first)
            elif a.logprobs is not None:
                logprobs = CompletionLogprobs.of(a.logprobs, len(text) if body.echo else 0, bool(body.logprobs))
            choices.append(CompletionChoice(
                index=i * len(c.answers) + a.index, text=(text if body.echo else "") + ("" if prompt_only else a.text),
                finish_reason="length" if prompt_only else a.finish_reason.value, logprobs=logprobs))
    completion_tokens = 0 if prompt_only else sum(c.usage.completion_tokens for c in done)
    prompt_tokens = sum(c.usage.prompt_tokens for c in done)
    usage = UsageBody(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      total_tokens=prompt_tokens + completion_tokens)
    return reply(TextCompletion(id=done[0].request_id, model=served.model, choices=choices, usage=usage))


async def generate_batch(request: Request) -> Response:
    served = Served.of(request)
    limit = served.settings.max_batch_items
    try:
        batch = BatchRequest.model_validate(await json_body(request))
    except ValidationError:
        return error_response(InvalidRequest('body must be {"requests": [...]}', field="requests"))
    except EngineError as exc:
        return error_response(exc)
    if len(batch.requests) > limit:
        return error_response(InvalidRequest(f"at most {limit} requests, got {len(batch.requests)}", field="requests"))
    parsed: list[ChatRequest | EngineError] = []
    for item in batch.requests:
        try:
            parsed.append(parse_request(item).to_request())
        except EngineError as exc:
            parsed.append(exc)
    valid = [p for p in parsed if not isinstance(p, EngineError)]
    answers = iter(await served.engine.generate_batch(valid))
    results = [p if isinstance(p, EngineError) else next(answers) for p in parsed]
    return reply(BatchResponse(results=[BatchItem.of(r) for r in results]))


async def tokenize(request: Request) -> Response:
    served = Served.of(request)
    engine = served.engine
    try:
        body = TokenizeRequest.model_validate(await json_body(request))
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequest("give exactly one of prompt and messages", field="prompt")
        if body.prompt is not None:
            ids = await engine.tokenize(body.prompt)
        else:
            ids = engine.tokenize_chat(ChatRequest(messages=tuple(m.to_message(i) for i, m in enumerate(body.messages or ()))))
    except ValidationError as exc:
        return error_response(invalid(exc))
    except EngineError as exc:
        return error_response(exc)
    strs = [engine.detokenize([t]) for t in ids] if body.return_token_strs else None
    return reply(TokenizeResponse(count=len(ids), max_model_len=served.info.context_length, tokens=ids, token_strs=strs))


async def detokenize(request: Request) -> Response:
    try:
        body = DetokenizeRequest.model_validate(await json_body(request))
        return reply(DetokenizeResponse(prompt=Served.of(request).engine.detokenize(body.tokens)))
    except ValidationError as exc:
        return error_response(invalid(exc))
    except EngineError as exc:
        return error_response(exc)


async def models(request: Request) -> Response:
    info = Served.of(request).info
    return reply(ModelList(data=[ModelCard(id=info.name, max_model_len=info.context_length, smollm=info)]))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    running = Served.of(request).engine.running
    return JSONResponse({"ready": running}, status_code=200 if running else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(Served.of(request).engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)
