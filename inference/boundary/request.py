"""Requests as every tier passes them: chat messages plus generation options."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidRequest
from .options import SamplingParams
from .tools import ToolCall, Tools, call_text, response_text

ROLES = ("system", "user", "assistant", "tool")
INTERACTIVE = 0  # ChatRequest.priority: chats someone waits for
BATCH = 1  # batch-job items: admitted only when no interactive request is waiting


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """A turn. An assistant turn may carry the ``tool_calls`` it made; a ``tool`` turn is one call's
    result, naming it by ``tool_call_id``."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat to complete: the messages in order (system first, if any) and the options.
    ``priority``: lower is admitted first (``INTERACTIVE`` before ``BATCH``); FCFS within one."""

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    priority: int = INTERACTIVE
    tools: Tools | None = None  # the functions the model may call, and how
    template: bool = True  # False: the one message's content is the raw prompt (a text completion), no chat template
    prompt_ids: tuple[int, ...] | None = None  # with template False: the prompt as token ids (its text is the message's)
    prompt_logprobs: bool = False  # the prompt tokens' logprobs too (with params.top_logprobs alternatives); no prefix cache

    def validate(self, max_new_tokens_cap: int) -> None:
        """Raise InvalidRequest naming the first thing wrong (neutral field names)."""
        if not self.messages:
            raise InvalidRequest("messages: at least one message is required", field="messages")
        for i, m in enumerate(self.messages):
            if m.role not in ROLES:
                raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {m.role!r}",
                                     field=f"messages[{i}].role")
        self.check_texts()
        last = self.messages[-1]
        if not (last.role == "user" and last.content.strip()) and last.role != "tool":
            raise InvalidRequest("the last message must be a non-blank user prompt or a tool's result", field="messages")
        self.params.validate(max_new_tokens_cap)
        if self.tools is not None:
            self.tools.validate()
            if self.tools.active and self.params.response_format is not None:
                raise InvalidRequest("tools and response_format cannot both constrain one answer", field="response_format")

    def check_texts(self) -> None:
        """Raise InvalidRequest for text that has no UTF-8 form (it could not be tokenized or sent)."""
        for i, m in enumerate(self.messages):
            check_text(f"messages[{i}].content", m.content)
        for s in self.params.stop:
            check_text("stop", s)
        for member, text in self.params.response_format.texts() if self.params.response_format else ():
            check_text(f"response_format.{member}", text)
        for i, tool in enumerate(self.tools.tools if self.tools else ()):
            check_text(f"tools[{i}].description", tool.description)
            check_text(f"tools[{i}].parameters", tool.parameters)


def prompt_messages(request: ChatRequest) -> tuple[ChatMessage, ...]:
    """The turns as a chat template without tools reads them (the Hermes convention, ``tools``):
    the offered tools' text ends the system prompt (or is the system prompt, when there is none),
    an assistant's calls follow its text, and a tool's result is wrapped in its tags."""
    turns = []
    for m in request.messages:
        if m.tool_calls:
            turns.append(ChatMessage(role=m.role, content="\n".join([m.content, *map(call_text, m.tool_calls)]).strip()))
        elif m.role == "tool":
            turns.append(ChatMessage(role="tool", content=response_text(m.content)))
        else:
            turns.append(ChatMessage(role=m.role, content=m.content))
    if request.tools is not None and request.tools.active:
        offer = request.tools.system_text()
        if turns and turns[0].role == "system":
            turns[0] = ChatMessage(role="system", content=f"{turns[0].content}\n\n{offer}".strip())
        else:
            turns.insert(0, ChatMessage(role="system", content=offer))
    return tuple(turns)


def unencodable_at(text: str) -> int | None:
    """Where ``text`` holds a lone surrogate (no UTF-8 form, so no tokens), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(field_name: str, text: str) -> None:
    """Raise InvalidRequest if ``text`` cannot be encoded as UTF-8."""
    at = unencodable_at(text)
    if at is not None:
        raise InvalidRequest(f"{field_name} holds a lone surrogate (U+{ord(text[at]):04X}) at character {at}, "
                             "which is not valid Unicode text", field=field_name)


def encodable(text: str) -> str:
    """``text`` with each lone surrogate written as its ``\\udXXX`` escape: a form of it that can be
    stored and sent (ids and messages that echo a refused text)."""
    return text if unencodable_at(text) is None else text.encode("utf-8", "backslashreplace").decode("utf-8")
