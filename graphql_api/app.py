"""The Starlette application: GraphQL at /graphql (HTTP, SSE, WebSocket), probes, lifespan."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.file_uploads.utils import replace_placeholders_with_files
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from inference import tracing
from inference.asgi import CancelOnDisconnectMiddleware, HeadAsGet, RequestBodyMiddleware, origin_middleware
from inference.boundary import EngineClient
from inference.engine.config import EngineConfig
from inference.keys import ANONYMOUS, KeyRing, presented_key, reload_on_hangup

from .engine_handle import EngineHandle
from .http import graphiql
from .http.middleware import ApiKeyMiddleware, RequestIdMiddleware, is_ide_page
from .http.protocol import GRAPHQL_RESPONSE_JSON, RequestError, document_error, error_body, multipart_map_error, response_media_type
from .http.protocol import JSON as JSON_MEDIA_TYPE
from .jobs.output import output_lines
from .jobs.service import Jobs
from .observability import ApiMetrics
from .quotas import Quotas
from .schema import build_schema
from .schema.context import Context
from .schema.loaders import ChatLoader
from .settings import ApiSettings

log = logging.getLogger(__name__)


class State:
    """Long-lived objects of one app: the engine and its one DataLoader."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.engine = EngineHandle()
        self._loader: ChatLoader | None = None
        self.started_at = time.time()
        self.metrics = ApiMetrics()
        self.draining = False
        self.keyring = KeyRing.from_file(settings.api_keys_file) if settings.api_keys_file else None
        self.quotas = Quotas(settings.rate_limit_storage) if self.keyring is not None else None
        self.jobs = Jobs(settings, self.engine, draining=lambda: self.draining, quotas=self.quotas, keyring=self.keyring,
                         metrics=self.metrics)

    def in_flight(self) -> int:
        stats = self.engine.stats()
        return stats.running + stats.waiting

    @property
    def loader(self) -> ChatLoader:
        """The one DataLoader of this app's engine, made on first use (inside the event loop)."""
        if self._loader is None:
            self._loader = ChatLoader(self.engine)
        return self._loader


SUBSCRIPTION_TRANSPORTS = (
    "subscriptions stream: send them over WebSocket (graphql-transport-ws) to /graphql, or over HTTP with "
    "'Accept: text/event-stream' (GraphQL over SSE)")


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: malformed messages close the socket with 4400 (never a crash), and a
    refusal past the per-connection limit names the limit."""

    async def handle_message(self, message: object) -> None:
        problem = _malformed(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)  # type: ignore[arg-type]

    async def handle_subscribe(self, message) -> None:
        limit = self.max_subscriptions_per_connection
        if (self.connection_acknowledged and message["id"] not in self.operations
                and limit is not None and len(self.operations) >= limit):
            error = GraphQLError(
                f"too many operations on this connection: at most {limit} (MAX_SUBSCRIPTIONS_PER_CONNECTION)",
                extensions={"code": "TOO_MANY_SUBSCRIPTIONS", "limit": limit})
            await self.send_message({"id": message["id"], "type": "error", "payload": [error.formatted]})
            return
        if self.connection_acknowledged and message["id"] not in self.operations:
            payload = message["payload"]
            settings = self.view.state.settings  # type: ignore[attr-defined]
            problem = document_error(payload.get("query"), payload.get("operationName"), settings.max_query_tokens)
            if problem is not None:
                await self.send_message({"id": message["id"], "type": "error", "payload": [problem.formatted]})
                return
        await super().handle_subscribe(message)


def _malformed(message: object) -> str | None:
    """Why a graphql-transport-ws message cannot be handled, or None."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message must be a JSON object with a string 'type'"
    if message["type"] in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return f"'{message['type']}' needs a string 'id'"
    if message["type"] == "subscribe":
        payload = message.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return "'subscribe' needs a 'payload' object with a string 'query'"
        if not isinstance(payload.get("variables") or {}, dict):
            return "'subscribe' payload 'variables' must be an object"
    return None


class GraphQLApp(GraphQL[Context, None]):
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


def embedded_engine(config: EngineConfig | None = None) -> EngineClient:
    """Load the model and build the in-process engine (slow: run it off the event loop)."""
    from inference.engine.async_engine import AsyncEngine
    from inference.engine.llm_engine import LLMEngine

    return AsyncEngine(LLMEngine.from_config(config or EngineConfig()))


def remote_engine(settings: ApiSettings) -> EngineClient:
    from inference.remote import RemoteEngine

    urls = [u.strip() for u in settings.inference_url.split(",") if u.strip()]
    return RemoteEngine(urls, api_key=settings.inference_api_key or None, timeout_s=settings.inference_timeout_s,
                        max_concurrency=settings.inference_max_concurrency)


def create_app(settings: ApiSettings | None = None, engine_config: EngineConfig | None = None,
               engine: EngineClient | None = None, on_ready: Callable[[], None] | None = None,
               on_failed: Callable[[Exception], None] | None = None) -> Starlette:
    """The ASGI app. Without ``engine`` it builds one in its lifespan and owns it: remote when
    ``settings.inference_url`` is set, else the model loaded with ``engine_config``. An engine from
    outside (tests) is used as it is and left running. ``on_failed`` is told when the engine
    cannot be loaded (chats then get UNAVAILABLE saying why)."""
    settings = settings or ApiSettings()
    state = State(settings)

    async def load() -> None:
        """Connections are accepted at once: /healthz is 200 and /readyz 503 until this is done."""
        try:
            if engine is not None:
                target = engine
            elif settings.inference_url:
                target = remote_engine(settings)
            else:
                target = await asyncio.to_thread(embedded_engine, engine_config)
            if not target.running:
                await target.start()
        except Exception as exc:
            log.error("the engine could not be loaded: %s", exc)
            state.engine.failure = str(exc)
            if on_failed is not None:
                on_failed(exc)
            return
        state.engine.target = target
        if on_ready is not None:
            on_ready()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.ensure_future(load())
        if state.keyring is not None:
            reload_on_hangup(state.keyring)
        try:
            await state.jobs.start()  # migrates the jobs database; failing, the server does not start
            yield
        finally:
            await state.jobs.stop()  # before the engine: items in flight go back to the queue
            if not loading.done():
                loading.cancel()
            if engine is None:
                await state.engine.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready: the model is loaded, the step loop runs, and the server is not draining. The body
        says how much of the engine's capacity is in use; a full engine is still ready (new chats
        get OVERLOADED at once), and since no request can leak its place, full means busy."""
        ready = state.engine.running and not state.draining
        stats, info = state.engine.stats(), state.engine.info()
        body: dict[str, object] = {"ready": ready, "loading": state.engine.loading, "draining": state.draining,
                "running": stats.running, "waiting": stats.waiting, "capacity": info.max_running + info.max_waiting}
        if state.engine.failure:
            body["error"] = state.engine.failure
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        body = generate_latest(state.metrics.registry)
        engine_metrics = state.engine.metrics
        if engine_metrics is not None:
            body += generate_latest(engine_metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def job_results(request: Request) -> Response:
        """A job's results in OpenAI's batch output format, streamed from the database."""
        caller = request.scope.get("state", {}).get("api_key") if state.keyring is not None else ANONYMOUS
        job_id = request.path_params["job_id"]
        job = await state.jobs.store.job(job_id, caller.name) if caller is not None and state.jobs.ready else None
        if job is None:
            return JSONResponse({"error": {"code": "JOB_NOT_FOUND", "message": f"no batch job with id {job_id[:64]!r} "
                                           "(for this API key)"}}, status_code=404)
        return StreamingResponse(output_lines(state.jobs.store, job.id, state.engine.info().name),
                                 media_type="application/jsonl",
                                 headers={"content-disposition": f'attachment; filename="{job.id}-results.jsonl"'})

    graphql = GraphQLApp(state)
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/jobs/{job_id}/results.jsonl", job_results),
            Route("/graphql", HeadAsGet(graphql), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Mount(graphiql.PREFIX.rstrip("/"), StaticFiles(directory=graphiql.asset_dir(), check_dir=False)),
        ],
        middleware=[*tracing.asgi_middleware(),
                    Middleware(RequestIdMiddleware),
                    *origin_middleware(settings.origins()),
                    Middleware(ApiKeyMiddleware, keyring=state.keyring, metrics_public=settings.metrics_public),
                    Middleware(RequestBodyMiddleware, max_bytes=settings.max_body_bytes,
                               read_timeout_s=settings.http_read_timeout_s, max_upload_bytes=settings.max_upload_bytes),
                    Middleware(CancelOnDisconnectMiddleware)],
        lifespan=lifespan,
    )
    app.state.api = state
    return app
