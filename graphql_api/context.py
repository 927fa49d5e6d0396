"""The per-request context resolvers see."""

from __future__ import annotations

from dataclasses import dataclass


from inference.protocol import EngineClient

from .loaders import ChatLoader
from .settings import ApiSettings


@dataclass
class Context:
    engine: EngineClient
    loader: ChatLoader
    settings: ApiSettings
    request_id: str
    started_at: float
