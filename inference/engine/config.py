"""Engine settings: one frozen object, read from the environment (or CLI flags), validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..boundary.options import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_CAP


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "smollm-graphql"


class EngineConfig(BaseSettings):
    """Everything the engine needs to know; each field is also an environment variable.

    KV memory is one pool of ``kv_cache_tokens`` tokens in blocks of ``kv_block_size``, allocated
    at start-up (45 KiB per token for SmolLM2-135M in fp32, 22.5 KiB in bf16: the default 24,576
    tokens take 1.1 GiB in fp32). Sequences take blocks as they grow, so the pool bounds memory
    whatever the load, and how many sequences run together depends on their lengths.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", protected_namespaces=())

    model_path: str | None = Field(
        None, description="A .gguf file or a local Hugging Face model directory; default: the packaged SmolLM2."
    )
    model_cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Where dequantized GGUF weights are cached."
    )
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    dtype: str = Field("auto", description="auto (float32 on cpu, bfloat16 on cuda), float32, float16, bfloat16.")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default.")
    max_running: int = Field(256, ge=1, le=4096, description="Most sequences decoded together (the KV pool may allow fewer).")
    max_waiting: int = Field(256, ge=0, le=1_000_000, description="Requests queued beyond the running ones.")
    max_model_len: int = Field(8192, ge=16, description="Prompt + new tokens per sequence (at most the model's own context).")
    max_new_tokens_cap: int = Field(MAX_NEW_TOKENS_CAP, ge=1, description="Largest max_new_tokens a request may ask.")
    default_max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="max_new_tokens when a request gives none.")
    kv_cache_tokens: int = Field(
        24576, ge=64, description="Tokens of KV the pool holds, all sequences together (allocated at start-up)."
    )
    kv_block_size: int = Field(16, ge=1, le=1024, description="Tokens per KV block (the unit of allocation and prefix sharing).")
    prefix_caching: bool = Field(
        True, description="Keep computed full KV blocks keyed by their prefix, so prompts that start alike share them."
    )
    kv_dtype: str = Field("auto", description="auto (the compute dtype), float32, bfloat16 or float16: how keys and values are stored.")
    weights: str = Field(
        "auto", description="exact (dense weights, greedy answers equal model.generate), native (the GGUF's own "
                            "quantized blocks, through C kernels), auto (native for a GGUF on CPU, else exact)."
    )
    int4_max_rows: int = Field(
        0, ge=0, le=4096, description="native: the largest step (tokens) run on the GGUF's blocks, dense fp32 above; "
                                      "0 measures it once per machine."
    )
    panel_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="native: what steps of 12 tokens or more (many sequences, prompt chunks) multiply in: "
                            "bfloat16 (activations and weights rounded, fp32 sums; needs AVX512-BF16), float32, or "
                            "auto (bfloat16 where the CPU has it). Fewer tokens always multiply in float32."
    )
    parse_special_tokens: bool = Field(
        False, description="true: special-token strings in message content become control tokens (the peers' "
                           "default); false: content is plain text, so it cannot forge chat-template turns."
    )
    max_prefill_tokens: int = Field(
        512, ge=1, description="Prompt tokens prefilled per step; longer prompts are chunked."
    )
    speculative_tokens: int = Field(
        6, ge=0, le=16, description="Speculative decoding by prompt lookup: the most draft tokens per step for a "
                                    "sequence (verified in the same step, so answers are unchanged; a draft starts at "
                                    "2 tokens and doubles while it is taken whole); 0 turns it off."
    )
    speculative_max_batch: int = Field(
        4, ge=1, description="Steps of more decoding sequences than this draft nothing (the step is then "
                             "compute-bound, and a draft's rows cost their full compute)."
    )

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ValueError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        for name in ("dtype", "kv_dtype"):
            if getattr(self, name) not in {"auto", "float32", "float16", "bfloat16"}:
                raise ValueError(f"{name} must be auto, float32, float16 or bfloat16, not {getattr(self, name)!r}")
        if self.weights not in {"auto", "exact", "native"}:
            raise ValueError(f"weights must be auto, exact or native, not {self.weights!r}")
        if self.kv_cache_tokens < self.max_model_len:
            raise ValueError(f"kv_cache_tokens ({self.kv_cache_tokens}) must hold one sequence of "
                             f"max_model_len ({self.max_model_len}) tokens")
        return self
