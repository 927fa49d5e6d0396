"""API settings: environment variables (or CLI flags), validated once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.boundary.options import MAX_CHOICES

UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: object) -> object:
    """A duration as ``90``, ``90s``, ``15m``, ``24h`` or ``7d``: its seconds (anything else is left
    to pydantic, which refuses it naming the setting)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value.lower())
        if m:
            return float(m.group(1)) * UNITS_S[m.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(seconds)]


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "smollm-graphql"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the GraphQL server binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the GraphQL server.")
    inference_url: str = Field("", description="Comma-separated inference servers; empty: load the model in-process.")
    inference_timeout_s: float = Field(300.0, gt=0, description="Timeout of one call to an inference server.")
    inference_max_concurrency: int = Field(64, ge=1, description="Concurrent /v1/chat/completions calls per batch fallback.")
    default_system_prompt: str = Field("You are a helpful assistant.", description="Used when a chat gives none.")
    request_timeout_s: float = Field(300.0, gt=0, description="Deadline of one chat; past it the chat gets TIMEOUT.")
    max_batch_items: int = Field(64, ge=1, description="Largest chatBatched list; larger is BATCH_TOO_LARGE.")
    max_prompt_chars: int = Field(32_000, ge=1, description="Longest userPrompt, systemPrompt or history message.")
    max_chat_id_chars: int = Field(128, ge=1, le=10_000, description="Longest chatId; longer ones are INVALID_INPUT.")
    max_history: int = Field(64, ge=0, description="Most earlier turns in one chat.")
    max_choices: int = Field(8, ge=1, le=MAX_CHOICES, description="Largest options.n (answers to one prompt).")
    max_query_depth: int = Field(10, ge=1, description="Deepest query accepted (introspection fields aside).")
    max_introspection_depth: int = Field(15, ge=1, description="Deepest query accepted, introspection fields counted.")
    max_chats_per_operation: int = Field(
        64, ge=1, description="Chats one operation may run, summed over every field and alias (TOO_MANY_CHATS).")
    max_aliases: int = Field(20, ge=1, description="Most aliases in one operation.")
    max_query_tokens: int = Field(2000, ge=1, description="Most tokens in one GraphQL document.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest HTTP request body or WebSocket message.")
    max_header_bytes: int = Field(
        65_536, ge=1024, description="Longest request head (request line and headers); longer gets 431 and the connection closed.")
    http_read_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers, and then its body; past it the "
                                "connection is closed (408 once the headers are in).")
    allowed_origins: str = Field(
        "", description="Comma-separated origins whose pages may call the API from a browser (HTTP, SSE and "
                        "WebSocket); same-origin is always allowed; * allows any.")
    max_subscriptions_per_connection: int = Field(8, ge=1, description="Open chatStream operations per WebSocket.")
    connection_init_timeout_s: float = Field(5.0, gt=0, description="graphql-transport-ws: time to send connection_init.")
    log_format: str = Field("text", pattern="^(text|json)$", description="text or json log lines.")
    drain_timeout_s: float = Field(30.0, ge=0, description="On SIGTERM: time for chats in flight to finish.")
    api_keys_file: str = Field("", description="Keys file (name:sha256[:rpm=N,tpm=N,streams=N] per line); empty: keys off.")
    rate_limit_storage: str = Field("memory://", description="Where quotas are kept: a `limits` storage URI, e.g. redis://host:6379.")
    metrics_public: bool = Field(False, description="With keys on, serve /metrics without a key.")
    inference_api_key: str = Field("", description="Key sent to inference upstreams (Authorization: Bearer).")
    data_dir: Path = Field(default_factory=default_data_dir, description="Where the server keeps its files (the jobs database).")
    jobs_database_url: str = Field(
        "", description="SQLAlchemy URL of the jobs database, e.g. postgresql+asyncpg://user@host/db; empty: SQLite "
                        "in DATA_DIR/jobs.db (one server process).")
    max_job_items: int = Field(50_000, ge=1, description="Most items (lines) in one batch job.")
    job_completion_window: Duration = Field(
        86_400.0, gt=0, description="A job not done this long after its submission expires (24h; 90s, 15m, 7d also work).")
    job_retention: Duration = Field(604_800.0, gt=0, description="A finished job and its results are deleted this long after it ended.")
    job_reserved_slots: int = Field(
        8, ge=0, description="Engine slots (of MAX_RUNNING) that batch jobs leave free for interactive chats.")
    job_max_in_flight: int = Field(
        56, ge=1, description="Most job items in flight at once: past about 64 sequences a CPU decode step gets "
                              "slower for everyone, interactive chats included.")
    max_upload_bytes: int = Field(200_000_000, ge=1024, description="Largest multipart (file upload) request body.")
    graphiql: bool = Field(True, description="Serve GraphiQL at GET /graphql.")
    introspection: bool = Field(True, description="Allow schema introspection.")

    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]
