"""The translation data layer: split, tokenisers, batches, errors (rnnkit.data.translation)."""

from __future__ import annotations

import json
import shutil
import unicodedata
from collections import defaultdict

import numpy as np
import pytest
import torch
from conftest import require_data

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.data.translation import (
    BOS,
    EOS,
    PAD,
    UNK,
    Pairs,
    Tokenizer,
    TranslationSpec,
    join_words,
    load_translation,
    normalise,
    read_pairs,
    split_of,
    split_words,
)
from rnnkit.errors import ConfigError, CorpusError

SPA = "spa-eng/spa.txt"
CURATED_ES = ["¿Dónde está la biblioteca?", "¡Auxilio!", "Tom dice \"hola\".", "Te debo 3.000 yenes.",
              "Él era el rey del rock'n'roll.", "¿Es él japonés?", "Sí, señor.",
              "El perro de Tom no ladra."]
CURATED_EN = ["Where is the library?", "Help!", "I'm at my parents' house.", "It's 2:00 p.m.", "I owe you $30.",
              "He was the king of rock-and-roll.", "\"Look,\" she said.", "Tom's dog doesn't bark."]


def _key(spanish: str) -> str:
    """An independent spelling of 'the same Spanish sentence': NFC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", spanish).lower().split())


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """Every 25th line of spa.txt (4,759 real pairs, short and long), plus the curated sentences."""
    lines = require_data(SPA).read_text(encoding="utf-8").splitlines()[::25]
    lines += [f"{e}\t{s}" for e, s in zip(CURATED_EN, CURATED_ES, strict=True)]
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_word(small_file):
    return load_translation(TranslationSpec(str(small_file), vocab_size=10**6))


@pytest.fixture(scope="module")
def small_bpe(small_file):
    return load_translation(TranslationSpec(str(small_file), tokens="bpe", vocab_size=2000))


@pytest.fixture(scope="module")
def whole_vocab(small_file):
    """Tokenizers of each kind trained on every sentence of the small file (the curated ones included)."""
    eng, spa = read_pairs(small_file)
    words = [split_words(s) for s in eng + spa]
    return {"word": Tokenizer.train(words, "word", 10**6, True), "bpe": Tokenizer.train(words, "bpe", 3000, True)}


def _one_line_with_fix(err: Exception) -> None:
    msg = str(err)
    assert "\n" not in msg and " — " in msg and msg.split(" — ", 1)[1].strip(), msg


def test_word_splitting_and_joining():
    assert split_words("¿Dónde está la biblioteca?") == ["¿", "dónde", "está", "la", "biblioteca", "?"]
    assert split_words("¡Auxilio!", lowercase=False) == ["¡", "Auxilio", "!"]
    assert split_words("I'm sure Tom's rock-and-roll isn't bad.") == [
        "i", "'m", "sure", "tom", "'s", "rock", "@-@", "and", "@-@", "roll", "isn", "'t", "bad", "."]
    assert split_words("I owe you 3,000 yen at 2:00 p.m.") == ["i", "owe", "you", "3,000", "yen", "at", "2:00", "p.m."]
    assert split_words("It\u2019s  e\u0301l.") == ["it", "'s", "él", "."]  # typographic apostrophe, NFC, spaces
    for s in [*CURATED_ES, *CURATED_EN]:
        assert join_words(split_words(s, lowercase=False)) == s
    assert join_words(split_words("Pagué 200 $ en impuestos.")) == "pagué 200 $ en impuestos."


def test_split_is_deterministic_and_a_function_of_the_normalised_spanish(small_file):
    assert split_of("¿Dónde  está la biblioteca?", 5, 2) == split_of("¿dónde está la Biblioteca?", 5, 2)
    eng, spa = read_pairs(small_file)
    parts = [split_of(s, 5, 2) for s in spa]
    by_key = defaultdict(set)
    for s, p in zip(spa, parts, strict=True):
        by_key[_key(s)].add(p)
    assert all(len(ps) == 1 for ps in by_key.values())  # no Spanish sentence in two parts
    a = load_translation(TranslationSpec(str(small_file)))
    b = load_translation(TranslationSpec(str(small_file), tokens="bpe", lowercase=False, vocab_size=500,
                                          max_length=1000))
    assert a.test_sources == b.test_sources == [s for s, p in zip(spa, parts, strict=True) if p == 2]
    assert a.test_references == [e for e, p in zip(eng, parts, strict=True) if p == 2]
    assert (len(a.train), len(a.val), len(a.test)) == (len(b.train), len(b.val), len(b.test))
    assert (len(a.train), len(a.val), len(a.test)) == tuple(parts.count(p) for p in (0, 1, 2))
    again = load_translation(TranslationSpec(str(small_file)))
    assert again.src.words == a.src.words and np.array_equal(again.train.src.flat, a.train.src.flat)


def test_full_file_split(tmp_path):
    path = require_data(SPA)
    data = load_translation(TranslationSpec(str(path)))
    eng, spa = read_pairs(path)
    n = len(eng)
    assert n == 118_964 and len(data.train) + len(data.val) + len(data.test) == n
    assert abs(len(data.test) / n - 0.05) < 0.007 and abs(len(data.val) / n - 0.02) < 0.004
    test_keys = {_key(s) for s in data.test_sources}
    assert sum(_key(s) in test_keys for s in spa) == len(data.test)  # every copy of a test sentence is in test
    refs = defaultdict(list)
    for s, e in zip(spa, eng, strict=True):
        if _key(s) in test_keys:
            refs[_key(s)].append(e)
    assert len(data.test_groups) == len(test_keys)
    assert all(sorted(r) == sorted(refs[_key(s)]) for s, r in data.test_groups)
    assert max(len(r) for _, r in data.test_groups) > 1
    assert (data.test.tgt.flat == UNK).mean() < 0.02


def test_test_groups_collect_every_reference(small_file, tmp_path):
    eng, spa = read_pairs(small_file)
    s = next(s for s in spa if split_of(s, 5, 2) == 2 and " " in s)
    lines = [f"{e}\t{x}" for e, x in zip(eng, spa, strict=True) if _key(x) != _key(s)]
    lines[10:10] = [f"First.\t{s}", f"Second.\t{s.upper()}"]
    lines.append(f"Third.\t {s.replace(' ', '  ')}")
    path = tmp_path / "spa.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = load_translation(TranslationSpec(str(path)))
    assert (s, ["First.", "Second.", "Third."]) in data.test_groups
    assert sum(len(r) for _, r in data.test_groups) == len(data.test) == len(data.test_references)
    assert len({_key(x) for x, _ in data.test_groups}) == len(data.test_groups)


def test_batch_framing():
    pairs = Pairs([[5, 6, 7], [8]], [[9], [10, 11, 12]])
    b = pairs.batch([0, 1]).to("cpu")
    assert torch.equal(b.src, torch.tensor([[5, 6, 7], [8, PAD, PAD]]))
    assert torch.equal(b.src_lengths, torch.tensor([3, 1]))
    assert torch.equal(b.tgt_in, torch.tensor([[BOS, 9, PAD, PAD], [BOS, 10, 11, 12]]))
    assert torch.equal(b.tgt_out, torch.tensor([[9, EOS, IGNORE_INDEX, IGNORE_INDEX], [10, 11, 12, EOS]]))
    assert all(t.dtype == torch.int64 for t in (b.src, b.src_lengths, b.tgt_in, b.tgt_out))
    one = pairs.batch([1])
    assert one.src.tolist() == [[8]] and one.tgt_out.tolist() == [[10, 11, 12, EOS]]
    assert pairs.num_target_tokens() == 6
    sub = pairs.subset([1])
    assert len(sub) == 1 and sub.batch([0]).tgt_in.tolist() == [[BOS, 10, 11, 12]]
    assert [x.src.shape[0] for x in Pairs([[1]] * 5, [[2]] * 5).batches(2)] == [2, 2, 1]


def test_length_batches(small_word):
    train = small_word.train
    a, b = train.length_batches(32, seed=1, epoch=0), train.length_batches(32, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = train.length_batches(32, seed=1, epoch=1)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=False))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(len(train)))
    longest = [train.src.lengths[x].max() for x in a[:20]]
    assert np.any(np.diff(longest) < 0)  # the batches are shuffled, not served shortest first
    order = np.random.default_rng(0).permutation(len(train))
    random = train.padding_waste([order[i:i + 32] for i in range(0, len(train), 32)])
    bucketed = train.padding_waste(a)
    assert bucketed[0] < 0.5 * random[0] and bucketed[1] < random[1]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_curated_round_trip(kind, whole_vocab):
    tok = whole_vocab[kind]
    assert tok.decode(tok.encode("¿Dónde está la biblioteca?")) == "¿dónde está la biblioteca?"
    for s in [*CURATED_ES, *CURATED_EN]:
        assert UNK not in tok.encode(s)
        assert tok.decode(tok.encode(s)) == s.lower()
        assert tok.decode([BOS, *tok.encode(s), EOS, *tok.encode("¡Auxilio!"), PAD]) == s.lower()


def test_word_round_trip(small_word):
    tgt = small_word.tgt
    rows = [small_word.train.tgt.row(i) for i in range(len(small_word.train))]
    texts = [tgt.decode(r) for r in rows]
    assert all(tgt.encode(t) == r for t, r in zip(texts, rows, strict=True))
    assert tgt.decode([BOS, *tgt.encode("Help!"), EOS, *tgt.encode("rubbish"), PAD]) == "help!"
    assert "<unk>" in tgt.decode(tgt.encode("Zyzzyva!")) and UNK in tgt.encode("Zyzzyva!")


def test_vocabulary_comes_from_the_training_part(small_file, small_word):
    eng, spa = read_pairs(small_file)
    train = [i for i, s in enumerate(spa) if split_of(s, 5, 2) == 0]
    assert set(small_word.src.words[4:]) == {w for i in train for w in split_words(spa[i])}
    assert set(small_word.tgt.words[4:]) == {w for i in train for w in split_words(eng[i])}


def test_word_vocabulary_is_capped(small_file):
    data = load_translation(TranslationSpec(str(small_file), vocab_size=100))
    assert len(data.src) == len(data.tgt) == 100
    assert data.src.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (data.train.tgt.flat == UNK).mean() > 0.1


def test_bpe_round_trip(small_bpe, small_file):
    src, tgt = small_bpe.src, small_bpe.tgt
    assert len(src) == len(tgt) == 2000
    assert [src.pieces([i])[0] for i in (PAD, BOS, EOS, UNK)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    pieces = src.pieces(src.encode("¿Dónde está la biblioteca? ¡Sí!"))
    assert pieces[0] == "▁¿" and {"▁¡", "▁?", "▁!"} <= set(pieces) and "▁dónde" in pieces
    ids = tgt.encode("Zyzzyva 😀 is über-cool, my parents' friends' house.")
    assert tgt.decode(ids) == "zyzzyva <unk> is <unk>ber-cool, my parents' friends' house." and ids.count(UNK) == 2
    again = load_translation(TranslationSpec(str(small_file), tokens="bpe", vocab_size=2000))
    assert again.tgt.to_dict() == tgt.to_dict() and np.array_equal(again.train.src.flat, small_bpe.train.src.flat)
    same = [tgt.decode(tgt.encode(r)) == normalise(r) for r in small_bpe.test_references]
    assert np.mean(same) > 0.98
    assert tgt.decode([BOS, *tgt.encode("Help!"), EOS, *tgt.encode("rubbish")]) == "help!"
    cased = load_translation(TranslationSpec(str(small_file), tokens="bpe", lowercase=False, vocab_size=1000)).src
    assert cased.decode(cased.encode("¿Dónde está Tom?")) == "¿Dónde está Tom?"


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_tokenizer_dict_round_trip(kind, small_word, small_bpe):
    data = small_word if kind == "word" else small_bpe
    for tok in (data.src, data.tgt):
        back = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
        assert len(back) == len(tok) and back.kind == kind
        for s in [*data.test_sources[:200], *data.test_references[:200], *CURATED_ES]:
            assert back.encode(s) == tok.encode(s)
            assert back.decode(tok.encode(s)) == tok.decode(tok.encode(s))
    with pytest.raises(CorpusError) as e:
        Tokenizer.from_dict(data.src.to_dict() | {"scheme": 99})
    _one_line_with_fix(e.value)


def test_given_tokenizers_and_verify(small_file, tmp_path):
    path = tmp_path / "spa.txt"
    shutil.copy(small_file, path)
    spec = TranslationSpec(str(tmp_path))  # a folder holding spa.txt
    assert spec.path == str(path.resolve())
    data = load_translation(spec)
    assert len(spec.sha256) == 64 and json.dumps(vars(spec))
    again = load_translation(TranslationSpec(**vars(spec)), data.src, data.tgt, verify=True)
    assert np.array_equal(again.test.src.flat, data.test.src.flat)
    with path.open("a", encoding="utf-8") as f:
        f.write("Hello.\tHola.\n")
    with pytest.raises(CorpusError, match="the data changed") as e:
        load_translation(TranslationSpec(**vars(spec)), data.src, data.tgt, verify=True)
    _one_line_with_fix(e.value)
    with pytest.raises(ConfigError) as e:
        load_translation(TranslationSpec(str(path), tokens="bpe"), data.src, data.tgt)
    _one_line_with_fix(e.value)


def test_max_length_drops_training_pairs_only(small_file, small_word):
    data = load_translation(TranslationSpec(str(small_file), max_length=4))
    assert max(data.train.src.lengths.max(), data.train.tgt.lengths.max()) <= 4
    assert 0 < len(data.train) < len(small_word.train)
    assert (len(data.val), len(data.test)) == (len(small_word.val), len(small_word.test))
    assert max(data.test.src.lengths) > 4


@pytest.mark.parametrize("settings", [{"tokens": "char"}, {"test_percent": 0}, {"val_percent": -1},
                                      {"test_percent": 40, "val_percent": 20}, {"test_percent": "5"},
                                      {"vocab_size": 3}, {"max_length": 0}])
def test_bad_settings(settings, small_file):
    with pytest.raises(ConfigError) as e:
        TranslationSpec(str(small_file), **settings)
    _one_line_with_fix(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(CorpusError) as e:
        TranslationSpec(str(tmp_path / "missing.txt"))
    _one_line_with_fix(e.value)
    path = tmp_path / "pairs.txt"
    path.write_text("Go.\tVe.\nHi. Hola.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=":2:") as e:
        load_translation(TranslationSpec(str(path)))
    _one_line_with_fix(e.value)
    path.write_bytes(b"Go.\tVe\xff.\n")
    with pytest.raises(CorpusError) as e:
        load_translation(TranslationSpec(str(path)))
    _one_line_with_fix(e.value)
