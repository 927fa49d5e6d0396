"""The inference service's settings (``INFERENCE_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="INFERENCE_")

    host: str = Field("127.0.0.1", description="INFERENCE_HOST: address to bind.")
    port: int = Field(8001, ge=0, le=65535, description="INFERENCE_PORT.")
    generate_batch: bool = Field(True, description="INFERENCE_GENERATE_BATCH: offer POST /generate_batch.")
    max_batch_items: int = Field(256, ge=1, description="INFERENCE_MAX_BATCH_ITEMS: largest /generate_batch.")
    max_body_bytes: int = Field(16_000_000, ge=1024, description="INFERENCE_MAX_BODY_BYTES: largest request body.")
    read_timeout_s: float = Field(10.0, gt=0, description="INFERENCE_READ_TIMEOUT_S: time to send headers, then body.")
    api_keys_file: str = Field("", description="INFERENCE_API_KEYS_FILE: keys (as the API's); empty: keys off.")
    log_format: str = Field("text", pattern="^(text|json)$", description="INFERENCE_LOG_FORMAT: text or json log lines.")
    allowed_origins: str = Field(
        "", description="INFERENCE_ALLOWED_ORIGINS: comma-separated origins whose pages may call the service from a "
                        "browser (CORS); same-origin is always allowed; * allows any.")

    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]
