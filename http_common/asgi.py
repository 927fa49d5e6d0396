"""ASGI helpers shared by the inference service and the GraphQL API."""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.http.websocket_origin import is_same_origin, normalize_origin

log = logging.getLogger(__name__)


class CancelOnDisconnectMiddleware:
    """Cancel an HTTP request's handler when its client disconnects before the response ends,
    so an abandoned ``chat`` mutation stops generating (its ticket aborts its sequence)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_read = asyncio.Event()

        async def tracking_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        handler = asyncio.ensure_future(self.app(scope, tracking_receive, send))
        watcher = asyncio.ensure_future(self._watch(receive, body_read, handler))
        try:
            await handler
        except asyncio.CancelledError:
            if not watcher.done() or not watcher.result():
                raise  # cancelled from outside, not by a disconnect
        finally:
            watcher.cancel()

    @staticmethod
    async def _watch(receive: Receive, body_read: asyncio.Event, handler: asyncio.Future) -> bool:
        await body_read.wait()
        message = await receive()
        if message["type"] == "http.disconnect" and not handler.done():
            handler.cancel()
            return True
        return False


class RequestBodyMiddleware:
    """Bounds what a client may send. HTTP: a body over ``max_bytes`` (announced or streamed) gets
    413, and one not complete within ``read_timeout_s`` of its headers gets 408. A client that
    disconnects mid-body ends its request with one log line, not a traceback. WebSocket: a message
    over ``max_bytes`` closes the socket with 1009 (message too big). A multipart body (a file
    upload) may take ``max_upload_bytes`` instead, when given."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await self.app(scope, self._bounded_ws(receive, send), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", ()))
        max_bytes = self.max_bytes
        if self.max_upload_bytes is not None and headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            max_bytes = self.max_upload_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return await self._refuse(send, 413, "BODY_TOO_LARGE",
                                      f"request body exceeds the limit of {max_bytes} bytes", max_bytes)
        received = 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _BodyTooLarge
            body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(send, 413, "BODY_TOO_LARGE", f"request body exceeds the limit of {max_bytes} bytes", max_bytes)
        except _BodyTimeout:
            await self._refuse(send, 408, "REQUEST_TIMEOUT",
                               f"request body not received within {self.read_timeout_s:g} s", self.read_timeout_s)
        except _ClientGone:
            log.info("client %s disconnected before sending the whole body (%d bytes read)",
                     (scope.get("client") or ("?",))[0], received)

    def _bounded_ws(self, receive: Receive, send: Send) -> Receive:
        async def bounded() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode("utf-8", "replace"))
                if size > self.max_bytes:
                    await send({"type": "websocket.close", "code": 1009,
                                "reason": f"message exceeds the limit of {self.max_bytes} bytes"})
                    return {"type": "websocket.disconnect", "code": 1009}
            return message

        return bounded

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str, limit: float) -> None:
        body = json.dumps({"errors": [{"message": message, "extensions": {"code": code, "limit": limit}}]}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class _ClientGone(Exception):
    pass


class OriginPolicyMiddleware:
    """One origin policy for HTTP (GET, POST, SSE), the same one Strawberry applies to WebSocket
    handshakes: a request from a browser page on another origin gets 403 unless that origin is
    listed in ``ALLOWED_ORIGINS`` (or it holds ``*``). Requests without ``Origin`` (curl, servers)
    and same-origin ones pass. Without this, any web page's ``EventSource`` could stream answers."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = {o for o in (normalize_origin(a) for a in allowed if a != "*") if o}

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        origin = headers.get(b"origin")
        if origin is None or self.any:
            return True
        text = origin.decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        return (headers.get(b"sec-fetch-site") == b"same-origin" or is_same_origin(text, host)
                or normalize_origin(text) in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allows(dict(scope.get("headers", ()))):
            return await self.app(scope, receive, send)
        body = json.dumps({"errors": [{"message": "this origin may not call the API (set ALLOWED_ORIGINS to allow it)",
                                       "extensions": {"code": "FORBIDDEN_ORIGIN"}}]}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_HEADERS = ("authorization", "x-api-key", "content-type", "x-request-id", "accept")
CORS_EXPOSED = ("x-request-id",)
CORS_MAX_AGE_S = 600


def origin_middleware(allowed: list[str]) -> list[Middleware]:
    """The browser-facing origin rules of both tiers, in order: the policy refuses a page on an
    origin not in ``allowed`` (403, preflights too, exactly as before CORS), then Starlette's
    ``CORSMiddleware`` answers the preflights of allowed origins and adds
    ``Access-Control-Allow-Origin`` to their responses, streams included. It goes before the key
    check, since a preflight carries no key. Credentials are not allowed: keys are headers
    (``authorization``, ``x-api-key``), never cookies, so a page needs none."""
    return [Middleware(OriginPolicyMiddleware, allowed=allowed),
            Middleware(CORSMiddleware, allow_origins=[o if o == "*" else normalize_origin(o) or o for o in allowed],
                       allow_methods=CORS_METHODS, allow_headers=CORS_HEADERS,
                       expose_headers=CORS_EXPOSED, max_age=CORS_MAX_AGE_S, allow_credentials=False)]
