"""The forward pass computes what it computed before the layer loop was rewritten: greedy answers
and logits of both weight modes, on every path (``forward_reference.py`` says which and how)."""

from __future__ import annotations

import json
import math

from conftest import engine_like
from forward_reference import REFERENCE, measure

from inference.engine.llm_engine import LLMEngine

#: Paths whose prefill attends through torch's bf16 ``scaled_dot_product_attention``: on a CPU with
#: AVX-512 and AMX torch takes another kernel for it (VNNI-packed brgemm) than on an AVX2 one, and its
#: sums differ (logits by up to 0.04 against a reference recorded on AVX2). Their argmaxes are still
#: compared exactly; a refactor's slip moves logits by far more than this.
BF16_ATTENTION_TOLERANCE = {"native.dense": 0.1, "native.blocks": 0.1}


def test_greedy_answers_and_logits_equal_the_recorded_ones(llm: LLMEngine):
    """The native paths with fp32 panels, what every CPU the kernels run on computes (bf16 panels,
    where the CPU has them, are held to the quality test and to the kernel tests instead)."""
    want = json.loads(REFERENCE.read_text())
    got = measure(llm, engine_like(llm, weights="native", panel_dtype="float32"))
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if isinstance(expected, list):
            assert got[key] == expected, key
            continue
        assert got[key]["argmax"] == expected["argmax"], key
        tol = BF16_ATTENTION_TOLERANCE.get(key, 1e-4)
        for row, expected_row in zip(got[key]["values"], expected["values"], strict=True):
            assert all(math.isclose(a, b, rel_tol=0, abs_tol=tol) for a, b in zip(row, expected_row, strict=True)), key
