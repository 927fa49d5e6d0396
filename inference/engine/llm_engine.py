"""The synchronous engine: requests in, one step at a time, outputs out.

``prepare`` validates and tokenizes (safe from any thread); ``add``, ``abort`` and ``step`` belong
to the one thread that drives the engine.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..boundary import (
    ChatRequest,
    Completion,
    EngineError,
    EngineFault,
    EngineInfo,
    FinishReason,
    IncompleteOutput,
    PromptTooLong,
    RequestCancelled,
    Timings,
    TokenLogprob,
    Usage,
)
from ..boundary.request import prompt_messages
from ..boundary.tools import parse_calls
from .block_manager import BlockManager
from .config import EngineConfig
from .detokenizer import IncrementalText
from .lookup import Speculator
from .model_loader import ModelSource, load_model, locate_model
from .prompt import PromptEncoder
from .scheduler import Scheduler
from .sequence import Sequence
from .structured import FormatCompiler, FormatDeadEnd, FormatViolation, follow

if TYPE_CHECKING:
    from .model_runner import ModelRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A request that passed validation: it fits the context and its options are in range."""

    request: ChatRequest
    prompt_ids: list[int]
    max_new_tokens: int
    arrived: float
    matcher: Any = None  # structured output: a fresh matcher of its response format, or None


@dataclass(frozen=True)
class StepOutput:
    """What one step produced for one sequence: a text delta, and its end if it ended."""

    seq_id: int
    delta: str = ""
    completion: Completion | None = None
    error: EngineError | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of this step's token, when the request asked


@dataclass
class EngineCounters:
    """The step loop's own counters; only its thread writes them."""

    steps: int = 0
    tokens_generated: int = 0
    prompt_tokens: int = 0  # prompt tokens computed
    cached_prompt_tokens: int = 0  # prompt tokens reused from the prefix cache
    last_batch_size: int = 0
    draft_tokens: int = 0  # speculative decoding: tokens drafted by prompt lookup
    accepted_tokens: int = 0  # of which the model's greedy choice confirmed
    step_seconds: float = 0.0  # wall time inside step(), all of it
    forward_seconds: float = 0.0  # of which the model's forward pass


class LLMEngine:
    def __init__(self, config: EngineConfig, model, tokenizer, source: ModelSource | None = None) -> None:
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.max_model_len = min(config.max_model_len, model.config.max_position_embeddings)
        import torch  # imported when an engine is built, not before

        from .kv_cache import KVPool
        from .model_loader import resolve_dtype
        from .model_runner import ModelRunner, build_llama

        llama, self.weights = build_llama(model, config, source)
        log.info("weights: %s (%s)", self.weights.mode, self.weights.reason)
        shape = llama.shape
        num_blocks = -(-config.kv_cache_tokens // config.kv_block_size)
        kv_dtype = resolve_dtype(config.kv_dtype, "cpu") if config.kv_dtype != "auto" else (
            torch.bfloat16 if llama.native else llama.embed.dtype)  # native computes attention in bf16
        pool = KVPool(shape.layers, num_blocks, config.kv_block_size, shape.kv_heads, shape.head_dim,
                      kv_dtype, llama.embed.device)
        self.runner: ModelRunner = ModelRunner(llama, pool)
        blocks = BlockManager(num_blocks, config.kv_block_size, config.prefix_caching, copy_kv=pool.copy_prefix)
        # Drafts only where each row of a step is summed as it would be alone (the block kernels
        # below their panels); dense products' rounding may depend on the step's size.
        speculator = None
        rows = min(llama.kernels.panel_rows - 1, llama.int4_max_rows) if llama.kernels is not None else 0
        if config.speculative_tokens and llama.uses_kernels(pool) and rows > 1:
            speculator = Speculator(config.speculative_tokens, config.speculative_max_batch, rows)
        self.scheduler = Scheduler(config.max_running, config.max_prefill_tokens, blocks, on_admit=self._count_cached,
                                   speculator=speculator)
        self.eos_ids = frozenset(self._eos_ids())
        self.prompts = PromptEncoder(tokenizer, parse_special=config.parse_special_tokens)
        self.formats = FormatCompiler(tokenizer, self.eos_ids, model.config.vocab_size)  # structured output
        self.stats = EngineCounters()
        self._seqs: dict[int, Sequence] = {}
        self._ids = itertools.count()
        self._pieces: dict[int, str] = {}  # token id -> its text alone (bounded by the vocabulary)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        import torch

        from .kernels import release_threads

        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        source = locate_model(config.model_path)
        model, tokenizer = load_model(source, config.model_cache_dir, config.device, config.dtype)
        engine = cls(config, model, tokenizer, source)
        release_threads()  # loading ran parallel regions on this thread; the step loop's must be the only team
        return engine

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        eos = self.model.generation_config.eos_token_id
        ids |= set(eos) if isinstance(eos, list) else {eos}
        return {i for i in ids if isinstance(i, int) and i != self.tokenizer.unk_token_id}

    def prepare(self, request: ChatRequest) -> Prepared:
        """Validate and tokenize; raise InvalidRequest or PromptTooLong. Safe from any thread."""
        request.validate(self.config.max_new_tokens_cap)
        request.params.check_vocabulary(self.model.config.vocab_size)
        if request.prompt_ids is not None:
            ids = list(request.prompt_ids)
        elif request.template:
            ids = self.prompts.encode(prompt_messages(request))
        else:
            ids = self.prompts.encode_text(request.messages[-1].content)
        max_new = request.params.max_new_tokens or self.config.default_max_new_tokens
        if len(ids) + max_new > self.max_model_len:
            raise PromptTooLong(len(ids), max_new, self.max_model_len)
        tools = request.tools if request.tools is not None and request.tools.active else None
        matcher = self.formats.compile(tools or request.params.response_format)  # structured output, or calls
        return Prepared(request, list(ids), max_new, time.perf_counter(), matcher)

    def answers(self, prepared: Prepared) -> list[Prepared]:
        """The request's ``n`` answers, one Prepared each: answer ``i`` samples with ``seed + i``
        (vLLM's rule) and has a matcher of its own (matchers hold state; grammars are cached)."""
        params = prepared.request.params
        out = [prepared]
        for i in range(1, params.n):
            seed = None if params.seed is None else params.seed + i
            request = replace(prepared.request, params=replace(params, seed=seed))
            out.append(replace(prepared, request=request, matcher=self.formats.compile(params.response_format)))
        return out

    def add(self, prepared: Prepared, seq_id: int | None = None, parent: int | None = None) -> int:
        """Queue a prepared request; ``parent``: the sequence of another answer to the same prompt,
        whose prefill this one waits for and shares."""
        seq_id = next(self._ids) if seq_id is None else seq_id
        params = prepared.request.params
        seq = Sequence(seq_id, prepared.prompt_ids, params, prepared.max_new_tokens, self.eos_ids,
                       arrived=prepared.arrived, request_id=prepared.request.request_id, priority=prepared.request.priority,
                       text=IncrementalText(self.tokenizer, params.stop), matcher=prepared.matcher,
                       parent=None if parent is None else self._seqs.get(parent),
                       calls=prepared.request.tools is not None and prepared.request.tools.active,
                       prompt_logprobs=[] if prepared.request.prompt_logprobs else None)
        self._seqs[seq_id] = seq
        self.scheduler.add(seq)
        return seq_id

    def abort(self, seq_id: int) -> StepOutput | None:
        """Drop a sequence wherever it is; its slot is free for the next step."""
        if seq_id not in self._seqs:
            return None
        return self._end(seq_id, FinishReason.CANCELLED, RequestCancelled("request cancelled"))

    def _count_cached(self, seq: Sequence) -> None:
        self.stats.cached_prompt_tokens += min(seq.num_computed, len(seq.prompt_ids))

    def fail_all(self, error: EngineError) -> list[StepOutput]:
        """End every sequence with ``error`` (the step loop itself failed)."""
        return [self._end(seq_id, FinishReason.ERROR, error) for seq_id in list(self._seqs)]

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[StepOutput]:
        started = time.perf_counter()
        plan = self.scheduler.schedule()
        if not plan:
            return []
        for s in plan:
            if s.seq.scheduled_at is None:
                s.seq.scheduled_at = started
        try:
            tokens = self.runner.step(plan)
            self.stats.forward_seconds += self.runner.last_forward_seconds
        except Exception as exc:
            log.exception("model step failed; ending %d requests", len(plan))
            fault = EngineFault(f"model step failed: {type(exc).__name__}")
            return [self._end(s.seq.seq_id, FinishReason.ERROR, fault) for s in plan]
        sampled = [s for s in plan if s.samples]
        verified = {s.seq.seq_id: t for s, t in zip(sampled, tokens, strict=True) if s.draft and isinstance(t, list)}
        self._count(plan, verified)
        self.scheduler.commit(plan)
        outputs: list[StepOutput] = []
        for s, token in zip(sampled, tokens, strict=True):
            if isinstance(token, Exception):
                outputs.append(self._sampling_failed(s.seq, token))
                continue
            for t in token if isinstance(token, list) else [token]:  # a verified draft: its tokens in order
                outputs.append(self._advance(s.seq, t))
                if outputs[-1].completion is not None or outputs[-1].error is not None:
                    break  # ended (EOS, length, a stop string): the rest of the draft is not the answer
        self.stats.step_seconds += time.perf_counter() - started
        return outputs

    def _count(self, plan: list, verified: dict[int, list[int]]) -> None:
        """``verified``: for each drafted sequence, the tokens its step yields (the accepted draft
        tokens and one more, or, where its format admits nothing after them, those alone); it
        computed the KV of all but the last of them."""
        for s in plan:
            seq = s.seq
            if not seq.prefill_done:
                self.stats.prompt_tokens += s.num_new
            if s.draft:
                tokens = verified.get(seq.seq_id)  # None: its sampling failed
                yielded = 1 if tokens is None else len(tokens)
                # The yield ends with a token of the model's own unless it is all draft.
                accepted = 0 if tokens is None else yielded - (tuple(tokens) != s.draft[:yielded])
                seq.num_computed += yielded
                assert self.scheduler.speculator is not None  # only it drafts
                self.scheduler.speculator.settle(seq, len(s.draft), accepted)
                self.stats.draft_tokens += len(s.draft)
                self.stats.accepted_tokens += accepted
                self.stats.tokens_generated += yielded
            else:
                seq.num_computed += s.num_new
                self.stats.tokens_generated += s.samples
        self.stats.steps += 1
        self.stats.last_batch_size = len(plan)

    def _sampling_failed(self, seq: Sequence, exc: Exception) -> StepOutput:
        log.error("sampling failed for sequence %d: %r", seq.seq_id, exc)
        return self._end(seq.seq_id, FinishReason.ERROR, EngineFault(f"sampling failed: {type(exc).__name__}"))

    def _advance(self, seq: Sequence, token: int) -> StepOutput:
        text = seq.text
        reason = seq.append(token)
        logprobs = self._logprob(seq) if seq.params.logprobs else ()
        if seq.matcher is not None:  # structured output: advance; a complete format ends with STOP
            try:
                reason = follow(seq.matcher, token, reason)
            except FormatViolation as exc:
                return self._sampling_failed(seq, exc)
            except FormatDeadEnd:
                return self._end(seq.seq_id, FinishReason.ERROR, IncompleteOutput(
                    "the response format admits no continuation of the answer so far, which does not complete it",
                    text.text))
        delta, stopped = text.push(token) if token not in self.eos_ids else ("", False)
        if stopped:
            reason = FinishReason.STOP
        if reason is None:
            return StepOutput(seq.seq_id, delta, logprobs=logprobs)
        out = self._end(seq.seq_id, reason)
        return StepOutput(seq.seq_id, delta + out.delta, out.completion, logprobs=logprobs)

    def _logprob(self, seq: Sequence) -> tuple[TokenLogprob, ...]:
        """The TokenLogprob of the token just sampled, kept on the sequence for its Completion too."""
        if seq.logprob is None:
            return ()
        entry = self._entry(seq.logprob)
        seq.logprob = None
        seq.logprobs.append(entry)
        return (entry,)

    def _entry(self, kept: tuple[int, float, list[int], list[float]]) -> TokenLogprob:
        """The TokenLogprob of a (token, logprob, top ids, top logprobs) the model runner kept."""
        token, logprob, top_ids, top_values = kept
        piece = self._piece
        return TokenLogprob(token=piece(token), logprob=logprob, top=tuple((piece(t), v) for t, v in zip(top_ids, top_values, strict=True)))

    def _piece(self, token: int) -> str:
        """A token's text alone (its logprob entry's), decoded once per token id."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.tokenizer.decode([token])
        return text

    def _end(self, seq_id: int, reason: FinishReason, error: EngineError | None = None) -> StepOutput:
        seq = self._seqs.pop(seq_id)
        text = seq.text
        self.scheduler.finish(seq, reason)
        if error is not None:
            return StepOutput(seq_id, error=error)
        generated = [t for t in seq.output_ids if t not in self.eos_ids]
        rest = text.finish(generated)
        now = time.perf_counter()
        ms = lambda t: None if t is None else (t - seq.arrived) * 1000.0
        answer, calls = parse_calls(text.text) if seq.calls and reason is FinishReason.STOP else (text.text, ())
        completion = Completion(
            request_id=seq.request_id, text=answer, finish_reason=FinishReason.TOOL_CALLS if calls else reason,
            usage=Usage(prompt_tokens=len(seq.prompt_ids), completion_tokens=len(seq.output_ids)),
            timings=Timings(queued_ms=ms(seq.scheduled_at), first_token_ms=ms(seq.first_token_at), total_ms=(now - seq.arrived) * 1000.0),
            logprobs=tuple(seq.logprobs) if seq.params.logprobs else None,
            tool_calls=calls,
            prompt_logprobs=None if seq.prompt_logprobs is None else tuple(self._entry(e) for e in seq.prompt_logprobs),
        )
        return StepOutput(seq_id, rest, completion)


def engine_info(engine: LLMEngine) -> EngineInfo:
    param = next(engine.model.parameters())
    source = engine.source
    return EngineInfo(
        name=source.name if source else type(engine.model).__name__,
        source=source.path.name if source else "",  # the file's name: its path is the server's business
        parameters=sum(p.numel() for p in engine.model.parameters()),
        context_length=engine.max_model_len,
        device=str(param.device),
        dtype=str(param.dtype).removeprefix("torch."),
        max_new_tokens_cap=engine.config.max_new_tokens_cap,
        default_max_new_tokens=engine.config.default_max_new_tokens,
        max_running=engine.config.max_running,
        max_waiting=engine.config.max_waiting,
        weights=engine.weights.mode,
        kv_cache_tokens=engine.runner.pool.num_blocks * engine.runner.pool.block_size,
        kv_cache_bytes=engine.runner.pool.nbytes,
    )
