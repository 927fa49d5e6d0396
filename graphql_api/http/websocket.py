"""graphql-transport-ws as the API speaks it: Strawberry's handler, with malformed messages closing
the socket with 4400 (never a crash), a refusal past the per-connection limit naming the limit, and
a document that cannot run refused for its operation id before anything starts."""

from __future__ import annotations

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler

from ..schema.context import Context
from .protocol import document_error


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
            settings = self.view.state.settings  # type: ignore[attr-defined]  # the view is GraphQLApp
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
