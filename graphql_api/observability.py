"""Operation logs (text or JSON) and the API's own Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import time

from prometheus_client import CollectorRegistry, Counter

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


PLAIN = re.compile(r"[\w.:/+@#-]+")


def _token(text: str) -> str:
    return text if PLAIN.fullmatch(text) else json.dumps(text)


class TextFormatter(logging.Formatter):
    """One record, one line: control characters in the message (a newline in a client's text
    would forge a log line) are escaped; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line if line.isprintable() else CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], line)


CONTROL = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class JsonFormatter(logging.Formatter):
    FIELDS = ("request_id", "key", "operation", "duration_ms", "chats")

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
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
