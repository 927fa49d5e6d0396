"""OpenTelemetry: one chat is one trace across both tiers (in-memory exporter), a real OTLP/HTTP
receiver gets the spans of a server process, JSON log lines carry the trace id, and nothing is
traced unless the OTEL_* variables ask."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import engine_like
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_operations import free_port

from graphql_api.app import create_app
from graphql_api.observability import tracing_extension
from graphql_api.settings import ApiSettings
from http_common import tracing
from http_common.logs import JsonFormatter
from inference.engine.async_engine import AsyncEngine
from inference.service.app import ServiceSettings, create_service

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
ASK = ("mutation Ask($input: ChatInput!) { chat(input: $input) { __typename "
       "... on ChatSuccess { response finishReason } ... on ChatError { code message } } }")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The names of ``span``'s parents, nearest first, as far as the exported spans reach."""
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_chat_is_one_trace_across_the_api_the_upstream_call_and_the_engine(spans, llm, serve, caplog):
    service_url = await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))
    app = create_app(ApiSettings(inference_url=service_url))
    url = await serve(app)
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(200):
            if (await client.get(f"{url}/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        caplog.set_level(logging.INFO, logger="graphql_api.operations")
        body = {"query": ASK, "variables": {"input": {"chatId": "t1", "userPrompt": "Say hi.",
                                                      "options": {"maxTokens": 6}}}}
        answer = (await client.post(f"{url}/graphql", json=body, headers={"traceparent": TRACEPARENT})).json()
    assert answer["data"]["chat"]["__typename"] == "ChatSuccess", answer
    await asyncio.sleep(0.2)  # the server spans end as their responses finish

    finished = spans.get_finished_spans()
    ours = [s for s in finished if f"{s.context.trace_id:032x}" == TRACE_ID]
    by_id = {s.context.span_id: s for s in ours}
    names = {s.name for s in ours}
    assert {"POST /graphql", "GraphQL Query: Ask", "GraphQL Resolving: chat", "engine request",
            "queued", "prefill", "decode"} <= names, names
    # No span of this request started a trace of its own: the client's trace id runs through both tiers.
    assert {s.name for s in finished if s.name in ("engine request", "GraphQL Query: Ask")} <= names

    [engine] = [s for s in ours if s.name == "engine request"]
    assert engine.attributes["gen_ai.usage.output_tokens"] >= 1
    assert engine.attributes["gen_ai.usage.input_tokens"] > 5
    assert engine.attributes["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
    chain = ancestors(engine, by_id)
    # engine <- the inference tier's server span <- the API's client span <- resolver <- operation <- HTTP
    upstream_server = by_id[engine.parent.span_id]
    assert upstream_server.kind == SpanKind.SERVER and upstream_server.name.startswith("POST /"), chain
    upstream_client = by_id[upstream_server.parent.span_id]
    assert upstream_client.kind == SpanKind.CLIENT, chain
    assert chain[-3:] == ["GraphQL Resolving: chat", "GraphQL Query: Ask", "POST /graphql"], chain
    for phase in ("queued", "prefill", "decode"):
        [span] = [s for s in ours if s.name == phase]
        assert span.parent.span_id == engine.context.span_id
        assert engine.start_time <= span.start_time <= span.end_time <= engine.end_time
    # Resolver arguments hold the prompts: they stay out of the spans.
    assert not any("Say hi." in str(v) for s in ours if s.name.startswith("GraphQL Resolving")
                   for v in s.attributes.values())

    [record] = [r for r in caplog.records if r.name == "graphql_api.operations" and "t1" in r.getMessage()]
    # The operation's log line, formatted inside its span as the server's handler does.
    line = json.loads(JsonFormatter().format(record))
    assert line["operation"] == "chat"
    with tracing.provider().get_tracer("test").start_as_current_span("s") as span:
        line = json.loads(JsonFormatter().format(record))
        assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


async def test_an_embedded_engine_request_is_a_child_of_the_resolver(spans, llm, serve):
    app = create_app(ApiSettings(), engine=AsyncEngine(engine_like(llm)))
    url = await serve(app)
    body = {"query": ASK, "variables": {"input": {"chatId": "t2", "userPrompt": "Say hi.", "options": {"maxTokens": 3}}}}
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(200):
            if (await client.get(f"{url}/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await client.post(f"{url}/graphql", json=body))
    await asyncio.sleep(0.2)
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [engine] = [s for s in finished if s.name == "engine request"]
    assert ancestors(engine, by_id)[:3] == ["GraphQL Resolving: chat", "GraphQL Query: Ask", "POST /graphql"]
    assert not any(s.name.startswith("GET /readyz") for s in finished)  # probes are not traced
    await app.state.api.engine.target.stop()


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: each POST /v1/traces body, decoded, goes to ``server.exports``."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf":
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            self.server.exports.append(export)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_server_process_exports_its_spans_to_an_otlp_http_receiver_and_logs_the_trace_id():
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    receiver.exports = []  # type: ignore[attr-defined]
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LOG_FORMAT": "json",
           "INFERENCE_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens: the chat is UNAVAILABLE
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
           "OTEL_SERVICE_NAME": "api-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "graphql_api"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(600):
                try:
                    await client.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            body = {"query": ASK, "variables": {"input": {"chatId": "otlp", "userPrompt": "Say hi."}}}
            answer = (await client.post(f"{url}/graphql", json=body, headers={"traceparent": TRACEPARENT})).json()
            assert answer["data"]["chat"]["__typename"] == "ChatError"
        for _ in range(100):
            names = {span.name for e in receiver.exports for r in e.resource_spans for s in r.scope_spans
                     for span in s.spans if span.trace_id.hex() == TRACE_ID}
            if "GraphQL Query: Ask" in names:
                break
            await asyncio.sleep(0.1)
        assert {"POST /graphql", "GraphQL Query: Ask"} <= names, names
        services = {a.value.string_value for e in receiver.exports for r in e.resource_spans
                    for a in r.resource.attributes if a.key == "service.name"}
        assert services == {"api-under-test"}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
        receiver.shutdown()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [operation] = [line for line in lines if line.get("operation") == "chat"]
    assert operation["trace_id"] == TRACE_ID


def test_nothing_is_traced_unless_the_environment_asks():
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.configure_from_env("x", {}) is None and tracing.provider() is None
    assert tracing.asgi_middleware() == [] and tracing_extension() is None
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'"):
        tracing.configure_from_env("x", {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert tracing.provider() is None
