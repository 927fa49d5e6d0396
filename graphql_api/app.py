"""The Starlette application: GraphQL at /graphql (HTTP, SSE, WebSocket), probes, metrics, a job's
results, GraphiQL's scripts; this module assembles them (the view: ``http.view``; the other
endpoints: ``http.endpoints``; the life of the app: ``lifespan``)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from http_common import tracing
from http_common.asgi import CancelOnDisconnectMiddleware, RequestBodyMiddleware, origin_middleware
from inference.boundary import EngineClient
from inference.engine.config import EngineConfig

from .http import endpoints, graphiql
from .http.middleware import ApiKeyMiddleware, HeadAsGet, RequestIdMiddleware
from .http.view import GraphQLApp
from .lifespan import EngineSource, lifespan
from .settings import ApiSettings
from .state import State

__all__ = ["create_app"]


def create_app(settings: ApiSettings | None = None, engine_config: EngineConfig | None = None,
               engine: EngineClient | None = None, on_ready: Callable[[], None] | None = None,
               on_failed: Callable[[Exception], None] | None = None) -> Starlette:
    """The ASGI app. Without ``engine`` it builds one in its lifespan and owns it: remote when
    ``settings.inference_url`` is set, else the model loaded with ``engine_config``. An engine from
    outside (tests) is used as it is and left running. ``on_failed`` is told when the engine
    cannot be loaded (chats then get UNAVAILABLE saying why)."""
    settings = settings or ApiSettings()
    state = State(settings)
    graphql = GraphQLApp(state)
    app = Starlette(
        routes=[
            Route("/healthz", endpoints.healthz),
            Route("/readyz", endpoints.readyz),
            Route("/metrics", endpoints.metrics),
            Route("/jobs/{job_id}/results.jsonl", endpoints.job_results),
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
    app.state.engine_source = EngineSource(given=engine, config=engine_config, on_ready=on_ready, on_failed=on_failed)
    return app
