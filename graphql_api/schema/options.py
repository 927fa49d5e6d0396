"""The GraphQL edge's one table of names: boundary names to ChatInput's.

Generation options are declared once, in ``inference.boundary.options``; here they get their
GraphQL names (``max_new_tokens`` is ``options.maxTokens``), both ways: building SamplingParams
from the ``GenerationOptions`` input, and naming a field in a ChatError.
"""

from __future__ import annotations

from typing import Any

from strawberry.utils.str_converters import to_camel_case

from inference.boundary import EngineError, ResponseFormat, SamplingParams
from inference.boundary.options import OPTION_NAMES, InvalidOption

from .types import GenerationOptions, ResponseFormatInput

# Boundary option -> the GenerationOptions input's attribute (GraphQL names it in camelCase).
GRAPHQL_OPTION = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                  "seed": "seed", "stop": "stop", "response_format": "response_format", "min_p": "min_p",
                  "repetition_penalty": "repetition_penalty", "frequency_penalty": "frequency_penalty",
                  "presence_penalty": "presence_penalty", "logit_bias": "logit_bias", "logprobs": "logprobs",
                  "top_logprobs": "top_logprobs", "n": "n"}
# Boundary request fields -> ChatInput's.
GRAPHQL_FIELD = {"messages": "userPrompt"}
assert set(GRAPHQL_OPTION) == set(OPTION_NAMES), "every option needs its GraphQL name"


def sampling_params(options: GenerationOptions | None) -> SamplingParams:
    """The options given; absent ones keep the boundary's defaults. Raises InvalidFormat for a
    malformed responseFormat."""
    if options is None:
        return SamplingParams()
    given: dict[str, Any] = {name: getattr(options, attr) for name, attr in GRAPHQL_OPTION.items()
                             if getattr(options, attr) is not None}
    if "stop" in given:
        given["stop"] = tuple(given["stop"])
    if "logit_bias" in given:
        given["logit_bias"] = tuple((entry.token, entry.bias) for entry in given["logit_bias"])
    if "response_format" in given:
        given["response_format"] = response_format(given["response_format"])
    return SamplingParams(**given)


def response_format(given: ResponseFormatInput) -> ResponseFormat:
    return ResponseFormat.of(json_schema=given.json_schema, json_object=given.json_object, regex=given.regex,
                             choice=given.choice)


def graphql_field(field: str | None) -> str | None:
    if field and field.startswith(("tools", "history")):  # tools[2].parameters: ChatInput's own path
        return field
    if field == "tool_choice":
        return "toolChoice"
    field = (field or "").split(".")[0] or None  # response_format.choice: options.responseFormat
    if field in GRAPHQL_OPTION:
        return "options." + to_camel_case(GRAPHQL_OPTION[field])
    return GRAPHQL_FIELD.get(field or "", field)


def graphql_message(exc: EngineError) -> str:
    """An option's error in GraphQL's words (``maxTokens must be …``); others as they are."""
    head, _, rest = exc.message.partition(" ")
    if head.split(".")[0] == "response_format":  # response_format.json_schema …, from here or from an upstream of ours
        return f"{'.'.join(to_camel_case(p) for p in head.split('.'))} {rest}"
    if isinstance(exc, InvalidOption) and exc.field in GRAPHQL_OPTION:
        return f"{to_camel_case(GRAPHQL_OPTION[exc.field])} {exc.detail}"
    return exc.message
