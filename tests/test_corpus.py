"""Reading corpora: UTF-8 in chunks, every kind of bad file, the BOM, and the 90/10 split by position."""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit.data.corpus as corpus_module
from rnnkit.data import CharVocab, build_vocab, encode_file, iter_text, split_tokens
from rnnkit.errors import CorpusError, VocabularyError


# -- corpus reading ------------------------------------------------------------------------------------------
def _read_all(path):
    return "".join(iter_text(path))


READERS = {
    "build_vocab": build_vocab,
    "encode_file": lambda p: encode_file(p, CharVocab("abc")),
    "iter_text": _read_all,
}


@pytest.fixture(params=sorted(READERS))
def reader(request):
    return READERS[request.param]


def test_missing_file(reader, tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(CorpusError) as info:
        reader(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert "UTF-8 text file" in str(info.value)


def test_directory(reader, tmp_path):
    with pytest.raises(CorpusError) as info:
        reader(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "is a directory" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["empty", "only-bom"])
def test_empty_file(content, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    for read in (build_vocab, lambda p: encode_file(p, CharVocab("abc"))):
        with pytest.raises(CorpusError) as info:
            read(path)
        assert str(path) in str(info.value)
        assert "is empty" in str(info.value)
        assert "at least 2 characters" in str(info.value)
    assert _read_all(path) == ""


def test_binary_file_with_nul_bytes(reader, tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"ELF-ish header\x00\x00\x01\x02 and some more\x00")
    with pytest.raises(CorpusError) as info:
        reader(path)
    assert str(path) in str(info.value)
    assert "binary" in str(info.value)
    assert "NUL" in str(info.value)


def test_nul_byte_in_a_later_chunk(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 7)
    path = tmp_path / "late.bin"
    path.write_bytes(b"plain text for a while\x00then binary")
    with pytest.raises(CorpusError, match="binary"):
        _read_all(path)


PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"


def test_png_file_is_reported_as_binary(reader, tmp_path):
    """Regression: a binary file whose first bytes are not UTF-8 was once called 'not valid UTF-8', with
    advice to convert it with iconv; the NUL check now runs on the raw bytes, before decoding."""
    path = tmp_path / "image.png"
    path.write_bytes(PNG_BYTES)
    with pytest.raises(CorpusError) as info:
        reader(path)
    assert str(path) in str(info.value)
    assert "binary" in str(info.value)
    assert "iconv" not in str(info.value)


def test_latin1_file(reader, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(CorpusError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid UTF-8" in message
    assert "byte 3" in message
    assert "iconv" in message
    assert "\n" not in message


def test_file_ending_inside_a_character(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("abc€".encode()[:-1])
    with pytest.raises(CorpusError) as info:
        _read_all(path)
    assert str(path) in str(info.value)
    assert "not valid UTF-8" in str(info.value)
    assert "ends inside a character" in str(info.value)


def _first_bad_byte(data: bytes) -> int:
    with pytest.raises(UnicodeDecodeError) as info:
        data.decode("utf-8")
    return info.value.start


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"abcdefghij\xffklm", id="second-chunk"),
        pytest.param(b"abcdef\xc3(ghijk", id="bad-continuation-across-chunks"),
        pytest.param(b"\xef\xbb\xbfab\xffcd", id="after-bom"),
    ],
)
def test_invalid_utf8_byte_number_is_the_file_offset(data, monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 7)
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as info:
        _read_all(path)
    assert f"(byte {_first_bad_byte(data)})" in str(info.value)


def test_bom_is_dropped(tmp_path):
    text = "Ünïcode text\nline two 🦀\n"
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert _read_all(path) == text
    vocab, n = build_vocab(path)
    assert "\ufeff" not in vocab
    assert n == len(text)
    assert vocab.decode(encode_file(path, vocab)) == text


def test_bom_inside_the_text_is_kept(tmp_path):
    text = "ab\ufeffcd"
    path = tmp_path / "inner.txt"
    path.write_text(text, encoding="utf-8")
    assert _read_all(path) == text


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_multibyte_characters_across_chunk_boundaries(chunk, monkeypatch, tmp_path):
    text = ("é日🦀x\n" * 7) + "tail 𝔘ß"
    path = tmp_path / "utf8.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", chunk)
    chunks = list(iter_text(path))
    assert "".join(chunks) == path.read_text(encoding="utf-8") == text
    if chunk < 64:
        assert len(chunks) > 1  # the boundaries really were crossed
    vocab, n = build_vocab(path)
    assert n == len(text)
    assert vocab.chars == sorted(set(text))
    ids = encode_file(path, vocab)
    assert ids.dtype == np.uint16
    np.testing.assert_array_equal(ids, vocab.encode(text))


def test_encode_file_matches_encode_of_whole_text(small_corpus, monkeypatch):
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 1000)
    vocab, n = build_vocab(small_corpus)
    text = small_corpus.read_text(encoding="utf-8")
    assert n == len(text)
    assert vocab.chars == sorted(set(text))
    ids = encode_file(small_corpus, vocab)
    assert ids.dtype == np.uint16
    assert ids.shape == (len(text),)
    np.testing.assert_array_equal(ids, vocab.encode(text))
    assert vocab.decode(ids.tolist()) == text


def test_encode_file_with_characters_outside_the_vocab(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcz", encoding="utf-8")
    with pytest.raises(VocabularyError, match="'z'"):
        encode_file(path, CharVocab("abc"))


def test_encode_file_uses_uint32_past_65535_characters(tmp_path):
    chars = [chr(c) for c in range(0x20, 0x20 + 70_000) if not 0xD800 <= c < 0xE000]
    vocab = CharVocab(chars)
    assert len(vocab) > 65_535
    text = chars[-1] + chars[0] + chars[40_000]
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    ids = encode_file(path, vocab)
    assert ids.dtype == np.uint32
    assert ids.tolist() == [len(vocab) - 1, 0, 40_000]


def test_unreadable_file(tmp_path, monkeypatch):
    """An OS error while reading (permissions, I/O) is a one-line CorpusError. Simulated, since root reads anything."""
    path = tmp_path / "secret.txt"
    path.write_text("abc", encoding="utf-8")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("rnnkit.data.corpus.open", denied, raising=False)
    with pytest.raises(CorpusError, match="cannot read .*Permission denied"):
        build_vocab(path)


# -- split ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "n_train"), [(1000, 900), (10, 9), (1001, 900), (1009, 908), (2, 1)])
def test_split_by_position(n, n_train):
    ids = np.arange(n, dtype=np.uint16)
    train, val = split_tokens(ids)
    assert len(train) == n_train
    assert len(val) == n - n_train
    np.testing.assert_array_equal(train, ids[:n_train])
    np.testing.assert_array_equal(val, ids[n_train:])
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    assert train.dtype == val.dtype == np.uint16


def test_split_other_fraction():
    ids = np.arange(200)
    train, val = split_tokens(ids, val_fraction=0.25)
    np.testing.assert_array_equal(train, ids[:150])
    np.testing.assert_array_equal(val, ids[150:])


