"""The engine as its own HTTP service (`python -m inference serve`).

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
A client that disconnects stops its generation. Every body is a model of ``wire``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import tracing
from ..asgi import CancelOnDisconnectMiddleware, RequestBodyMiddleware, origin_middleware
from ..boundary import ChatRequest, Completion, EngineError, InvalidRequest, TokenDelta
from ..engine.async_engine import AsyncEngine, Ticket
from ..keys import KeyRing, presented_key, reload_on_hangup
from .wire import (
    HTTP_STATUS,
    BatchItem,
    BatchRequest,
    BatchResponse,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorBody,
    ErrorResponse,
    FunctionDelta,
    ModelCard,
    ModelList,
    TextCompletion,
    TokenizeRequest,
    TokenizeResponse,
    ToolCallDelta,
    UsageBody,
    invalid,
    parse_request,
)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="INFERENCE_")

    host: str = Field("127.0.0.1", description="INFERENCE_HOST: address to bind.")
    port: int = Field(8001, ge=0, le=65535, description="INFERENCE_PORT.")
    generate_batch: bool = Field(True, description="INFERENCE_GENERATE_BATCH: offer POST /generate_batch.")
    max_batch_items: int = Field(256, ge=1, description="INFERENCE_MAX_BATCH_ITEMS: largest /generate_batch.")
    max_body_bytes: int = Field(16_000_000, ge=1024, description="INFERENCE_MAX_BODY_BYTES: largest request body.")
    read_timeout_s: float = Field(10.0, gt=0, description="INFERENCE_READ_TIMEOUT_S: time to send headers, then body.")
    api_keys_file: str = Field("", description="INFERENCE_API_KEYS_FILE: keys (as the API's); empty: keys off.")
    log_format: str = Field("text", pattern="^(text|json)$", description="INFERENCE_LOG_FORMAT: text or json log lines.")
    allowed_origins: str = Field(
        "", description="INFERENCE_ALLOWED_ORIGINS: comma-separated origins whose pages may call the service from a "
                        "browser (CORS); same-origin is always allowed; * allows any.")

    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]


def reply(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status_code)


def error_response(exc: EngineError) -> JSONResponse:
    return reply(ErrorResponse(error=ErrorBody.of(exc)), HTTP_STATUS.get(exc.code, 500))


def create_service(engine: AsyncEngine, settings: ServiceSettings | None = None) -> Starlette:
    settings = settings or ServiceSettings()
    info = replace(engine.info(), max_batch_items=settings.max_batch_items if settings.generate_batch else 0)
    model = info.name

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not engine.running:
            await engine.start()
        if keyring is not None:
            reload_on_hangup(keyring)
        yield
        await engine.stop()

    async def chat_completions(request: Request) -> Response:
        try:
            body = parse_request(await _json(request))
            [entry] = await engine.submit([body.to_request()])
        except EngineError as exc:
            return error_response(exc)
        if isinstance(entry, EngineError):
            return error_response(entry)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            calls = body.tools is not None and body.tool_choice != "none" and bool(body.tools)
            return StreamingResponse(_sse(entry, model, include_usage, bool(body.logprobs), calls), media_type="text/event-stream")
        result = await entry.result()
        if isinstance(result, EngineError):
            return error_response(result)
        return reply(ChatCompletion.of(result, model))

    async def completions(request: Request) -> Response:
        try:
            body = CompletionRequest.model_validate(await _json(request))
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
            return StreamingResponse(_completion_sse(entry, model, body, texts[0], include_usage), media_type="text/event-stream")
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
        return reply(TextCompletion(id=done[0].request_id, model=model, choices=choices, usage=usage))

    async def generate_batch(request: Request) -> Response:
        try:
            batch = BatchRequest.model_validate(await _json(request))
        except ValidationError:
            return error_response(InvalidRequest('body must be {"requests": [...]}', field="requests"))
        except EngineError as exc:
            return error_response(exc)
        if len(batch.requests) > settings.max_batch_items:
            return error_response(InvalidRequest(
                f"at most {settings.max_batch_items} requests, got {len(batch.requests)}", field="requests"))
        parsed: list[object] = []
        for item in batch.requests:
            try:
                parsed.append(parse_request(item).to_request())
            except EngineError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if not isinstance(p, EngineError)]
        answers = iter(await engine.generate_batch(valid))  # type: ignore[arg-type]
        results = [p if isinstance(p, EngineError) else next(answers) for p in parsed]
        return reply(BatchResponse(results=[BatchItem.of(r) for r in results]))

    async def tokenize(request: Request) -> Response:
        try:
            body = TokenizeRequest.model_validate(await _json(request))
            if (body.prompt is None) == (body.messages is None):
                raise InvalidRequest("give exactly one of prompt and messages", field="prompt")
            if body.prompt is not None:
                ids = await engine.tokenize(body.prompt)
            else:
                ids = engine.tokenize_chat(ChatRequest(tuple(m.to_message(i) for i, m in enumerate(body.messages or ()))))
        except ValidationError as exc:
            return error_response(invalid(exc))
        except EngineError as exc:
            return error_response(exc)
        strs = [engine.detokenize([t]) for t in ids] if body.return_token_strs else None
        return reply(TokenizeResponse(count=len(ids), max_model_len=info.context_length, tokens=ids, token_strs=strs))

    async def detokenize(request: Request) -> Response:
        try:
            body = DetokenizeRequest.model_validate(await _json(request))
            return reply(DetokenizeResponse(prompt=engine.detokenize(body.tokens)))
        except ValidationError as exc:
            return error_response(invalid(exc))
        except EngineError as exc:
            return error_response(exc)

    async def models(request: Request) -> Response:
        return reply(ModelList(data=[ModelCard(id=model, max_model_len=info.context_length, smollm=info)]))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"ready": engine.running}, status_code=200 if engine.running else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/models", models), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/health", readyz),  # what routers and vLLM's, TGI's and llama.cpp's clients probe
              Route("/tokenize", tokenize, methods=["POST"]), Route("/detokenize", detokenize, methods=["POST"]),
              Route("/metrics", metrics)]
    if settings.generate_batch:
        routes.append(Route("/generate_batch", generate_batch, methods=["POST"]))
    keyring = KeyRing.from_file(settings.api_keys_file) if settings.api_keys_file else None
    return Starlette(routes=routes, lifespan=lifespan, middleware=[
        *tracing.asgi_middleware(),
        *origin_middleware(settings.origins()),
        Middleware(ServiceKeyMiddleware, keyring=keyring),
        Middleware(RequestBodyMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s),
        Middleware(CancelOnDisconnectMiddleware)])


class ServiceKeyMiddleware:
    """With keys on, everything but the probes needs ``Authorization: Bearer <key>`` (as vLLM's and
    llama.cpp's ``--api-key``); otherwise 401 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, keyring: KeyRing | None) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keyring is None or scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz", "/health"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if self.keyring.authenticate(presented_key(headers)) is not None:
            return await self.app(scope, receive, send)
        body = ErrorResponse(error=ErrorBody(message="invalid or missing API key", type="invalid_request_error",
                                             code="invalid_api_key"))
        await JSONResponse(body.model_dump(exclude_none=True), status_code=401)(scope, receive, send)


async def _json(request: Request) -> object:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {str(exc) or type(exc).__name__}", field="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object", field="body")
    return body


async def _sse(ticket: Ticket, model: str, include_usage: bool, logprobs: bool = False, calls: bool = False) -> AsyncIterator[str]:
    """OpenAI-style chunks, each answer's under its ``index``; closing the response (client gone)
    aborts the request. With tools, an answer that opens with ``<`` (a call: text answers cannot)
    is held, and its calls go out whole as ``tool_calls`` at its end."""
    rid = f"chatcmpl-{ticket.seq_ids[0]}"

    def chunk(index: int, delta: Delta | None = None, finish: str | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
        event = ChatCompletionChunk(id=rid, model=model, choices=[ChunkChoice(index=index, delta=delta or Delta(),
                                                                              finish_reason=finish, logprobs=logprobs)])
        return _event(event)

    held: dict[int, str] = {}
    for index in range(len(ticket.seq_ids)):
        yield chunk(index, Delta(role="assistant", content=""))
    try:
        async for event in ticket.events():
            if isinstance(event, TokenDelta):
                if calls and (event.choice in held or event.text.lstrip().startswith("<")):
                    held[event.choice] = held.get(event.choice, "") + event.text
                    continue
                yield chunk(event.choice, Delta(content=event.text),
                            logprobs=ChoiceLogprobs.of(event.logprobs) if logprobs else None)
            elif isinstance(event, Completion):
                for answer in event.answers:
                    if answer.tool_calls:
                        yield chunk(answer.index, Delta(tool_calls=[ToolCallDelta(
                            index=k, id=c.id, type="function", function=FunctionDelta(name=c.name, arguments=c.arguments))
                            for k, c in enumerate(answer.tool_calls)]))
                    elif answer.index in held:  # held, but not a call after all
                        yield chunk(answer.index, Delta(content=held[answer.index]))
                    yield chunk(answer.index, finish=answer.finish_reason.value)
                if include_usage:
                    yield _event(ChatCompletionChunk(id=rid, model=model, usage=UsageBody.of(event.usage)))
    except EngineError as exc:
        yield _event(ChatCompletionChunk(id=rid, model=model, error=ErrorBody.of(exc)))
    yield "data: [DONE]\n\n"


async def _completion_sse(ticket: Ticket, model: str, body: CompletionRequest, prompt: str,
                          include_usage: bool) -> AsyncIterator[str]:
    """A text completion's chunks (OpenAI's legacy shape), each answer's under its ``index``; the
    prompt first when ``echo`` asks."""
    rid = f"cmpl-{ticket.seq_ids[0]}"
    offsets = [len(prompt) if body.echo else 0] * len(ticket.seq_ids)

    def chunk(choice: CompletionChoice) -> str:
        return f"data: {TextCompletion(id=rid, model=model, choices=[choice]).model_dump_json(exclude_none=True)}\n\n"

    if body.echo:
        for index in range(len(ticket.seq_ids)):
            yield chunk(CompletionChoice(index=index, text=prompt))
    try:
        async for event in ticket.events():
            if isinstance(event, TokenDelta):
                logprobs = None
                if body.logprobs is not None:
                    logprobs = CompletionLogprobs.of(event.logprobs, offsets[event.choice], bool(body.logprobs))
                offsets[event.choice] += len(event.text)
                yield chunk(CompletionChoice(index=event.choice, text=event.text, logprobs=logprobs))
            elif isinstance(event, Completion):
                for answer in event.answers:
                    yield chunk(CompletionChoice(index=answer.index, text="", finish_reason=answer.finish_reason.value))
                if include_usage:
                    usage = TextCompletion(id=rid, model=model, choices=[], usage=UsageBody.of(event.usage))
                    yield f"data: {usage.model_dump_json(exclude_none=True)}\n\n"
    except EngineError as exc:
        yield _event(ChatCompletionChunk(id=rid, model=model, error=ErrorBody.of(exc)))
    yield "data: [DONE]\n\n"


def _event(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

