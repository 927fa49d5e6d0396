"""One real engine per test session; helpers to build requests and reference answers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from inference.async_engine import AsyncEngine
from inference.config import EngineConfig
from inference.engine import LLMEngine
from inference.params import ChatMessage, ChatRequest, SamplingParams

SYSTEM = "You are a helpful assistant."


def chat(prompt: str, system: str | None = SYSTEM, **params) -> ChatRequest:
    messages = ((ChatMessage("system", system),) if system else ()) + (ChatMessage("user", prompt),)
    return ChatRequest(messages, SamplingParams(**params))


def reference_text(engine: LLMEngine, request: ChatRequest, max_new_tokens: int) -> str:
    """The same prompt alone through transformers' own greedy ``model.generate``."""
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
    return LLMEngine.from_config(EngineConfig())


@pytest.fixture(scope="session")
async def engine(llm: LLMEngine):
    ae = AsyncEngine(llm)
    await ae.start()
    yield ae
    await ae.stop()
