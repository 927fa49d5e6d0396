"""The scheduler alone: no model, no torch."""

from inference.boundary import FinishReason, SamplingParams
from inference.engine.block_manager import BlockManager
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import Sequence, Status


def seq(i: int, prompt_len: int) -> Sequence:
    return Sequence(i, list(range(prompt_len)), SamplingParams(), 10, frozenset({-1}))


def run_plan(plan) -> None:
    """What the engine does after a step: advance, and sample where the plan says so."""
    sampled = [s.seq for s in plan if s.samples]
    for s in plan:
        s.seq.num_computed += s.num_new
    for q in sampled:
        q.append(7)


def test_new_prompts_are_prefilled_together_and_then_decode_one_token_each():
    sch = Scheduler(max_running=4, max_prefill_tokens=100)
    a, b = seq(0, 5), seq(1, 7)
    sch.add(a)
    sch.add(b)
    plan = sch.schedule()
    assert [(s.seq, s.num_new, s.samples) for s in plan] == [(a, 5, True), (b, 7, True)]
    run_plan(plan)
    assert [(s.seq, s.num_new) for s in sch.schedule()] == [(a, 1), (b, 1)]


def test_long_prompt_is_chunked_and_decodes_keep_running():
    sch = Scheduler(max_running=4, max_prefill_tokens=8)
    short, long_ = seq(0, 3), seq(1, 20)
    sch.add(short)
    run_plan(sch.schedule())
    sch.add(long_)
    plans = []
    while not long_.output_ids:
        plan = sch.schedule()
        plans.append([(s.seq.seq_id, s.num_new) for s in plan])
        run_plan(plan)
    # The decoding sequence advances every step while the long prompt goes in 8-token chunks.
    assert plans == [[(0, 1), (1, 8)], [(0, 1), (1, 8)], [(0, 1), (1, 4)]]


def test_running_is_capped_and_finishing_frees_the_place_for_the_next_in_line():
    sch = Scheduler(max_running=2, max_prefill_tokens=100)
    seqs = [seq(i, 3) for i in range(3)]
    for s in seqs:
        sch.add(s)
    run_plan(sch.schedule())
    assert [s.status for s in seqs] == [Status.RUNNING, Status.RUNNING, Status.WAITING]
    sch.finish(seqs[0], FinishReason.STOP)
    assert seqs[0].block_table == []
    plan = sch.schedule()
    assert plan[-1].seq is seqs[2] and seqs[2].block_table


def test_admission_waits_for_free_blocks_not_for_a_slot():
    sch = Scheduler(max_running=100, max_prefill_tokens=1000, blocks=BlockManager(10, 4))
    seqs = [seq(i, 7) for i in range(6)]  # two blocks each: five fit in the pool
    for s in seqs:
        sch.add(s)
    sch.schedule()
    assert [s.status for s in seqs].count(Status.RUNNING) == 5 and seqs[5].status is Status.WAITING


def test_a_dry_pool_preempts_the_newest_sequence_which_resumes_with_its_tokens():
    sch = Scheduler(max_running=4, max_prefill_tokens=100, blocks=BlockManager(4, 4))
    old, new = seq(0, 4), seq(1, 4)  # one full block each; each needs a second to decode
    sch.add(old)
    sch.add(new)
    run_plan(sch.schedule())  # both prefilled, each sampled a token: 5 tokens, 2 blocks each
    plan = sch.schedule()
    assert [(s.seq, s.num_new) for s in plan] == [(old, 1), (new, 1)]
    run_plan(plan)
    while not sch.preemptions:  # old grows into a third block: the pool is dry, new is preempted
        run_plan(sch.schedule())
    assert new.status is Status.WAITING and new.num_computed == 0 and new.block_table == []
    assert (len(old.block_table), new.output_ids) == (3, [7] * 5)  # new keeps what it produced
    sch.finish(old, FinishReason.STOP)
    plan = sch.schedule()
    assert [(s.seq, s.num_new, s.samples) for s in plan] == [(new, 9, True)]  # prompt and its tokens again


def test_finishing_a_waiting_sequence_removes_it():
    sch = Scheduler(max_running=1, max_prefill_tokens=100)
    a, b = seq(0, 3), seq(1, 3)
    sch.add(a)
    sch.add(b)
    sch.schedule()
    sch.finish(b, FinishReason.CANCELLED)
    assert list(sch.waiting) == [] and b.status is Status.FINISHED
    sch.finish(a, FinishReason.CANCELLED)
    assert not sch.has_work()


def test_on_admit_can_skip_a_cached_prefix():
    def reuse(s: Sequence) -> None:
        s.num_computed = 6

    sch = Scheduler(max_running=2, max_prefill_tokens=100, on_admit=reuse)
    a = seq(0, 10)
    sch.add(a)
    [planned] = sch.schedule()
    assert (planned.num_new, planned.samples) == (4, True)


def test_interactive_requests_are_admitted_before_batch_items_that_came_first():
    sch = Scheduler(max_running=2, max_prefill_tokens=100)
    jobs = [seq(i, 3) for i in range(3)]
    for j in jobs:
        j.priority = 1  # BATCH
        sch.add(j)
    chat_a, chat_b = seq(10, 3), seq(11, 3)
    sch.add(chat_a)
    sch.add(chat_b)
    late_job = seq(4, 3)
    late_job.priority = 1
    sch.add(late_job)
    assert list(sch.waiting) == [chat_a, chat_b, *jobs, late_job]  # FCFS within each priority
    assert [s.seq for s in sch.schedule()] == [chat_a, chat_b]

