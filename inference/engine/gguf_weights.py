"""The GGUF's own 4-bit weights, read as stored and packed for torch's CPU int4 kernel.

Every linear layer of the packaged SmolLM2 is Q4_1: blocks of 32 weights along the input dimension,
each ``w = d * q + m`` with ``q`` in 0..15 and ``d``, ``m`` in fp16. torch's weight-only int4 kernel
(group size 32) computes ``w = (q - 8) * scale + zero``, so ``scale = d`` and ``zero = m + 8d`` give
the very same weights: nothing is re-quantized. llama.cpp's converter permutes the rows of the
query and key projections (its rotary layout); whole rows move, so the blocks move with them.

Packing takes a few seconds; the packed tensors are cached as safetensors beside the dequantized
model, keyed by the file's hash.
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
INNER_K_TILES = 2
# GGUF tensor names of one layer's projections, in the order the fused projections concatenate them.
QKV = ("attn_q", "attn_k", "attn_v")
GATE_UP = ("ffn_gate", "ffn_up")
DOWN = ("ffn_down",)
O_PROJ = ("attn_output",)
PROJECTIONS = {"qkv": QKV, "o": O_PROJ, "gate_up": GATE_UP, "down": DOWN}


class UnsupportedQuantization(ValueError):
    """A tensor the native path cannot use as stored (the engine then falls back to ``exact``)."""


@dataclass(frozen=True)
class Int4Weight:
    """One (possibly fused) projection for ``_weight_int4pack_mm_for_cpu``: ``out_features`` rows."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [in_features / 32, out_features, 2], bf16
    out_features: int


def q4_1_blocks(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpack Q4_1 rows ``[rows, blocks * 20]`` into ``q [rows, blocks * 32]`` (uint8, 0..15),
    ``d`` and ``m`` ``[rows, blocks]`` (float32)."""
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, Q4_1_BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[:, :, 0:2]).view(np.float16)[..., 0].astype(np.float32)
    m = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16)[..., 0].astype(np.float32)
    qs = blocks[:, :, 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # low nibbles hold weights 0..15, high 16..31
    return q.reshape(rows, -1), d, m


def rotary_row_order(rows: int, heads: int) -> np.ndarray:
    """Row ``i`` of the Hugging Face layout is row ``order[i]`` of llama.cpp's (its converter's
    ``permute`` of the query and key projections, undone)."""
    permuted = np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(rows)
    order = np.empty(rows, dtype=np.int64)
    order[permuted] = np.arange(rows)
    return order


def pack_int4(q: np.ndarray, d: np.ndarray, m: np.ndarray) -> Int4Weight:
    """torch's int4 CPU layout of weights ``d * q + m`` (group size 32)."""
    q_t = torch.from_numpy(q.astype(np.int32))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q_t, INNER_K_TILES)
    d_t, m_t = torch.from_numpy(d), torch.from_numpy(m)
    scales_zeros = torch.stack([d_t, m_t + 8 * d_t], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return Int4Weight(packed, scales_zeros, q.shape[0])


def read_int4_layers(path: Path, layers: int, heads: int, kv_heads: int) -> list[dict[str, Int4Weight]]:
    """Each layer's fused projections (``qkv``, ``o``, ``gate_up``, ``down``) from the GGUF as stored."""
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    out: list[dict[str, Int4Weight]] = []
    for i in range(layers):
        layer: dict[str, Int4Weight] = {}
        for fused, names in PROJECTIONS.items():
            parts = []
            for name in names:
                t = tensors[f"blk.{i}.{name}.weight"]
                if t.tensor_type != gguf.GGMLQuantizationType.Q4_1:
                    raise UnsupportedQuantization(f"{t.name} is {t.tensor_type.name}, not Q4_1")
                q, d, m = q4_1_blocks(np.asarray(t.data))
                if name in ("attn_q", "attn_k"):
                    order = rotary_row_order(q.shape[0], heads if name == "attn_q" else kv_heads)
                    q, d, m = q[order], d[order], m[order]
                parts.append((q, d, m))
            layer[fused] = pack_int4(*(np.concatenate(p) for p in zip(*parts, strict=True)))
        out.append(layer)
    return out


def cache_file(cache_dir: Path, stem: str, digest: str) -> Path:
    return cache_dir / f"{stem}-{digest}-int4.safetensors"


def load_int4_layers(path: Path, digest: str, cache_dir: Path, layers: int, heads: int,
                     kv_heads: int) -> list[dict[str, Int4Weight]]:
    """``read_int4_layers``, through a safetensors cache (written atomically on first use)."""
    from safetensors.torch import load_file, save_file

    target = cache_file(cache_dir, path.stem, digest)
    if target.is_file():
        flat = load_file(target)
        return [{name: Int4Weight(flat[f"{i}.{name}.packed"], flat[f"{i}.{name}.sz"],
                                  flat[f"{i}.{name}.sz"].shape[1]) for name in PROJECTIONS}
                for i in range(layers)]
    log.info("packing the GGUF's 4-bit weights once into %s", target)
    result = read_int4_layers(path, layers, heads, kv_heads)
    flat = {}
    for i, layer in enumerate(result):
        for name, w in layer.items():
            flat[f"{i}.{name}.packed"], flat[f"{i}.{name}.sz"] = w.packed, w.scales_zeros
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".tmp-", suffix=".safetensors", delete=False) as f:
        tmp = Path(f.name)
    try:
        save_file(flat, str(tmp))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return result
