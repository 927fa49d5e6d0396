"""Errors: expected ones become data (ChatError) or typed GraphQL errors; the rest are masked."""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry import ID
from strawberry.extensions import MaskErrors

from inference.boundary import EngineError

from .options import graphql_field, graphql_message
from .types import ChatError, ChatErrorCode

log = logging.getLogger(__name__)


class BatchTooLarge(GraphQLError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"chatBatched takes at most {limit} inputs, got {size}",
            extensions={"code": "BATCH_TOO_LARGE", "limit": limit, "size": size},
        )


def chat_error(chat_id: str, exc: EngineError) -> ChatError:
    """The ChatError for an engine error, its field named by its path in ChatInput."""
    return ChatError(chat_id=ID(chat_id), code=exc.code, message=graphql_message(exc), field=graphql_field(exc.field))


def invalid(chat_id: str, field: str, message: str) -> ChatError:
    return ChatError(chat_id=ID(chat_id), code=ChatErrorCode.INVALID_INPUT, message=message, field=field)


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
