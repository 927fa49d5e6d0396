"""Tool calling: the tools a chat offers, how the model is asked to call them, and its calls read back.

SmolLM2's chat template knows no tools, so the convention is Hermes' (the one vLLM's ``hermes``
parser reads, and SmolLM2's larger sibling was trained on): the tools' signatures go in the system
prompt inside ``<tools></tools>``, a call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
and a tool's result comes back as a ``tool`` turn inside ``<tool_response></tool_response>``.
``REQUIRED`` and a named tool constrain the answer to calls (a grammar over the tools' schemas);
``AUTO`` lets the answer be text or calls, and once it opens a call, constrains the call.
Schemas are checked like response-format schemas (size, depth; the engine compiles them).
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass

from .errors import InvalidRequest
from .formats import MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH, nesting
from .result import ToolCall

MAX_TOOLS = 128  # OpenAI's limit
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1_024
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
OPEN, CLOSE = "<tool_call>", "</tool_call>"
CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class ToolMode(enum.StrEnum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A function the model may call; ``parameters`` is its arguments' JSON Schema as compact JSON."""

    name: str
    description: str = ""
    parameters: str = '{"type":"object"}'

    @classmethod
    def of(cls, name: str, description: str | None, parameters: object, index: int) -> Tool:
        """Raise InvalidRequest naming ``tools[index]`` for a malformed tool."""
        where = f"tools[{index}]"
        if not NAME.match(name or ""):
            raise InvalidRequest(f"{where}.name must be 1 to {MAX_NAME_CHARS} letters, digits, _ or -, got {str(name)[:80]!r}",
                                 field=f"{where}.name")
        if description is not None and len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidRequest(f"{where}.description ({name}) has {len(description)} characters; the limit is "
                                 f"{MAX_DESCRIPTION_CHARS}", field=f"{where}.description")
        schema = {"type": "object"} if parameters is None else parameters
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{where}.parameters ({name}) must be a JSON Schema object", field=f"{where}.parameters")
        if nesting(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
            raise InvalidRequest(f"{where}.parameters ({name}) nests more than {MAX_SCHEMA_DEPTH} deep", field=f"{where}.parameters")
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        if len(text) > MAX_SCHEMA_CHARS:
            raise InvalidRequest(f"{where}.parameters ({name}) has {len(text)} characters as JSON; the limit is "
                                 f"{MAX_SCHEMA_CHARS}", field=f"{where}.parameters")
        return cls(name=name, description=description or "", parameters=text)


@dataclass(frozen=True, kw_only=True)
class Tools:
    """A chat's tools and how it may use them: ``mode``, or ``name`` to require that one tool.
    ``parallel``: several calls in one answer; off unless asked, since the 135M model, once allowed
    a second call, tends to repeat the first until ``max_new_tokens``."""

    tools: tuple[Tool, ...]
    mode: ToolMode = ToolMode.AUTO
    name: str | None = None
    parallel: bool = False

    def validate(self) -> None:
        """Raise InvalidRequest for too many tools, a name given twice, or a choice of a tool not offered."""
        if len(self.tools) > MAX_TOOLS:
            raise InvalidRequest(f"tools takes at most {MAX_TOOLS} tools, got {len(self.tools)}", field="tools")
        seen: set[str] = set()
        for i, tool in enumerate(self.tools):
            if tool.name in seen:
                raise InvalidRequest(f"tools[{i}].name {tool.name!r} is given more than once", field=f"tools[{i}].name")
            seen.add(tool.name)
        if self.name is not None and self.name not in seen:
            raise InvalidRequest(f"tool_choice names {self.name[:80]!r}, which is not among the tools", field="tool_choice")
        if self.mode is ToolMode.REQUIRED and not self.tools:
            raise InvalidRequest("tool_choice required needs at least one tool", field="tool_choice")

    @property
    def active(self) -> bool:
        """Whether the model is offered any tool (``none`` offers nothing, as OpenAI's)."""
        return bool(self.tools) and self.mode is not ToolMode.NONE

    @property
    def forced(self) -> bool:
        return self.name is not None or self.mode is ToolMode.REQUIRED

    def offered(self) -> tuple[Tool, ...]:
        return tuple(t for t in self.tools if self.name is None or t.name == self.name)

    def system_text(self) -> str:
        """What the system prompt gains: the tools' signatures and how to call them (Hermes' words)."""
        signatures = "\n".join(json.dumps({"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": json.loads(t.parameters)}}, ensure_ascii=False)
            for t in self.offered())
        return ("You are a function calling AI model. You are provided with function signatures within <tools></tools> "
                "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
                f"about what values to plug into functions. Here are the available tools: <tools>\n{signatures}\n</tools>\n"
                "For each function call return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags as follows:\n<tool_call>\n"
                '{"name": <function-name>, "arguments": <args-dict>}\n</tool_call>')

    def call_schema(self) -> dict:
        """The JSON Schema of one call's object: one of the offered tools, by name, with its arguments."""
        options = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": json.loads(t.parameters)},
                    "required": ["name", "arguments"], "additionalProperties": False} for t in self.offered()]
        return options[0] if len(options) == 1 else {"anyOf": options}


def call_text(call: ToolCall) -> str:
    """A call as the model writes it (for an assistant turn in the history)."""
    return f'{OPEN}\n{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}\n{CLOSE}'


def response_text(content: str) -> str:
    """A tool's result as the model reads it (a ``tool`` turn)."""
    return f"<tool_response>\n{content}\n</tool_response>"


def parse_calls(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """The text before the first call, and the calls (each ``{"name", "arguments"}`` in its tags);
    a block that does not parse is left in the text."""
    calls = []
    for match in CALL.finditer(text):
        try:
            body = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            arguments = json.dumps(body.get("arguments", {}), ensure_ascii=False)
            calls.append(ToolCall(id=f"call_{secrets.token_hex(12)}", name=body["name"], arguments=arguments))
    if not calls:
        return text, ()
    return text[:text.index(OPEN)].strip(), tuple(calls)
