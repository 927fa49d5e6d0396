"""Constrained decoding for structured output, with llguidance.

Why llguidance: schemas come from clients, per request, so compile time is latency, and
llguidance compiles them far faster than xgrammar; it is a small wheel with no dependencies
(xgrammar needs triton and tvm-ffi), and it is what vLLM and llama.cpp use. The comparison
(``python -m benchmarks.grammar_libs``) and the masks' share of a step (``benchmarks/structured.py``)
are in docs/structured-output.md.

- ``FormatCompiler`` (one per engine): the tokenizer adapter, built once per tokenizer (about
  a second, in a background thread from the engine's start: it holds the GIL, so startup pays for
  it rather than the first formatted chat and every chat running beside it), and compiled grammars cached by format text. Compile
  work is bounded by llguidance's own fuel limits (``LIMITS``) and the boundary's size limits; an
  unsupported or too large schema is ``InvalidFormat`` with the library's reason.
- ``FormatMasks`` (one per model runner): fills the masks of every formatted row of a step in one
  call (llguidance's executor, in parallel on its own threads) and sets forbidden logits to -inf.
- ``follow``: advances a sequence's matcher with its sampled token; a format that can take no
  more text ends the answer with STOP. EOS is allowed by the mask only where the format can end.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch

from ..boundary import FinishReason, InvalidFormat, InvalidRequest, ResponseFormat, Tools

# Bounds on compile and per-step work, since schemas come from clients. llguidance's documented
# rates: lexer fuel ~50k/ms (so about 10 ms to build a lexer at most), Earley items ~20k/ms.
LIMITS: dict[str, Any] = dict(initial_lexer_fuel=500_000, step_lexer_fuel=200_000, step_max_items=50_000,
              max_lexer_states=50_000, max_grammar_size=100_000, verbose_errors=False)
# How JSON formats let the model space its answer. Compact JSON (no whitespace) puts a small model
# off the indented JSON it was trained on; free whitespace lets it write spaces until maxTokens. So:
# between any two JSON tokens, nothing, one space, or one or two newlines and an indent of up to 20
# (llama.cpp's `space` rule). ``benchmarks/extraction.py`` compares the two on the same texts.
COMPACT_JSON: Any = {"whitespace_flexible": False}
FLEXIBLE_JSON: Any = {"whitespace_flexible": True, "whitespace_pattern": r"(?: |\n{1,2}[ \t]{0,20})"}
JSON_OPTIONS: Any = FLEXIBLE_JSON
CACHE_ENTRIES = 256

_adapters: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_adapters_lock = threading.Lock()


def tokenizer_adapter(tokenizer: Any, eos_ids: Iterable[int], n_vocab: int | None = None) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face (fast) tokenizer, built once per tokenizer object.
    ``n_vocab``: the model's logits width (default: the tokenizer's size)."""
    with _adapters_lock:
        adapter = _adapters.get(tokenizer)
        if adapter is None:
            adapter = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab or len(tokenizer), eos_token=sorted(eos_ids))
            _adapters[tokenizer] = adapter
        return adapter


def grammar_text(fmt: ResponseFormat) -> str:
    """The llguidance grammar for a format."""
    if fmt.json_schema is not None:
        return llguidance.LLMatcher.grammar_from_json_schema(fmt.json_schema, overrides=JSON_OPTIONS)
    if fmt.json_object:
        return llguidance.LLMatcher.grammar_from_json_schema('{"type":"object"}', overrides=JSON_OPTIONS)
    if fmt.regex is not None:
        return llguidance.LLMatcher.grammar_from_regex(fmt.regex)
    return llguidance.grammar_from("choice", json.dumps(list(fmt.choice or ())))


def tools_grammar(tools: Tools) -> str:
    """The llguidance (Lark) grammar of a chat's calls: one or more ``<tool_call>`` blocks, each a
    JSON object naming one offered tool with arguments valid against its schema (JSON spaced as
    ``JSON_OPTIONS``); when not forced, plain text instead, which cannot begin with ``<``."""
    schema = tools.call_schema() | {"x-guidance": JSON_OPTIONS}
    rules = ["start: calls" if tools.forced else "start: TEXT | calls\nTEXT: /[^<\\s](.|\\n)*/",
             'calls: call ("\\n" call)*' if tools.parallel else "calls: call",
             'call: "<tool_call>\\n" body "\\n</tool_call>"',
             "body: %json " + json.dumps(schema, ensure_ascii=False)]
    return "\n".join(rules)


class FormatCompiler:
    """Compiles response formats for one engine's tokenizer. Safe from any thread."""

    def __init__(self, tokenizer: Any, eos_ids: Iterable[int], n_vocab: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.n_vocab = n_vocab
        self._cache: OrderedDict[tuple[str, str], llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.compile_seconds: list[float] = []  # the last compiles (cache misses), for benchmarks
        threading.Thread(target=lambda: self.adapter, name="llguidance-adapter", daemon=True).start()

    @property
    def adapter(self) -> llguidance.LLTokenizer:
        return tokenizer_adapter(self.tokenizer, self.eos_ids, self.n_vocab)

    def compile(self, fmt: ResponseFormat | Tools | None) -> llguidance.LLMatcher | None:
        """A fresh matcher at the start of ``fmt`` (a response format, or a chat's tools; None for
        none); raise InvalidFormat (InvalidRequest naming the tool, for tools) if the library cannot
        follow it. Compiled grammars are cached by the format's text."""
        if fmt is None:
            return None
        if isinstance(fmt, Tools):
            key = ("tools", tools_grammar(fmt))
        else:
            key = (fmt.kind, fmt.json_schema or fmt.regex or json.dumps(fmt.choice))
        with self._lock:
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
        if template is None:
            template = self._build(fmt)
            with self._lock:
                self._cache[key] = template
                if len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return template.deep_copy()

    def _build(self, fmt: ResponseFormat | Tools) -> llguidance.LLMatcher:
        adapter = self.adapter
        started = time.perf_counter()
        try:
            grammar = llguidance.grammar_from("lark", tools_grammar(fmt)) if isinstance(fmt, Tools) else grammar_text(fmt)
        except ValueError as exc:
            raise InvalidFormat(f"cannot be followed: {exc}", fmt.kind if isinstance(fmt, ResponseFormat) else None) from None
        matcher = llguidance.LLMatcher(adapter, grammar, log_level=0, limits=llguidance.LLParserLimits(**LIMITS))
        self.compile_seconds = [*self.compile_seconds[-999:], time.perf_counter() - started]
        probe = matcher.deep_copy()
        if not matcher.is_error():
            probe.compute_bitmask()  # the first step's mask: a format no text can start shows only once it is asked
        if isinstance(fmt, Tools):
            if probe.is_error():
                raise self._tool_error(fmt, probe.get_error())
            return matcher
        if matcher.is_error():
            raise InvalidFormat(f"cannot be followed: {matcher.get_error()}", fmt.kind)
        if probe.is_error():
            raise InvalidFormat("admits no text at all: nothing the model writes can match it", fmt.kind)
        return matcher


    def _tool_error(self, tools: Tools, error: str) -> InvalidRequest:
        """The error naming the first offered tool whose schema cannot be followed alone."""
        for i, tool in enumerate(tools.tools):
            if tool not in tools.offered():
                continue
            try:
                alone = llguidance.LLMatcher(self.adapter, llguidance.LLMatcher.grammar_from_json_schema(tool.parameters),
                                             log_level=0, limits=llguidance.LLParserLimits(**LIMITS))
                reason = alone.get_error() if alone.is_error() else None
            except ValueError as exc:
                reason = str(exc)
            if reason is not None:
                return InvalidRequest(f"tools[{i}].parameters ({tool.name}) cannot be followed: {reason}",
                                      field=f"tools[{i}].parameters")
        return InvalidRequest(f"tools cannot be followed: {error}", field="tools")


class FormatViolation(Exception):
    """A sampled token the format refused (only if masking was bypassed)."""


class FormatDeadEnd(Exception):
    """The format admits no continuation of the text so far, which does not complete it (a regex
    such as ``[0-9]{3}[^\\s\\S]``): the answer can never be the format's."""


def follow(matcher: llguidance.LLMatcher, token: int, reason: FinishReason | None) -> FinishReason | None:
    """Advance ``matcher`` by the sampled ``token``; a format that can take nothing more ends the
    answer with STOP, before any other reason. Raises FormatDeadEnd when this step's mask found
    no token the format allows (the mask put the matcher in error)."""
    if matcher.is_error():
        raise FormatDeadEnd(matcher.get_error())
    if not matcher.consume_token(token):
        raise FormatViolation(f"token {token} is not allowed by the response format: {matcher.get_error()}")
    return FinishReason.STOP if matcher.is_stopped() else reason


class FormatMasks:
    """Masks the logits of formatted rows, all in one call per step."""

    def __init__(self, threads: int | None = None) -> None:
        self._executor: llguidance.LLExecutor | None = None
        self._threads = threads
        self.seconds = 0.0  # time spent masking, all steps
        self.steps = 0  # steps that masked at least one row

    def apply(self, logits: torch.Tensor, seqs: Sequence[Any]) -> None:
        """Set to -inf, in place, every logit the format of row i's sequence forbids (rows whose
        sequence has no ``matcher`` are left alone)."""
        rows = [i for i, s in enumerate(seqs) if s.matcher is not None and not s.matcher.is_error()]
        if not rows:
            return
        started = time.perf_counter()
        if self._executor is None:
            self._executor = llguidance.LLExecutor(self._threads)
        vocab = logits.shape[-1]
        words = (vocab + 31) // 32
        bitmask = np.zeros((len(rows), words), dtype=np.int32)
        self._executor.unsafe_compute_mask_ptr([(seqs[i].matcher, k) for k, i in enumerate(rows)],
                                               bitmask.ctypes.data, words * 4, len(rows))
        allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :vocab].astype(bool)
        forbid = torch.from_numpy(~allowed).to(logits.device, non_blocking=True)
        if len(rows) == len(seqs):  # every row has a format: no gather, no scatter
            logits.masked_fill_(forbid, float("-inf"))
        else:
            index = torch.tensor(rows, device=logits.device)
            logits.index_copy_(0, index, logits.index_select(0, index).masked_fill_(forbid, float("-inf")))
        self.seconds += time.perf_counter() - started
        self.steps += 1
