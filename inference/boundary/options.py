"""Generation options, declared once with their ranges and validated once, under neutral names.

Each edge maps these names in one table of its own: GraphQL in ``graphql_api.schema.options``
(``max_new_tokens`` is ``options.maxTokens``), OpenAI's wire in ``inference.service.wire``
(``max_tokens``). Adding an option: declare it here (with its range in ``validate``), add it to
each edge's table and input type, and use it in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import InvalidOption
from .formats import ResponseFormat

__all__ = ["OPTION_NAMES", "InvalidOption", "SamplingParams"]  # InvalidOption lives in errors; imported from here too

DEFAULT_MAX_NEW_TOKENS = 256  # an engine's default for a request that gives none (EngineConfig's, and the API's while it loads)
MAX_NEW_TOKENS_CAP = 1024  # an engine's default cap
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 64
MAX_TOP_K = 1000
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**31 - 1  # GraphQL's Int is 32-bit; one range for every edge
MAX_PENALTY = 2.0  # OpenAI's range for frequency and presence penalties: -2 to 2
MAX_REPETITION_PENALTY = 2.0
MAX_LOGIT_BIAS = 300  # entries
MAX_BIAS = 100.0  # OpenAI's range for a bias: -100 to 100
MAX_TOP_LOGPROBS = 20  # OpenAI's
MAX_CHOICES = 16  # n; an edge may set a lower limit of its own
GREEDY_BELOW = 1e-5  # temperatures below this are greedy (as in vLLM): dividing by them overflows


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """``max_new_tokens=None`` means the engine's default. temperature 0 (below ``GREEDY_BELOW``)
    is greedy, the default; top_k 0, top_p 1 and min_p 0 switch those filters off.

    Penalties change the logits before anything else (greedy included), in vLLM's order:
    ``logit_bias`` (token id, bias) pairs are added; ``repetition_penalty`` (transformers' and vLLM's
    form) divides positive logits and multiplies negative ones of every token seen in the prompt or
    the output, 1 being off; ``frequency_penalty`` and ``presence_penalty`` (OpenAI's form) subtract
    ``count * frequency + (count > 0) * presence`` for each token of the output so far. ``min_p``
    drops tokens whose probability (after temperature) is below ``min_p`` times the likeliest's.

    ``n`` answers are sampled for the one prompt, prefilled once (as vLLM does: choice ``i`` samples
    with ``seed + i`` when a seed is given, so the set is reproducible). Greedy choices are identical,
    as in vLLM and OpenAI."""

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: ResponseFormat | None = None  # structured output; None: free text
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1

    @property
    def penalized(self) -> bool:
        """Whether any penalty or bias changes this request's logits."""
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0
                or bool(self.logit_bias))

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
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidOption("min_p", f"must be between 0 (off) and 1, got {self.min_p}")
        if not 0.0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidOption("repetition_penalty", f"must be greater than 0 and at most {MAX_REPETITION_PENALTY:g} "
                                f"(1 is off), got {self.repetition_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not -MAX_PENALTY <= value <= MAX_PENALTY:
                raise InvalidOption(name, f"must be between {-MAX_PENALTY:g} and {MAX_PENALTY:g}, got {value}")
        if len(self.logit_bias) > MAX_LOGIT_BIAS:
            raise InvalidOption("logit_bias", f"takes at most {MAX_LOGIT_BIAS} tokens, got {len(self.logit_bias)}")
        for token, bias in self.logit_bias:
            if token < 0:
                raise InvalidOption("logit_bias", f"token ids must be 0 or more, got {token}")
            if not -MAX_BIAS <= bias <= MAX_BIAS:
                raise InvalidOption("logit_bias", f"biases must be between {-MAX_BIAS:g} and {MAX_BIAS:g}, "
                                    f"got {bias} for token {token}")
        if len({token for token, _ in self.logit_bias}) != len(self.logit_bias):
            raise InvalidOption("logit_bias", "names a token more than once")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidOption("top_logprobs", f"must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}")
        if self.top_logprobs and not self.logprobs:
            raise InvalidOption("top_logprobs", "needs logprobs set to true")
        if not 1 <= self.n <= MAX_CHOICES:
            raise InvalidOption("n", f"must be between 1 and {MAX_CHOICES}, got {self.n}")
        if self.response_format is not None:
            self.response_format.validate()

    def check_vocabulary(self, vocab_size: int) -> None:
        """Raise InvalidOption for a logit_bias token the model does not have."""
        for token, _ in self.logit_bias:
            if token >= vocab_size:
                raise InvalidOption("logit_bias", f"token ids must be below the vocabulary size {vocab_size}, got {token}")


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SamplingParams))
