"""The service's API keys: with keys on, everything but the probes needs one."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from http_common.keys import KeyRing, presented_key

from .wire import ErrorBody, ErrorResponse

OPEN_PATHS = ("/healthz", "/readyz", "/health")


class ServiceKeyMiddleware:
    """With keys on, everything but the probes needs ``Authorization: Bearer <key>`` (as vLLM's and
    llama.cpp's ``--api-key``); otherwise 401 in OpenAI's shape."""

    def __init__(self, app: ASGIApp, keyring: KeyRing | None) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keyring is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if self.keyring.authenticate(presented_key(headers)) is not None:
            return await self.app(scope, receive, send)
        body = ErrorResponse(error=ErrorBody(message="invalid or missing API key", type="invalid_request_error",
                                             code="invalid_api_key"))
        await JSONResponse(body.model_dump(exclude_none=True), status_code=401)(scope, receive, send)
