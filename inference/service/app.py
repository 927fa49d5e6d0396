"""The engine as its own HTTP service (`python -m inference serve`): the app's assembly. What each
endpoint does: ``endpoints``. A client that disconnects stops its generation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from http_common import tracing
from http_common.asgi import CancelOnDisconnectMiddleware, RequestBodyMiddleware, origin_middleware
from http_common.keys import KeyRing, reload_on_hangup

from ..boundary import LocalEngine
from . import endpoints
from .auth import ServiceKeyMiddleware
from .settings import ServiceSettings
from .state import Served

__all__ = ["ServiceSettings", "create_service"]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """The service owns its engine: started here if it is not running, stopped at the end."""
    served: Served = app.state.served
    if not served.engine.running:
        await served.engine.start()
    if served.keyring is not None:
        reload_on_hangup(served.keyring)
    yield
    await served.engine.stop()


def create_service(engine: LocalEngine, settings: ServiceSettings | None = None) -> Starlette:
    settings = settings or ServiceSettings()
    info = replace(engine.info(), max_batch_items=settings.max_batch_items if settings.generate_batch else 0)
    keyring = KeyRing.from_file(settings.api_keys_file) if settings.api_keys_file else None
    routes = [Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
              Route("/v1/completions", endpoints.completions, methods=["POST"]),
              Route("/v1/models", endpoints.models), Route("/healthz", endpoints.healthz), Route("/readyz", endpoints.readyz),
              Route("/health", endpoints.readyz),  # what routers and vLLM's, TGI's and llama.cpp's clients probe
              Route("/tokenize", endpoints.tokenize, methods=["POST"]), Route("/detokenize", endpoints.detokenize, methods=["POST"]),
              Route("/metrics", endpoints.metrics)]
    if settings.generate_batch:
        routes.append(Route("/generate_batch", endpoints.generate_batch, methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        *tracing.asgi_middleware(),
        *origin_middleware(settings.origins()),
        Middleware(ServiceKeyMiddleware, keyring=keyring),
        Middleware(RequestBodyMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s),
        Middleware(CancelOnDisconnectMiddleware)])
    app.state.served = Served(engine=engine, settings=settings, info=info, keyring=keyring)
    return app
