"""uvicorn as both services run it: bounded request heads and WebSocket messages, and no
connection held for free.

uvicorn closes idle keep-alive connections, but it has no deadline for a request's headers: a
client sending one byte every few seconds holds a connection (and its memory) for ever. Here a
connection that has not completed a request's headers within ``read_timeout_s`` of opening (or of
its last response) is closed; the body's own deadline is ``RequestBodyMiddleware``'s.

Nor does uvicorn's httptools parser bound a request's head: it gathers the URL and the headers in
memory for as long as they come, so one client's endless header held the event loop for seconds
and the process's memory with it. A head (request line and headers) longer than
``max_header_bytes`` is answered ``431 Request Header Fields Too Large`` and the connection
closed, as h11, nginx and every proxy do; its bytes are never parsed.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER_S = 2.0  # after a 431, how long the client's further bytes are drained before the socket closes
MAX_HEADER_BYTES = 64 * 1024  # h11's default is 16 KiB, nginx's 4 x 8 KiB; a GET's query string counts here too


def bounded_protocol(read_timeout_s: float, max_header_bytes: int = MAX_HEADER_BYTES) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for each request's head and a cap on its size."""

    class BoundedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _in_head = True  # the bytes coming are a request's head (its headers are not complete)
        _head_bytes = 0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # lingering after a 431: what still comes is read and dropped, never parsed
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_header_bytes and not self.transport.is_closing():
                self._refuse_head()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0  # what follows is the next request's head

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _refuse_head(self) -> None:
            body = (f'{{"errors":[{{"message":"request headers exceed the limit of {max_header_bytes} bytes",'
                    f'"extensions":{{"code":"HEADERS_TOO_LARGE","limit":{max_header_bytes}}}}}]}}').encode()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            # A lingering close, as nginx's: closing at once, with the client's bytes unread, would
            # reset the connection and the client would lose the 431 before reading it.
            self._refused = True
            self._disarm()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

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

    return BoundedProtocol


def uvicorn_config(app, host: str, port: int, *, read_timeout_s: float, max_message_bytes: int,
                   max_header_bytes: int = MAX_HEADER_BYTES, **kwargs) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, http=bounded_protocol(read_timeout_s, max_header_bytes),
                          ws="websockets-sansio", ws_max_size=max_message_bytes, log_level="warning", log_config=None,
                          **kwargs)
