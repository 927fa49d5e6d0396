"""Which KV blocks each sequence holds: one pool of fixed-size blocks, shared prefixes. No torch.

A sequence's KV lives in ``seq.block_table``: token ``i`` is in block ``block_table[i // size]`` at
offset ``i % size``. Blocks are taken as a sequence grows and returned when it ends.

Prefix caching by block (as in vLLM and nano-vllm): a full block whose KV has been computed is
keyed by a hash of its tokens and of every token before it. A new sequence whose prompt starts
with the same full blocks takes them by reference (``ref_count``) instead of computing them again.
A block nobody references keeps its KV and its key ("cached") until the pool needs it: free
blocks are reused least recently freed first, and blocks without a key go before cached ones.

A prompt that goes on past its last shared full block may still share part of the next one: a
cached block under the same prefix whose first tokens equal the prompt's (the same prompt sent
again, a system prompt that ends mid-block) has those tokens' KV copied into the sequence's own
block (``copy_kv``, given by the engine), as SGLang's radix cache and llama.cpp's slots reuse a
prompt to the token. So a prompt sent again computes only its last token. A sequence with a
running ``parent`` (another answer to the same prompt) copies from the parent's own block, which is
not keyed yet while it is partly filled.

Invariants: a block is in ``_free`` exactly when its ``ref_count`` is 0; ``_by_hash`` maps only
to blocks whose KV is complete for that key; ``_cached_free`` counts the free blocks with a key
(kept as they move, so ``stats``, read every step, costs nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass, field

from .sequence import Sequence


@dataclass(eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    key: int | None = None  # the prefix hash, once the block is full and computed
    tokens: tuple[int, ...] = field(default=())
    parent: int | None = None  # the key of the block before it (None: the first block), with ``key``


@dataclass(frozen=True)
class BlockStats:
    total: int
    used: int  # referenced by a running sequence
    cached: int  # unreferenced, keeping a prefix's KV until the pool needs it
    block_size: int


def prefix_key(parent: int | None, tokens: tuple[int, ...]) -> int:
    return hash((parent, tokens))


def common_prefix(a: Sequence_[int], b: Sequence_[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True,
                 copy_kv: Callable[[int, int, int], None] | None = None) -> None:
        """``copy_kv(src, dst, n)`` copies the KV of block ``src``'s first ``n`` tokens into block
        ``dst`` (every layer); without it, only whole blocks are shared."""
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.copy_kv = copy_kv
        # (parent key, first token) -> keyed blocks under that parent starting with that token
        self._children: dict[tuple[int | None, int], set[int]] = {}
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached_free = 0
        self._by_hash: dict[int, int] = {}
        self._hashed: dict[int, int] = {}  # seq_id -> how many of its leading blocks carry keys
        self._seq_keys: dict[int, list[tuple[int, tuple[int, ...]]]] = {}  # seq_id -> its full blocks' keys

    @property
    def num_free(self) -> int:
        return len(self._free)

    def stats(self) -> BlockStats:
        return BlockStats(len(self.blocks), len(self.blocks) - len(self._free), self._cached_free, self.block_size)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _keys(self, seq: Sequence, n: int) -> list[tuple[int, tuple[int, ...]]]:
        """``(key, tokens)`` of ``seq``'s first ``n`` full blocks, each key chained on the one
        before; computed once per block and kept until ``forget`` (tokens never change)."""
        keys = self._seq_keys.setdefault(seq.seq_id, [])
        size = self.block_size
        while len(keys) < n:
            b = len(keys)
            tokens = tuple(seq.tokens(b * size, (b + 1) * size))
            keys.append((prefix_key(keys[-1][0] if keys else None, tokens), tokens))
        return keys[:n]

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Blocks holding the KV of ``seq``'s leading full blocks; at least one token is left to
        compute (its logits give the next token)."""
        hits: list[int] = []
        if seq.prompt_logprobs is not None:  # every prompt row's logits are wanted: nothing is taken as computed
            return hits
        for key, tokens in self._keys(seq, (seq.num_tokens - 1) // self.block_size):
            block_id = self._by_hash.get(key)
            if block_id is None or self.blocks[block_id].tokens != tokens:
                break
            hits.append(block_id)
        return hits

    def _partial(self, seq: Sequence, hits: list[int]) -> tuple[int, int] | None:
        """``(block, n)``: a cached block under ``seq``'s last shared one whose first ``n`` tokens
        (at least one, leaving one to compute) are ``seq``'s next ones; the longest such."""
        if self.copy_kv is None or not self.prefix_caching or seq.prompt_logprobs is not None:
            return None
        start = len(hits) * self.block_size
        limit = min(self.block_size, seq.num_tokens - 1 - start)
        if limit <= 0:
            return None
        key = self._seq_keys[seq.seq_id][len(hits) - 1][0] if hits else None  # kept by _cached_prefix
        want = seq.tokens(start, start + limit)
        best: tuple[int, int] | None = None
        parent = seq.parent
        if parent is not None and len(parent.block_table) > len(hits) and parent.num_computed > start:
            n = min(common_prefix(parent.tokens(start, start + limit), want), parent.num_computed - start)
            if n:
                best = (parent.block_table[len(hits)], n)
        for block_id in self._children.get((key, want[0]), ()):
            n = common_prefix(self.blocks[block_id].tokens, want)
            if n and (best is None or n > best[1]):
                best = (block_id, n)
        return best

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._cached_prefix(seq)
        reclaimed = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # cached now, in use once taken
        return self.blocks_for(seq.num_tokens) - len(hits) + reclaimed <= len(self._free)

    def allocate(self, seq: Sequence) -> int:
        """Give ``seq`` blocks for all its tokens, shared cached ones first; return how many of its
        tokens are already computed. Call only after ``can_allocate``."""
        assert not seq.block_table
        hits = self._cached_prefix(seq)
        for block_id in hits:
            self._hold(block_id)
        seq.block_table = list(hits)
        self._hashed[seq.seq_id] = len(hits)
        partial = self._partial(seq, hits)
        if partial is not None and self._copy_into_new_block(seq, *partial):
            return len(hits) * self.block_size + partial[1]
        grown = self.grow(seq, seq.num_tokens)
        assert grown, "allocate() without can_allocate()"
        return len(hits) * self.block_size

    def _copy_into_new_block(self, seq: Sequence, src: int, n: int) -> bool:
        """Grow ``seq`` and copy ``src``'s first ``n`` tokens of KV into its first new block;
        ``src`` is held meanwhile, so growing cannot take it. False (nothing done) if the pool
        cannot spare the blocks while holding it."""
        assert self.copy_kv is not None
        self._hold(src)
        first_new = len(seq.block_table)
        grown = self.grow(seq, seq.num_tokens)
        if grown:
            self.copy_kv(src, seq.block_table[first_new], n)
        self._release(src)  # back, if nobody else holds it, as the most recently used cached block
        return grown

    def _hold(self, block_id: int) -> None:
        """One more reference; a block nobody held leaves the free list (it keeps its key)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
            if block.key is not None:
                self._cached_free -= 1
        block.ref_count += 1

    def _release(self, block_id: int) -> None:
        """One reference fewer; at none the block is free again: a keyless one first in line for
        reuse, a cached one last (least recently freed goes first)."""
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self._free[block_id] = None
            if block.key is None:
                self._free.move_to_end(block_id, last=False)
            else:
                self._cached_free += 1

    def grow(self, seq: Sequence, num_tokens: int) -> bool:
        """Make ``seq``'s table cover ``num_tokens`` tokens; False (nothing taken) if the pool is dry."""
        need = self.blocks_for(num_tokens) - len(seq.block_table)
        if need > len(self._free):
            return False
        for _ in range(need):
            block_id, _ = self._free.popitem(last=False)
            block = self.blocks[block_id]
            if block.key is not None:  # evict the prefix it was keeping
                self._cached_free -= 1
                if self._by_hash.get(block.key) == block_id:
                    del self._by_hash[block.key]
                self._children[(block.parent, block.tokens[0])].discard(block_id)
                block.key, block.tokens, block.parent = None, (), None
            block.ref_count = 1
            seq.block_table.append(block_id)
        return True

    def commit(self, seq: Sequence) -> None:
        """Key the full blocks whose KV is now computed, so later prompts can share them."""
        if not self.prefix_caching:
            return
        done = min(seq.num_computed // self.block_size, len(seq.block_table))
        start = self._hashed.get(seq.seq_id, 0)
        if done <= start:
            return
        keys = self._keys(seq, done)
        for b in range(start, done):
            key, tokens = keys[b]
            block = self.blocks[seq.block_table[b]]
            if block.key is None:
                block.key, block.tokens = key, tokens
                block.parent = keys[b - 1][0] if b else None
                self._children.setdefault((block.parent, tokens[0]), set()).add(block.block_id)
                self._by_hash.setdefault(key, block.block_id)
            if block.key != key:  # a shared block: its key is this prefix's by construction
                break
        self._hashed[seq.seq_id] = done

    def free(self, seq: Sequence) -> None:
        """Return ``seq``'s blocks. The last ones go back first, so a prefix outlives its tail;
        blocks without a key are reused before any cached one."""
        for block_id in reversed(seq.block_table):
            self._release(block_id)
        seq.block_table = []
        self._hashed.pop(seq.seq_id, None)

    def forget(self, seq: Sequence) -> None:
        """``seq`` has ended: drop what was kept of it (its blocks are returned by ``free``)."""
        self._seq_keys.pop(seq.seq_id, None)
