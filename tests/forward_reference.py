"""What the forward pass computes, in numbers a refactor must keep: greedy answers and logits of
both weight modes on each path through ``Llama.forward`` (dense layers, block kernels layer by
layer, every layer in one C call).

``tests/data/forward_reference.json`` holds these numbers as the code computed them before the
layer loop was rewritten; ``test_forward_reference.py`` compares. Recorded again once, on purpose,
when row tiles came to sum each row as a one-row product does: every text and every argmax stayed
the same, and only the 5-row steps' logits moved (by 0.015 at most). Again when the Q4_1 offsets'
term (m times the block sums) came to be summed eight blocks a vector: texts and argmaxes the
same, the one-call paths' logits moved by 0.013 at most. The native paths are measured with fp32
panels (``panel_dtype``), which every CPU the kernels run on has. To record them again (only
when the numerics are meant to change): ``python tests/forward_reference.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from inference.engine.llm_engine import LLMEngine

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "forward_reference.json"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain gravity in one sentence."]
TOKENS = 70
POSITIONS = (0, 17, 33, 69)
VOCAB_IDS = (0, 13, 198, 1000, 4053, 28_000, 49_151)


def _summary(logits: torch.Tensor) -> dict[str, Any]:
    """Every position's argmax, and a few logits in full at a few positions."""
    return {"argmax": logits.argmax(-1).tolist(),
            "values": [[float(logits[p, v]) for v in VOCAB_IDS] for p in POSITIONS]}


def measure(llm: LLMEngine, native: LLMEngine) -> dict[str, Any]:
    from conftest import chat
    from test_native_weights import TEXT, row_by_row, run_alone, run_together, teacher_forced

    ids = llm.tokenizer(TEXT.read_text()).input_ids[:TOKENS]
    out: dict[str, Any] = {}
    for name, engine in (("exact", llm), ("native", native)):
        requests = [chat(p, max_new_tokens=20) for p in PROMPTS]
        out[f"{name}.alone"] = [run_alone(engine, r) for r in requests]
        out[f"{name}.together"] = run_together(engine, requests)
        out[f"{name}.dense"] = _summary(teacher_forced(engine, ids, small=False))
    out["native.blocks"] = _summary(teacher_forced(native, ids, small=True))
    for chunk in (1, 5):
        out[f"native.one_call.{chunk}"] = _summary(row_by_row(native, ids, chunk)[0])
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import engine_like

    from inference.engine.config import EngineConfig

    exact = LLMEngine.from_config(EngineConfig(weights="exact", kv_cache_tokens=8192))
    native = engine_like(exact, weights="native", panel_dtype="float32")
    REFERENCE.write_text(json.dumps(measure(exact, native), indent=1) + "\n")
    print(f"wrote {REFERENCE}")
