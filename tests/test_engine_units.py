"""The engine's pure pieces, each alone: sampling, the prefix cache, incremental detokenization.

They need torch (and the tokenizer for the detokenizer), so they are in the ``model`` tier."""

from __future__ import annotations

import pytest
import torch

from inference.boundary import SamplingParams
from inference.engine.detokenizer import IncrementalText
from inference.engine.model_runner import PrefixCache, SlotKVCache, sample_token

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


def small_cache() -> SlotKVCache:
    return SlotKVCache(layers=1, slots=3, kv_heads=1, max_len=16, head_dim=2, dtype=torch.float32,
                       device=torch.device("cpu"))


def test_prefix_cache_copies_the_longest_shared_prefix_and_leaves_the_last_token():
    cache = small_cache()
    cache.k[0, 0, 0, :6] = torch.arange(12.0).reshape(6, 2)
    cache.v[0, 0, 0, :6] = -torch.arange(12.0).reshape(6, 2)
    prefixes = PrefixCache(cache, entries=2, min_match=2)
    prefixes.store([1, 2, 3, 4, 5, 6], slot=0)
    assert prefixes.reuse([1, 2, 3, 4, 9, 9], slot=1) == 4
    assert torch.equal(cache.k[0, 1, 0, :4], cache.k[0, 0, 0, :4]) and torch.equal(cache.v[0, 1, 0, :4], cache.v[0, 0, 0, :4])
    assert prefixes.reuse([1, 2, 3, 4, 5, 6], slot=2) == 5  # the whole prompt matches: its last token is left
    assert prefixes.reuse([1, 7], slot=2) == 0  # under min_match


def test_prefix_cache_evicts_the_least_recently_used_entry():
    cache = small_cache()
    prefixes = PrefixCache(cache, entries=1, min_match=2)
    prefixes.store([1, 2, 3], slot=0)
    prefixes.store([4, 5, 6], slot=0)
    assert prefixes.reuse([1, 2, 3, 9], slot=1) == 0
    assert prefixes.reuse([4, 5, 6, 9], slot=1) == 3
    assert PrefixCache(cache, entries=0).reuse([1, 2, 3, 9], slot=1) == 0


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
