"""Speculative decoding by prompt lookup: the n-gram index, who is drafted, and, on the real model,
that answers are the same with and without it (both weight modes, batches, stop strings,
streaming, response formats and forced tool calls) while drafts are accepted
where an answer copies its prompt; under sampling, that the rejection rule keeps each token's
distribution."""

from __future__ import annotations

import pytest
import torch
from conftest import chat, engine_like

from inference.boundary import ChatRequest, FinishReason, ResponseFormat, SamplingParams, Tool, ToolMode, Tools
from inference.engine.async_engine import AsyncEngine
from inference.engine.block_manager import BlockManager
from inference.engine.llm_engine import LLMEngine
from inference.engine.lookup import Lookup, Speculator
from inference.engine.model_runner import ModelRunner, distribution, verify_sampled
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import Sequence


def test_lookup_drafts_what_followed_the_latest_longest_match():
    index = Lookup(min_n=2, max_n=3)
    index.extend([1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 2, 3])
    # [2, 3] occurred at 1 and 5 (followed by 9, then by 4): the latest; [7, 2, 3] never did.
    assert index.propose(3) == [4, 5, 7]
    index.extend([4])  # [2, 3, 4] now matches at 5..7, longer than any pair
    assert index.propose(2) == [5, 7]
    assert Lookup().propose(4) == []
    unmatched = Lookup()
    unmatched.extend([1, 2, 3, 4])
    assert unmatched.propose(4) == []


def test_lookup_grown_token_by_token_equals_lookup_built_at_once():
    tokens = [5, 1, 2, 5, 1, 2, 3, 5, 1, 8, 5, 1, 2, 3, 4, 5, 1]
    whole, grown = Lookup(), Lookup()
    whole.extend(tokens)
    for t in tokens:
        grown.extend([t])
    assert whole.propose(4) == grown.propose(4) == [2, 3, 4, 5]


def decoding(i: int, params: SamplingParams, tokens: list[int], new: int = 10) -> Sequence:
    """A sequence past its prefill: ``tokens`` but the last are its prompt, the last its first answer token."""
    seq = Sequence(i, tokens[:-1], params, new, frozenset({-1}))
    seq.output_ids = tokens[-1:]
    seq.num_computed = len(tokens) - 1
    return seq


def test_only_sequences_whose_logits_nothing_changes_are_drafted():
    spec = Speculator(tokens=4, max_batch=4, max_rows=7, first=4)
    copy = [1, 2, 3, 4, 5, 6, 1, 2, 3]
    assert spec.draft(decoding(0, SamplingParams(), copy), rows=7) == [4, 5, 6, 1]
    assert spec.draft(decoding(0, SamplingParams(), copy), rows=2) == [4, 5]
    assert spec.draft(decoding(1, SamplingParams(), copy, new=3), rows=7) == [4]  # 1 generated, 1 drafted, 1 more: 3
    assert spec.draft(decoding(1, SamplingParams(), [1, 2, 3, 4, 1, 2, 5]), rows=7) == []  # [1, 2, 5] never occurred
    assert spec.draft(decoding(0, SamplingParams(temperature=0.7, top_p=0.9), copy), rows=7) == [4, 5, 6, 1]  # the rejection rule
    for params in (SamplingParams(frequency_penalty=0.5), SamplingParams(logprobs=True), SamplingParams(logit_bias=((7, 1.0),))):
        assert spec.draft(decoding(2, params, copy), rows=7) == [], params
    failing = decoding(3, SamplingParams(), copy)
    failing.drafted, failing.accepted = Speculator.PROBATION, 1
    assert spec.draft(failing, rows=7) == []  # its drafts kept failing


def test_a_draft_grows_while_it_is_taken_whole_and_shrinks_to_what_was_taken():
    spec = Speculator(tokens=6, max_batch=4, max_rows=7)
    seq = decoding(0, SamplingParams(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], new=40)
    assert spec.draft(seq, rows=7) == [4, 5]  # a first draft is short
    spec.settle(seq, drafted=2, accepted=2)
    assert spec.draft(seq, rows=7) == [4, 5, 6, 7]  # taken whole: twice as long
    spec.settle(seq, drafted=4, accepted=4)
    assert spec.draft(seq, rows=7) == [4, 5, 6, 7, 8, 9]  # at most ``tokens``
    spec.settle(seq, drafted=6, accepted=1)
    assert spec.draft(seq, rows=7) == [4, 5]  # what was taken, and one more
    spec.settle(seq, drafted=2, accepted=0)
    assert spec.draft(seq, rows=7) == [4]
    assert (seq.drafted, seq.accepted) == (14, 7)


def decoding_plan(sched: Scheduler, seqs: list[Sequence]) -> list:
    for seq in seqs:
        sched.add(seq)
    for s in sched.schedule():  # admits and prefills them
        s.seq.num_computed = s.seq.num_tokens - 1
    return sched.schedule()


def test_the_scheduler_drafts_small_decode_only_steps_within_their_rows_and_never_preempts_for_a_draft():
    copy = [1, 2, 3, 4, 5, 6, 1, 2, 3]
    spec = Speculator(tokens=4, max_batch=2, max_rows=7, first=4)
    plan = decoding_plan(Scheduler(8, 256, BlockManager(64, 4), speculator=spec), [decoding(i, SamplingParams(), copy) for i in range(2)])
    assert [s.draft for s in plan] == [(4, 5, 6, 1), (4,)]  # 7 rows in all: the second gets what is left
    assert all(s.num_new == 1 + len(s.draft) for s in plan)
    plan = decoding_plan(Scheduler(8, 256, BlockManager(64, 4), speculator=spec), [decoding(i, SamplingParams(), copy) for i in range(3)])
    assert all(s.draft == () for s in plan)  # more decodes than max_batch
    sched = Scheduler(8, 256, BlockManager(64, 4), speculator=spec)
    plan = decoding_plan(sched, [decoding(0, SamplingParams(), copy)])
    sched.add(Sequence(9, list(range(20)), SamplingParams(), 4, frozenset({-1})))
    plan = sched.schedule()
    assert len(plan) == 2 and all(s.draft == () for s in plan)  # a prompt chunk in the step: no drafts
    tight = Scheduler(8, 256, BlockManager(3, 4), speculator=spec)
    tight.add(decoding(0, SamplingParams(), copy))
    (s,) = tight.schedule()
    s.seq.num_computed = s.seq.num_tokens - 1
    (s,) = tight.schedule()  # 9 tokens fill 3 blocks of 4 but for one slot: no room for a draft
    assert s.draft == () and tight.preemptions == 0


PROMPTS = [
    "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the old river bank.",
    "Copy this list, one item per line: apples, bananas, cherries, dates, elderberries, figs, grapes.",
    "Extract the name and the city: Maria Lopez moved from Madrid to Berlin in 2019 to work as a nurse.",
    "Fix the spelling and repeat: Ths is a sentnce wth sevral mistaks in it, plese corect them all.",
    "Count from 1 to 25, separated by commas.",
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Explain gravity in one sentence.",
]


def answers(engine: LLMEngine, requests: list) -> list[str]:
    from test_native_weights import run_together

    return run_together(engine, requests)


def test_exact_weights_draft_nothing(llm: LLMEngine):
    """Dense products may round a row differently with the step's size, and exact's answers must
    stay model.generate's: no drafts there."""
    assert engine_like(llm, speculative_tokens=4).scheduler.speculator is None


def test_answers_are_the_same_with_and_without_speculation(native: LLMEngine):
    on, off = engine_like(native, speculative_tokens=4), engine_like(native, speculative_tokens=0)
    requests = [chat(p, max_new_tokens=48) for p in PROMPTS]
    alone_off = [answers(off, [r])[0] for r in requests]
    alone_on = [answers(on, [r])[0] for r in requests]
    assert alone_on == alone_off
    assert on.stats.accepted_tokens > 0.3 * on.stats.draft_tokens > 0  # the copying prompts are drafted right
    assert on.stats.steps < off.stats.steps
    drafted = on.stats.draft_tokens
    assert answers(on, requests[:4]) == answers(off, requests[:4])  # a batch within speculative_max_batch drafts too
    assert on.stats.draft_tokens > drafted
    stopped = [chat(p, max_new_tokens=48, stop=("lazy", "cherries", ", 1")) for p in PROMPTS[:5]]
    assert answers(on, stopped) == answers(off, stopped)


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}}, "required": ["name", "city"]}
EXTRACT = [
    "Extract the name and the city: Maria Lopez moved from Madrid to Berlin in 2019 to work as a nurse.",
    "Extract the name and the city: The painter Hugo Brandt was born in Lyon and still lives there with his two cats.",
    "Extract the name and the city: Dr. Aiko Tanaka opened her clinic in Osaka after ten years in Kyoto.",
]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}


def outcomes(engine: LLMEngine, requests: list) -> list[tuple]:
    """Each request's end, run together: its text and finish reason, or its error's type and text."""
    ids = [engine.add(engine.prepare(r)) for r in requests]
    ends: dict[int, tuple] = {}
    while engine.has_work():
        for out in engine.step():
            if out.completion is not None:
                calls = tuple((c.name, c.arguments) for c in out.completion.tool_calls)  # ids are random
                ends[out.seq_id] = (out.completion.text, out.completion.finish_reason, calls)
            elif out.error is not None:
                ends[out.seq_id] = (type(out.error).__name__, str(out.error), getattr(out.error, "partial_text", None))
    return [ends[i] for i in ids]


def test_greedy_formatted_answers_are_drafted_and_unchanged(native: LLMEngine):
    """A response format or forced tool call drafts what its format takes, and the answer is the
    one decoding a token a step gives: JSON Schema extraction, a JSON object, regexes, a choice and
    a required call, alone and in a batch."""
    on, off = engine_like(native, speculative_tokens=4), engine_like(native, speculative_tokens=0)
    requests = [chat(p, max_new_tokens=40, response_format=ResponseFormat.of(json_schema=PERSON)) for p in EXTRACT]
    requests += [
        chat(PROMPTS[1], max_new_tokens=40, response_format=ResponseFormat.of(json_object=True)),
        chat(PROMPTS[4], max_new_tokens=40, response_format=ResponseFormat.of(regex=r"[0-9]+(, [0-9]+)*")),
        chat(PROMPTS[0], max_new_tokens=40, response_format=ResponseFormat.of(regex=r"The quick brown fox [a-z ]+\.")),
        chat(PROMPTS[0], max_new_tokens=40, response_format=ResponseFormat.of(choice=["The quick brown fox", "A slow dog"])),
        ChatRequest(messages=chat(EXTRACT[0]).messages, params=SamplingParams(max_new_tokens=60),
                    tools=Tools(tools=(Tool.of("get_weather", "Get the weather in a city", WEATHER, 0),), mode=ToolMode.REQUIRED)),
    ]
    alone_off = [outcomes(off, [r])[0] for r in requests]
    alone_on = [outcomes(on, [r])[0] for r in requests]
    assert alone_on == alone_off
    assert alone_off[-1][1] is FinishReason.TOOL_CALLS
    assert on.stats.accepted_tokens > 0.3 * on.stats.draft_tokens > 0  # names, cities and counts are drafted right
    assert on.stats.steps < off.stats.steps
    drafted = on.stats.draft_tokens
    assert outcomes(on, requests[:4]) == outcomes(off, requests[:4])  # a batch within speculative_max_batch drafts too
    assert on.stats.draft_tokens > drafted


def test_a_format_that_admits_nothing_after_the_kept_draft_yields_the_draft_alone():
    """Where the format dead-ends right after the kept draft tokens, the step yields those alone
    (the last one's KV is computed again next step), so the sequence's own matcher meets the dead
    end next step and ends the answer as IncompleteOutput, as decoding a token a step would."""

    class Matcher:
        def __init__(self, dead: bool) -> None:
            self.dead = dead

        def is_error(self) -> bool:
            return self.dead

    class Masks:
        def apply(self, logits: torch.Tensor, seqs: list) -> None:
            logits[:, 3] = 100.0  # the format allows token 3 alone

    runner = object.__new__(ModelRunner)
    runner.device, runner.masks = torch.device("cpu"), Masks()
    out: list = [[5, 6, 9], [7, 8], [4]]
    runner._masked_last(torch.zeros(8, 10), [(0, 2, 2, Matcher(True)), (1, 4, 1, Matcher(False)), (2, 6, 0, Matcher(True))], out)
    assert out == [[5, 6], [7, 3], [3]]  # with nothing kept, the step's one token stands (the real matcher fails it)


def test_sampled_formatted_answers_are_not_drafted(native: LLMEngine):
    """The rejection rule would need each drafted row's mask: sampled formatted answers decode a
    token a step."""
    on = engine_like(native, speculative_tokens=4)
    request = chat(EXTRACT[0], max_new_tokens=40, temperature=0.7, seed=3, response_format=ResponseFormat.of(json_schema=PERSON))
    outcomes(on, [request])
    assert on.stats.draft_tokens == 0


async def streamed(engine: LLMEngine, request) -> tuple[str, int, str, int]:
    """The joined deltas, their token counts summed, the final text and its completion tokens."""
    ae = AsyncEngine(engine)
    await ae.start()
    try:
        text, tokens = "", 0
        async for event in ae.stream(request):
            if hasattr(event, "finish_reason"):
                return text, tokens, event.text, event.usage.completion_tokens
            text += event.text
            tokens += event.tokens
        raise AssertionError("the stream ended without its completion")
    finally:
        await ae.stop()


async def test_a_drafted_stream_equals_the_undrafted_one_and_counts_in_metrics(native: LLMEngine):
    request = chat(PROMPTS[0], max_new_tokens=40)
    on = engine_like(native, speculative_tokens=4)
    got = await streamed(on, request)
    assert got == await streamed(engine_like(native, speculative_tokens=0), request)
    assert got[0] == got[2]
    metrics = AsyncEngine(on).metrics.registry  # a fresh engine's series start at zero
    assert metrics.get_sample_value("smollm_spec_decode_num_draft_tokens_total") == 0
    ae = AsyncEngine(engine_like(native, speculative_tokens=4))
    await ae.start()
    try:
        await (await ae.submit([request]))[0].result()
    finally:
        await ae.stop()
    drafted = ae.metrics.registry.get_sample_value("smollm_spec_decode_num_draft_tokens_total")
    accepted = ae.metrics.registry.get_sample_value("smollm_spec_decode_num_accepted_tokens_total")
    assert drafted and accepted and 0 < accepted <= drafted


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=3),
                                    SamplingParams(temperature=1.3, top_p=0.8), SamplingParams(temperature=1.0, min_p=0.1)])
def test_the_rejection_rule_keeps_each_tokens_distribution(params: SamplingParams):
    """Over many draws, the first token is distributed as row 0's distribution and the second,
    after the draft's first was kept, as row 1's: what sampling one token a step gives. Drafted
    tokens both likely and unlikely (a rule that kept drafts too often would inflate them)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0], [0.0, 1.5, 1.0, 2.0, -0.5], [1.0, 0.0, 0.0, 1.0, 0.0]])
    expected = []
    for row in logits[:2]:
        probs, index = distribution(row, params)
        full = torch.zeros(5)
        full[index if index is not None else torch.arange(5)] = probs / probs.sum()
        expected.append(full)
    trials = 6000
    for draft in ([1, 3], [0, 4]):
        generator = torch.Generator().manual_seed(7)
        first, second = torch.zeros(5), torch.zeros(5)
        for _ in range(trials):
            out = verify_sampled(logits, draft, params, generator)
            assert 1 <= len(out) <= 3 and out[:-1] == draft[:len(out) - 1]  # a kept prefix of the draft, then one drawn
            assert len(out) == 3 or out[-1] != draft[len(out) - 1]  # a refused draft token is never drawn in its place
            first[out[0]] += 1
            if out[0] == draft[0]:
                second[out[1]] += 1
        assert (first / trials - expected[0]).abs().max() < 0.03, (draft, first / trials, expected[0])
        if second.sum() > 500:
            assert (second / second.sum() - expected[1]).abs().max() < 0.05, (draft, second / second.sum(), expected[1])


def test_sampled_answers_are_drafted_and_a_seed_repeats_its_answer(native: LLMEngine):
    on = engine_like(native, speculative_tokens=4)
    request = chat(PROMPTS[0], max_new_tokens=40, temperature=0.5, seed=11)
    first = answers(on, [request])
    assert on.stats.draft_tokens > 0 and on.stats.accepted_tokens > 0
    assert answers(on, [request]) == first
    assert "quick brown fox" in first[0]
