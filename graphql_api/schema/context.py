"""The per-request context resolvers see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from inference.boundary import EngineClient

from ..observability import ApiMetrics
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
