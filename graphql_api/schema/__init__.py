"""The GraphQL schema: types, resolvers, the DataLoader, and the limits that guard them.

``build_schema`` assembles it; ``schema`` (default settings) is what ``make schema`` exports.
"""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.types import ExecutionContext

from ..observability import tracing_extension
from ..settings import ApiSettings
from .errors import MaskUnexpectedErrors
from .limits import ChatsPerOperation, introspection_depth_rule
from .resolvers import Mutation, Query, Subscription

log = logging.getLogger(__name__)


def build_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    settings = settings or ApiSettings()
    # The limiters' rules are built once: rules made anew per request would miss the validation cache.
    rules = [*QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
             *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
             introspection_depth_rule(settings.max_introspection_depth)]
    traced = tracing_extension()  # first: its operation span covers the other extensions
    extensions = [
        *([traced] if traced is not None else []),
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        lambda: ChatsPerOperation(limit=settings.max_chats_per_operation, per_field=settings.max_batch_items),
        MaskUnexpectedErrors,
        # Clients send the same documents with new variables: parse and validate each once.
        # The limits above are validation rules over the document alone, so caching keeps them.
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return ApiSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


class ApiSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Client errors (syntax, validation, limits) are one INFO line each, never the document;
        unexpected ones are logged in full, with the request id, by MaskUnexpectedErrors."""
        request_id = getattr(getattr(execution_context, "context", None), "request_id", None)
        for error in errors:
            if error.original_error is None or isinstance(error.original_error, GraphQLError):
                log.info("request_id=%s graphql error: %s", request_id, error.message[:500])
            if error.original_error is None and not (error.extensions or {}).get("code"):
                # graphql-core's own syntax and validation errors carry no code; every error here does
                code = "GRAPHQL_PARSE_FAILED" if isinstance(error, GraphQLSyntaxError) else "GRAPHQL_VALIDATION_FAILED"
                error.extensions = {**(error.extensions or {}), "code": code}


schema = build_schema()
