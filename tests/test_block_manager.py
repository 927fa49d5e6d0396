"""The KV block pool alone: allocation, sharing of prefix blocks, eviction. No model, no torch."""

from inference.boundary import SamplingParams
from inference.engine.block_manager import BlockManager
from inference.engine.sequence import Sequence

SIZE = 4


def seq(i: int, tokens: list[int]) -> Sequence:
    return Sequence(i, list(tokens), SamplingParams(), 10, frozenset({-1}))


def computed(bm: BlockManager, s: Sequence) -> None:
    """What the engine does after the step that computed all of ``s``'s tokens."""
    s.num_computed = s.num_tokens
    bm.commit(s)


def test_a_sequence_takes_blocks_as_it_grows_and_returns_them_all():
    bm = BlockManager(8, SIZE)
    a = seq(0, list(range(6)))
    assert bm.can_allocate(a) and bm.allocate(a) == 0
    assert len(a.block_table) == 2 and bm.num_free == 6
    computed(bm, a)
    a.output_ids += [100, 101, 102]  # 9 tokens: a third block
    assert bm.grow(a, a.num_tokens) and len(a.block_table) == 3
    bm.free(a)
    assert bm.num_free == 8 and a.block_table == []
    stats = bm.stats()
    assert (stats.used, stats.cached) == (0, 1)  # the one full computed block keeps its prefix


def test_a_second_prompt_with_the_same_start_shares_its_full_blocks_by_reference():
    bm = BlockManager(8, SIZE)
    first = seq(0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    bm.allocate(first)
    computed(bm, first)
    follow_up = seq(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])  # the same conversation, longer
    assert bm.allocate(follow_up) == 8  # both full blocks; the partial third is recomputed
    assert follow_up.block_table[:2] == first.block_table[:2]
    assert [bm.blocks[b].ref_count for b in first.block_table[:2]] == [2, 2]
    other = seq(2, [1, 2, 3, 4, 0, 0, 0, 0, 9])
    assert bm.allocate(other) == 4  # shares the first block only: the key covers everything before


def test_at_least_one_token_is_left_to_compute_when_the_whole_prompt_is_cached():
    bm = BlockManager(8, SIZE)
    a = seq(0, list(range(8)))
    bm.allocate(a)
    computed(bm, a)
    bm.free(a)
    again = seq(1, list(range(8)))
    assert bm.allocate(again) == 4  # the last block is computed again: its last token gives logits


def test_cached_blocks_are_evicted_least_recently_used_and_blocks_without_a_key_go_first():
    bm = BlockManager(4, SIZE)
    old, new = seq(0, [1, 1, 1, 1, 9]), seq(1, [2, 2, 2, 2, 9])
    for s in (old, new):
        bm.allocate(s)
        computed(bm, s)
    bm.free(old)
    bm.free(new)
    assert bm.stats().cached == 2
    big = seq(2, [5, 5, 5, 5, 5, 5, 5, 5])  # needs two fresh blocks: the two partial ones first
    bm.allocate(big)
    assert bm.stats().cached == 2
    third = seq(3, [7, 7, 7])  # one more block: a cached one must go, the least recently freed
    bm.allocate(third)
    assert bm.stats().cached == 1
    bm.free(big)
    bm.free(third)
    assert bm.allocate(seq(4, [2, 2, 2, 2, 3])) == 4  # the newer prefix is still there
    assert bm.allocate(seq(5, [1, 1, 1, 1, 3])) == 0  # the older one was evicted


def test_the_pool_refuses_what_it_cannot_hold_and_takes_nothing_then():
    bm = BlockManager(2, SIZE)
    a = seq(0, list(range(12)))
    assert not bm.can_allocate(a)
    b = seq(1, list(range(8)))
    bm.allocate(b)
    assert not bm.grow(b, 9) and len(b.block_table) == 2 and bm.num_free == 0


def test_without_prefix_caching_nothing_is_shared():
    bm = BlockManager(8, SIZE, prefix_caching=False)
    a = seq(0, list(range(9)))
    bm.allocate(a)
    computed(bm, a)
    assert bm.allocate(seq(1, list(range(9)))) == 0


def test_the_cached_count_follows_blocks_through_sharing_eviction_and_frees():
    """``stats().cached`` is kept as blocks move (it is read every step); it must equal a recount."""
    import random

    rng = random.Random(0)
    bm = BlockManager(12, SIZE)
    live: list[Sequence] = []
    for i in range(300):
        new = seq(i, [rng.randrange(3) for _ in range(rng.randrange(1, 14))])  # few distinct prefixes
        if bm.can_allocate(new) and (not live or rng.random() < 0.6):
            bm.allocate(new)
            computed(bm, new)
            live.append(new)
        elif live:
            done = live.pop(rng.randrange(len(live)))
            bm.free(done)
            bm.forget(done)
        recount = sum(1 for b in bm.blocks if b.ref_count == 0 and b.key is not None)
        assert bm.stats().cached == recount
    assert bm.stats().cached > 0


class Copies:
    """Stands in for the KV pool: records ``copy_kv(src, dst, n)`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, src: int, dst: int, n: int) -> None:
        self.calls.append((src, dst, n))


def computed_then_freed(bm: BlockManager, tokens: list[int]) -> list[int]:
    """A sequence of ``tokens`` computed and ended: its blocks stay cached. Returns its table."""
    s = seq(0, tokens)
    bm.allocate(s)
    computed(bm, s)
    table = list(s.block_table)
    bm.free(s)
    return table


def test_a_prompt_sent_again_takes_all_but_its_last_token_by_copying_into_its_own_block():
    copies = Copies()
    bm = BlockManager(8, SIZE, copy_kv=copies)
    first, second = computed_then_freed(bm, list(range(8)))
    again = seq(1, list(range(8)))
    assert bm.allocate(again) == 7  # block 0 shared, 3 tokens of block 1 copied, the last computed
    assert again.block_table[0] == first
    [(src, dst, n)] = copies.calls
    assert (src, n) == (second, 3) and dst == again.block_table[1] != src
    assert bm.blocks[src].ref_count == 0 and bm.blocks[src].key is not None  # still cached, not taken


def test_a_prompt_that_leaves_a_cached_block_midway_copies_the_tokens_before():
    copies = Copies()
    bm = BlockManager(8, SIZE, copy_kv=copies)
    a = seq(0, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    bm.allocate(a)
    computed(bm, a)
    b = seq(1, [1, 2, 3, 4, 5, 6, 0, 0, 0, 0])  # shares block 0 and two tokens of block 1
    assert bm.allocate(b) == 6
    assert copies.calls == [(a.block_table[1], b.block_table[1], 2)]
    c = seq(2, [1, 2, 3, 4, 9, 9, 9])  # block 1 starts differently: nothing to copy
    assert bm.allocate(c) == 4 and len(copies.calls) == 1


def test_the_block_copied_from_is_not_taken_for_the_copy_and_without_room_nothing_is_copied():
    copies = Copies()
    bm = BlockManager(3, SIZE, copy_kv=copies)
    second = computed_then_freed(bm, list(range(8)))[1]  # both blocks cached and free, the third unkeyed
    again = seq(1, list(range(8)))
    assert bm.allocate(again) == 7
    assert copies.calls == [(second, again.block_table[1], 3)] and again.block_table[1] != second
    bm.free(again)
    # 11 tokens leaving block 1 after 3: block 0 shared and two new blocks, but with block 1 held
    # as the source only one other is free: the copy is skipped, block 1 reused (its prefix evicted).
    longer = seq(2, [0, 1, 2, 3, 4, 5, 6, 99, 50, 51, 52])
    assert bm.can_allocate(longer)
    assert bm.allocate(longer) == 4
    assert len(copies.calls) == 1 and second in longer.block_table and bm.blocks[second].key is None
    assert bm.stats().cached == sum(1 for b in bm.blocks if b.ref_count == 0 and b.key is not None)
