"""The per-request context resolvers see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.boundary import EngineClient
from inference.keys import ANONYMOUS, ApiKey

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

    @property
    def caller(self) -> ApiKey:
        return self.principal or ANONYMOUS
