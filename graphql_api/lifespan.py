"""The app's life: the engine loads in the background while connections are already accepted
(``/healthz`` is 200 and ``/readyz`` 503 until it is there), the job store starts with the app,
and at the end jobs stop before the engine, so that items in flight go back to the queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette

from http_common.keys import reload_on_hangup
from inference.boundary import EngineClient
from inference.engine.config import EngineConfig

from .engines import embedded_engine, remote_engine
from .state import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSource:
    """Where the app's engine comes from: ``given`` (used as it is, and left running: the caller
    owns it), else remote when ``INFERENCE_URL`` is set, else the model loaded with ``config``.
    ``on_failed`` is told when it cannot be loaded (chats then get UNAVAILABLE saying why)."""

    given: EngineClient | None = None
    config: EngineConfig | None = None
    on_ready: Callable[[], None] | None = None
    on_failed: Callable[[Exception], None] | None = None

    @property
    def owned(self) -> bool:
        """Whether the app stops the engine when it ends."""
        return self.given is None

    async def load(self, state: State) -> None:
        """Build and start the engine, then hand it to ``state.engine``; a failure is kept there."""
        try:
            if self.given is not None:
                target = self.given
            elif state.settings.inference_url:
                target = remote_engine(state.settings)
            else:
                target = await asyncio.to_thread(embedded_engine, self.config)
            if not target.running:
                await target.start()
        except Exception as exc:
            log.error("the engine could not be loaded: %s", exc)
            state.engine.failure = str(exc)
            if self.on_failed is not None:
                self.on_failed(exc)
            return
        state.engine.target = target
        if self.on_ready is not None:
            self.on_ready()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state = State.of_app(app)
    source: EngineSource = app.state.engine_source
    loading = asyncio.ensure_future(source.load(state))
    if state.keyring is not None:
        reload_on_hangup(state.keyring)
    try:
        await state.jobs.start()  # migrates the jobs database; failing, the server does not start
        yield
    finally:
        await state.jobs.stop()  # before the engine: items in flight go back to the queue
        if not loading.done():
            loading.cancel()
        if source.owned:
            await state.engine.stop()
