"""The GraphQL view: Strawberry's ASGI app, answering every transport as GraphQL over HTTP says
(``protocol``): request errors are GraphQL JSON with their codes, in the media type asked for."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.file_uploads.utils import replace_placeholders_with_files
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from http_common.keys import ANONYMOUS, presented_key

from ..schema import build_schema
from ..schema.context import Context
from ..state import State
from . import graphiql
from .middleware import is_ide_page
from .protocol import GRAPHQL_RESPONSE_JSON, RequestError, document_error, error_body, multipart_map_error, response_media_type
from .protocol import JSON as JSON_MEDIA_TYPE
from .websocket import TransportWSHandler

SUBSCRIPTION_TRANSPORTS = (
    "subscriptions stream: send them over WebSocket (graphql-transport-ws) to /graphql, or over HTTP with "
    "'Accept: text/event-stream' (GraphQL over SSE)")


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's view. ``decode_json``, ``process_result``, ``get_context``, ``on_ws_connect`` and
    ``render_graphql_ide`` are its documented hooks; ``__call__``, ``execute_operation``,
    ``execute_single``, ``parse_multipart``, ``parse_json``, ``get_sub_response`` and
    ``create_response`` override its internals, since no public hook sees a request error before
    Strawberry answers it (in plain text, or as a 200 whose stream breaks off): check them against
    Strawberry's own on each upgrade."""

    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, state: State) -> None:
        s = state.settings
        super().__init__(
            build_schema(s),
            graphql_ide="graphiql" if s.graphiql else None,
            connection_init_wait_timeout=timedelta(seconds=s.connection_init_timeout_s),
            max_subscriptions_per_connection=s.max_subscriptions_per_connection,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
            allowed_origins=s.origins(),
            multipart_uploads_enabled=True,  # submitBatchJob's file; other origins are refused by OriginPolicyMiddleware
        )
        self.state = state
        self._ide_html = graphiql.page_html()

    def decode_json(self, data: str | bytes) -> object:
        """Every undecodable body is a JSONDecodeError, which Strawberry answers with 400 over HTTP
        and 4400 over WebSocket: invalid UTF-8 and JSON nested too deeply included."""
        try:
            return json.loads(data)
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"request body is not valid UTF-8: {exc.reason}", "", exc.start) from None
        except RecursionError:
            raise json.JSONDecodeError("JSON nested too deeply", "", 0) from None

    def parse_json(self, data: str | bytes) -> object:
        value = super().parse_json(data)
        if not isinstance(value, dict):  # HTTP batching is off: one operation, as an object
            raise HTTPException(400, "the request body must be a JSON object with a 'query', "
                                     f"got {type(value).__name__ if value is not None else 'null'}")
        return value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's, except that a refused HTTP request is answered GraphQL JSON (``protocol``)."""
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            media_type = response_media_type(request.headers.get("accept", ""))
            response = JSONResponse(error_body(exc), status_code=exc.status_code, media_type=media_type)
        await response(scope, receive, send)

    async def execute_operation(self, request: Request, request_adapter, request_data, context, root_value,
                                sub_response):
        """Strawberry's, except that a stream's document is checked before the stream starts: a
        document that does not parse, or lacks the operation named, is a 400, not a 200 whose
        stream breaks off or carries an INTERNAL error."""
        if not isinstance(request_data, list) and self._get_stream_transport(request_data.protocol) is not None:
            error = document_error(request_data.query, request_data.operation_name, self.state.settings.max_query_tokens)
            if error is not None:
                raise RequestError(400, error.message, (error.extensions or {}).get("code"))
        return await super().execute_operation(request, request_adapter, request_data, context, root_value, sub_response)

    async def execute_single(self, request: Request, request_adapter, sub_response, context, root_value,
                             request_data) -> ExecutionResult:
        """Strawberry's, except that a subscription without a streaming transport is a 400 that
        names the transports (it used to run as a query and fail as a masked INTERNAL), and each
        refusal carries its code."""
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        try:
            return await self.schema.execute(
                request_data.query, root_value=root_value, variable_values=request_data.variables,
                context_value=context, operation_name=request_data.operation_name,
                allowed_operation_types=allowed, operation_extensions=request_data.extensions)
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise RequestError(400, SUBSCRIPTION_TRANSPORTS, "OPERATION_NOT_ALLOWED") from exc
            raise RequestError(400, exc.as_http_error_reason(request_adapter.method), "OPERATION_NOT_ALLOWED") from exc
        except CannotGetOperationTypeError as exc:
            error = document_error(request_data.query, request_data.operation_name, self.state.settings.max_query_tokens)
            raise RequestError(400, error.message if error else exc.as_http_error_reason(), "OPERATION_NOT_FOUND") from exc
        except MissingQueryError as exc:
            raise RequestError(400, "No GraphQL query found in the request") from exc

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        """Strawberry's, except that a ``map`` that does not fit the operation is a 400 naming the
        path (it used to fail inside Strawberry as a plain-text 500)."""
        try:
            form_data = await request.get_form_data()
        except ValueError as exc:
            raise RequestError(400, "Unable to parse the multipart body") from exc
        operations, files_map = form_data.form.get("operations", "{}"), form_data.form.get("map", "{}")
        operations = self.parse_json(operations) if isinstance(operations, str | bytes) else operations
        files_map = self.parse_json(files_map) if isinstance(files_map, str | bytes) else files_map
        problem = multipart_map_error(operations, files_map, form_data.files)
        if problem is not None or not isinstance(operations, dict) or not isinstance(files_map, dict):
            raise RequestError(400, problem or "malformed multipart request")
        return replace_placeholders_with_files(operations, files_map, form_data.files)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request.headers.get("accept", ""))
        return sub_response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """A request error (the document did not validate) has no ``data`` entry, as the spec says."""
        processed = await super().process_result(request, result)
        if isinstance(result, PreExecutionError):
            processed.pop("data", None)
        return processed

    def create_response(self, response_data, sub_response: Response) -> Response:
        """In the media type asked for; under ``application/graphql-response+json`` a request error is a 400."""
        response = super().create_response(response_data, sub_response)
        media_type = sub_response.media_type or JSON_MEDIA_TYPE
        response.headers["content-type"] = media_type
        if media_type == GRAPHQL_RESPONSE_JSON and isinstance(response_data, dict) and "data" not in response_data:
            response.status_code = 400
        return response

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self._ide_html)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        state = self.state
        request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        principal = request.scope.get("state", {}).get("api_key") if state.keyring is not None else ANONYMOUS
        if principal is None and isinstance(request, Request) and not is_ide_page(
                request.method, request.headers.get("accept", ""), request.scope.get("query_string", b"")):
            # ApiKeyMiddleware refuses these first; a request that got past it runs as nobody, never as anonymous.
            raise HTTPException(401, "this request has no API key: send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'")
        return Context(engine=state.engine, loader=state.loader, settings=state.settings,
                       request_id=request_id, started_at=state.started_at, metrics=state.metrics,
                       draining=lambda: state.draining, principal=principal, quotas=state.quotas, jobs=state.jobs,
                       keyring=state.keyring)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """With keys on, a WebSocket whose handshake carried no right key must send one in
        ``connection_init`` (``{"authorization": "Bearer <key>"}``, as GraphiQL's headers tab
        does); a wrong or missing one closes the socket with 4403."""
        keyring = self.state.keyring
        if keyring is None or context.principal is not None:
            return UNSET
        params = {str(k).lower(): v for k, v in (context.connection_params or {}).items() if isinstance(v, str)}
        context.principal = keyring.authenticate(presented_key(params))
        if context.principal is None:
            raise ConnectionRejectionError()
        return UNSET
