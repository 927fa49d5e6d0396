"""The engine's pure pieces, each alone: sampling, incremental detokenization.

They need torch (and the tokenizer for the detokenizer), so they are in the ``model`` tier."""

from __future__ import annotations

import pytest
import torch

from inference.boundary import SamplingParams
from inference.engine.detokenizer import IncrementalText
from inference.engine.model_runner import sample_token

pytestmark = pytest.mark.model


def generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


LOGITS = torch.tensor([1.0, 3.0, 2.0, -1.0, 0.5])


def test_sample_token_respects_top_k_top_p_and_the_seed():
    assert {sample_token(LOGITS, SamplingParams(temperature=1.0, top_k=1), generator(s)) for s in range(20)} == {1}
    assert {sample_token(LOGITS, SamplingParams(temperature=2.0, top_p=1e-30), generator(s)) for s in range(20)} == {1}
    two = {sample_token(LOGITS, SamplingParams(temperature=2.0, top_k=2), generator(s)) for s in range(60)}
    assert two == {1, 2}
    runs = [[sample_token(LOGITS, SamplingParams(temperature=1.5), g) for _ in range(10)] for g in (generator(7), generator(7))]
    assert runs[0] == runs[1]


def test_sample_token_at_the_top_of_the_temperature_range_still_samples_every_token():
    seen = {sample_token(LOGITS, SamplingParams(temperature=2.0), generator(s)) for s in range(300)}
    assert seen == {0, 1, 2, 3, 4}


def test_incremental_text_deltas_join_to_the_final_text_and_stop_strings_cut(llm):
    tokenizer = llm.tokenizer
    ids = tokenizer.encode("Bonjour 🌊 le monde, été comme hiver. STOP here", add_special_tokens=False)
    text = IncrementalText(tokenizer)
    deltas = [text.push(t)[0] for t in ids]
    deltas.append(text.finish(ids))
    assert "".join(deltas) == tokenizer.decode(ids) == text.text
    stopping = IncrementalText(tokenizer, stop=(" STOP",))
    pieces = []
    for t in ids:
        piece, stopped = stopping.push(t)
        pieces.append(piece)
        if stopped:
            break
    assert stopped and "".join(pieces) == "Bonjour 🌊 le monde, été comme hiver."


def test_incremental_text_drops_a_half_character_at_the_end(llm):
    tokenizer = llm.tokenizer
    ids = tokenizer.encode("🌊", add_special_tokens=False)
    assert len(ids) > 1, "the wave emoji takes several byte tokens"
    text = IncrementalText(tokenizer)
    emitted = "".join(text.push(t)[0] for t in ids[:-1]) + text.finish(ids[:-1])
    assert emitted == "" and "\ufffd" not in text.text


def test_block_top_k_and_argmax_equal_torchs_on_ties_spread_and_peaked_rows():
    from inference.engine.topk import argmax, top_k

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 49152, generator=gen)
    x[1, 7] = x[1, 40000] = 99.0  # a tie: the first index wins, as torch's
    x[2, :] = 0.5  # all equal
    x[3, 300:310] = torch.arange(10.0) + 50  # the top values in one block
    x[4, ::256] = 80.0 + torch.arange(192.0)  # one top value in each block
    assert torch.equal(argmax(x), x.argmax(-1))
    for k in (1, 5, 20):
        values, ids = top_k(x, k)
        expected = x.topk(k)
        assert torch.equal(values, expected.values)
        assert torch.equal(x.gather(1, ids), values)  # indices of those values (equal values may swap)
    odd = torch.randn(2, 1000, generator=gen)
    assert torch.equal(argmax(odd), odd.argmax(-1)) and torch.equal(top_k(odd, 3)[1], odd.topk(3).indices)
