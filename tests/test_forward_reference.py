"""The forward pass computes what it computed before the layer loop was rewritten: greedy answers
and logits of both weight modes, on every path (``forward_reference.py`` says which and how)."""

from __future__ import annotations

import json
import math

from forward_reference import REFERENCE, measure

from inference.engine.llm_engine import LLMEngine


def test_greedy_answers_and_logits_equal_the_recorded_ones(llm: LLMEngine, native: LLMEngine):
    want = json.loads(REFERENCE.read_text())
    got = measure(llm, native)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if isinstance(expected, list):
            assert got[key] == expected, key
            continue
        assert got[key]["argmax"] == expected["argmax"], key
        for row, expected_row in zip(got[key]["values"], expected["values"], strict=True):
            assert all(math.isclose(a, b, rel_tol=0, abs_tol=1e-4) for a, b in zip(row, expected_row, strict=True)), key
