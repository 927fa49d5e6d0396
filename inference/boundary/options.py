"""Generation options, declared once with their ranges and validated once, under neutral names.

Each edge maps these names in one table of its own: GraphQL in ``graphql_api.schema.options``
(``max_new_tokens`` is ``options.maxTokens``), OpenAI's wire in ``inference.service.wire``
(``max_tokens``). Adding an option: declare it here (with its range in ``validate``), add it to
each edge's table and input type, and use it in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from .errors import InvalidRequest

if TYPE_CHECKING:
    from .formats import ResponseFormat  # formats imports InvalidOption from here

MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 64
MAX_TOP_K = 1000
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**31 - 1  # GraphQL's Int is 32-bit; one range for every edge
GREEDY_BELOW = 1e-5  # temperatures below this are greedy (as in vLLM): dividing by them overflows


class InvalidOption(InvalidRequest):
    """An option out of range. ``detail`` lacks the option's name, so that each edge can say it in
    its own words (``maxTokens must be …``, ``max_tokens must be …``)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field} {detail}", field=field)
        self.detail = detail


@dataclass(frozen=True)
class SamplingParams:
    """``max_new_tokens=None`` means the engine's default. temperature 0 (below ``GREEDY_BELOW``)
    is greedy, the default; top_k 0 and top_p 1 switch those filters off."""

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None  # structured output; None: free text

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def validate(self, max_new_tokens_cap: int) -> None:
        """Raise InvalidOption naming the first option out of range."""
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= max_new_tokens_cap:
            raise InvalidOption("max_new_tokens", f"must be between 1 and {max_new_tokens_cap}, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise InvalidOption("temperature", f"must be between 0 and {MAX_TEMPERATURE:g}, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidOption("top_p", f"must be greater than 0 and at most 1, got {self.top_p}")
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidOption("top_k", f"must be between 0 (off) and {MAX_TOP_K}, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidOption("seed", f"must be between 0 and {MAX_SEED}, got {self.seed}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidOption("stop", f"takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        for s in self.stop:
            if not 1 <= len(s) <= MAX_STOP_LENGTH:
                raise InvalidOption("stop", f"strings must have 1 to {MAX_STOP_LENGTH} characters, got {len(s)}")
        if self.response_format is not None:
            self.response_format.validate()


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SamplingParams))
