"""Typed engine errors. Each has a stable ``code`` and a message that names what was wrong."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports for a request."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(EngineError):
    code = "INVALID_INPUT"


class PromptTooLong(EngineError):
    code = "PROMPT_TOO_LONG"

    def __init__(self, prompt_tokens: int, max_new_tokens: int, limit: int) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens and asks for {max_new_tokens} new tokens: "
            f"{prompt_tokens + max_new_tokens} exceeds the context limit of {limit} tokens",
            field="userPrompt",
        )
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.limit = limit


class Overloaded(EngineError):
    code = "OVERLOADED"


class RequestTimeout(EngineError):
    code = "TIMEOUT"


class RequestCancelled(EngineError):
    code = "CANCELLED"


class EngineFault(EngineError):
    """A model step failed; the requests in that step end with this error."""

    code = "INTERNAL"


class EngineStopped(EngineError):
    code = "UNAVAILABLE"


class Unavailable(EngineError):
    """A remote inference upstream is unreachable or failing."""

    code = "UNAVAILABLE"


class UpstreamError(EngineError):
    """An error an inference upstream reported, with its code kept."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class ModelNotFound(RuntimeError):
    """The model file or directory is missing; the message says how to install it."""
