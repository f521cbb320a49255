"""Character vocabulary: any Unicode code point, sorted, saved with the model."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rnnkit.errors import VocabularyError


class CharVocab:
    """Maps characters to ids ``0 .. V-1`` in code-point order."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise VocabularyError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise VocabularyError("a character vocabulary holds single characters only")
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)  # sorted
        self._index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids (int64). Characters outside the vocabulary raise VocabularyError naming them."""
        # surrogatepass: a lone surrogate (what Python makes of undecodable bytes in argv) is just unknown
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self._codes, codes)
        ids_clipped = np.minimum(ids, len(self.chars) - 1)
        bad = self._codes[ids_clipped] != codes
        if bad.any():
            unknown = sorted({chr(c) for c in codes[bad]})
            shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise VocabularyError(
                f"text contains {len(unknown)} character(s) the model's vocabulary does not hold: {shown} — "
                "use only characters from the training corpus"
            )
        return ids_clipped

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharVocab:
        if d.get("type") != "char" or not isinstance(d.get("chars"), str):
            raise VocabularyError("config.json holds no character vocabulary — the checkpoint is damaged")
        return cls(d["chars"])
