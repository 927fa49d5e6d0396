"""What one app keeps for its life, on ``app.state.api``: the engine, its one DataLoader, keys,
quotas, jobs and metrics. Endpoints, the GraphQL view and the CLI's drain find it there."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from http_common.keys import KeyRing

from .engine_handle import EngineHandle
from .jobs.service import Jobs
from .observability import ApiMetrics
from .quotas import Quotas
from .schema.loaders import ChatLoader
from .settings import ApiSettings


class State:
    """Long-lived objects of one app: the engine and its one DataLoader."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.engine = EngineHandle()
        self._loader: ChatLoader | None = None
        self.started_at = time.time()
        self.metrics = ApiMetrics()
        self.draining = False
        self.keyring = KeyRing.from_file(settings.api_keys_file) if settings.api_keys_file else None
        self.quotas = Quotas(settings.rate_limit_storage) if self.keyring is not None else None
        self.jobs = Jobs(settings, self.engine, draining=lambda: self.draining, quotas=self.quotas, keyring=self.keyring,
                         metrics=self.metrics)

    @staticmethod
    def of(connection: HTTPConnection) -> State:
        return State.of_app(connection.app)

    @staticmethod
    def of_app(app: Starlette) -> State:
        state: State = app.state.api
        return state

    def in_flight(self) -> int:
        stats = self.engine.stats()
        return stats.running + stats.waiting

    @property
    def loader(self) -> ChatLoader:
        """The one DataLoader of this app's engine, made on first use (inside the event loop)."""
        if self._loader is None:
            self._loader = ChatLoader(self.engine)
        return self._loader
