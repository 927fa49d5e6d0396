"""Requests as the engine takes them: chat messages plus validated generation options."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidRequest

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 64
MAX_SEED = 2**31 - 1  # GraphQL's Int is 32-bit; one range for every edge
GREEDY_BELOW = 1e-5  # temperatures below this are greedy (as in vLLM): dividing by them overflows


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Generation options. ``max_new_tokens=None`` means the engine's default.

    temperature 0 is greedy (the default); top_k 0 and top_p 1 switch those filters off.
    """

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def validate(self, max_new_tokens_cap: int) -> None:
        """Raise InvalidRequest naming the first option out of range."""
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= max_new_tokens_cap:
            _invalid("maxTokens", f"must be between 1 and {max_new_tokens_cap}, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            _invalid("temperature", f"must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            _invalid("topP", f"must be greater than 0 and at most 1, got {self.top_p}")
        if not 0 <= self.top_k <= 1000:
            _invalid("topK", f"must be between 0 (off) and 1000, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            _invalid("seed", f"must be between 0 and {MAX_SEED}, got {self.seed}")
        if len(self.stop) > MAX_STOP_STRINGS:
            _invalid("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for s in self.stop:
            if not 1 <= len(s) <= MAX_STOP_LENGTH:
                _invalid("stop", f"each stop string must have 1 to {MAX_STOP_LENGTH} characters, got {len(s)}")


@dataclass(frozen=True)
class ChatRequest:
    """One chat to complete: the messages in order (system first, if any) and the options."""

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""

    def validate(self, max_new_tokens_cap: int) -> None:
        if not self.messages:
            _invalid("messages", "at least one message is required")
        for i, m in enumerate(self.messages):
            if m.role not in ROLES:
                _invalid(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {m.role!r}")
        self.check_texts()
        if self.messages[-1].role != "user" or not self.messages[-1].content.strip():
            _invalid("userPrompt", "the last message must be a non-blank user prompt")
        self.params.validate(max_new_tokens_cap)

    def check_texts(self) -> None:
        """Raise InvalidRequest for text that has no UTF-8 form (it could not be tokenized or sent)."""
        for i, m in enumerate(self.messages):
            check_text(f"messages[{i}].content", m.content)
        for s in self.params.stop:
            check_text("stop", s)


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
        _invalid(field_name, f"holds a lone surrogate (U+{ord(text[at]):04X}) at character {at}, "
                             "which is not valid Unicode text")


def _invalid(field_name: str, message: str) -> None:
    raise InvalidRequest(f"{field_name} {message}", field=field_name)
