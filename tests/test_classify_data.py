"""Classification data: tokens and vocabularies, labelled text files, padded batches, stratified splits, UEA/UCR
series and their scaling, and the train / validation / test splits that config.json rebuilds."""

from collections import Counter

import numpy as np
import pytest
import torch
from classify_helpers import names_sample, write_ts
from conftest import require_data

from rnnkit.data.classification import ClassificationSpec, load_classification
from rnnkit.data.labeled import Examples, TokenVocab, read_labeled_texts, stratified_split, tokenize
from rnnkit.data.series import fit_scaler, load_ts_file, load_uea, shipped_uea_names
from rnnkit.errors import CorpusError, VocabularyError


# -- tokens and vocabularies ---------------------------------------------------------------------------------
def test_tokenize_char_keeps_every_character():
    assert tokenize("Ab c!\té", "char") == ["A", "b", " ", "c", "!", "\t", "é"]


def test_tokenize_word_lowercases_and_splits_punctuation():
    assert tokenize("Don't STOP! It's 'great', really...", "word") == [
        "don't", "stop", "!", "it's", "'", "great", "'", ",", "really", ".", ".", "."]
    assert tokenize("  \t ", "word") == []
    with pytest.raises(VocabularyError, match="unknown tokenizer"):
        tokenize("x", "bpe")


def test_vocab_reserves_pad_and_unk_and_counts():
    texts = ["a b a", "a c", "b a"]
    vocab = TokenVocab.build(texts, "word", min_count=2)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"] and vocab.tokens[2:] == ["a", "b"]  # c is seen once
    assert vocab.encode("a c b zz").tolist() == [2, 1, 3, 1]
    assert vocab.encode("a").dtype == np.int64
    full = TokenVocab.build(texts, "word")
    assert len(full) == 5 and full.encode("c").tolist() == [4]
    chars = TokenVocab.build(["ab", "ba!"], "char")
    assert chars.tokens == ["<pad>", "<unk>", "!", "a", "b"] and chars.encode("a?").tolist() == [3, 1]
    # the reserved names in the data never take another id
    assert TokenVocab(["<unk>", "x", "<pad>"], "char").tokens == ["<pad>", "<unk>", "x"]


def test_vocab_round_trip_and_bad_dicts():
    vocab = TokenVocab.build(["héllo wörld", "it's"], "word")
    again = TokenVocab.from_dict(vocab.to_dict())
    assert again.tokens == vocab.tokens and again.kind == "word"
    assert again.encode("wörld it's x").tolist() == vocab.encode("wörld it's x").tolist()
    for bad in ({}, {"type": "chars", "tokens": ["a"]}, {"type": "tokens", "tokens": "abc"}):
        with pytest.raises(VocabularyError, match="damaged"):
            TokenVocab.from_dict(bad)
    with pytest.raises(VocabularyError, match="unknown tokenizer"):
        TokenVocab.from_dict({"type": "tokens", "tokens": ["a"], "kind": "bytes"})


# -- labelled text files -------------------------------------------------------------------------------------
def test_tab_file_with_crlf_quotes_and_inner_tabs(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b'"Great" phone,  "really"\t1\r\nnot\tgood at all\t0\r\n\r\n  \r\nok\t 1 \r\n')
    texts, labels = read_labeled_texts(path)
    assert texts == ['"Great" phone,  "really"', "not\tgood at all", "ok"]  # the label is after the last tab
    assert labels == ["1", "0", "1"]


def test_real_sentiment_file_reads_like_a_manual_parse():
    path = require_data("sentiment") / "imdb_labelled.txt"
    texts, labels = read_labeled_texts(path)
    raw = path.read_bytes().decode("utf-8")
    expected = [ln.rsplit("\t", 1) for ln in raw.split("\r\n") if ln.strip()]
    assert len(texts) == len(expected) == 1000
    assert texts == [t.strip() for t, _ in expected] and labels == [lab for _, lab in expected]
    assert Counter(labels) == {"0": 500, "1": 500}
    assert not any(t.endswith("\r") for t in texts) and sum('"' in t for t in texts) > 10


def test_folder_of_label_files(tmp_path):
    (tmp_path / "English.txt").write_text("Smith\nJones\n\n")
    (tmp_path / "French.txt").write_bytes("Dubois\r\nLefèvre\r\nMartin\r\n".encode())
    (tmp_path / "notes.md").write_text("ignored\n")
    (tmp_path / ".hidden.txt").write_text("ignored\n")
    texts, labels = read_labeled_texts(tmp_path)
    assert texts == ["Smith", "Jones", "Dubois", "Lefèvre", "Martin"]
    assert labels == ["English", "English", "French", "French", "French"]


def test_real_names_folder(tmp_path):
    folder = names_sample(tmp_path / "names", ("Greek", "Polish"))
    texts, labels = read_labeled_texts(folder)
    lines = {lang: [ln for ln in (folder / f"{lang}.txt").read_text().split("\n") if ln.strip()]
             for lang in ("Greek", "Polish")}
    assert Counter(labels) == {k: len(v) for k, v in lines.items()}
    assert texts == lines["Greek"] + lines["Polish"]


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    (b"no tab here\n", "is not 'text<TAB>label'"),
    (b"text\t\n", "is not 'text<TAB>label'"),
    (b"a\tx\nb\tx\n", "fewer than two labels"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\t1\n", "binary"),
    (b"caf\xe9\t1\nthe\t0\n", "not UTF-8"),
])
def test_text_file_errors(tmp_path, content, fragment):
    path = tmp_path / "d.tsv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=fragment):
        read_labeled_texts(path)


def test_folder_errors(tmp_path):
    with pytest.raises(CorpusError, match="no .txt files"):
        read_labeled_texts(tmp_path)
    (tmp_path / "A.txt").write_text("x\ny\n")
    (tmp_path / "B.txt").write_text("\n\n")
    with pytest.raises(CorpusError, match="one class only"):
        read_labeled_texts(tmp_path)


# -- batches and splits --------------------------------------------------------------------------------------
def test_examples_pad_with_zeros_and_keep_order():
    ex = Examples([np.array([3, 4]), np.array([5]), np.array([6, 7, 8])], np.array([1, 0, 1]))
    b = ex.batch([2, 1])
    assert b.x.tolist() == [[6, 7, 8], [5, 0, 0]] and b.lengths.tolist() == [3, 1] and b.y.tolist() == [1, 0]
    feats = Examples([np.ones((2, 3), np.float32), np.full((4, 3), 2, np.float32)], np.array([0, 1]))
    fb = feats.batch([0, 1])
    assert fb.x.shape == (2, 4, 3) and fb.x.dtype == torch.float32 and fb.x[0, 2:].abs().sum() == 0
    assert [b.lengths.tolist() for b in ex.batches(2)] == [[2, 1], [3]]
    assert ex.subset([2, 0]).targets.tolist() == [1, 1]
    with pytest.raises(CorpusError, match="empty"):
        Examples([np.array([1]), np.array([], dtype=np.int64)], np.array([0, 1]))
    with pytest.raises(ValueError):
        Examples([np.array([1])], np.array([0, 1]))


def test_stratified_split_properties():
    sizes = {"a": 100, "b": 37, "c": 10, "d": 2, "e": 1}
    labels = np.random.default_rng(5).permutation([k for k, n in sizes.items() for _ in range(n)])
    train, held = stratified_split(labels, 0.2, seed=3)
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)
    held_counts = Counter(labels[held].tolist())
    for label, n in sizes.items():
        want = 0 if n == 1 else min(n - 1, max(1, round(0.2 * n)))
        assert held_counts.get(label, 0) == want, label
        assert abs(held_counts.get(label, 0) - 0.2 * n) <= 0.5 or n <= 2  # within rounding
    assert held_counts["d"] == 1 and "e" not in held_counts  # one of two held out; a single one stays in training
    again, other = stratified_split(labels, 0.2, seed=3), stratified_split(labels, 0.2, seed=4)
    assert np.array_equal(again[1], held) and not np.array_equal(other[1], held)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(CorpusError, match=r"in \(0, 1\)"):
            stratified_split(labels, bad)


# -- the three splits of a dataset ---------------------------------------------------------------------------
def test_text_splits_are_disjoint_and_the_vocab_sees_training_texts_only(tmp_path):
    lines = [f"w{i} common\t{'pos' if i % 3 else 'neg'}" for i in range(60)]
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(lines) + "\n")
    spec = ClassificationSpec([str(path)], tokens="word", test_fraction=0.2, val_fraction=0.25)
    data = load_classification(spec)
    assert data.classes == ["neg", "pos"] and data.vocab.kind == "word" and spec.kind == "text"
    n = [len(data.train), len(data.val), len(data.test)]
    assert sum(n) == 60 and n[2] == 12 and n[1] == 12
    fit_words = {t.split()[0] for t in data.train_texts[:len(data.train)]}
    assert set(data.vocab.tokens[2:]) == fit_words | {"common"}  # no validation or test word leaks in
    test_ids = np.concatenate(data.test.inputs)
    assert Counter(test_ids.tolist())[1] == 12  # every test text's own word is <unk>
    assert set(data.test_texts).isdisjoint(data.train_texts)
    assert sorted(data.test_texts + data.train_texts) == sorted(ln.split("\t")[0] for ln in lines)
    again = load_classification(ClassificationSpec([str(path)], tokens="word", test_fraction=0.2, val_fraction=0.25),
                                data.vocab, data.classes, verify=True)
    assert again.test_texts == data.test_texts


def test_relative_paths_are_saved_absolute_and_changed_data_is_refused(tmp_path, monkeypatch):
    (tmp_path / "d.tsv").write_text("".join(f"t{i}\t{i % 2}\n" for i in range(20)))
    monkeypatch.chdir(tmp_path)
    spec = ClassificationSpec(["d.tsv"])
    assert spec.sources == [str(tmp_path / "d.tsv")]
    load_classification(spec)
    saved = dict(vars(spec))
    monkeypatch.chdir("/")
    load_classification(ClassificationSpec(**saved), verify=True)  # found and verified from another directory
    (tmp_path / "d.tsv").write_text("".join(f"t{i}\t{i % 2}\n" for i in range(21)))
    with pytest.raises(CorpusError, match="the data changed"):
        load_classification(ClassificationSpec(**saved), verify=True)


def test_separate_test_file_and_unknown_test_labels(tmp_path):
    (tmp_path / "train.tsv").write_text("".join(f"t{i}\t{'ab'[i % 2]}\n" for i in range(20)))
    (tmp_path / "test.tsv").write_text("x\ta\ny\tb\n")
    data = load_classification(ClassificationSpec([str(tmp_path / "train.tsv")], str(tmp_path / "test.tsv")))
    assert data.test_texts == ["x", "y"] and data.test.targets.tolist() == [0, 1]
    assert len(data.train) + len(data.val) == 20
    (tmp_path / "test.tsv").write_text("x\ta\ny\tc\n")
    with pytest.raises(CorpusError, match="not among the run's classes"):
        load_classification(ClassificationSpec([str(tmp_path / "train.tsv")], str(tmp_path / "test.tsv")))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(sources=[]), "no data given"),
    (dict(sources=["x.tsv"], tokens="bpe"), "unknown --tokens"),
    (dict(sources=["x.tsv"], test_fraction=1.0), "--test-fraction must be in"),
    (dict(sources=["x.tsv"], val_fraction=1.0), "--val-fraction must be in"),
    (dict(sources=["x.tsv"], val_fraction=-0.5), "--val-fraction must be in"),
    (dict(sources=["x.tsv"], min_count=0), "--min-count"),
])
def test_spec_errors(kwargs, fragment):
    with pytest.raises(CorpusError, match=fragment):
        ClassificationSpec(**kwargs)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(CorpusError, match="neither a file nor a UEA/UCR dataset"):
        load_classification(ClassificationSpec(["no_such_dataset"]))
    with pytest.raises(CorpusError, match="does not exist"):
        load_classification(ClassificationSpec([str(tmp_path / "missing.tsv")]))


# -- numeric series ------------------------------------------------------------------------------------------
def test_fit_scaler_matches_numpy():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(3, 2, size=(n, 3)).astype(np.float32) for n in (4, 9, 1)]
    seqs[1][:, 2] = seqs[0][:, 2] = seqs[2][:, 2] = 5.0  # a constant feature
    mean, std = fit_scaler(seqs)
    steps = np.concatenate(seqs).astype(np.float64)
    np.testing.assert_allclose(mean, steps.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[:2], steps.std(0)[:2], rtol=1e-6)
    assert std[2] == 1.0 and mean.dtype == std.dtype == np.float32
    seqs[1][3, 0] = np.nan
    with pytest.raises(CorpusError, match="NaN"):
        fit_scaler(seqs)


def test_ts_file_round_trip(tmp_path):
    pytest.importorskip("aeon", reason="reading .ts files needs the classical extra (aeon)")
    rng = np.random.default_rng(1)
    series = [rng.normal(size=(n, 2)).astype(np.float32) for n in (5, 3, 7, 4)]
    path = write_ts(tmp_path / "t.ts", series, ["x", "y", "x", "y"])
    got, labels = load_ts_file(path)
    assert labels.tolist() == ["x", "y", "x", "y"]
    for a, b in zip(got, series, strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-6)
    unlabelled, none = load_ts_file(write_ts(tmp_path / "u.ts", series[:2]), labels=False)
    assert none is None and [s.shape for s in unlabelled] == [(5, 2), (3, 2)]
    with pytest.raises(CorpusError, match="no class labels"):
        load_ts_file(tmp_path / "u.ts")
    with pytest.raises(CorpusError, match="does not exist"):
        load_ts_file(tmp_path / "missing.ts")
    (tmp_path / "bad.ts").write_text("@problemName t\n@dimensions 2\n@classLabel false\n@data\n1,2:a,b\n")
    with pytest.raises(CorpusError, match="not a readable .ts file"):
        load_ts_file(tmp_path / "bad.ts")


def test_ts_file_gets_a_stratified_split_and_training_scaling(tmp_path):
    pytest.importorskip("aeon", reason="reading .ts files needs the classical extra (aeon)")
    rng = np.random.default_rng(2)
    series = [rng.normal(i % 3, 1, size=(4 + i % 5, 3)).astype(np.float32) for i in range(30)]
    path = write_ts(tmp_path / "t.ts", series, [str(i % 3) for i in range(30)])
    spec = ClassificationSpec([str(path)], test_fraction=0.2)
    data = load_classification(spec)
    assert spec.kind == "series" and data.input_size == 3 and data.vocab is None
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 24
    mean, std = fit_scaler(data.train.inputs)  # the fitting part only: validation and test never leak in
    np.testing.assert_allclose(data.scaling[0], mean) and np.testing.assert_allclose(data.scaling[1], std)


def test_japanese_vowels_ships_with_aeon():
    pytest.importorskip("aeon", reason="JapaneseVowels ships with the classical extra (aeon)")
    assert "JapaneseVowels" in shipped_uea_names()
    train_x, train_y, test_x, test_y = load_uea("japanese-vowels")
    assert len(train_x) == 270 and len(test_x) == 370
    assert {x.shape[1] for x in train_x + test_x} == {12}
    assert min(len(x) for x in train_x) >= 7 and max(len(x) for x in train_x) <= 29
    assert sorted(set(train_y.tolist())) == [str(i) for i in range(1, 10)]
    assert Counter(train_y.tolist())["1"] == 30
    with pytest.raises(CorpusError, match="not a UEA/UCR dataset"):
        load_uea("NoSuchSet")
    spec = ClassificationSpec(["japanese_vowels"])
    assert spec.kind == "series"
    data = load_classification(spec)
    assert len(data.test) == 370 and len(data.train) + len(data.val) == 270 and data.input_size == 12


# -- classical baselines -------------------------------------------------------------------------------------
def test_majority_accuracy_by_hand():
    from rnnkit.baselines.classify import majority_accuracy

    assert majority_accuracy(np.array([0, 2, 2, 1, 2]), np.array([2, 1, 2, 0])) == 0.5
    assert majority_accuracy(np.array(["b", "a", "b"]), np.array(["a", "a", "c"])) == 0.0
    assert majority_accuracy(np.array([1, 0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(1 / 3)  # tie: lowest


@pytest.mark.parametrize("tokens", ["word", "char"])
def test_tfidf_separates_separable_text_and_not_noise(tokens):
    pytest.importorskip("sklearn", reason="the TF-IDF baseline needs the classical extra (scikit-learn)")
    from rnnkit.baselines.classify import tfidf_accuracy

    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "superb", "wonderful"], ["awful", "dreadful", "horrid", "terrible"]

    def texts(words, n):
        return [" ".join(rng.choice(words, 3)) + " movie" for _ in range(n)]

    train = texts(good, 20) + texts(bad, 20)
    train_y = np.array([1] * 20 + [0] * 20)
    test = texts(good, 10) + texts(bad, 10)
    test_y = np.array([1] * 10 + [0] * 10)
    assert tfidf_accuracy(train, train_y, test, test_y, tokens) == 1.0
    vocab = [f"w{i}" for i in range(300)]
    noise_train, noise_test = texts(vocab, 300), texts(vocab, 300)
    chance = tfidf_accuracy(noise_train, rng.integers(0, 2, 300), noise_test, rng.integers(0, 2, 300), tokens)
    assert 0.38 < chance < 0.62


def test_a_validation_fraction_that_holds_out_nothing_is_refused(tmp_path):
    """Two examples per class: the test split takes one of each, which leaves no class two for validation."""
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"text {i} {c}\t{c}\n" for c in "abc" for i in range(2)))
    with pytest.raises(CorpusError, match="holds out no example.*--val-fraction 0"):
        load_classification(ClassificationSpec([str(path)]))
    data = load_classification(ClassificationSpec([str(path)], val_fraction=0.0))
    assert len(data.train) == 3 and len(data.val) == 0 and len(data.test) == 3
