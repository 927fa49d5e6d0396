"""The C kernels alone, without the model: random blocks and activations against the dense torch
reference, the argument checks of the binding, and the same tests once more under AddressSanitizer
and UBSan (a build of its own, in a child process).

``KERNELS_MODULE`` names the build the tests load (the sanitized run sets it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.engine.gguf_weights import Q4Weight, Q8Weight
from inference.engine.kernels import KernelError, Kernels, load
from inference.engine.kv_cache import Decodes, KVPool, StepLayout, paged_attention
from inference.engine.shape import Shape

MODULE = os.environ.get("KERNELS_MODULE", "inference.engine._kernels")


@pytest.fixture(scope="module")
def kernels() -> Kernels:
    return load(MODULE)


def q4(n: int, k: int, g: torch.Generator) -> Q4Weight:
    return Q4Weight(torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g),
                    (torch.rand(n, k // 32, generator=g) / 100).half(), (-torch.rand(n, k // 32, generator=g) / 50).half())


def q8(n: int, k: int, g: torch.Generator) -> Q8Weight:
    return Q8Weight(torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g), (torch.rand(n, k // 32, generator=g) / 100).half())


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 11, 12, 16, 17, 24, 70, 130])
@pytest.mark.parametrize(("n", "k"), [(11, 64), (64, 1536)])
def test_block_products_equal_the_dense_product_of_the_dequantized_blocks(kernels: Kernels, rows: int, n: int, k: int):
    """Every path: one row, row tiles of 1 to 4 or 8 (and several, up to 11 rows), panels of 16 and 8 rows with a tail
    of row tiles, more rows than one pass over the panels; an odd number of output features and a
    panel of fewer than 6; K past one chunk of the panels (1536)."""
    g = torch.Generator().manual_seed(rows * 1000 + n)
    w4, w8, x = q4(n, k, g), q8(n, k, g), torch.randn(rows, k, generator=g)
    torch.testing.assert_close(kernels.q4_1(x, w4), x @ w4.dequantize().T, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(kernels.q8_0(x, w8), x @ w8.dequantize().T, rtol=1e-4, atol=1e-3)
    base = torch.randn(rows, n, generator=g)
    out = base.clone()
    kernels.q4_1(x, w4, out=out)
    torch.testing.assert_close(out, base + x @ w4.dequantize().T, rtol=1e-4, atol=1e-3)


def test_each_row_of_a_step_below_the_panels_is_its_one_row_product_to_the_bit(kernels: Kernels):
    """Below the panels, a row's product does not depend on the rows beside it: a drafted step's
    rows are what decoding them one at a time would compute."""
    g = torch.Generator().manual_seed(7)
    w4, w8, x = q4(13, 1536, g), q8(13, 1536, g), torch.randn(kernels.panel_rows - 1, 1536, generator=g)
    for rows in range(2, kernels.panel_rows):
        assert torch.equal(kernels.q4_1(x[:rows], w4), torch.cat([kernels.q4_1(x[i:i + 1], w4) for i in range(rows)]))
        assert torch.equal(kernels.q8_0(x[:rows], w8), torch.cat([kernels.q8_0(x[i:i + 1], w8) for i in range(rows)]))


def test_wide_row_tiles_sum_as_avx2_tiles_to_the_bit(kernels: Kernels):
    """Where the CPU has AVX-512VL, steps below the panels take 8 rows a tile instead of 4: the same
    sums in the same order, so the same products to the bit, whatever the rows or the kind."""
    if not kernels.wide_row_tiles():
        pytest.skip("this CPU lacks AVX-512VL: the row tiles take 4 rows")
    g = torch.Generator().manual_seed(11)
    w4, w8, x = q4(13, 1536, g), q8(13, 1536, g), torch.randn(kernels.panel_rows - 1, 1536, generator=g)
    try:
        for rows in range(1, kernels.panel_rows):
            wide = kernels.q4_1(x[:rows], w4), kernels.q8_0(x[:rows], w8)
            assert not kernels.wide_row_tiles(False)
            narrow = kernels.q4_1(x[:rows], w4), kernels.q8_0(x[:rows], w8)
            assert kernels.wide_row_tiles(True)
            assert torch.equal(wide[0], narrow[0]) and torch.equal(wide[1], narrow[1]), rows
    finally:
        kernels.wide_row_tiles(True)


@pytest.fixture(scope="module")
def bf16(kernels: Kernels) -> Kernels:
    if not kernels.bf16_supported:
        pytest.skip("this CPU lacks AVX512-BF16: the panels multiply in fp32 only")
    return kernels.with_bf16_panels(True)


def bf16_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` of the operands rounded to bf16 (nearest even), summed in float64."""
    return (x.bfloat16().double() @ w.float().bfloat16().double().T).float()


@pytest.mark.parametrize("rows", [12, 13, 16, 17, 24, 70, 134])
@pytest.mark.parametrize(("n", "k"), [(11, 64), (64, 1536)])
def test_bf16_panels_are_the_product_of_the_operands_rounded_to_bf16(kernels: Kernels, bf16: Kernels, rows: int,
                                                                     n: int, k: int):
    """From ``panel_rows`` rows on, bf16 panels compute the product of x and of the dequantized
    weights each rounded to bf16, with fp32 sums: panels of 16 and 8 rows, a 17th row left to the
    row tiles (in fp32, as without bf16), an odd number of features, K past one chunk."""
    g = torch.Generator().manual_seed(rows * 1000 + n + 1)
    w4, w8, x = q4(n, k, g), q8(n, k, g), torch.randn(rows, k, generator=g)
    panel = rows - rows % 8 if rows % 8 < 4 else rows  # the rest go to row tiles (TAIL_TILE_ROWS in blocks.c)
    for got, fp32, w in ((bf16.q4_1(x, w4), kernels.q4_1(x, w4), w4.dequantize()),
                         (bf16.q8_0(x, w8), kernels.q8_0(x, w8), w8.dequantize())):
        want = bf16_product(x[:panel], w)
        torch.testing.assert_close(got[:panel], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert not torch.equal(got[:panel], fp32[:panel])  # rounded: not the fp32 panels
        assert torch.equal(got[panel:], fp32[panel:])
    base = torch.randn(rows, n, generator=g)
    out = base.clone()
    bf16.q4_1(x, w4, out=out)
    torch.testing.assert_close(out[:panel], base[:panel] + bf16_product(x[:panel], w4.dequantize()), rtol=1e-5, atol=1e-5)


def test_bf16_panels_leave_steps_below_the_panels_in_fp32(kernels: Kernels, bf16: Kernels):
    """Decoding and verified drafts (fewer than ``panel_rows`` rows) multiply as they did."""
    g = torch.Generator().manual_seed(8)
    w4, w8 = q4(13, 1536, g), q8(13, 1536, g)
    for rows in range(1, kernels.panel_rows):
        x = torch.randn(rows, 1536, generator=g)
        assert torch.equal(bf16.q4_1(x, w4), kernels.q4_1(x, w4))
        assert torch.equal(bf16.q8_0(x, w8), kernels.q8_0(x, w8))


def test_layer_ops_equal_torch(kernels: Kernels):
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(13, 96, generator=g), torch.randn(96, generator=g)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-5), F.rms_norm(x, (96,), w, 1e-5), rtol=1e-5, atol=1e-5)
    gu = torch.randn(13, 64, generator=g)
    torch.testing.assert_close(kernels.silu_mul(gu), F.silu(gu[:, :32]) * gu[:, 32:], rtol=1e-5, atol=1e-5)

    heads, dim, positions = 3, 16, torch.randint(0, 50, (13,), generator=g)
    angles = torch.arange(50)[:, None] * torch.rand(dim // 2, generator=g)[None]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    rows = torch.randn(13, heads * dim + 8, generator=g)  # a wider row: only the first heads turn
    got = rows.clone()
    kernels.rope(got, heads, dim, positions, cos, sin)
    v = rows[:, :heads * dim].view(13, heads, dim)
    rotated = torch.cat((-v[..., dim // 2:], v[..., :dim // 2]), -1)
    want = v * cos[positions][:, None] + rotated * sin[positions][:, None]
    torch.testing.assert_close(got[:, :heads * dim].view(13, heads, dim), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[:, heads * dim:], rows[:, heads * dim:])

    k_pool, v_pool = torch.zeros(20, 2, 8, dtype=torch.bfloat16), torch.zeros(20, 2, 8, dtype=torch.bfloat16)
    slots = torch.randperm(20, generator=g)[:13]
    kernels.kv_write(rows, 4, 20, 16, slots, k_pool, v_pool)
    assert torch.equal(k_pool.view(20, 16)[slots], rows[:, 4:20].bfloat16())
    assert torch.equal(v_pool.view(20, 16)[slots], rows[:, 20:36].bfloat16())


def paged(kv_heads: int, dim: int, lengths: list[int], g: torch.Generator, size: int = 16) -> tuple[KVPool, Decodes]:
    """A one-layer bf16 pool of random keys and values, and sequences of ``lengths`` on scattered
    blocks (tables padded with block 0, as the runner pads them), their rows in shuffled order."""
    width = max(-(-n // size) for n in lengths)
    blocks = sum(-(-n // size) for n in lengths)
    pool = KVPool(1, blocks, size, kv_heads, dim, torch.bfloat16, torch.device("cpu"))
    pool.k.copy_(torch.randn(pool.k.shape, generator=g))
    pool.v.copy_(torch.randn(pool.v.shape, generator=g))
    order, used = torch.randperm(blocks, generator=g), 0
    tables = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        need = -(-n // size)
        tables[b, :need] = order[used:used + need]
        used += need
    lens = torch.tensor(lengths)
    mask = (torch.arange(width * size)[None, :] < lens[:, None])[:, None, None, :]
    return pool, Decodes(torch.randperm(len(lengths), generator=g), tables, lens, mask)


@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 2, 64), (3, 3, 16), (6, 3, 40), (8, 1, 32)])
def test_decode_attention_equals_torch_over_the_paged_pool(kernels: Kernels, heads: int, kv_heads: int, dim: int):
    """Sequences within one block, across several, with a partial last block; SmolLM2's head group
    (3 query heads per KV head, dim 64: its own path) and the general path's groups of 1 to 8."""
    g = torch.Generator().manual_seed(heads * 100 + dim)
    pool, d = paged(kv_heads, dim, [1, 16, 17, 70, 33], g)
    q = torch.randn(5, heads, dim, generator=g)
    want = paged_attention(pool, 0, StepLayout(torch.zeros(0, dtype=torch.long), d, []), q, dim ** -0.5)
    got = torch.empty_like(want)
    kernels.decode_attention(q.view(5, -1), d.index, d.tables, d.lengths, pool.block_size, pool.k[0], pool.v[0], heads, dim,
                             dim ** -0.5, got)
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)  # torch rounds to bf16 inside; C stays fp32


@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 2, 64)])
def test_long_sequences_split_into_chunks_equal_torch_and_each_alone(kernels: Kernels, heads: int, kv_heads: int, dim: int):
    """Sequences past 256 keys are split into chunks whose partial softmaxes are combined (SmolLM2's
    head group reads each block's rows whole; the general path per KV head): equal to torch beside
    short ones, and each row equal to the same row alone, since only its own length decides."""
    g = torch.Generator().manual_seed(heads * 7 + dim)
    lengths = [300, 5, 1029, 256, 257, 2000]
    pool, d = paged(kv_heads, dim, lengths, g)
    q = torch.randn(len(lengths), heads, dim, generator=g)
    want = paged_attention(pool, 0, StepLayout(torch.zeros(0, dtype=torch.long), d, []), q, dim ** -0.5)
    got = torch.empty_like(want)
    kernels.decode_attention(q.view(len(lengths), -1), d.index, d.tables, d.lengths, pool.block_size, pool.k[0], pool.v[0],
                             heads, dim, dim ** -0.5, got)
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)
    for b in range(len(lengths)):
        alone = torch.empty(1, heads * dim)
        kernels.decode_attention(q[d.index[b]].reshape(1, -1), torch.zeros(1, dtype=torch.long), d.tables[b:b + 1].contiguous(),
                                 d.lengths[b:b + 1].contiguous(), pool.block_size, pool.k[0], pool.v[0], heads, dim, dim ** -0.5, alone)
        assert torch.equal(alone[0], got[d.index[b]]), lengths[b]


def test_attention_over_many_long_sequences_sharing_blocks(kernels: Kernels):
    """128 sequences of 8,192 keys on the same blocks (one long prompt sent many times): each task's
    scores come from the caller's scratch, so nothing grows with the length on a thread's stack."""
    size, kv_heads, dim, heads, length, rows = 16, 3, 64, 9, 8192, 128
    pool = [torch.randn(length, kv_heads, dim).bfloat16() for _ in range(2)]
    tables = torch.arange(length // size)[None].expand(rows, -1).contiguous()
    out = torch.empty(rows, heads * dim)
    kernels.decode_attention(torch.randn(rows, heads * dim), torch.arange(rows), tables, torch.full((rows,), length), size,
                             pool[0], pool[1], heads, dim, dim ** -0.5, out)
    assert bool(out.isfinite().all())


def test_layers_in_one_call_equal_the_same_kernels_called_layer_by_layer(kernels: Kernels):
    """``decode_layers`` on random blocks against the loop it fuses, called kernel by kernel:
    the same residual stream and the same pool, to the bit."""
    g = torch.Generator().manual_seed(5)
    s = Shape(layers=2, hidden=64, heads=6, kv_heads=2, head_dim=16, intermediate=96, eps=1e-5)
    q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
    weights = [{"qkv": q4(q_dim + 2 * kv_dim, s.hidden, g), "o": q4(s.hidden, q_dim, g),
                "gate_up": q4(2 * s.intermediate, s.hidden, g), "down": q4(s.hidden, s.intermediate, g),
                "attn_norm": torch.rand(s.hidden, generator=g), "mlp_norm": torch.rand(s.hidden, generator=g)}
               for _ in range(s.layers)]
    one_layer, d = paged(s.kv_heads, s.head_dim, [5, 17, 1], g, size=8)  # its block tables, for a pool of 2 layers
    pool = KVPool(s.layers, one_layer.num_blocks, 8, s.kv_heads, s.head_dim, torch.bfloat16, torch.device("cpu"))
    d = Decodes(torch.arange(3), d.tables, d.lengths, d.mask)  # row b: sequence b's newest token
    positions = d.lengths - 1
    slots = torch.stack([d.tables[b, p // 8] * 8 + p % 8 for b, p in enumerate(positions.tolist())])
    angles = torch.arange(64)[:, None] * torch.rand(s.head_dim // 2, generator=g)[None]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    x0 = torch.randn(3, s.hidden, generator=g)

    want, want_pool = x0.clone(), (pool.k.clone(), pool.v.clone())
    for i, w in enumerate(weights):
        qkv = kernels.q4_1(kernels.rms_norm(want, w["attn_norm"], s.eps), w["qkv"])
        kernels.rope(qkv, s.heads + s.kv_heads, s.head_dim, positions, cos, sin)
        kernels.kv_write(qkv, q_dim, q_dim + kv_dim, kv_dim, slots, want_pool[0][i], want_pool[1][i])
        attn = torch.empty(3, q_dim)
        kernels.decode_attention(qkv, d.index, d.tables, d.lengths, 8, want_pool[0][i], want_pool[1][i], s.heads, s.head_dim,
                                 s.head_dim ** -0.5, attn)
        kernels.q4_1(attn, w["o"], out=want)
        kernels.q4_1(kernels.silu_mul(kernels.q4_1(kernels.rms_norm(want, w["mlp_norm"], s.eps), w["gate_up"])), w["down"],
                     out=want)

    layers = []
    for i, w in enumerate(weights):
        fields = {"attn_norm": w["attn_norm"], "mlp_norm": w["mlp_norm"], "k": pool.k[i], "v": pool.v[i]}
        for name in ("qkv", "o", "gate_up", "down"):
            fields |= {f"{name}_q": w[name].qs, f"{name}_d": w[name].d, f"{name}_m": w[name].m}
        layers.append(fields)
    got = x0.clone()
    kernels.decode_layers(got, kernels.layer_blocks(layers), s, positions, cos, sin, slots, d, 8, s.head_dim ** -0.5)
    assert torch.equal(got, want)
    assert torch.equal(pool.k, want_pool[0]) and torch.equal(pool.v, want_pool[1])


def test_the_binding_refuses_what_the_c_would_misread(kernels: Kernels):
    """A wrong dtype, shape or layout is an error at the call, never a read of the wrong memory."""
    g = torch.Generator().manual_seed(3)
    w, x = q4(8, 64, g), torch.randn(2, 64, generator=g)
    with pytest.raises(KernelError, match="float32"):
        kernels.q4_1(x.double(), w)
    with pytest.raises(KernelError, match="qs: shape"):
        kernels.q4_1(torch.randn(2, 96), w)
    with pytest.raises(KernelError, match="out: shape"):
        kernels.q4_1(x, w, out=torch.zeros(2, 9))
    with pytest.raises(KernelError, match="contiguous"):
        kernels.rms_norm(torch.randn(64, 4).T, torch.ones(64), 1e-5)
    with pytest.raises(TypeError):  # cffi: bf16 (the KV pool's type) where fp16 scales go
        kernels.q4_1(x, Q4Weight(w.qs, w.d.bfloat16(), w.m))
    with pytest.raises(TypeError):  # cffi: a float pointer where the struct holds bytes
        kernels.layer_blocks([{"qkv_q": torch.zeros(4)}])
    with pytest.raises(AttributeError):  # a field kernels.h does not declare
        kernels.layer_blocks([{"qkv_weights": torch.zeros(4)}])


def test_a_kernel_given_too_little_scratch_refuses_and_names_the_size(kernels: Kernels):
    g = torch.Generator().manual_seed(4)
    w, x, y = q4(8, 64, g), torch.randn(20, 64, generator=g), torch.zeros(20, 8)
    ffi, lib = kernels._ffi, kernels._lib
    need = lib.matmul_work(20, 64)
    assert need > 0
    work = torch.full((need,), float("nan"))
    p = kernels.ptr
    assert lib.q4_1_matmul(p(x, "x"), 20, 64, p(w.qs, "qs"), p(w.d, "d"), p(w.m, "m"), 8, p(y, "y"), 0, 0, p(work, "w"), need - 1) == need
    assert bool((y == 0).all())  # refused before writing anything
    assert lib.q4_1_matmul(p(x, "x"), 20, 64, p(w.qs, "qs"), p(w.d, "d"), p(w.m, "m"), 8, p(y, "y"), 0, 0, p(work, "w"), need) == 0
    torch.testing.assert_close(y, x @ w.dequantize().T, rtol=1e-4, atol=1e-3)
    assert ffi.typeof(p(w.qs, "qs")).cname == "uint8_t *"


@pytest.mark.skipif("KERNELS_MODULE" in os.environ, reason="this is the sanitized run")
def test_kernels_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path):
    """The tests above once more on a build with ``-fsanitize=address,undefined``: an out-of-bounds
    read or write, a use after free or undefined arithmetic in a kernel fails this test."""
    from inference.engine.kernels_build import SANITIZE, builder

    builder("_kernels_sanitized", SANITIZE, relative=False).compile(tmpdir=str(tmp_path))
    runtime = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=True).stdout.strip()
               for lib in ("libasan.so", "libubsan.so")]
    env = {**os.environ, "KERNELS_MODULE": "_kernels_sanitized", "LD_PRELOAD": " ".join(runtime),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__],
                          capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert " passed" in done.stdout
    # And the harness sees an overflow: a product told its scratch is longer than it is.
    broken = subprocess.run([sys.executable, "-c", OVERFLOW], capture_output=True, text=True, env=env, timeout=120)
    assert broken.returncode != 0 and "heap-buffer-overflow" in broken.stderr, broken.stderr[-2000:]


OVERFLOW = """
import torch
from inference.engine.kernels import load
k = load("_kernels_sanitized")
x, y, work = torch.randn(20, 64), torch.zeros(20, 8), torch.empty(1000)
qs, d, m = torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 2).half(), torch.ones(8, 2).half()
p = k.ptr
k._lib.q4_1_matmul(p(x, "x"), 20, 64, p(qs, "q"), p(d, "d"), p(m, "m"), 8, p(y, "y"), 0, 0, p(work, "w"), 10**6)
"""
