"""Structured output: the response format a chat may ask for, declared and validated once.

Exactly one member is set: ``json_schema`` (a JSON Schema, kept as JSON text: the text is also the
key compiled grammars are cached by), ``json_object`` (any JSON object), ``regex`` or ``choice``.
How an answer is judged against its format is decided here too (``conclude``), so that every
backend's answer, ours or an upstream's, is held to the same rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from .errors import EngineError, ErrorCode, InvalidOption
from .result import Choice, Completion, FinishReason

MAX_SCHEMA_CHARS = 16_000  # the schema as compact JSON text
MAX_SCHEMA_DEPTH = 64  # objects and arrays nested in the schema
MAX_REGEX_CHARS = 1_000
MAX_CHOICES = 64
MAX_CHOICE_CHARS = 200
FIELD = "response_format"


class InvalidFormat(InvalidOption):
    """A response format that is malformed or cannot be followed. ``member`` names the member at
    fault (boundary name, e.g. ``json_schema``), None when the format as a whole is."""

    def __init__(self, detail: str, member: str | None = None) -> None:
        super().__init__(FIELD, detail)
        self.member = member
        if member:
            self.message = f"{FIELD}.{member} {detail}"


class IncompleteOutput(EngineError):
    """Generation ended before the answer completed its format (``max_new_tokens``, or a stop
    string); the text so far is kept."""

    code = ErrorCode.INCOMPLETE_OUTPUT

    def __init__(self, message: str, partial_text: str) -> None:
        super().__init__(message, field=FIELD)
        self.partial_text = partial_text


@dataclass(frozen=True, kw_only=True)
class ResponseFormat:
    json_schema: str | None = None  # compact JSON text of the schema
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None

    @classmethod
    def of(cls, *, json_schema: object = None, json_object: bool | None = None, regex: str | None = None,
           choice: list[str] | tuple[str, ...] | None = None) -> ResponseFormat:
        """From an edge's members (a schema as a parsed JSON value); raise InvalidFormat if the
        value is malformed. Limits are checked by ``validate``."""
        text = None
        if json_schema is not None:
            if not isinstance(json_schema, dict):
                raise InvalidFormat(f"must be a JSON object, got {type(json_schema).__name__}", "json_schema")
            if nesting(json_schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
                raise InvalidFormat(f"nests objects and arrays more than {MAX_SCHEMA_DEPTH} deep", "json_schema")
            text = json.dumps(json_schema, separators=(",", ":"), ensure_ascii=False)
        return cls(json_schema=text, json_object=bool(json_object), regex=regex, choice=tuple(choice) if choice is not None else None)

    @property
    def members(self) -> list[str]:
        """The members set (valid: exactly one)."""
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, False)]

    @property
    def kind(self) -> str:
        return self.members[0]

    @property
    def is_json(self) -> bool:
        return self.json_schema is not None or self.json_object

    def validate(self) -> None:
        """Raise InvalidFormat for anything but exactly one member within its limits."""
        if len(self.members) != 1:
            raise InvalidFormat(f"must set exactly one member, got {len(self.members)}")
        if self.json_schema is not None and len(self.json_schema) > MAX_SCHEMA_CHARS:
            raise InvalidFormat(f"has {len(self.json_schema)} characters as JSON; the limit is {MAX_SCHEMA_CHARS}", "json_schema")
        if self.regex is not None and not 1 <= len(self.regex) <= MAX_REGEX_CHARS:
            raise InvalidFormat(f"must have 1 to {MAX_REGEX_CHARS} characters, got {len(self.regex)}", "regex")
        if self.choice is not None:
            if not 1 <= len(self.choice) <= MAX_CHOICES:
                raise InvalidFormat(f"takes 1 to {MAX_CHOICES} strings, got {len(self.choice)}", "choice")
            for c in self.choice:
                if not 1 <= len(c) <= MAX_CHOICE_CHARS:
                    raise InvalidFormat(f"strings must have 1 to {MAX_CHOICE_CHARS} characters, got {len(c)}", "choice")

    def texts(self) -> list[tuple[str, str]]:
        """(member, text) of every client text in the format, to check for unencodable text."""
        return [(m, t) for m, t in (("json_schema", self.json_schema), ("regex", self.regex)) if t] + \
            [("choice", c) for c in self.choice or ()]


def nesting(value: object, limit: int) -> int:
    """How deep ``value``'s objects and arrays nest, counted up to ``limit + 1`` (iteratively: a
    client's value may be nested deeper than Python's recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def conclude(fmt: ResponseFormat | None, answer: Completion | Choice) -> Any:
    """The parsed JSON value of an answer with a JSON format (None for other formats and none);
    raise IncompleteOutput, carrying the text, when the answer did not complete its format: it
    stopped at ``max_new_tokens``, or its text is not the format's (a stop string cut it, or an
    upstream did not follow it). ``answer``: a request's only answer, or one of its ``choices``."""
    if fmt is None:
        return None
    text = answer.text
    if answer.finish_reason is FinishReason.LENGTH:
        tokens = f" ({answer.usage.completion_tokens} tokens)" if isinstance(answer, Completion) else ""
        raise IncompleteOutput(f"generation reached its token limit{tokens} before the answer completed its format", text)
    if fmt.choice is not None and text not in fmt.choice:
        raise IncompleteOutput("the answer is not one of the choices", text)
    if not fmt.is_json:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise IncompleteOutput("the answer is not complete JSON", text) from None
    if fmt.json_object and not isinstance(value, dict):
        raise IncompleteOutput("the answer is JSON but not an object", text)
    return value
