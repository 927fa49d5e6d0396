"""Requests as every tier passes them: chat messages plus generation options."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidRequest
from .options import SamplingParams

ROLES = ("system", "user", "assistant")
INTERACTIVE = 0  # ChatRequest.priority: chats someone waits for
BATCH = 1  # batch-job items: admitted only when no interactive request is waiting


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One chat to complete: the messages in order (system first, if any) and the options.
    ``priority``: lower is admitted first (``INTERACTIVE`` before ``BATCH``); FCFS within one."""

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    priority: int = INTERACTIVE

    def validate(self, max_new_tokens_cap: int) -> None:
        """Raise InvalidRequest naming the first thing wrong (neutral field names)."""
        if not self.messages:
            raise InvalidRequest("messages: at least one message is required", field="messages")
        for i, m in enumerate(self.messages):
            if m.role not in ROLES:
                raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {m.role!r}",
                                     field=f"messages[{i}].role")
        self.check_texts()
        if self.messages[-1].role != "user" or not self.messages[-1].content.strip():
            raise InvalidRequest("the last message must be a non-blank user prompt", field="messages")
        self.params.validate(max_new_tokens_cap)

    def check_texts(self) -> None:
        """Raise InvalidRequest for text that has no UTF-8 form (it could not be tokenized or sent)."""
        for i, m in enumerate(self.messages):
            check_text(f"messages[{i}].content", m.content)
        for s in self.params.stop:
            check_text("stop", s)
        for member, text in self.params.response_format.texts() if self.params.response_format else ():
            check_text(f"response_format.{member}", text)


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
