"""The model side of a step: packing, one forward pass, sampling.

All tokens of a step (decodes and prefill chunks of many sequences) are packed into one row and
run through ``Llama.forward`` (our own forward over the paged KV pool), so every projection sees
one matrix with no padding. Logits are computed only for positions that sample.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from ..boundary import SamplingParams
from .config import EngineConfig
from .kernels import Kernels
from .kv_cache import Decodes, KVPool, Prefill, StepLayout
from .llama import Llama
from .model_loader import ModelSource, file_digest
from .penalties import apply_penalties
from .scheduler import Scheduled
from .sequence import Sequence
from .shape import Shape
from .structured import FormatMasks
from .topk import argmax, top_k

log = logging.getLogger(__name__)

# native: prompt chunks up to this many tokens attend row by row, in C, and run every layer in one
# call; longer ones attend through torch. A short prompt's prefill took 15-20% less at 50 to 230
# tokens than through torch (docs/performance.md).
ROW_ATTENTION_CHUNK = 256
INT4_CALIBRATION_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# fp32 panels stop at 256: a whole 512-token prompt chunk ran faster dense in the engine where gate/up
# alone timed faster on the blocks. bf16 panels won the whole chunk too (docs/performance.md).
FP32_PANELS_MAX_ROWS = 256
CALIBRATION_LAYERS = 10  # layers each timing runs through: more weights than the CPU's caches hold
CALIBRATION_VERSION = 4  # what a kept calibration must say to be used (2: weights from memory; 3: up to 256 rows; 4: bf16 panels to 512)
HEAD_CALIBRATION_ROWS = (1, 4, 16, 64, 128, 256)


@dataclass(frozen=True)
class WeightsPlan:
    """What ``weights=auto`` resolved to, and why (for the log and ``/metrics``)."""

    mode: str  # "exact" or "native"
    reason: str


def weights_plan(config: EngineConfig, source: ModelSource | None, device: torch.device) -> WeightsPlan:
    if config.weights == "exact":
        return WeightsPlan("exact", "WEIGHTS=exact")
    if device.type != "cpu":
        if config.weights == "native":
            log.warning("WEIGHTS=native runs CPU block kernels; on %s the exact weights are used", device)
        return WeightsPlan("exact", f"{device.type}: its own dense kernels")
    if source is None or source.kind != "gguf":
        return WeightsPlan("exact", "not a GGUF file: no quantized weights to use")
    return WeightsPlan("native", "a GGUF on CPU: its Q4_1 and Q8_0 blocks as stored")


def build_llama(model, config: EngineConfig, source: ModelSource | None) -> tuple[Llama, WeightsPlan]:
    """The forward for ``config.weights``; native falls back to exact (logged) when the GGUF holds
    other quantizations than Q4_1."""
    device = next(model.parameters()).device
    plan = weights_plan(config, source, device)
    if plan.mode == "exact" or source is None:
        return Llama(model), plan
    from .gguf_weights import UnsupportedQuantization, load_native_weights
    from .kernels import KernelsUnavailable, load

    shape = Shape.of(model.config)
    try:
        kernels = panel_kernels(load(), config.panel_dtype)
        why = kernels.unfit(shape)
        if why:
            raise KernelsUnavailable(why)
        native = load_native_weights(source.path, file_digest(source.path), config.model_cache_dir,
                                     shape.layers, shape.heads, shape.kv_heads)
    except (UnsupportedQuantization, KernelsUnavailable) as exc:
        log.warning("native weights unavailable (%s); using exact weights", exc)
        return Llama(model), WeightsPlan("exact", str(exc))
    llama = Llama(model, native, kernels, int4_max_rows=1)
    # one file for each panel dtype: a switch between them does not measure again
    int4_rows, head_rows = calibration(llama, config.model_cache_dir / f"{source.path.stem}-calibration-{kernels.panels}.json")
    llama.int4_max_rows = config.int4_max_rows or int4_rows
    llama.q8_head_rows = head_rows
    return llama, plan


def panel_kernels(kernels: Kernels, dtype: str) -> Kernels:
    """``kernels`` with their panels (steps of many tokens) in ``dtype`` (``EngineConfig.panel_dtype``):
    bf16 where asked or ``auto`` and the CPU has AVX512-BF16; asked for on a CPU without it, fp32, logged."""
    if dtype == "bfloat16" and not kernels.bf16_supported:
        log.warning("PANEL_DTYPE=bfloat16 needs AVX512-BF16, which this CPU lacks; steps of many tokens multiply in float32")
    chosen = kernels.with_bf16_panels(dtype in ("auto", "bfloat16") and kernels.bf16_supported)
    log.info("steps of %d tokens or more multiply in %s", chosen.panel_rows, chosen.panels)
    return chosen


def machine_key(panels: str) -> str:
    """What the kernel crossovers depend on: the CPU, torch's threads and version, our kernels' build
    and what their panels multiply in."""
    from .kernels import digest

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return (f"{cpu or platform.machine()}|threads={torch.get_num_threads()}|torch={torch.__version__}|kernels={digest()}"
            f"|panels={panels}")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def calibration(llama: Llama, path: Path) -> tuple[int, int]:
    """``(int4_max_rows, q8_head_rows)``, measured on this machine once (a few seconds, at ``warm``
    or the first start) and kept in ``path`` for this CPU, thread count, torch version and panels."""
    key = machine_key(llama.kernels.panels if llama.kernels is not None else "fp32")
    try:
        saved = json.loads(path.read_text())
        if saved.get("machine") == key and saved.get("version") == CALIBRATION_VERSION:
            return int(saved["int4_max_rows"]), int(saved["q8_head_rows"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rows = calibrate_int4_rows(llama), calibrate_q8_head_rows(llama)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": key, "version": CALIBRATION_VERSION, "int4_max_rows": rows[0],
                                   "q8_head_rows": rows[1]}))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not keep the kernel calibration in %s: %s", path, exc)
    return rows


def calibrate_int4_rows(llama: Llama) -> int:
    """The largest step (tokens) for which the 4-bit kernel beats the dense one, timed on the
    largest projection (gate/up): 4-bit weights win while a step is memory-bound, dense fp32 (MKL)
    once it is compute-bound, and where depends on the CPU. Each timing runs the projection of
    several layers in turn, so that the weights come from memory, as in a step, not from a cache
    they stay in. One crossover serves every projection: a step whose projections all take the
    blocks runs its layers in one C call, which a choice per projection gave up above the smallest
    crossover, and the 64-client load lost more there than the products gained (docs/performance.md)."""
    layers = llama.layers[::max(1, len(llama.layers) // CALIBRATION_LAYERS)][:CALIBRATION_LAYERS]
    blocks = [layer.blocks.gate_up for layer in layers if layer.blocks is not None]
    dense = [layer.dense.gate_up for layer in layers]
    bf16 = llama.kernels is not None and llama.kernels.bf16_panels
    sizes = tuple(r for r in INT4_CALIBRATION_ROWS if bf16 or r <= FP32_PANELS_MAX_ROWS)
    best = crossover(sizes, llama.shape.hidden, _each(blocks), _each(dense), repeats=3, reps=1)
    log.info("4-bit kernel for steps of up to %d tokens, dense above", best)
    return max(best, 1)


def _each(projections: Iterable[Callable[[torch.Tensor], object]]) -> Callable[[torch.Tensor], object]:
    ps = list(projections)
    return lambda x: [p(x) for p in ps]


def calibrate_q8_head_rows(llama: Llama) -> int:
    """Up to how many sampled rows the Q8_0 head (a quarter of fp32's bytes) beats the fp32 one."""
    kernels, head_q8, head = llama.kernels, llama.head_q8, llama.lm_head
    if kernels is None or head_q8 is None:
        return 0
    best = crossover(HEAD_CALIBRATION_ROWS, llama.shape.hidden, lambda x: kernels.q8_0(x, head_q8),
                     lambda x: F.linear(x, head), repeats=3, reps=2)
    log.info("Q8_0 head for steps sampling up to %d rows, fp32 above", best)
    return best


def crossover(sizes: tuple[int, ...], width: int, fast: Callable[[torch.Tensor], object],
              slow: Callable[[torch.Tensor], object], repeats: int, reps: int) -> int:
    """The largest of ``sizes`` (rows, increasing) up to which ``fast`` beats ``slow``, 0 if none:
    the two alternate, best of ``repeats`` timings of ``reps`` calls each. The scan ends at the
    second size in a row that ``slow`` wins, so one timing spoiled by other work on the machine
    does not end it early (the result is kept for good)."""
    best, losses = 0, 0
    with torch.inference_mode():
        for rows in sizes:
            x = torch.randn(rows, width)
            fast_s, slow_s = [], []
            for _ in range(repeats):
                fast_s.append(_time(lambda x=x: fast(x), reps))
                slow_s.append(_time(lambda x=x: slow(x), reps))
            if min(fast_s) < min(slow_s):
                best, losses = rows, 0
            else:
                losses += 1
                if losses == 2:
                    break
    return best


def _time(fn, reps: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return time.perf_counter() - started


class ModelRunner:
    """Runs steps of the model for a list of scheduled sequences and samples their next tokens."""

    def __init__(self, llama: Llama, pool: KVPool) -> None:
        self.llama = llama
        self.pool = pool
        self.device = llama.embed.device
        self.block_size = pool.block_size
        self.last_forward_seconds = 0.0
        self.masks = FormatMasks()
        # The C attention takes each query row with its own length, so a short prompt chunk's
        # tokens attend like decoding ones (no gather, no torch attention call per layer).
        self.rows_attend_alone = llama.uses_kernels(pool)

    @torch.inference_mode()
    def step(self, plan: list[Scheduled]) -> list[int | list[int] | Exception]:
        """Compute the plan's tokens; return, for each entry whose ``samples`` is set, its next
        token (or why sampling failed); for a drafted entry, the tokens verified: greedy, the draft's
        longest prefix the model's choice agrees with, then the model's own next token (under its
        format's mask, if any; none where the format admits nothing after the kept draft); sampling,
        what ``verify_sampled`` keeps of the draft, then one token drawn."""
        ids, positions, layout, keep = self._pack(plan)
        scored = self._prompt_rows(plan)
        if scored:
            keep = torch.cat([keep, self._long([row for _, rows, _ in scored for row in rows])])
        started = time.perf_counter()
        logits = self.llama.forward(ids, positions, layout, self.pool, keep)
        self.last_forward_seconds = time.perf_counter() - started
        sampled = [s for s in plan if s.samples]
        rows = sum(1 + len(s.draft) for s in sampled)
        if scored:
            self._score_prompts(logits[rows:], scored)
        if not any(s.draft for s in sampled):
            return list(self._sample(logits[:rows], [s.seq for s in sampled]))
        return self._verify(logits[:rows], sampled)

    def _verify(self, logits: torch.Tensor, sampled: list[Scheduled]) -> list[int | list[int] | Exception]:
        """``_sample`` for the undrafted entries (one row each); for the drafted ones (their
        ``1 + len(draft)`` rows, in order) greedy verification, or the rejection rule of
        ``verify_sampled`` for those that sample."""
        plain: list[tuple[int, int]] = []  # (index in sampled, first row)
        drafted: list[tuple[int, int]] = []
        at = 0
        for i, s in enumerate(sampled):
            (drafted if s.draft else plain).append((i, at))
            at += 1 + len(s.draft)
        out: list[int | list[int] | Exception] = [0] * len(sampled)
        if plain:
            picked = self._sample(logits[self._long([r for _, r in plain])], [sampled[i].seq for i, _ in plain])
            for (i, _), token in zip(plain, picked, strict=True):
                out[i] = token
        for i, r in [(i, r) for i, r in drafted if not sampled[i].seq.params.greedy]:
            s = sampled[i]
            try:
                out[i] = verify_sampled(logits[r:r + 1 + len(s.draft)].float(), s.draft, s.seq.params, self._generator(s.seq))
            except Exception as exc:
                out[i] = exc
        spans = [(i, r, len(sampled[i].draft)) for i, r in drafted if sampled[i].seq.params.greedy]
        if not spans:
            return out
        choice = argmax(logits[self._long([r + j for _, r, k in spans for j in range(k + 1)])].float()).tolist()
        at = 0
        formatted: list[tuple[int, int, int, Any]] = []  # (index in sampled, row, draft tokens kept, matcher there)
        for i, r, k in spans:
            draft, own = sampled[i].draft, choice[at:at + k + 1]
            agreed = next((j for j in range(k) if own[j] != draft[j]), k)
            out[i] = [*draft[:agreed], own[agreed]]
            at += k + 1
            matcher = sampled[i].seq.matcher
            if matcher is not None:
                if agreed:
                    matcher = matcher.deep_copy()
                    matcher.consume_tokens(list(draft[:agreed]))  # the scheduler's draft is what the format takes
                formatted.append((i, r + agreed, agreed, matcher))
        if formatted:
            self._masked_last(logits, formatted, out)
        return out

    def _masked_last(self, logits: torch.Tensor, formatted: list[tuple[int, int, int, Any]],
                     out: list[int | list[int] | Exception]) -> None:
        """The last token of each formatted drafted entry: the greedy choice under its format's
        mask where its kept draft tokens leave the format (the draft tokens themselves needed
        none, see ``Speculator``). A format that admits nothing there (a dead end) keeps only the
        draft tokens, so the next step finds the dead end on the sequence's own matcher."""
        rows = logits[self._long([row for _, row, _, _ in formatted])].float()
        self.masks.apply(rows, [SimpleNamespace(matcher=m) for _, _, _, m in formatted])
        picked = argmax(rows).tolist()
        for (i, _, agreed, matcher), token in zip(formatted, picked, strict=True):
            kept = out[i]
            assert isinstance(kept, list)
            out[i] = kept[:agreed] if agreed and matcher.is_error() else [*kept[:agreed], token]

    @staticmethod
    def _prompt_rows(plan: list[Scheduled]) -> list[tuple[Sequence, list[int], list[int]]]:
        """For each prefilling sequence that asks for its prompt's logprobs: the packed rows whose
        logits predict one of its prompt tokens, and those tokens (a row predicts the next token)."""
        out, start = [], 0
        for s in plan:
            seq, p0 = s.seq, s.seq.num_computed
            if seq.prompt_logprobs is not None and p0 < len(seq.prompt_ids):
                last = min(p0 + s.num_new, len(seq.prompt_ids) - 1)  # the last prompt row predicts the answer
                if last > p0:
                    out.append((seq, list(range(start, start + last - p0)), seq.prompt_ids[p0 + 1:last + 1]))
            start += s.num_new
        return out

    @staticmethod
    def _score_prompts(logits: torch.Tensor, scored: list[tuple[Sequence, list[int], list[int]]]) -> None:
        """Append each prompt token's (token, logprob, top ids, top logprobs) to its sequence."""
        tokens = [t for _, _, ts in scored for t in ts]
        k = max(seq.params.top_logprobs for seq, _, _ in scored)
        picked, ids, values = logprob_rows(logits.float(), tokens, k)
        at = 0
        for seq, _, ts in scored:
            n = seq.params.top_logprobs
            assert seq.prompt_logprobs is not None  # chosen by _prompt_rows for that
            seq.prompt_logprobs += [(t, picked[at + i], ids[at + i][:n], values[at + i][:n]) for i, t in enumerate(ts)]
            at += len(ts)

    def _pack(self, plan: list[Scheduled]) -> tuple[torch.Tensor, torch.Tensor, StepLayout, torch.Tensor]:
        size = self.block_size
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        keep: list[int] = []
        decodes: list[tuple[int, Sequence, int]] = []  # packed index, sequence, kv length
        chunks: list[tuple[int, int, Sequence, int]] = []
        for s in plan:
            seq, start, p0 = s.seq, len(ids), s.seq.num_computed
            table = seq.block_table
            ids += seq.tokens(p0, p0 + s.num_new - len(s.draft)) + list(s.draft)
            pos += range(p0, p0 + s.num_new)
            slots += [table[p // size] * size + p % size for p in range(p0, p0 + s.num_new)]
            if s.num_new == 1 or (self.rows_attend_alone and s.num_new <= ROW_ATTENTION_CHUNK):
                decodes += [(start + i, seq, p0 + i + 1) for i in range(s.num_new)]  # each its causal length
            else:
                chunks.append((start, len(ids), seq, p0))
            if s.samples:
                keep += range(len(ids) - 1 - len(s.draft), len(ids))
        prefills = [Prefill(start, end, p0, self._tables([seq], p0 + end - start), self._prefix_mask(p0, end - start))
                    for start, end, seq, p0 in chunks]
        layout = StepLayout(self._long(slots), self._decodes(decodes) if decodes else None, prefills)
        return self._long(ids), self._long(pos), layout, self._long(keep)  # keep is empty when no chunk ends a prompt

    def _long(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _tables(self, seqs: list[Sequence], length: int) -> torch.Tensor:
        """Block tables ``[len(seqs), blocks]`` covering ``length`` tokens (padded with block 0:
        keys there are masked out)."""
        n = -(-length // self.block_size)
        return torch.tensor([(s.block_table[:n] + [0] * n)[:n] for s in seqs], dtype=torch.long, device=self.device)

    def _decodes(self, decodes: list[tuple[int, Sequence, int]]) -> Decodes:
        lengths = torch.tensor([d[2] for d in decodes])
        longest = int(lengths.max())
        tables = self._tables([d[1] for d in decodes], longest)
        mask = torch.arange(tables.shape[1] * self.block_size)[None, :] < lengths[:, None]
        return Decodes(self._long([d[0] for d in decodes]), tables, lengths.to(self.device),
                       mask[:, None, None, :].to(self.device))

    def _prefix_mask(self, pos0: int, n: int) -> torch.Tensor | None:
        if pos0 == 0:
            return None
        q_pos = torch.arange(pos0, pos0 + n)[:, None]
        return (torch.arange(pos0 + n)[None, :] <= q_pos).to(self.device)

    def _sample(self, logits: torch.Tensor, seqs: list) -> list[int | Exception]:
        """One token per sequence; a sequence whose sampling fails gets its exception instead,
        and only that sequence ends with an error."""
        logits = logits.float().contiguous()
        wanted = [i for i, seq in enumerate(seqs) if seq.params.logprobs]
        raw = None  # before penalties and masks (vLLM's default)
        if wanted:
            raw = logits.clone() if len(wanted) == len(seqs) else logits.index_select(0, self._long(wanted))
        apply_penalties(logits, seqs)
        self.masks.apply(logits, seqs)  # structured output: formatted rows, one batched call
        out: list[int | Exception] = list(argmax(logits).tolist())
        for i, seq in enumerate(seqs):
            if not seq.params.greedy:
                try:
                    out[i] = sample_token(logits[i], seq.params, self._generator(seq))
                except Exception as exc:
                    out[i] = exc
        if raw is not None:
            keep_logprobs(raw, [seqs[i] for i in wanted], [out[i] for i in wanted])
        return out

    def _generator(self, seq) -> torch.Generator:
        gen = seq.generator
        if gen is None:
            gen = torch.Generator(device=self.device)
            if seq.params.seed is None:
                gen.seed()
            else:
                gen.manual_seed(seq.params.seed)
            seq.generator = gen
        return gen


def logprob_rows(raw: torch.Tensor, tokens: list[int], k: int) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """Per row of logits: the log probability of ``tokens[row]``, and the ``k`` likeliest tokens'
    ids and log probabilities (one log-sum-exp, one gather, one top-k by blocks, one copy to Python)."""
    peak = raw.amax(-1, keepdim=True)
    lse = (raw - peak).exp_().sum(-1, keepdim=True).log_() + peak
    chosen = torch.tensor(tokens, dtype=torch.long, device=raw.device)
    picked = (raw.gather(1, chosen[:, None]) - lse)[:, 0].tolist()
    if not k:
        return picked, [[] for _ in tokens], [[] for _ in tokens]
    top_values, top_ids = top_k(raw, k)
    return picked, top_ids.tolist(), (top_values - lse).tolist()


def keep_logprobs(raw: torch.Tensor, seqs: list, tokens: list[int | Exception]) -> None:
    """Each row's chosen token's log probability under ``raw`` (logits) and its ``top_logprobs``
    likeliest, kept on each sequence as ``seq.logprob``."""
    picked, ids, values = logprob_rows(raw, [t if isinstance(t, int) else 0 for t in tokens],
                                       max(seq.params.top_logprobs for seq in seqs))
    for r, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
        if isinstance(token, int):
            n = seq.params.top_logprobs
            seq.logprob = (token, picked[r], ids[r][:n], values[r][:n])


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token drawn from ``distribution(logits, params)``."""
    probs, index = distribution(logits, params)
    choice = torch.multinomial(probs, 1, generator=generator)
    return int(choice if index is None else index[choice])


def verify_sampled(logits: torch.Tensor, draft: tuple[int, ...] | list[int], params: SamplingParams, generator: torch.Generator) -> list[int]:
    """Speculative sampling's rejection rule for a draft that proposes each token with certainty
    (prompt lookup): row ``j`` of ``logits`` (``len(draft) + 1`` rows) keeps draft token ``d`` with
    probability ``p_j(d)`` under ``distribution``; the first token refused is replaced by a draw
    from ``p_j`` without ``d``, renormalized, and when all are kept the last row draws one more.
    Each token so comes out distributed as sampling one a step would give it (Leviathan et al.,
    2023: accept with ``min(1, p/q)``, else draw from ``max(0, p - q)``, here with ``q`` one-hot;
    vLLM's rejection sampler does the same for its n-gram drafts)."""
    out: list[int] = []
    for j, d in enumerate(draft):
        probs, index = distribution(logits[j], params)
        at = d if index is None else next(iter((index == d).nonzero()[:, 0].tolist()), -1)
        p = float(probs[at] / probs.sum()) if at >= 0 else 0.0
        if float(torch.rand((), generator=generator, device=generator.device)) < p:
            out.append(d)
            continue
        if at >= 0:
            probs = probs.clone()
            probs[at] = 0.0
        choice = torch.multinomial(probs, 1, generator=generator)
        out.append(int(choice if index is None else index[choice]))
        return out
    out.append(sample_token(logits[len(draft)], params, generator))
    return out


def distribution(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probabilities one row of logits is sampled from: temperature, then min-p, then top-k,
    then top-p (nucleus). Returns them with the token ids they stand for, or None where they span
    the whole vocabulary in order (unnormalized after top-p; ``torch.multinomial`` normalizes).

    Numerically safe for every valid option: temperatures below ``GREEDY_BELOW`` never get here
    (they are greedy), and top-p always keeps the likeliest token, however small ``top_p`` is."""
    logits = logits / params.temperature
    if params.min_p > 0.0:
        logits = min_p_filter(logits, params.min_p)
    index = None
    if params.top_k:  # topk returns the largest first, as top-p needs
        logits, index = logits.topk(min(params.top_k, logits.numel()))
    elif params.top_p < 1.0:
        logits, index = logits.sort(descending=True)
    probs = logits.softmax(-1)
    if params.top_p < 1.0:
        drop = probs.cumsum(-1) - probs >= params.top_p
        drop[0] = False
        probs = probs.masked_fill(drop, 0.0)
    return probs, index


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """``logits`` with every token less likely than ``min_p`` times the likeliest set to -inf (the
    likeliest always stays)."""
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))
