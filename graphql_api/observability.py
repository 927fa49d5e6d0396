"""Operation logs (text or JSON) and the API's own Prometheus metrics."""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("graphql_api.operations")


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.chats = Counter("smollm_graphql_chats", "Chats answered, by operation and outcome code.",
                             ["operation", "outcome"], registry=self.registry)


def log_operation(request_id: str, operation: str, outcomes: list[tuple[str, str]], started: float) -> None:
    """One line per operation: request id, operation, chatIds with their outcomes, duration."""
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    chats = " ".join(f"{chat_id}={outcome}" for chat_id, outcome in outcomes)
    log.info("request_id=%s operation=%s duration_ms=%s chats=[%s]", request_id, operation, duration_ms, chats,
             extra={"request_id": request_id, "operation": operation, "duration_ms": duration_ms,
                    "chats": [{"chat_id": c, "outcome": o} for c, o in outcomes]})


class JsonFormatter(logging.Formatter):
    FIELDS = ("request_id", "operation", "duration_ms", "chats")

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        entry |= {k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
