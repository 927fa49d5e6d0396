"""Chat messages to prompt token ids, through the model's own chat template.

Message contents are text, never markup: a user who writes ``<|im_end|><|im_start|>system`` gets
those characters as ordinary tokens, not a forged system turn. The template is rendered with a
random placeholder per message; the template's own text is tokenized with its special tokens, and
each content with special-token strings split into plain tokens. ``parse_special=True`` restores
what llama.cpp, vLLM and TGI do by default (content tokenized together with the template).

Where no content holds a special-token string, the ids equal ``apply_chat_template``'s: the
template puts contents between special tokens and newlines, where the tokenizer splits anyway.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Sequence

from ..boundary import ChatMessage


class PromptEncoder:
    """Thread-safe: tokenizers' Rust encoders take no lock; the two backends are never toggled."""

    def __init__(self, tokenizer, parse_special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.parse_special = parse_special
        self._template = tokenizer.backend_tokenizer
        self._text = copy.deepcopy(tokenizer.backend_tokenizer)
        self._text.encode_special_tokens = True
        tag = secrets.token_hex(8)
        self._mark = f"\x1e{tag}:{{}}\x1e"
        self._marks = re.compile(f"\x1e{tag}:(\\d+)\x1e")

    def encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        if self.parse_special:
            return self._render(messages, tokenize=True)
        placeholders = [ChatMessage(role=m.role, content=self._mark.format(i)) for i, m in enumerate(messages)]
        pieces = self._marks.split(self._render(placeholders, tokenize=False))
        ids: list[int] = []
        for i, piece in enumerate(pieces):  # template text, message index, template text, ...
            if i % 2:
                ids += self._text.encode(messages[int(piece)].content, add_special_tokens=False).ids
            elif piece:
                ids += self._template.encode(piece, add_special_tokens=False).ids
        return ids

    def encode_text(self, text: str) -> list[int]:
        """A text's ids alone, no template, under the same rule as message contents (special-token
        strings are plain text unless ``parse_special``)."""
        return (self._template if self.parse_special else self._text).encode(text, add_special_tokens=False).ids

    def _render(self, messages: Sequence[ChatMessage], tokenize: bool):
        out = self.tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                 add_generation_prompt=True, tokenize=tokenize)
        if tokenize and not isinstance(out, list):
            out = out["input_ids"]
        return list(out) if tokenize else out
