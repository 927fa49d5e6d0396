"""The one boundary between the tiers: what a request is, what comes back, and what can go wrong.

Torch-free by design (a test imports the API tier with ``INFERENCE_URL`` set and checks that torch
is not loaded). The engine, the inference service, the remote client and the GraphQL API all use
these types; each edge maps names (GraphQL's ``maxTokens``, OpenAI's ``max_tokens``) in one table
of its own.
"""

from .client import EngineClient, MetricsSource, Ticket
from .errors import (
                     EngineError,
                     EngineFault,
                     EngineStopped,
                     ErrorCode,
                     InvalidRequest,
                     Overloaded,
                     PromptTooLong,
                     RequestCancelled,
                     RequestTimeout,
                     Unauthenticated,
                     Unavailable,
                     UpstreamError,
)
from .formats import IncompleteOutput, InvalidFormat, ResponseFormat, conclude
from .info import EngineInfo, EngineStats
from .local import LocalEngine, StreamingTicket
from .options import SamplingParams
from .request import BATCH, INTERACTIVE, ChatMessage, ChatRequest
from .result import Choice, Completion, FinishReason, Timings, TokenDelta, TokenLogprob, Usage
from .tools import Tool, ToolCall, ToolMode, Tools

__all__ = ["BATCH", "INTERACTIVE", "ChatMessage", "ChatRequest", "Choice", "Completion", "EngineClient", "EngineError", "EngineFault",
           "EngineInfo", "EngineStats", "EngineStopped", "ErrorCode", "FinishReason", "IncompleteOutput", "InvalidFormat",
           "InvalidRequest", "LocalEngine", "MetricsSource", "Overloaded", "PromptTooLong", "RequestCancelled", "RequestTimeout", "ResponseFormat",
           "SamplingParams", "StreamingTicket", "Ticket", "Timings", "TokenDelta", "TokenLogprob", "Tool", "ToolCall", "ToolMode", "Tools",
           "Unauthenticated", "Unavailable", "UpstreamError", "Usage", "conclude"]
