"""Data: corpora, the character vocabulary, and TBPTT stream batching."""

from rnnkit.data.corpus import build_vocab, encode_file, iter_text, split_tokens
from rnnkit.data.datasets import resolve_corpus
from rnnkit.data.streams import IGNORE_INDEX, Streams
from rnnkit.data.vocab import CharVocab

__all__ = [
    "IGNORE_INDEX", "CharVocab", "Streams", "build_vocab", "encode_file", "iter_text", "resolve_corpus", "split_tokens",
]
