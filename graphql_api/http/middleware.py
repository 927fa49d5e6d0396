"""ASGI middleware of the API: request ids, API keys, HEAD on /graphql (the origin policy, CORS and
body limits are ``http_common.asgi``'s, shared by both tiers)."""

from __future__ import annotations

import json
import re
import uuid

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_common.keys import KeyRing, presented_key

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # what tracing systems send; nothing that forges log fields


class RequestIdMiddleware:
    """Take the client's X-Request-ID if it is a plain token of at most 128 characters, or make one;
    store it in scope and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class HeadAsGet:
    """HEAD answered as GET without the body (Starlette lists HEAD in ``Allow`` wherever GET is)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class ApiKeyMiddleware:
    """With keys on, every HTTP request to the API needs a key (``Authorization: Bearer`` or
    ``X-Api-Key``); without one it gets 401 ``UNAUTHENTICATED`` and no work is done. Open: the
    probes, GraphiQL's page and scripts (static; the key goes in its headers tab), and ``/metrics``
    when ``metrics_public``. The caller's key is stored in ``scope["state"]["api_key"]``; on a
    WebSocket the handshake may carry it, else ``connection_init`` must (see ``on_ws_connect``)."""

    OPEN = ("/healthz", "/readyz", "/graphiql-assets/")

    def __init__(self, app: ASGIApp, keyring: KeyRing | None, metrics_public: bool) -> None:
        self.app = app
        self.keyring = keyring
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keyring is None or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        key = self.keyring.authenticate(presented_key(headers))
        scope.setdefault("state", {})["api_key"] = key
        if key is not None or scope["type"] == "websocket" or self._open(scope, headers):
            return await self.app(scope, receive, send)
        reason = "a wrong API key" if presented_key(headers) else "no API key"
        body = json.dumps({"errors": [{
            "message": f"this request has {reason}: send 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
            "extensions": {"code": "UNAUTHENTICATED"}}]}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="smollm-graphql"')]})
        await send({"type": "http.response.body", "body": body})

    def _open(self, scope: Scope, headers: dict[str, str]) -> bool:
        path = scope["path"]
        if path.startswith(self.OPEN) or (path == "/metrics" and self.metrics_public):
            return True
        return path == "/graphql" and is_ide_page(scope["method"], headers.get("accept", ""), scope.get("query_string", b""))


def is_ide_page(method: str, accept: str, query_string: bytes) -> bool:
    """Whether a request to /graphql gets GraphiQL's page (and nothing runs): Strawberry's own
    test (``should_render_graphql_ide``) on the query string as Starlette decodes it, so that
    ``%71uery=`` is a query here too. The only request to /graphql that needs no key."""
    wants_html = any(kind in accept for kind in ("text/html", "*/*"))
    return method in ("GET", "HEAD") and wants_html and QueryParams(query_string).get("query") is None
