"""Reading text corpora: UTF-8, streamed in chunks, checked, and encoded to a compact token array.

The text is never held whole as a Python string: a first pass collects the character set, a second encodes
chunk by chunk into ``uint16`` (or ``uint32`` for vocabularies past 65,535 characters), so a corpus costs
two bytes per character in memory.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnnkit.data.vocab import CharVocab
from rnnkit.errors import CorpusError

CHUNK_BYTES = 1 << 20
VAL_FRACTION = 0.1


def iter_text(path: str | Path) -> Iterator[str]:
    """Decoded chunks of a UTF-8 file (a leading BOM is dropped); raises CorpusError for what is not text."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path} does not exist — pass the path of a UTF-8 text file")
    if path.is_dir():
        raise CorpusError(f"{path} is a directory — pass the path of a UTF-8 text file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read so far
    try:
        with open(path, "rb") as f:
            while raw := f.read(CHUNK_BYTES):
                if b"\x00" in raw:  # no UTF-8 text holds NUL; binary files nearly always do
                    raise CorpusError(f"{path} looks binary (it contains NUL bytes) — pass a UTF-8 text file")
                pending = len(decoder.getstate()[0])  # bytes of a character split across the previous read
                try:
                    text = decoder.decode(raw)
                except UnicodeDecodeError as e:
                    raise CorpusError(
                        f"{path} is not valid UTF-8 (byte {offset - pending + e.start}) — convert it first, "
                        "e.g. iconv -f LATIN1 -t UTF-8"
                    ) from None
                if offset == 0 and text.startswith("\ufeff"):
                    text = text[1:]  # a byte-order mark is not part of the text
                offset += len(raw)
                yield text
            try:
                tail = decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise CorpusError(
                    f"{path} is not valid UTF-8 (it ends inside a character) — convert it first"
                ) from None
            if tail:
                yield tail
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror} — check the path and its permissions") from None


def build_vocab(path: str | Path) -> tuple[CharVocab, int]:
    """The character vocabulary of a file and its length in characters."""
    chars: set[str] = set()
    n = 0
    for text in iter_text(path):
        chars.update(text)
        n += len(text)
    if n == 0:
        raise CorpusError(f"{path} is empty — pass a UTF-8 text file with at least 2 characters")
    return CharVocab(chars), n


def encode_file(path: str | Path, vocab: CharVocab) -> np.ndarray:
    """Token ids of a whole file, as uint16 (uint32 for very large vocabularies)."""
    dtype = np.uint16 if len(vocab) <= np.iinfo(np.uint16).max else np.uint32
    parts = [vocab.encode(text).astype(dtype) for text in iter_text(path)]
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    if len(ids) == 0:
        raise CorpusError(f"{path} is empty — pass a UTF-8 text file with at least 2 characters")
    return ids


def split_tokens(ids: np.ndarray, val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Split by position: the first 90% trains, the last 10% validates (as nanoGPT does)."""
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]
