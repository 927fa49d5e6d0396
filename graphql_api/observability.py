"""Operation logs, the API's own Prometheus metrics and its GraphQL spans (the log formats:
``http_common.logs``; the tracer provider: ``http_common.tracing``)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from http_common import tracing

log = logging.getLogger("graphql_api.operations")


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.chats = Counter("smollm_graphql_chats", "Chats answered, by operation, outcome code and key name.",
                             ["operation", "outcome", "key"], registry=self.registry)
        self.tokens = Counter("smollm_graphql_tokens", "Tokens used by answered chats, by key name and kind.",
                              ["key", "kind"], registry=self.registry)
        self.job_items = Counter("smollm_graphql_job_items", "Batch-job items this process ran and wrote, by status.",
                                 ["status"], registry=self.registry)


def log_operation(request_id: str, operation: str, outcomes: list[tuple[str, str]], started: float,
                  key: str = "anonymous") -> None:
    """One line per operation: request id, operation, chatIds with their outcomes, duration.
    A chatId that is not a plain token is written as a JSON string, so it cannot forge fields."""
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    chats = " ".join(f"{_token(chat_id)}={outcome}" for chat_id, outcome in outcomes)
    log.info("request_id=%s key=%s operation=%s duration_ms=%s chats=[%s]", request_id, _token(key), operation,
             duration_ms, chats,
             extra={"request_id": request_id, "key": key, "operation": operation, "duration_ms": duration_ms,
                    "chats": [{"chat_id": c, "outcome": o} for c, o in outcomes]})


def tracing_extension() -> Any | None:
    """Strawberry's OpenTelemetry extension on the installed provider (operation, parse, validate and
    resolver spans), None when tracing is off; resolver arguments are left out, since they hold the
    users' prompts."""
    tracer_provider = tracing.provider()
    if tracer_provider is None:
        return None
    from strawberry.extensions.tracing import OpenTelemetryExtension

    return lambda: OpenTelemetryExtension(tracer_provider=tracer_provider, arg_filter=lambda args, info: {})


PLAIN = re.compile(r"[\w.:/+@#-]+")


def _token(text: str) -> str:
    return text if PLAIN.fullmatch(text) else json.dumps(text)
