"""ASGI helpers shared by the inference service and the GraphQL API."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
