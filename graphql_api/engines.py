"""Which engine the API runs on: the model in this process, or remote inference servers."""

from __future__ import annotations

from inference.boundary import EngineClient
from inference.engine.config import EngineConfig

from .settings import ApiSettings


def embedded_engine(config: EngineConfig | None = None) -> EngineClient:
    """Load the model and build the in-process engine (slow: run it off the event loop)."""
    from inference.engine.async_engine import AsyncEngine
    from inference.engine.llm_engine import LLMEngine

    return AsyncEngine(LLMEngine.from_config(config or EngineConfig()))


def remote_engine(settings: ApiSettings) -> EngineClient:
    from inference.remote import RemoteEngine

    urls = [u.strip() for u in settings.inference_url.split(",") if u.strip()]
    return RemoteEngine(urls, api_key=settings.inference_api_key or None, timeout_s=settings.inference_timeout_s,
                        max_concurrency=settings.inference_max_concurrency)
