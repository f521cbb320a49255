"""Data: the character vocabulary, corpus reading, the train/validation split, and TBPTT stream batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnkit.data.corpus as corpus_module
from rnnkit.data import IGNORE_INDEX, CharVocab, Streams, build_vocab, encode_file, iter_text, split_tokens
from rnnkit.errors import CorpusError, VocabularyError

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


# -- Streams -------------------------------------------------------------------------------------------------
def _windows(streams):
    return [streams.window(k) for k in range(len(streams))]


def _stream_positions(streams):
    """For each window, the original-array position of every x (and -1 where the row has ended)."""
    out = []
    for k in range(len(streams)):
        p = k * streams.seq_len
        T = streams.window(k)[0].shape[1]
        t = p + np.arange(T)
        pos = streams.starts[:, None] + t[None, :]
        out.append(np.where(t[None, :] < streams.lengths[:, None], pos, -1))
    return out


STREAM_CASES = [(101, 4, 8), (100, 4, 8), (97, 3, 5), (33, 8, 50), (10, 9, 1), (1000, 7, 13), (2, 1, 1)]


@pytest.mark.parametrize(("n", "B", "T"), STREAM_CASES)
def test_streams_cover_every_target_once(n, B, T):
    rng = np.random.default_rng(n * 31 + B)
    tokens = rng.integers(0, 50, size=n).astype(np.uint16)
    streams = Streams(tokens, B, T)
    # Each (input position -> target) pair appears once; positions are recovered from a unique-valued copy.
    index_tokens = np.arange(n, dtype=np.int64)
    positions = Streams(index_tokens, B, T)
    seen = []
    for k in range(len(streams)):
        x, y = streams.window(k)
        px, py = positions.window(k)
        assert x.dtype == y.dtype == torch.int64
        assert x.shape == y.shape
        assert x.shape[0] == B
        assert 1 <= x.shape[1] <= T
        valid = py != IGNORE_INDEX
        assert torch.equal(py[valid], px[valid] + 1)  # y is x shifted by one in the original array
        np.testing.assert_array_equal(x[valid].numpy(), tokens[px[valid].numpy()])
        np.testing.assert_array_equal(y[valid].numpy(), tokens[py[valid].numpy()])
        assert torch.equal(valid, y != IGNORE_INDEX)
        seen.extend(py[valid].tolist())
    assert sorted(seen) == list(range(1, n))  # every one of the n-1 targets, exactly once


@pytest.mark.parametrize(("n", "B", "T"), STREAM_CASES)
def test_streams_rows_are_contiguous_and_continue_across_windows(n, B, T):
    tokens = np.arange(n, dtype=np.int64)  # the token is its own position
    streams = Streams(tokens, B, T)
    lengths = streams.lengths
    assert lengths.sum() == n - 1
    assert lengths.max() - lengths.min() <= 1
    rows = [[] for _ in range(B)]
    for k, (x, y) in enumerate(_windows(streams)):
        assert x.shape[1] == (T if k < len(streams) - 1 else int(lengths.max()) - k * T)
        for b in range(B):
            valid = y[b] != IGNORE_INDEX
            # Valid steps of a row are a prefix of the window: a stream never restarts mid-window.
            assert valid.tolist() == sorted(valid.tolist(), reverse=True)
            rows[b].extend(x[b][valid].tolist())
    starts = []
    for b in range(B):
        row = rows[b]
        assert len(row) == lengths[b]
        # One contiguous piece of the array, in order: window k+1's first input follows window k's last.
        assert row == list(range(row[0], row[0] + len(row)))
        starts.append(row[0])
    # Rows are consecutive pieces: row b+1 starts where row b's targets end.
    assert starts[0] == 0
    for b in range(B - 1):
        assert starts[b + 1] == starts[b] + lengths[b]


def test_streams_window_continuity_explicitly():
    tokens = np.arange(1000, dtype=np.int64)
    streams = Streams(tokens, 5, 16)
    for k in range(len(streams) - 1):
        x0, _ = streams.window(k)
        x1, _ = streams.window(k + 1)
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)


def test_streams_uneven_tail_is_ignored():
    n, B, T = 23, 4, 4  # 22 targets: stream lengths 6, 6, 5, 5
    tokens = np.arange(100, 100 + n, dtype=np.uint16)
    streams = Streams(tokens, B, T)
    assert streams.lengths.tolist() == [6, 6, 5, 5]
    assert len(streams) == 2
    x, y = streams.window(1)
    assert x.shape == (B, 2)  # the last window is short
    assert y[0].tolist() == [105, 106]
    assert y[1].tolist() == [111, 112]
    assert y[2].tolist() == [117, IGNORE_INDEX]
    assert y[3].tolist() == [122, IGNORE_INDEX]
    x0, y0 = streams.window(0)
    assert x0[:, 0].tolist() == [100, 106, 112, 117]
    assert (y0 != IGNORE_INDEX).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_streams_large_ids_never_wrap(dtype):
    # 65436 is -100 as uint16: a where() done in uint16 would turn the ignore index into a real token id.
    wrapped = int(np.array(IGNORE_INDEX).astype(np.uint16))
    assert wrapped == 65436
    n, B, T = 103, 4, 7  # 102 targets: lengths 26, 26, 25, 25
    rng = np.random.default_rng(0)
    values = rng.integers(32768, 65535, size=n)
    values[::5] = wrapped
    values[1::7] = 65535
    tokens = values.astype(dtype)
    streams = Streams(tokens, B, T)
    ignored = cells = 0
    served = []
    for x, y in _windows(streams):
        cells += y.numel()
        assert x.min() >= 0
        valid = y != IGNORE_INDEX
        ignored += int((~valid).sum())
        assert set(y[~valid].tolist()) <= {IGNORE_INDEX}
        assert (y[valid] >= 32768).all()
        served.extend(y[valid].tolist())
    assert ignored == cells - (n - 1) > 0
    assert sorted(served) == sorted(values[1:].tolist())
    assert served.count(wrapped) == int((values[1:] == wrapped).sum())  # real 65436 tokens are still served


@pytest.mark.parametrize(
    ("n", "B", "T"), [(10, 0, 4), (10, 2, 0), (10, -1, 4), (10, 2, -3), (5, 5, 2), (1, 1, 1), (0, 1, 1)]
)
def test_streams_bad_sizes(n, B, T):
    with pytest.raises(ValueError):
        Streams(np.arange(n), B, T)


def test_streams_window_out_of_range():
    streams = Streams(np.arange(50), 3, 4)
    streams.window(len(streams) - 1)
    for k in (-1, len(streams)):
        with pytest.raises(IndexError):
            streams.window(k)


# -- real data -----------------------------------------------------------------------------------------------
def test_tiny_shakespeare(shakespeare):
    vocab, n = build_vocab(shakespeare)
    assert len(vocab) == 65
    assert n == 1_115_394
    assert vocab.chars[0] == "\n"
    assert set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") <= set(vocab.chars)
    ids = encode_file(shakespeare, vocab)
    assert ids.dtype == np.uint16
    assert len(ids) == n
    assert vocab.decode(ids[:14].tolist()) == "First Citizen:"
    train, val = split_tokens(ids)
    assert len(train) == 1_003_854
    assert len(val) == 111_540
    assert len(train) == int(n * 0.9)
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
