"""OpenTelemetry tracing, opt-in: the ``otel`` extra installed and the standard ``OTEL_*`` variables set.

Both tiers call ``configure_from_env`` once at start-up. It installs a tracer provider only when
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); otherwise, or without the
extra, nothing is traced and nothing here imports OpenTelemetry's SDK. The OTLP exporter is the
SDK's over HTTP/protobuf, reading its own ``OTEL_EXPORTER_OTLP_*`` settings; ``OTEL_SERVICE_NAME``
names the service (default: the tier's name).

The provider is this module's, not OpenTelemetry's global one, so that a test can install an
in-memory exporter and remove it again: every instrumented piece takes it at construction
(``provider()``): the ASGI middleware of both tiers (HTTP server spans, continuing a caller's
``traceparent``), the GraphQL API's Strawberry extension (``graphql_api.observability``), the httpx
client of remote mode (a client span per upstream call, which sends ``traceparent``), and the
engine's span per request (``record_request``: queued, prefill and decode as child spans).
Context propagation is OpenTelemetry's global W3C propagator.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from inference.boundary import Completion, EngineError

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None

# Probes and scrapes are polled every few seconds: tracing them would bury the requests.
UNTRACED_PATHS = "/healthz,/readyz,/metrics"


def provider() -> TracerProvider | None:
    """The installed tracer provider, or None when tracing is off."""
    return _provider


def install(tracer_provider: TracerProvider | None) -> None:
    """Use ``tracer_provider`` from now on (None: tracing off). What was instrumented before keeps
    the provider it was given."""
    global _provider
    _provider = tracer_provider


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_from_env(service_name: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Install a provider exporting as the ``OTEL_*`` variables say, once per process; None when
    they ask for nothing. Asked for without the ``otel`` extra, it says so and traces nothing."""
    if _provider is not None or not wanted(environ):
        return _provider
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OTEL_* asks for traces, but OpenTelemetry is not installed: pip install 'smollm-graphql[otel]'")
        return None
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console or none)")
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    tracer_provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    install(tracer_provider)
    log.info("tracing on: %s to %s", ",".join(names),
             environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
             or "the default endpoint")
    return tracer_provider


def shutdown() -> None:
    """Flush and stop the installed provider's exporters (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def asgi_middleware() -> list[Any]:
    """Starlette middleware for a server span per HTTP request and WebSocket connection, continuing a
    caller's ``traceparent``; none when tracing is off. Outermost, so the span covers every refusal."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    return [Middleware(OpenTelemetryMiddleware, tracer_provider=_provider, excluded_urls=UNTRACED_PATHS,
                       exclude_spans=["receive", "send"])]


def instrument_httpx(client: Any) -> None:
    """A client span per call of ``client`` (an ``httpx.AsyncClient``), with ``traceparent`` sent."""
    if _provider is not None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_provider)


def record_request(began_ns: int, request_id: str, result: Completion | EngineError | None, tokens: int) -> None:
    """The span of one engine request, a child of the current span: from ``began_ns`` (wall clock) to
    now, with ``queued``, ``prefill`` and ``decode`` children placed by the Completion's timings.
    ``result`` None: its owner left before the end (finish reason ``cancelled``)."""
    if _provider is None:
        return
    from opentelemetry.trace import Status, StatusCode

    from inference.boundary import Completion

    now = time.time_ns()
    tracer = _provider.get_tracer("inference.engine")
    span = tracer.start_span("engine request", start_time=began_ns)
    span.set_attribute("smollm.request_id", request_id)
    if isinstance(result, Completion):
        span.set_attributes({"gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                             "gen_ai.usage.output_tokens": result.usage.completion_tokens,
                             "gen_ai.response.finish_reasons": [result.finish_reason.value]})
        _phases(tracer, span, now, result)
    elif result is None:
        span.set_attributes({"gen_ai.usage.output_tokens": tokens, "gen_ai.response.finish_reasons": ["cancelled"]})
    else:
        span.set_attributes({"gen_ai.usage.output_tokens": tokens, "error.type": result.code.value})
        span.set_status(Status(StatusCode.ERROR, str(result)[:200]))
    span.end(end_time=now)


def _phases(tracer: Any, parent: Any, end_ns: int, completion: Completion) -> None:
    from opentelemetry.trace import set_span_in_context

    t = completion.timings
    arrived = end_ns - int(t.total_ms * 1e6)
    scheduled = arrived + int((t.queued_ms or 0.0) * 1e6)
    first = arrived + int(t.first_token_ms * 1e6) if t.first_token_ms is not None else end_ns
    context = set_span_in_context(parent)
    for name, start, end in (("queued", arrived, scheduled), ("prefill", scheduled, first), ("decode", first, end_ns)):
        child = tracer.start_span(name, context=context, start_time=start)
        if name == "prefill":
            child.set_attribute("gen_ai.usage.input_tokens", completion.usage.prompt_tokens)
        elif name == "decode":
            child.set_attribute("gen_ai.usage.output_tokens", completion.usage.completion_tokens)
        child.end(end_time=max(start, end))


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex (for log lines), or None outside a span or when
    OpenTelemetry is absent."""
    if _provider is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
