"""uvicorn as both services run it: bounded WebSocket messages and no connection held for free.

uvicorn closes idle keep-alive connections, but it has no deadline for a request's headers: a
client sending one byte every few seconds holds a connection (and its memory) for ever. Here a
connection that has not completed a request's headers within ``read_timeout_s`` of opening (or of
its last response) is closed; the body's own deadline is ``RequestBodyMiddleware``'s.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def head_timeout_protocol(read_timeout_s: float) -> type[HttpToolsProtocol]:
    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(read_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    return HeadTimeoutProtocol


def uvicorn_config(app, host: str, port: int, *, read_timeout_s: float, max_message_bytes: int,
                   **kwargs) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, http=head_timeout_protocol(read_timeout_s),
                          ws="websockets-sansio", ws_max_size=max_message_bytes, log_level="warning", **kwargs)
