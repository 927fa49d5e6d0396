"""Log lines for both tiers: text (one record, one line) or JSON (one object per line, with the
trace and span ids of the request being served when tracing is on)."""

from __future__ import annotations

import json
import logging
import re

from . import tracing

CONTROL = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class TextFormatter(logging.Formatter):
    """One record, one line: control characters in the message (a newline in a client's text
    would forge a log line) are escaped; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line if line.isprintable() else CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], line)


class JsonFormatter(logging.Formatter):
    """``time``, ``level``, ``logger``, ``message``, then the structured fields a record carries
    (``FIELDS``), ``trace_id`` and ``span_id`` inside a traced request, and any exception."""

    FIELDS = ("request_id", "key", "operation", "duration_ms", "chats")

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        entry |= {k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)}
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(fmt: str) -> None:
    """INFO and above to stderr, as ``fmt`` (``text`` or ``json``) says (uvicorn's loggers propagate here:
    ``uvicorn_config`` gives uvicorn no logging config of its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
