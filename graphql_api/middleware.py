"""ASGI middleware: request ids, a cap on body size, and cancelling work of clients that left."""

from __future__ import annotations

import asyncio
import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"


class RequestIdMiddleware:
    """Take the client's X-Request-ID (if sane) or make one; store it in scope and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodySizeLimitMiddleware:
    """Refuse HTTP bodies over ``max_bytes`` with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"errors": [{
            "message": f"request body exceeds the limit of {self.max_bytes} bytes",
            "extensions": {"code": "BODY_TOO_LARGE", "limit": self.max_bytes}}]}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


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
