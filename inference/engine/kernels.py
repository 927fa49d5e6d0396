"""Matrix products on a GGUF's blocks as stored (``ggml_kernels.c``), built once with the system's C
compiler into the model cache and loaded with ctypes.

Why our own: torch's CPU int4 kernel takes bf16 activations only (bf16 GEMMs are slow past a row or
two on CPUs without AVX-512 BF16) and has no Q8_0 at all. These take fp32 activations and
dequantize each weight as the dequantized model holds it: a decode step reads 6 bits per weight
(the block's 4-bit quants and its two scales, held as fp32; 9 bits for the head), and from 8 rows
up each weight is dequantized once for all rows (panels), near the FMA peak of the cores. Besides
the products, the file holds the rest of a native layer (norm, rotary, KV write, SiLU, paged
attention), and a step's layers in one call where every row attends alone.
They need x86-64 with AVX2 and FMA and a C compiler with OpenMP; ``load`` says why not otherwise, and
the engine then runs ``exact``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch  # first: the kernels' OpenMP runtime resolves to the one torch already loaded

from .gguf_weights import Q4Weight, Q8Weight
from .kv_cache import Decodes
from .shape import Shape

SOURCE = Path(__file__).with_name("ggml_kernels.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC", "-lm")
CPU_FLAGS = ("avx2", "fma")


class KernelsUnavailable(RuntimeError):
    """This machine cannot build or run the block kernels."""


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def digest() -> str:
    """Of the source and the flags: names the built library (and keys the kernel calibration)."""
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class Kernels:
    """Thin typed calls; every tensor must be contiguous where the C side says rows of a width
    (checked by the callers' construction, not here: these run hundreds of times a step)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        p, i, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        self._q4 = _fn(lib.q4_1_matmul, p, i, i, p, p, p, i, p, ctypes.c_int)
        self._q8 = _fn(lib.q8_0_matmul, p, i, i, p, p, i, p, ctypes.c_int)
        self._rms_norm = _fn(lib.rms_norm, p, i, i, p, f, p)
        self._rope = _fn(lib.rope, p, i, i, i, i, p, p, p)
        self._kv_write = _fn(lib.kv_write, p, i, i, i, i, i, p, p, p)
        self._silu_mul = _fn(lib.silu_mul, p, i, i, p)
        self._decode_attention = _fn(lib.decode_attention, p, i, p, i, p, i, p, i, p, p, i, i, i, f, p)
        self._decode_layers = _fn(lib.decode_layers, p, i, p, i, i, i, i, i, i, f, f, p, p, p, p, p, p, i, p, i,
                                  p, p, p, p, p)
        self.max_group = ctypes.c_int64.in_dll(lib, "max_group").value  # query heads per KV head, at most
        self.layer_fields = ctypes.c_int64.in_dll(lib, "layer_fields").value  # addresses per layer, in order

    def unfit(self, shape: Shape) -> str | None:
        """Why a model's shapes do not fit the kernels (blocks of 32, vectors of 8), or None."""
        s = shape
        if s.hidden % 32 or s.intermediate % 32:
            return f"hidden ({s.hidden}) and intermediate ({s.intermediate}) sizes must be multiples of 32"
        if s.head_dim % 8 or s.heads % s.kv_heads or s.heads // s.kv_heads > self.max_group:
            return f"{s.heads} heads over {s.kv_heads} KV heads of {s.head_dim} do not fit the C attention"
        return None

    def q4_1(self, x: torch.Tensor, w: Q4Weight, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [M, K] @ W.T`` for fp32 ``x``; with ``out``, added to it in place."""
        x = x.contiguous()
        y = x.new_empty(x.shape[0], w.d.shape[0]) if out is None else out
        if x.shape[0]:
            self._q4(_ptr(x), x.shape[0], x.shape[1], _ptr(w.qs), _ptr(w.d), _ptr(w.m), y.shape[1], _ptr(y), out is not None)
        return y

    def q8_0(self, x: torch.Tensor, w: Q8Weight) -> torch.Tensor:
        x = x.contiguous()
        y = x.new_empty(x.shape[0], w.d.shape[0])
        if x.shape[0]:
            self._q8(_ptr(x), x.shape[0], x.shape[1], _ptr(w.qs), _ptr(w.d), y.shape[1], _ptr(y), False)
        return y

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y = torch.empty_like(x)
        self._rms_norm(_ptr(x), x.shape[0], x.shape[1], _ptr(weight), eps, _ptr(y))
        return y

    def rope(self, x: torch.Tensor, heads: int, dim: int, positions: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> None:
        """In place on the first ``heads`` heads of each row of ``x`` (queries, then keys)."""
        self._rope(_ptr(x), x.shape[0], x.stride(0), heads, dim, _ptr(positions), _ptr(cos), _ptr(sin))

    def kv_write(self, x: torch.Tensor, k_off: int, v_off: int, width: int, slots: torch.Tensor,
                 k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
        self._kv_write(_ptr(x), x.shape[0], x.stride(0), k_off, v_off, width, _ptr(slots), _ptr(k_pool), _ptr(v_pool))

    def silu_mul(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        y = x.new_empty(x.shape[0], half)
        self._silu_mul(_ptr(x), x.shape[0], half, _ptr(y))
        return y

    def decode_attention(self, q: torch.Tensor, index: torch.Tensor, tables: torch.Tensor, lengths: torch.Tensor,
                         block_size: int, k_pool: torch.Tensor, v_pool: torch.Tensor, heads: int, dim: int,
                         scale: float, out: torch.Tensor) -> None:
        """Rows ``index`` of ``out [N, heads * dim]`` from the queries at the same rows of ``q``
        (row stride ``q.stride(0)``), each over its sequence's first ``lengths`` keys in the pool."""
        self._decode_attention(_ptr(q), q.stride(0), _ptr(index), index.shape[0], _ptr(tables), tables.stride(0),
                               _ptr(lengths), block_size, _ptr(k_pool), _ptr(v_pool), heads, k_pool.shape[-2], dim,
                               scale, _ptr(out))

    def decode_layers(self, x: torch.Tensor, layers: torch.Tensor, shape: Shape, positions: torch.Tensor,
                      cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor, decodes: Decodes, block_size: int,
                      scale: float) -> None:
        """``x [M, hidden]`` through every layer in place, for a step whose rows all attend alone
        (``decodes.index`` holds every row once). ``layers [L, layer_fields]``: each layer's
        addresses, as ``LayerBlocks`` in the C source orders them."""
        n = x.shape[0]
        assert decodes.index.shape[0] == n, "every row must attend alone"
        q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        h, attn = torch.empty_like(x), x.new_empty(n, q_dim)
        qkv, gu, act = x.new_empty(n, q_dim + 2 * kv_dim), x.new_empty(n, 2 * shape.intermediate), x.new_empty(n, shape.intermediate)
        self._decode_layers(_ptr(x), n, _ptr(layers), layers.shape[0], shape.hidden, shape.heads, shape.kv_heads,
                            shape.head_dim, shape.intermediate, shape.eps, scale, _ptr(positions), _ptr(cos), _ptr(sin),
                            _ptr(slots), _ptr(decodes.index), _ptr(decodes.tables), decodes.tables.stride(0),
                            _ptr(decodes.lengths), block_size, _ptr(h), _ptr(qkv), _ptr(attn), _ptr(gu), _ptr(act))


def _fn(f: Any, *argtypes: Any) -> Any:
    f.argtypes, f.restype = list(argtypes), None
    return f


@functools.cache
def load(cache_dir: Path) -> Kernels:
    """The kernels, compiled into ``cache_dir`` on first use (about a second); raises
    ``KernelsUnavailable`` with the reason on a machine that cannot have them."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise KernelsUnavailable(f"the block kernels are x86-64 (AVX2) code; this is {platform.machine()}")
    missing = [f for f in CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        raise KernelsUnavailable(f"this CPU lacks {', '.join(missing)}")
    target = cache_dir / f"ggml_kernels-{digest()}.so"
    if not target.is_file():
        _build(target)
    return Kernels(ctypes.CDLL(str(target)))


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise KernelsUnavailable("no C compiler (gcc or $CC) to build the block kernels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", suffix=".so", delete=False) as f:
        tmp = Path(f.name)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            raise KernelsUnavailable(f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()[-500:]}")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
