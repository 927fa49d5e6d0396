"""The GGUF's own quantized weights, read as stored, for the block kernels (``kernels.py``).

Every linear layer of the packaged SmolLM2 is Q4_1: blocks of 32 weights along the input dimension,
each ``w = d * q + m`` with ``q`` in 0..15 and ``d``, ``m`` in fp16; byte ``j`` of a block holds
weight ``j`` in its low nibble and weight ``j + 16`` in its high one. The tied embedding / lm_head is
Q8_0: ``w = d * q`` with ``q`` an int8. Both are kept exactly so, scales in fp16 (the kernels widen
them as they read them, which is exact), nothing is re-quantized. llama.cpp's converter permutes the rows of the query and key projections
(its rotary layout); whole rows move, so their blocks move with them and are put back here.

Opening the GGUF with the ``gguf`` package takes seconds, so the split tensors are cached as
safetensors beside the dequantized model, keyed by the file's hash.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

GROUP_SIZE = 32
Q4_1_BLOCK_BYTES = 20  # fp16 d, fp16 m, 16 bytes of two 4-bit weights each
Q8_0_BLOCK_BYTES = 34  # fp16 d, 32 int8 weights
# GGUF tensor names of one layer's projections, in the order the fused projections concatenate them.
QKV = ("attn_q", "attn_k", "attn_v")
GATE_UP = ("ffn_gate", "ffn_up")
DOWN = ("ffn_down",)
O_PROJ = ("attn_output",)
PROJECTIONS = {"qkv": QKV, "o": O_PROJ, "gate_up": GATE_UP, "down": DOWN}
HEAD_NAMES = ("output.weight", "token_embd.weight")  # the head, or the tied embedding when there is none


class UnsupportedQuantization(ValueError):
    """A tensor the native path cannot use as stored (the engine then falls back to ``exact``)."""


@dataclass(frozen=True)
class Q4Weight:
    """One (possibly fused) Q4_1 projection, ``out_features`` rows of ``in_features / 32`` blocks."""

    qs: torch.Tensor  # uint8 [out, in / 2], 16 bytes per block
    d: torch.Tensor  # float16 [out, in / 32]
    m: torch.Tensor  # float16 [out, in / 32]

    def dequantize(self) -> torch.Tensor:
        rows, blocks = self.d.shape
        qs = self.qs.view(rows, blocks, 16)
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).float()
        return (q * self.d[..., None].float() + self.m[..., None].float()).view(rows, blocks * GROUP_SIZE)


@dataclass(frozen=True)
class Q8Weight:
    """A Q8_0 matrix: ``qs`` int8 ``[out, in]``, ``d`` float16 ``[out, in / 32]``."""

    qs: torch.Tensor
    d: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        rows, blocks = self.d.shape
        return (self.qs.view(rows, blocks, GROUP_SIZE).float() * self.d[..., None].float()).view(rows, -1)


@dataclass(frozen=True)
class NativeWeights:
    layers: list[dict[str, Q4Weight]]  # per layer: qkv, o, gate_up, down
    head: Q8Weight | None  # None: the head is not Q8_0, it stays dense


def _fp16(blocks: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, :, at:at + 2]).view(np.float16)[..., 0]


def q4_1_split(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 rows ``[rows, blocks * 20]`` as ``qs [rows, blocks * 16]`` (uint8, two weights each),
    ``d`` and ``m`` ``[rows, blocks]`` (float16)."""
    blocks = raw.reshape(raw.shape[0], -1, Q4_1_BLOCK_BYTES)
    return np.ascontiguousarray(blocks[:, :, 4:]).reshape(raw.shape[0], -1), _fp16(blocks, 0), _fp16(blocks, 2)


def q8_0_split(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 rows ``[rows, blocks * 34]`` as ``qs [rows, blocks * 32]`` (int8) and ``d [rows, blocks]``."""
    blocks = raw.reshape(raw.shape[0], -1, Q8_0_BLOCK_BYTES)
    return np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(raw.shape[0], -1), _fp16(blocks, 0)


def rotary_row_order(rows: int, heads: int) -> np.ndarray:
    """Row ``i`` of the Hugging Face layout is row ``order[i]`` of llama.cpp's (its converter's
    ``permute`` of the query and key projections, undone)."""
    permuted = np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(rows)
    order = np.empty(rows, dtype=np.int64)
    order[permuted] = np.arange(rows)
    return order


def read_native_weights(path: Path, layers: int, heads: int, kv_heads: int) -> NativeWeights:
    """Each layer's fused projections (``qkv``, ``o``, ``gate_up``, ``down``) and the head, as stored."""
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    out: list[dict[str, Q4Weight]] = []
    for i in range(layers):
        layer: dict[str, Q4Weight] = {}
        for fused, names in PROJECTIONS.items():
            parts = []
            for name in names:
                t = tensors[f"blk.{i}.{name}.weight"]
                if t.tensor_type != gguf.GGMLQuantizationType.Q4_1:
                    raise UnsupportedQuantization(f"{t.name} is {t.tensor_type.name}, not Q4_1")
                qs, d, m = q4_1_split(np.asarray(t.data))
                if name in ("attn_q", "attn_k"):
                    order = rotary_row_order(qs.shape[0], heads if name == "attn_q" else kv_heads)
                    qs, d, m = qs[order], d[order], m[order]
                parts.append((qs, d, m))
            fused_qs, fused_d, fused_m = (torch.from_numpy(np.concatenate(p)) for p in zip(*parts, strict=True))
            layer[fused] = Q4Weight(fused_qs, fused_d, fused_m)
        out.append(layer)
    head = next((tensors[n] for n in HEAD_NAMES if n in tensors), None)
    if head is None or head.tensor_type != gguf.GGMLQuantizationType.Q8_0:
        log.info("the GGUF's head is %s, not Q8_0: it stays dense", head.tensor_type.name if head else "missing")
        return NativeWeights(out, None)
    hq, hd = q8_0_split(np.asarray(head.data))
    return NativeWeights(out, Q8Weight(torch.from_numpy(hq), torch.from_numpy(hd)))


def cache_file(cache_dir: Path, stem: str, digest: str) -> Path:
    return cache_dir / f"{stem}-{digest}-blocks-f16.safetensors"  # f16: the scales as stored


def load_native_weights(path: Path, digest: str, cache_dir: Path, layers: int, heads: int,
                        kv_heads: int) -> NativeWeights:
    """``read_native_weights``, through a safetensors cache (written atomically on first use)."""
    from safetensors.torch import load_file, save_file

    target = cache_file(cache_dir, path.stem, digest)
    if target.is_file():
        flat = load_file(target)
        head = Q8Weight(flat["head.qs"], flat["head.d"]) if "head.qs" in flat else None
        return NativeWeights([{name: Q4Weight(flat[f"{i}.{name}.qs"], flat[f"{i}.{name}.d"], flat[f"{i}.{name}.m"])
                               for name in PROJECTIONS} for i in range(layers)], head)
    log.info("splitting the GGUF's quantized blocks once into %s", target)
    result = read_native_weights(path, layers, heads, kv_heads)
    flat = {}
    for i, layer in enumerate(result.layers):
        for name, w in layer.items():
            flat[f"{i}.{name}.qs"], flat[f"{i}.{name}.d"], flat[f"{i}.{name}.m"] = w.qs, w.d, w.m
    if result.head is not None:
        flat["head.qs"], flat["head.d"] = result.head.qs, result.head.d
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".tmp-", suffix=".safetensors", delete=False) as f:
        tmp = Path(f.name)
    try:
        save_file(flat, str(tmp))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return result
