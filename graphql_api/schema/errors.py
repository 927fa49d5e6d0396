"""Errors: expected ones become data (ChatError) or typed GraphQL errors; the rest are masked."""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from inference.errors import EngineError

from .types import ChatError, ChatErrorCode

log = logging.getLogger(__name__)

OPTION_FIELDS = {"maxTokens", "temperature", "topP", "topK", "seed", "stop"}


class BatchTooLarge(GraphQLError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"chatBatched takes at most {limit} inputs, got {size}",
            extensions={"code": "BATCH_TOO_LARGE", "limit": limit, "size": size},
        )


def chat_error(chat_id: str, exc: EngineError) -> ChatError:
    """The ChatError for an engine error; option fields are named by their path in ChatInput."""
    field = exc.field
    if exc.code == "INVALID_INPUT" and field in OPTION_FIELDS:
        field = f"options.{field}"
    code = ChatErrorCode.__members__.get(exc.code, ChatErrorCode.INTERNAL)
    return ChatError(chat_id=chat_id, code=code, message=exc.message, field=field)


def invalid(chat_id: str, field: str, message: str) -> ChatError:
    return ChatError(chat_id=chat_id, code=ChatErrorCode.INVALID_INPUT, message=message, field=field)


class MaskUnexpectedErrors(MaskErrors):
    """Hide unexpected exceptions from clients (message plus request id); log them in full."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected, error_message="Internal server error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = getattr(self.execution_context.context, "request_id", None)
        log.error("unexpected error (request id %s) at %s", request_id, error.path,
                  exc_info=error.original_error)
        masked = super().anonymise_error(error)
        masked.message = f"Internal server error (request id {request_id})."
        masked.extensions = {"code": "INTERNAL", "requestId": request_id}
        return masked


def _unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)
