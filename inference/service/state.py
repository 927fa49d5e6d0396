"""What the service's endpoints share, kept on ``app.state`` (Starlette's place for it)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from http_common.keys import KeyRing

from ..boundary import EngineInfo, LocalEngine
from .settings import ServiceSettings


@dataclass(frozen=True)
class Served:
    """The engine served and how. ``info`` is the engine's as ``/v1/models`` tells it, with this
    service's ``max_batch_items`` (0 when ``/generate_batch`` is off)."""

    engine: LocalEngine
    settings: ServiceSettings
    info: EngineInfo
    keyring: KeyRing | None

    @property
    def model(self) -> str:
        return self.info.name

    @staticmethod
    def of(request: Request) -> Served:
        served: Served = request.app.state.served
        return served
