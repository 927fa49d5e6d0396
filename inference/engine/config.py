"""Engine settings: one frozen object, read from the environment (or CLI flags), validated once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "smollm-graphql"


class EngineConfig(BaseSettings):
    """Everything the engine needs to know; each field is also an environment variable.

    KV-cache memory is bounded by ``max_running * max_model_len`` token slots
    (46 KiB per token for SmolLM2-135M in fp32: 64 x 2048 tokens = 5.6 GiB at most). The cache is
    allocated lazily zeroed, so only the part that sequences have touched is resident.
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
    max_running: int = Field(64, ge=1, le=4096, description="Sequences decoded together (KV slots).")
    max_waiting: int = Field(256, ge=0, le=1_000_000, description="Requests queued beyond the running ones.")
    max_model_len: int = Field(2048, ge=16, description="Prompt + new tokens per sequence.")
    max_new_tokens_cap: int = Field(1024, ge=1, description="Largest max_new_tokens a request may ask.")
    default_max_new_tokens: int = Field(256, ge=1, description="max_new_tokens when a request gives none.")
    prefix_cache_entries: int = Field(
        16, ge=0, description="Recent prompts whose KV is kept to skip prefilling a shared prefix; 0 is off."
    )
    parse_special_tokens: bool = Field(
        False, description="true: special-token strings in message content become control tokens (the peers' "
                           "default); false: content is plain text, so it cannot forge chat-template turns."
    )
    max_prefill_tokens: int = Field(
        256, ge=1, description="Prompt tokens prefilled per step; longer prompts are chunked."
    )

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ValueError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        if self.dtype not in {"auto", "float32", "float16", "bfloat16"}:
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, not {self.dtype!r}")
        return self
