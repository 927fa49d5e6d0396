"""The per-request context resolvers see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError

from http_common.keys import ANONYMOUS, ApiKey, KeyRing
from inference.boundary import EngineClient

from ..jobs.service import Jobs
from ..observability import ApiMetrics
from ..quotas import Quotas
from ..settings import ApiSettings
from .loaders import ChatLoader


@dataclass
class Context:
    engine: EngineClient
    loader: ChatLoader
    settings: ApiSettings
    request_id: str
    started_at: float
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    draining: Callable[[], bool] = lambda: False
    principal: ApiKey | None = ANONYMOUS  # None only on a WebSocket not yet authenticated
    quotas: Quotas | None = None  # None: keys off, nothing is counted
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    jobs: Jobs | None = None  # None: no job store (tests of other things)

    keyring: KeyRing | None = None  # None: keys off

    @property
    def caller(self) -> ApiKey:
        """Who is calling. With keys on, a context nobody authenticated, or whose key has since been
        taken out of the keys file or expired, refuses to say, and so to run: a WebSocket's later
        operations and an open stream's next event end with UNAUTHENTICATED."""
        if self.principal is None:
            raise GraphQLError("this operation has no API key", extensions={"code": "UNAUTHENTICATED"})
        if self.keyring is not None and not self.keyring.current(self.principal):
            raise GraphQLError(f"the API key {self.principal.name!r} was revoked or has expired",
                               extensions={"code": "UNAUTHENTICATED"})
        return self.principal

    def verify_key(self) -> None:
        """Raise UNAUTHENTICATED unless the caller's key still lets it in (see ``caller``)."""
        _ = self.caller
