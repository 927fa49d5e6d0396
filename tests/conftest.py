"""One real engine per test session; helpers to build requests and reference answers.

A test that uses the real model (through the fixtures below, or marked by hand) carries the
``model`` marker: ``pytest -m "not model"`` runs the rest in seconds, without loading torch."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Apps made by tests keep their jobs database here, not in ~/.local/share (job tests use their own).
if "DATA_DIR" not in os.environ:
    os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="smollm-test-data-")
    atexit.register(shutil.rmtree, os.environ["DATA_DIR"], True)

import pytest

from inference.boundary import ChatMessage, ChatRequest, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

SYSTEM = "You are a helpful assistant."
MODEL_FIXTURES = {"llm", "native", "engine", "live", "small", "service", "remote"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


def chat(prompt: str, system: str | None = SYSTEM, **params) -> ChatRequest:
    messages = ((ChatMessage(role="system", content=system),) if system else ()) + (ChatMessage(role="user", content=prompt),)
    return ChatRequest(messages=messages, params=SamplingParams(**params))


def reference_text(engine: LLMEngine, request: ChatRequest, max_new_tokens: int) -> str:
    """The same prompt alone through transformers' own greedy ``model.generate``."""
    import torch

    ids = engine.prepare(request).prompt_ids
    with torch.inference_mode():
        out = engine.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False)
    return engine.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def engine_like(base: LLMEngine, **overrides) -> LLMEngine:
    """Another engine over the already-loaded model, with other limits."""
    return LLMEngine(base.config.model_copy(update=overrides), base.model, base.tokenizer, base.source)


@pytest.fixture(scope="session")
def llm() -> LLMEngine:
    """The exact weights (dense fp32): greedy answers equal ``model.generate``'s, which the
    exactness tests check. A pool of 8,192 tokens keeps the many engines of the suite light."""
    return LLMEngine.from_config(EngineConfig(weights="exact", kv_cache_tokens=8192))


@pytest.fixture(scope="session")
def native(llm: LLMEngine) -> LLMEngine:
    """The same model with the GGUF's own 4-bit weights (the default on CPU)."""
    return engine_like(llm, weights="native")


@pytest.fixture(scope="session")
async def engine(llm: LLMEngine):
    ae = AsyncEngine(llm)
    await ae.start()
    yield ae
    await ae.stop()


class LiveServer:
    def __init__(self, url: str, app) -> None:
        self.url = url
        self.app = app

    @property
    def loader(self):
        return self.app.state.api.loader


async def start_server(app, read_timeout_s: float = 10.0, max_message_bytes: int = 16 * 2**20):
    """Serve ``app`` with uvicorn on a free loopback port, in this event loop, configured as the
    real servers are (``http_common.server``)."""
    import asyncio
    import socket

    import uvicorn

    from http_common.server import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, read_timeout_s=read_timeout_s,
                                           max_message_bytes=max_message_bytes))
    server.install_signal_handlers = lambda: None  # older uvicorn
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
async def serve():
    """Start extra servers with their own settings (``start_server``'s keywords); all are stopped
    at the end of the test."""
    running = []

    async def start(app, **kwargs):
        server, task, url = await start_server(app, **kwargs)
        running.append((server, task))
        return url

    yield start
    for server, task in running:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def live(engine):
    """The GraphQL app over the session's real engine, served on loopback."""
    from graphql_api.app import create_app
    from graphql_api.settings import ApiSettings

    app = create_app(ApiSettings(), engine=engine)
    server, task, url = await start_server(app)
    yield LiveServer(url, app)
    server.should_exit = True
    await task
