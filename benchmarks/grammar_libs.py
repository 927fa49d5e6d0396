"""llguidance against xgrammar on this model's tokenizer: compile time of the test schemas and
the time to fill 64 masks per step, side by side in one run (how the structured-output library was chosen).

    python -m benchmarks.grammar_libs   # xgrammar is optional: without it, llguidance alone
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from inference.engine.config import EngineConfig
from inference.engine.model_loader import cached_dir, locate_model

from .schemas import EXAMPLES, SCHEMAS

BATCH = 64


def timed(f: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return out


def llguidance_run(tokenizer, docs: dict[str, list[int]]) -> tuple[dict[str, float], dict[str, float]]:
    import llguidance
    import llguidance.hf
    import llguidance.numpy

    lt = llguidance.hf.from_tokenizer(tokenizer)
    compile_ms, mask_ms = {}, {}
    executor = llguidance.LLExecutor()
    for name, schema in SCHEMAS.items():
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides={"whitespace_flexible": False})
        build = lambda grammar=grammar: llguidance.LLMatcher(lt, grammar)
        compile_ms[name] = statistics.median(timed(build, 5))
        matchers = [build() for _ in range(BATCH)]
        mask = llguidance.numpy.allocate_token_bitmask(BATCH, lt.vocab_size)
        steps = []
        for tok in docs[name]:
            t = time.perf_counter()
            llguidance.numpy.fill_next_token_bitmask_par(executor, [(m, i) for i, m in enumerate(matchers)], mask)
            steps.append((time.perf_counter() - t) * 1000)
            for m in matchers:
                assert m.consume_token(tok), m.get_error()
        mask_ms[name] = statistics.mean(steps)
    return compile_ms, mask_ms


def xgrammar_run(tokenizer, docs: dict[str, list[int]]) -> tuple[dict[str, float], dict[str, float]]:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compile_ms, mask_ms = {}, {}
    batch = xgr.BatchGrammarMatcher()
    for name, schema in SCHEMAS.items():
        text = json.dumps(schema)
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        compile_ms[name] = statistics.median(timed(lambda: compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":")), 5))  # noqa: B023
        compiled = compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":"))
        matchers = [xgr.GrammarMatcher(compiled) for _ in range(BATCH)]
        mask = xgr.allocate_token_bitmask(BATCH, info.vocab_size)
        steps = []
        for tok in docs[name]:
            t = time.perf_counter()
            batch.batch_fill_next_token_bitmask(matchers, mask)
            steps.append((time.perf_counter() - t) * 1000)
            for m in matchers:
                assert m.accept_token(tok)
        mask_ms[name] = statistics.mean(steps)
    return compile_ms, mask_ms


def main() -> None:
    from transformers import AutoTokenizer

    config = EngineConfig()
    tokenizer = AutoTokenizer.from_pretrained(cached_dir(locate_model(config.model_path), config.model_cache_dir))
    docs = {name: tokenizer.encode(doc, add_special_tokens=False) for name, doc in EXAMPLES.items()}
    runs = {"llguidance": llguidance_run}
    try:
        import xgrammar  # noqa: F401

        runs["xgrammar"] = xgrammar_run
    except ImportError:
        print("xgrammar is not installed: llguidance alone")
    results = {lib: run(tokenizer, docs) for lib, run in runs.items()}
    print(f"{'schema':8} " + " ".join(f"{lib + ' compile ms':>22} {lib + ' mask ms/step@64':>28}" for lib in results))
    for name in SCHEMAS:
        print(f"{name:8} " + " ".join(f"{c[name]:22.2f} {m[name]:28.3f}" for c, m in results.values()))


if __name__ == "__main__":
    main()
