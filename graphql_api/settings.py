"""API settings: environment variables (or CLI flags), validated once."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_query_depth: int = Field(10, ge=1, description="Deepest query accepted (introspection fields aside).")
    max_introspection_depth: int = Field(15, ge=1, description="Deepest query accepted, introspection fields counted.")
    max_chats_per_operation: int = Field(
        64, ge=1, description="Chats one operation may run, summed over every field and alias (TOO_MANY_CHATS).")
    max_aliases: int = Field(20, ge=1, description="Most aliases in one operation.")
    max_query_tokens: int = Field(2000, ge=1, description="Most tokens in one GraphQL document.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest HTTP request body or WebSocket message.")
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
    graphiql: bool = Field(True, description="Serve GraphiQL at GET /graphql.")
    introspection: bool = Field(True, description="Allow schema introspection.")

    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]
