"""The character vocabulary: any Unicode, code-point order, unknown characters named."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.data import CharVocab
from rnnkit.errors import VocabularyError

UNICODE_TEXT = "Café naïve — 日本語の文字\tand emoji 🦀🐍 (outside the BMP)\nsecond line: ß ø Ω ∑ 𝔘\r\nend"


# -- CharVocab -----------------------------------------------------------------------------------------------
def test_vocab_round_trip_any_unicode():
    vocab = CharVocab(UNICODE_TEXT)
    ids = vocab.encode(UNICODE_TEXT)
    assert ids.dtype == np.int64
    assert len(ids) == len(UNICODE_TEXT)  # one id per code point, astral characters included
    assert vocab.decode(ids.tolist()) == UNICODE_TEXT
    assert vocab.decode(ids) == UNICODE_TEXT
    assert len(vocab) == len(set(UNICODE_TEXT))
    assert vocab.encode("").tolist() == []


def test_vocab_ids_in_code_point_order():
    chars = set(UNICODE_TEXT)
    vocab = CharVocab(chars)
    expected = sorted(chars, key=ord)
    assert vocab.chars == expected
    assert vocab.encode("".join(expected)).tolist() == list(range(len(expected)))
    for c in chars:
        assert c in vocab
        assert vocab.decode([vocab.encode(c)[0]]) == c
    assert "x" not in CharVocab("abc")


def test_vocab_ignores_duplicates_and_order_of_input():
    a = CharVocab("banana🍌")
    b = CharVocab(["🍌", "n", "a", "b", "a"])
    assert a.chars == b.chars == ["a", "b", "n", "🍌"]


def test_vocab_dict_round_trip():
    vocab = CharVocab(UNICODE_TEXT)
    d = vocab.to_dict()
    assert d["type"] == "char"
    again = CharVocab.from_dict(d)
    assert again.chars == vocab.chars
    assert again.encode(UNICODE_TEXT).tolist() == vocab.encode(UNICODE_TEXT).tolist()


@pytest.mark.parametrize("bad", [{}, {"type": "word", "chars": "ab"}, {"type": "char", "chars": ["a", "b"]}])
def test_vocab_from_dict_rejects_other_data(bad):
    with pytest.raises(VocabularyError, match="no character vocabulary"):
        CharVocab.from_dict(bad)


def test_vocab_rejects_multi_character_entries():
    with pytest.raises(VocabularyError, match="single characters"):
        CharVocab(["ab", "c"])


def test_vocab_unknown_characters_are_named_on_one_line():
    vocab = CharVocab("abc \n")
    with pytest.raises(VocabularyError) as info:
        vocab.encode("abc ζ\ta🦀b€")
    message = str(info.value)
    for c in ("ζ", "\t", "🦀", "€"):
        assert repr(c) in message
    assert "4 character(s)" in message
    assert "\n" not in message
    for c in "abc":
        assert repr(c) not in message
    assert isinstance(info.value, KeyError)  # callers catching KeyError keep working


def test_vocab_unknown_character_above_every_known_one():
    # searchsorted gives len(vocab) for a code point past the last one; it must be reported, not crash.
    vocab = CharVocab("ab")
    with pytest.raises(VocabularyError, match="'z'"):
        vocab.encode("az")
    with pytest.raises(VocabularyError, match="' '"):
        vocab.encode(" a")  # below every known one


def test_vocab_many_unknown_characters_are_shortened():
    vocab = CharVocab("a")
    unknown = "".join(chr(0x4E00 + i) for i in range(30))
    with pytest.raises(VocabularyError) as info:
        vocab.encode(unknown)
    message = str(info.value)
    assert "30 character(s)" in message
    assert "..." in message
    assert "\n" not in message


def test_vocab_lone_surrogate_is_an_unknown_character():
    vocab = CharVocab("ab")
    with pytest.raises(VocabularyError):
        vocab.encode("a\udcff")


