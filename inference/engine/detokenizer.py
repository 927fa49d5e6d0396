"""Incremental detokenization that never emits a broken UTF-8 character, with stop strings.

Invariant: the deltas a sequence emits, joined, equal its final text, which is the tokenizer's
decode of the generated tokens, cut before the first stop string. When generation stops inside a
multi-byte character (max tokens reached mid-emoji), that incomplete character is dropped rather
than sent as U+FFFD.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream


class IncrementalText:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._backend = tokenizer.backend_tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.emitted = 0

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; return (text safe to emit now, whether a stop string was reached)."""
        piece = self._stream.step(self._backend, token)
        if not piece:
            return "", False
        searched_from = max(0, len(self.text) - self._hold)
        self.text += piece
        cut = self._find_stop(searched_from)
        if cut is not None:
            self.text = self.text[:cut]
            return self._take(len(self.text)), True
        return self._take(len(self.text) - self._hold), False

    def finish(self, token_ids: list[int]) -> str:
        """The final text (authoritative full decode) and the rest of it not yet emitted."""
        final = self._tokenizer.decode(token_ids, skip_special_tokens=True).rstrip("\ufffd")
        cut = self._find_stop(0, final)
        self.text = final if cut is None else final[:cut]
        return self._take(len(self.text))

    def _find_stop(self, start: int, text: str | None = None) -> int | None:
        text = self.text if text is None else text
        hits = [i for s in self._stop if (i := text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def _take(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        delta = self.text[self.emitted:upto]
        self.emitted = upto
        return delta
