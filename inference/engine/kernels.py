"""Matrix products on a GGUF's blocks as stored, and the rest of a native layer, in C (``csrc/``),
called through the cffi binding built at install (``kernels_build.py``).

Why our own: torch's CPU int4 kernel takes bf16 activations only (bf16 GEMMs are slow past a row or
two on CPUs without AVX-512 BF16) and has no Q8_0 at all. These take fp32 activations and
dequantize each weight as the dequantized model holds it; a decode step reads 5 bits per weight
(the block's 4-bit quants and its two fp16 scales; 8.5 bits for the Q8_0 head), as llama.cpp does, and from 12 rows up each
weight is dequantized once for all rows (panels). Besides the products: norm, rotary, KV write,
SiLU, paged decode attention, and a step's layers in one call where every row attends alone.

Each call checks what the C side cannot: that every tensor is on the CPU, of the dtype its C
pointer type names (cffi refuses a pointer of another type), contiguous where the C reads rows of
a width, and of the shapes the arguments imply. The kernels' scratch memory comes from a buffer
per thread, sized by the kernel's own ``*_work`` function.
"""

from __future__ import annotations

import functools
import platform
import threading
from pathlib import Path
from typing import Any

import torch  # first: the kernels' OpenMP runtime resolves to the one torch already loaded

from .gguf_weights import Q4Weight, Q8Weight
from .kernels_build import digest
from .kv_cache import Decodes
from .shape import Shape

__all__ = ["Kernels", "KernelsUnavailable", "digest", "load", "release_threads"]

CPU_FLAGS = ("avx2", "fma", "f16c")
NO_KERNELS = ("WEIGHTS=exact runs the dense weights here, or INFERENCE_URL can point the API at llama.cpp's or vLLM's "
              "server, which have kernels for this machine")
C_TYPES = {torch.float32: "float *", torch.float16: "f16 *", torch.uint8: "uint8_t *", torch.int8: "int8_t *",
           torch.bfloat16: "uint16_t *", torch.int64: "int64_t *"}


class KernelsUnavailable(RuntimeError):
    """This machine cannot run the block kernels (the message says why, and what to use instead)."""


class KernelError(RuntimeError):
    """A kernel was called with arguments it refuses (a bug in the caller, never the user's input)."""


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class Kernels:
    """The C kernels with checked arguments. Tensors are taken as they are: ``x`` arguments must
    already be contiguous fp32 on the CPU (the callers own them), so a call copies nothing."""

    def __init__(self, ffi: Any, lib: Any, bf16_panels: bool = False) -> None:
        self._ffi, self._lib = ffi, lib
        self.max_group: int = lib.MAX_GROUP  # query heads per KV head, at most
        self.panel_rows: int = lib.PANEL_ROWS  # rows from which the products take panels (below: each row as alone)
        self.bf16_supported: bool = bool(lib.bf16_panels_supported())
        self.bf16_panels: bool = bf16_panels and self.bf16_supported  # panels multiply in bf16 (csrc/blocks.c)
        self._local = threading.local()

    @property
    def panels(self) -> str:
        """What the panels multiply in, as the log, the calibration's key and its file name say it."""
        return "bf16" if self.bf16_panels else "fp32"

    def with_bf16_panels(self, on: bool) -> Kernels:
        """These kernels with the panels (steps of ``panel_rows`` rows or more) in bf16 or fp32;
        bf16 only where the CPU has AVX512-BF16 (``bf16_supported``), else fp32."""
        return Kernels(self._ffi, self._lib, on)

    def wide_row_tiles(self, on: bool | None = None) -> bool:
        """Whether steps below ``panel_rows`` rows take 8 rows a tile in AVX-512VL's registers (the
        default where the CPU has them) rather than AVX2's 4; ``on`` sets it (process-wide: for the
        tests, which check the two give the same sums to the bit)."""
        return bool(self._lib.wide_row_tiles(-1 if on is None else int(on)))

    def unfit(self, shape: Shape) -> str | None:
        """Why a model's shapes do not fit the kernels (blocks of 32, vectors of 8), or None."""
        s = shape
        if s.hidden % 32 or s.intermediate % 32:
            return f"hidden ({s.hidden}) and intermediate ({s.intermediate}) sizes must be multiples of 32"
        if s.head_dim % 8 or s.heads % s.kv_heads or s.heads // s.kv_heads > self.max_group:
            return f"{s.heads} heads over {s.kv_heads} KV heads of {s.head_dim} do not fit the C attention"
        return None

    # ---- arguments ----

    def ptr(self, t: torch.Tensor, name: str, shape: tuple[int, ...] | None = None, rows: bool = False) -> Any:
        """``t``'s memory as the C pointer type of its dtype. ``shape``: the shape it must have;
        ``rows``: only its last dimension must be dense (a row stride is passed beside it), else
        the whole tensor must be contiguous."""
        if not t.is_cpu or t.dtype not in C_TYPES:
            raise KernelError(f"{name}: a CPU tensor of {', '.join(map(str, C_TYPES))} is needed, not {t.dtype} on {t.device}")
        if shape is not None and tuple(t.shape) != shape:
            raise KernelError(f"{name}: shape {tuple(t.shape)}, expected {shape}")
        if not (t.stride(-1) == 1 if rows else t.is_contiguous()):
            raise KernelError(f"{name}: must be {'dense along its rows' if rows else 'contiguous'}")
        return self._ffi.cast(C_TYPES[t.dtype], t.data_ptr())

    def _work(self, floats: int) -> tuple[Any, int]:
        """This thread's scratch buffer, of at least ``floats`` fp32 (grown, never shrunk)."""
        buf: torch.Tensor | None = getattr(self._local, "work", None)
        if buf is None or buf.numel() < floats:
            buf = self._local.work = torch.empty(max(floats, 1 << 16), dtype=torch.float32)
        return self._ffi.cast("float *", buf.data_ptr()), buf.numel()

    @staticmethod
    def _done(name: str, need: int) -> None:
        if need:
            raise KernelError(f"{name}: the scratch buffer was short of {need} floats")

    # ---- products ----

    def q4_1(self, x: torch.Tensor, w: Q4Weight, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [M, K] @ W.T`` for fp32 ``x``; with ``out``, added to it in place."""
        x = x.contiguous()
        m, k = x.shape
        n = w.d.shape[0]
        y = x.new_empty(m, n) if out is None else out
        if m:
            work, floats = self._work(self._lib.matmul_work(m, k))
            self._done("q4_1_matmul", self._lib.q4_1_matmul(
                self.ptr(x, "x"), m, k, self.ptr(w.qs, "qs", (n, k // 2)), self.ptr(w.d, "d", (n, k // 32)),
                self.ptr(w.m, "m", (n, k // 32)), n, self.ptr(y, "out", (m, n)), out is not None, self.bf16_panels,
                work, floats))
        return y

    def q8_0(self, x: torch.Tensor, w: Q8Weight) -> torch.Tensor:
        x = x.contiguous()
        m, k = x.shape
        n = w.d.shape[0]
        y = x.new_empty(m, n)
        if m:
            work, floats = self._work(self._lib.matmul_work(m, k))
            self._done("q8_0_matmul", self._lib.q8_0_matmul(
                self.ptr(x, "x"), m, k, self.ptr(w.qs, "qs", (n, k)), self.ptr(w.d, "d", (n, k // 32)), n,
                self.ptr(y, "out"), False, self.bf16_panels, work, floats))
        return y

    # ---- the rest of a layer ----

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y = torch.empty_like(x)
        self._lib.rms_norm(self.ptr(x, "x"), x.shape[0], x.shape[1], self.ptr(weight, "weight", (x.shape[1],)), eps,
                           self.ptr(y, "out"))
        return y

    def rope(self, x: torch.Tensor, heads: int, dim: int, positions: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> None:
        """In place on the first ``heads`` heads of each row of ``x`` (queries, then keys)."""
        if x.shape[1] < heads * dim or cos.shape[1] != dim:
            raise KernelError(f"rope: rows of {x.shape[1]} hold no {heads} heads of {dim}")
        self._lib.rope(self.ptr(x, "x", rows=True), x.shape[0], x.stride(0), heads, dim,
                       self.ptr(positions, "positions", (x.shape[0],)), self.ptr(cos, "cos"), self.ptr(sin, "sin", tuple(cos.shape)))

    def kv_write(self, x: torch.Tensor, k_off: int, v_off: int, width: int, slots: torch.Tensor,
                 k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
        """Row ``r``'s keys at ``x[r, k_off:k_off + width]`` and values at ``v_off`` into the pools'
        rows ``slots[r]`` (each ``width`` wide, bf16)."""
        if max(k_off, v_off) + width > x.shape[1] or k_pool[0].numel() != width:
            raise KernelError(f"kv_write: {width} keys at {k_off} and values at {v_off} do not fit")
        self._lib.kv_write(self.ptr(x, "x", rows=True), x.shape[0], x.stride(0), k_off, v_off, width,
                           self.ptr(slots, "slots", (x.shape[0],)), self.ptr(k_pool, "k_pool"), self.ptr(v_pool, "v_pool", tuple(k_pool.shape)))

    def silu_mul(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        y = x.new_empty(x.shape[0], half)
        self._lib.silu_mul(self.ptr(x, "x"), x.shape[0], half, self.ptr(y, "out"))
        return y

    def decode_attention(self, q: torch.Tensor, index: torch.Tensor, tables: torch.Tensor, lengths: torch.Tensor,
                         block_size: int, k_pool: torch.Tensor, v_pool: torch.Tensor, heads: int, dim: int,
                         scale: float, out: torch.Tensor) -> None:
        """Rows ``index`` of ``out [N, heads * dim]`` from the queries at the same rows of ``q``
        (row stride ``q.stride(0)``), each over its sequence's first ``lengths`` keys in the pool."""
        b, kv_heads = index.shape[0], k_pool.shape[-2]
        if q.shape[1] < heads * dim or out.shape[1] != heads * dim or k_pool.shape[-1] != dim:
            raise KernelError(f"decode_attention: {heads} heads of {dim} do not match q, out or the pool")
        lens = self.ptr(lengths, "lengths", (b,))
        work, floats = self._work(self._lib.attention_work(lens, b, heads, kv_heads, dim))
        self._done("decode_attention", self._lib.decode_attention(
            self.ptr(q, "q", rows=True), q.stride(0), self.ptr(index, "index", (b,)), b,
            self.ptr(tables, "tables", rows=True), tables.stride(0), lens, block_size, self.ptr(k_pool, "k_pool"),
            self.ptr(v_pool, "v_pool", tuple(k_pool.shape)), heads, kv_heads, dim, scale, self.ptr(out, "out"), work, floats))

    # ---- a step's layers in one call ----

    def layer_blocks(self, layers: list[dict[str, torch.Tensor]]) -> Any:
        """``LayerBlocks[]`` (kernels.h) of each layer's tensors, by field name: a name the struct
        lacks, or a tensor whose dtype is not the field's pointer type, raises here."""
        blocks = self._ffi.new("LayerBlocks[]", len(layers))
        for block, fields in zip(blocks, layers, strict=True):
            for name, t in fields.items():
                setattr(block, name, self.ptr(t, name))
        return blocks

    def decode_layers(self, x: torch.Tensor, layers: Any, shape: Shape, positions: torch.Tensor,
                      cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor, decodes: Decodes, block_size: int,
                      scale: float) -> None:
        """``x [M, hidden]`` through every layer in place, for a step whose rows all attend alone
        (``decodes.index`` holds every row once). ``layers``: from ``layer_blocks``."""
        s, n = shape, x.shape[0]
        if decodes.index.shape[0] != n or len(layers) != s.layers:
            raise KernelError("decode_layers: every row must attend alone, through every layer")
        lens = self.ptr(decodes.lengths, "lengths", (n,))
        work, floats = self._work(self._lib.decode_layers_work(n, s.hidden, s.heads, s.kv_heads, s.head_dim,
                                                               s.intermediate, lens))
        self._done("decode_layers", self._lib.decode_layers(
            self.ptr(x, "x", (n, s.hidden)), n, layers, len(layers), s.hidden, s.heads, s.kv_heads, s.head_dim,
            s.intermediate, s.eps, scale, self.ptr(positions, "positions", (n,)), self.ptr(cos, "cos"),
            self.ptr(sin, "sin", tuple(cos.shape)), self.ptr(slots, "slots", (n,)), self.ptr(decodes.index, "index"),
            self.ptr(decodes.tables, "tables", rows=True), decodes.tables.stride(0), lens, block_size,
            self.bf16_panels, work, floats))


@functools.cache
def load(module: str = "inference.engine._kernels") -> Kernels:
    """The kernels built at install; raises ``KernelsUnavailable`` saying why not, and what to use
    instead, on a machine that cannot have them. ``module``: another build of them (the tests'
    sanitized one)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise KernelsUnavailable(f"the block kernels are x86-64 (AVX2) code and this is {platform.machine()}; {NO_KERNELS}")
    missing = [f for f in CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        raise KernelsUnavailable(f"this CPU lacks {', '.join(missing)}, which the block kernels need; {NO_KERNELS}")
    import importlib

    try:
        built = importlib.import_module(module)
    except ImportError as exc:
        raise KernelsUnavailable(f"the block kernels were not built at install ({exc}): reinstall the package where gcc "
                                 f"with OpenMP is present (pip install --force-reinstall --no-deps), or {NO_KERNELS}") from exc
    return Kernels(built.ffi, built.lib)


def release_threads() -> None:
    """Free the calling thread's team of OpenMP threads (``csrc/threads.c`` says why): the thread
    that loads the model and the one that starts the step loop call it, so that the step loop's
    thread holds the process's only team. torch's parallel ops share the kernels' OpenMP runtime,
    so this holds for them too. Nothing to do where the kernels cannot load."""
    try:
        kernels = load()
    except KernelsUnavailable:
        return
    kernels._lib.release_threads()
