"""The JSON Schemas that the structured-output tests and benchmarks use, with one valid document
each: a nested object, an array with ``minItems``, and an enum."""

from __future__ import annotations

from typing import Any

NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}, "country": {"type": "string", "maxLength": 24}},
            "required": ["city", "country"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "address"],
    "additionalProperties": False,
}
ARRAY: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 2, "maxItems": 3}},
    "required": ["items"],
    "additionalProperties": False,
}
ENUM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}
# The README's extraction example: a name, a number and an enum.
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["engineer", "doctor", "teacher", "artist", "other"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {"nested": NESTED, "array": ARRAY, "enum": ENUM}
EXAMPLES: dict[str, str] = {
    "nested": '{"name":"Ada Lovelace","address":{"city":"London","country":"United Kingdom"}}',
    "array": '{"items":["apples","pears","plums"]}',
    "enum": '{"sentiment":"positive","confidence":87}',
}
