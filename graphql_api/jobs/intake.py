"""A job's input, into the store: every item validated at submit, a bad one stored as a failed item
(``INVALID_INPUT`` naming the line and the field) rather than sinking the job.

A file is OpenAI's batch input, one JSON object per line:
``{"custom_id": "t-1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [...],
"max_tokens": 16, "temperature": 0}}``; ``body`` is read by the inference service's own wire model
(``inference.service.wire``), so it takes, refuses and names parameters exactly as
``/v1/chat/completions`` does (``temperature`` defaults to 1, as in OpenAI's API). It is read a
chunk at a time and stored ``CHUNK_LINES`` items at a time: memory stays bounded whatever its size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from inference.boundary import ChatRequest, EngineError, ErrorCode, InvalidRequest, UpstreamError
from inference.boundary.formats import nesting
from inference.boundary.request import encodable, unencodable_at
from inference.service.wire import ChatCompletionRequest, ErrorBody, parse_request

from .outcome import ItemOutcome
from .store import NewItem

CHUNK_LINES = 1000
READ_BYTES = 1 << 16
CHAT_COMPLETIONS = "/v1/chat/completions"


class Upload(Protocol):
    async def read(self, size: int = -1) -> bytes: ...


@dataclass
class Checker:
    """Checks items one by one, in order; remembers custom_ids (a later duplicate is refused)."""

    max_new_tokens_cap: int
    max_prompt_chars: int
    max_id_chars: int
    seen: set[str] = field(default_factory=set)
    failed: int = 0

    def request(self, custom_id: str, request: ChatRequest, id_field: str = "custom_id") -> NewItem:
        """An item that runs ``request``, or the failed item saying why it cannot (``id_field``:
        what the input calls the id, ``custom_id`` in a file, ``chatId`` inline)."""
        custom_id = encodable(custom_id)
        if custom_id in self.seen:
            return self.refuse(custom_id, UpstreamError(ErrorCode.DUPLICATE_CHAT_ID,
                               f"{id_field} {custom_id!r} appears more than once in this job; only its first item runs",
                               id_field))
        self.seen.add(custom_id)
        return NewItem(custom_id, ChatCompletionRequest.of(request).model_dump_json(exclude_none=True))

    def refuse(self, custom_id: str, error: EngineError) -> NewItem:
        """A failed item; an id or message echoing a lone surrogate is stored escaped."""
        self.failed += 1
        error = UpstreamError(error.code, encodable(error.message), error.field)
        return NewItem(encodable(custom_id), None, ItemOutcome.of(error))

    def line(self, number: int, raw: bytes) -> NewItem:
        """One line of an OpenAI batch file (``number`` counts from 1)."""
        fallback = f"line-{number}"
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self.refuse(fallback, _invalid(number, None, f"not valid JSON ({exc})"))
        except RecursionError:
            return self.refuse(fallback, _invalid(number, None, "JSON nested too deeply"))
        if not isinstance(obj, dict):
            return self.refuse(fallback, _invalid(number, None, "must be a JSON object with custom_id and body"))
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.strip():
            return self.refuse(fallback, _invalid(number, "custom_id", "custom_id must be a non-blank string"))
        if unencodable_at(custom_id) is not None:
            return self.refuse(fallback, _invalid(number, "custom_id", "custom_id holds a lone surrogate, which is not valid Unicode text"))
        if len(custom_id) > self.max_id_chars:
            return self.refuse(custom_id[:self.max_id_chars] + "…", _invalid(
                number, "custom_id", f"custom_id has {len(custom_id)} characters; the limit is {self.max_id_chars}"))
        if obj.get("url", CHAT_COMPLETIONS) != CHAT_COMPLETIONS or obj.get("method", "POST") != "POST":
            return self.refuse(custom_id, _invalid(number, "url", f"only POST {CHAT_COMPLETIONS} is offered"))
        try:
            request = parse_request(nested_checked(obj.get("body"))).to_request()
            request.validate(self.max_new_tokens_cap)
            for i, m in enumerate(request.messages):
                if len(m.content) > self.max_prompt_chars:
                    raise InvalidRequest(f"messages[{i}].content has {len(m.content)} characters; "
                                         f"the limit is {self.max_prompt_chars}", field=f"messages[{i}].content")
        except EngineError as exc:
            wire = ErrorBody.of(exc)  # the parameter in OpenAI's words, as /v1/chat/completions names it
            where = "body" if wire.param in (None, "body") else f"body.{wire.param}"
            return self.refuse(custom_id, _invalid(number, where, wire.message))
        return self.request(custom_id, request)


MAX_BODY_DEPTH = 32  # objects and arrays nested in a line's body: a chat request needs a handful


def nested_checked(body: object) -> object:
    """``body``, unless it nests deeper than ``MAX_BODY_DEPTH`` (refused before any validator recurses into it)."""
    if nesting(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise InvalidRequest(f"body nests objects and arrays more than {MAX_BODY_DEPTH} deep", field="body")
    return body


def _invalid(number: int, field: str | None, message: str) -> InvalidRequest:
    return InvalidRequest(f"line {number}: {message}", field=field)


async def lines(upload: Upload, max_line_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """(number, line) for each non-blank line, read a chunk at a time; a line longer than
    ``max_line_bytes`` comes as None (its bytes are skipped, never held)."""
    number, buffer, too_long = 0, b"", False
    while True:
        chunk = await upload.read(READ_BYTES)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            number += 1
            if too_long:
                too_long = False
                yield number, None
            elif raw.strip():
                yield number, raw
        if len(buffer) > max_line_bytes:
            too_long, buffer = True, b""
    if too_long:
        yield number + 1, None
    elif buffer.strip():
        yield number + 1, buffer


async def file_items(upload: Upload, checker: Checker, max_line_bytes: int) -> AsyncIterator[list[NewItem]]:
    """The file's items, ``CHUNK_LINES`` at a time, each chunk checked in a worker thread."""
    chunk: list[tuple[int, bytes | None]] = []

    def check(batch: Iterable[tuple[int, bytes | None]]) -> list[NewItem]:
        return [checker.line(n, raw) if raw is not None else
                checker.refuse(f"line-{n}", _invalid(n, None, f"longer than {max_line_bytes} bytes")) for n, raw in batch]

    async for entry in lines(upload, max_line_bytes):
        chunk.append(entry)
        if len(chunk) >= CHUNK_LINES:
            yield await asyncio.to_thread(check, chunk)
            chunk = []
    if chunk:
        yield await asyncio.to_thread(check, chunk)

