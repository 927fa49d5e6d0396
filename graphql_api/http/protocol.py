"""GraphQL over HTTP as the spec says, on every transport: request errors are GraphQL JSON.

A request error (a body that is not an operation, a document that does not parse, an
``operationName`` the document lacks, a missing key) is answered ``{"errors": [{"message",
"extensions": {"code"}}]}`` with no ``data``, never plain text, and never as an INTERNAL error
after a 200. ``application/graphql-response+json`` is returned when the client's ``Accept`` asks
for it first; then a request error carries its 4xx status, as the GraphQL-over-HTTP spec requires
of that media type (``application/json`` keeps the legacy 200 for documents that do not
validate, so that older clients still read their errors).

Streams check the document before the first byte goes out: over SSE a request error is a 400
JSON response, over graphql-transport-ws an ``error`` message for that operation id.
"""

from __future__ import annotations

from collections.abc import Mapping

from cross_web import HTTPException
from graphql import GraphQLError, GraphQLSyntaxError, OperationDefinitionNode, parse

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

CODES_BY_STATUS = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                   405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 413: "BODY_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


class RequestError(HTTPException):
    """An HTTP request refused before execution, with the GraphQL error code it is answered with."""

    def __init__(self, status_code: int, reason: str, code: str | None = None) -> None:
        super().__init__(status_code, reason)
        self.code = code or CODES_BY_STATUS.get(status_code, "BAD_REQUEST")


def error_body(exc: HTTPException) -> dict[str, object]:
    code = exc.code if isinstance(exc, RequestError) else CODES_BY_STATUS.get(exc.status_code, "BAD_REQUEST")
    return {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}


def response_media_type(accept: str) -> str:
    """``application/graphql-response+json`` when ``Accept`` names it before ``application/json``
    (or names it alone); else ``application/json``."""
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if GRAPHQL_RESPONSE_JSON not in wanted:
        return JSON
    return GRAPHQL_RESPONSE_JSON if JSON not in wanted or wanted.index(GRAPHQL_RESPONSE_JSON) < wanted.index(JSON) else JSON


def document_error(query: object, operation_name: object, max_tokens: int) -> GraphQLError | None:
    """Why this document cannot run at all (it does not parse, or names no single operation of
    it), as the GraphQL error to answer; None when it can go on to validation and execution."""
    if not isinstance(query, str) or not query.strip():
        return GraphQLError("no GraphQL query found in the request", extensions={"code": "BAD_REQUEST"})
    if operation_name is not None and not isinstance(operation_name, str):
        return GraphQLError("operationName must be a string or null", extensions={"code": "BAD_REQUEST"})
    try:
        document = parse(query, max_tokens=max_tokens)
    except GraphQLSyntaxError as exc:
        return GraphQLError(exc.message, extensions={"code": "GRAPHQL_PARSE_FAILED"})
    except RecursionError:
        return GraphQLError("the document is nested too deeply to parse", extensions={"code": "GRAPHQL_PARSE_FAILED"})
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        if len(operations) == 1:
            return None
        message = "the document holds no operation" if not operations else \
            "the document holds several operations: send operationName to choose one"
        return GraphQLError(message, extensions={"code": "OPERATION_NOT_FOUND"})
    if any(op.name is not None and op.name.value == operation_name for op in operations):
        return None
    return GraphQLError(f"unknown operation named {operation_name[:128]!r}", extensions={"code": "OPERATION_NOT_FOUND"})


def multipart_map_error(operations: object, files_map: object, files: object) -> str | None:
    """Why a GraphQL multipart request's ``map`` cannot be applied to its ``operations``, or None.
    As the multipart request spec says, each file maps to paths that name ``null`` placeholders
    in ``variables`` (``variables.input.file``); a path into nothing, or through a value that is
    not an object or list, is the client's error, not the server's."""
    if not isinstance(operations, dict):
        return "multipart 'operations' must be a JSON object"
    if not isinstance(files_map, dict):
        return "multipart 'map' must be a JSON object of file name to a list of paths"
    for name, paths in files_map.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return f"multipart 'map' entry {str(name)[:64]!r} must be a list of paths"
        if not isinstance(files, Mapping) or name not in files:
            return f"multipart 'map' names file {str(name)[:64]!r}, which the request does not carry"
        for path in paths:
            if not _is_placeholder(operations, path.split(".")):
                return f"multipart 'map' path {path[:128]!r} names no null placeholder in the operation's variables"
    return None


def _is_placeholder(operations: dict[str, object], steps: list[str]) -> bool:
    if len(steps) < 2 or steps[0] != "variables":
        return False
    value: object = operations
    for step in steps:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return False
    return value is None
