"""One-to-many data and training: batch framing, the sequence vocabulary, the splits (stratified, equal to
scikit-learn's), sequence_nll by hand, the trainer's checks, and learning on real data (names by language, digit
captions)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from conditional_helpers import make
from conftest import require_data

from rnnkit.data.conditional import DIGIT_WORDS, ConditionedSequences, GenerationSpec, SequenceVocab, load_generation
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError, CorpusError, VocabularyError
from rnnkit.models.conditional import ConditionalGenerator, ConditionalGeneratorConfig
from rnnkit.one_to_many import beam, evaluate, greedy_batch, sample
from rnnkit.train.batches import BatchTrainConfig, ConditionedTrainer, sequence_nll

CPU = torch.device("cpu")


# -- data ----------------------------------------------------------------------------------------------------
def test_batch_framing_is_exact():
    seqs = [np.array([3, 1, 2]), np.array([], dtype=np.int64), np.array([5])]
    data = ConditionedSequences(seqs, np.array([0, 1, 2]))
    b = data.batch([2, 0, 1])
    P = IGNORE_INDEX
    assert b.x.tolist() == [[0, 5, 0, 0], [0, 3, 1, 2], [0, 0, 0, 0]]
    assert b.y.tolist() == [[5, 0, P, P], [3, 1, 2, 0], [0, P, P, P]]
    assert b.lengths.tolist() == [2, 4, 1] and b.lengths.dtype == torch.int64
    assert b.condition.tolist() == [2, 0, 1]
    assert data.num_targets() == 4 + 1 + 2
    assert sum(int((bb.y != P).sum()) for bb in data.batches(2)) == data.num_targets()
    sub = data.subset([2, 1])
    assert [s.tolist() for s in sub.sequences] == [[5], []] and sub.conditions.tolist() == [2, 1]
    feats = ConditionedSequences(seqs, np.arange(6, dtype=np.float32).reshape(3, 2))
    assert feats.batch([1, 2]).condition.tolist() == [[2.0, 3.0], [4.0, 5.0]]
    with pytest.raises(ValueError):
        ConditionedSequences(seqs, np.array([0, 1]))


def test_sequence_vocab():
    vocab = SequenceVocab.build([list("bca"), list("ab")])
    assert vocab.tokens == ["<s>", "a", "b", "c"] and len(vocab) == 4
    assert vocab.encode(list("cab")).tolist() == [3, 1, 2]
    assert vocab.decode([3, 1, 0, 2, 2]) == ["c", "a"]
    assert vocab.decode([2, 2]) == ["b", "b"]
    assert SequenceVocab(["x", "<s>", "y"]).tokens == ["<s>", "x", "y"]
    with pytest.raises(VocabularyError) as err:
        vocab.encode(["a", "\n", "z"])
    message = str(err.value)
    assert "\n" not in message and "'\\n'" in message
    assert SequenceVocab.from_dict(vocab.to_dict()).tokens == vocab.tokens
    with pytest.raises(VocabularyError):
        SequenceVocab.from_dict({"type": "char", "tokens": ["a"]})


def test_generation_spec_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        GenerationSpec(str(tmp_path / "nowhere"))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(CorpusError, match="test-fraction"):
            GenerationSpec("digits", test_fraction=bad)
        with pytest.raises(CorpusError, match="val-fraction"):
            GenerationSpec("digits", val_fraction=bad)


@pytest.fixture(scope="module")
def names_data():
    path = require_data("names")
    return path, load_generation(GenerationSpec(str(path)))


def test_names_split_is_stratified_and_deterministic(names_data):
    path, data = names_data
    texts, labels = [], []
    for f in sorted(path.glob("*.txt")):
        lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        texts += lines
        labels += [f.stem] * len(lines)
    assert data.classes == sorted(set(labels))
    # a closed vocabulary: every character of every name, held-out ones included, so every name can be scored
    assert set(data.vocab.tokens[1:]) == {ch for t in texts for ch in t}
    sizes = Counter(labels)
    test = Counter(data.test_names)
    val = Counter(data.classes[c] for c in data.val.conditions)
    for lang, n in sizes.items():
        assert test[lang] == round(0.1 * n)  # 10% of each language held out
        assert val[lang] == round(0.1 * (n - test[lang]))
    # a partition: train + val + test hold every (name, language) exactly once
    parts = Counter()
    for part in (data.train, data.val, data.test):
        parts += Counter(("".join(data.vocab.decode(s.tolist())), data.classes[c])
                         for s, c in zip(part.sequences, part.conditions, strict=True))
    assert parts == Counter(zip(texts, labels, strict=True))
    assert data.extra["test_texts"] == ["".join(data.vocab.decode(s.tolist())) for s in data.test.sequences]
    again = load_generation(GenerationSpec(str(path)))
    assert [s.tolist() for s in again.test.sequences] == [s.tolist() for s in data.test.sequences]
    other = load_generation(GenerationSpec(str(path), split_seed=1))
    assert [s.tolist() for s in other.test.sequences] != [s.tolist() for s in data.test.sequences]


def test_text_data_checks(tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "A.txt").write_text("\n".join(f"ab{i}" for i in range(10)) + "\n", encoding="utf-8")
    (folder / "B.txt").write_text("\n".join(f"ba{i}" for i in range(10)) + "\n", encoding="utf-8")
    spec = GenerationSpec(str(folder))
    data = load_generation(spec)
    assert len(spec.sha256) == 2 and len(data.train) + len(data.val) + len(data.test) == 20
    assert data.vocab.tokens[0] == "<s>" and len(data.test) == 2
    (folder / "B.txt").write_text("ba\nbb\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="changed"):
        load_generation(spec, verify=True)
    with pytest.raises(CorpusError, match="not among the run's"):
        load_generation(GenerationSpec(str(folder)), classes=["A", "C"])


@pytest.fixture(scope="module")
def digits_data():
    pytest.importorskip("sklearn")
    return load_generation(GenerationSpec("digits", test_fraction=0.2))


def test_digits_split_equals_scikit_learn(digits_data):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    N = len(digits.target)
    _, test = train_test_split(np.arange(N), test_size=0.2, stratify=digits.target, random_state=0)
    data = digits_data
    assert data.extra["test_index"].tolist() == sorted(test.tolist())
    assert np.array_equal(data.test.conditions, digits.data[np.sort(test)].astype(np.float32))
    assert len(data.train) + len(data.val) + len(data.test) == N
    assert data.condition_size == 64 and data.image_shape == [8, 8]
    # captions are the digits' English words
    words = ["".join(data.vocab.decode(s.tolist())) for s in data.test.sequences]
    assert words == [DIGIT_WORDS[d] for d in digits.target[np.sort(test)]]
    # scaling from the training part only, one mean and deviation for all pixels
    mean, std = data.scaling
    assert mean.shape == std.shape == (64,)
    assert np.allclose(mean, data.train.conditions.mean()) and np.allclose(std, data.train.conditions.std())
    assert not np.allclose(mean, digits.data.mean())
    # train and validation images are disjoint from the test images, together the rest of the data
    test_rows = {r.tobytes() for r in data.test.conditions}
    rest = np.concatenate([data.train.conditions, data.val.conditions])
    assert sorted(r.tobytes() for r in rest) == sorted(r.tobytes() for r in data.extra["train_images"])
    assert sum(r.tobytes() in test_rows for r in rest) <= 5  # only duplicate images could coincide
    per_digit = Counter(data.extra["test_digits"].tolist())
    assert all(35 <= n <= 37 for n in per_digit.values())  # stratified: ~20% of ~180 per digit


# -- sequence_nll and the trainer ----------------------------------------------------------------------------
def test_sequence_nll_by_hand():
    model = make("lstm", "both", "label", dropout=0.4, seed=6).train()  # sequence_nll must switch to eval
    seqs = [np.array([3, 1, 2, 6]), np.array([5]), np.array([], dtype=np.int64), np.array([2, 2])]
    data = ConditionedSequences(seqs, np.array([0, 2, 1, 1]))
    model.eval()
    total, n = 0.0, 0
    total_none = 0.0
    with torch.no_grad():
        for s, c in zip(seqs, data.conditions, strict=True):
            x = torch.tensor([[0, *s.tolist()]])
            targets = [*s.tolist(), 0]
            for cond, acc in ((torch.tensor([c]), "total"), (None, "none")):
                logp = model(x, condition=cond).logits[0].log_softmax(-1)
                value = -float(sum(logp[t, tok] for t, tok in enumerate(targets)))
                if acc == "total":
                    total += value
                else:
                    total_none += value
            n += len(targets)
    model.train()
    assert sequence_nll(model, data, CPU, batch_size=3) == pytest.approx(total / n, abs=1e-9)
    assert sequence_nll(model, data, CPU, batch_size=1, unconditioned=True) == pytest.approx(total_none / n, abs=1e-9)
    assert model.training


def test_trainer_needs_a_budget_and_data(tmp_path):
    model = make("gru", "both", "label", dtype=torch.float32)
    data = ConditionedSequences([np.array([1, 2])] * 4, np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="budget"):
        ConditionedTrainer(model, data, data, BatchTrainConfig(device="cpu"), tmp_path, show_progress=False)
    with pytest.raises(CorpusError):
        ConditionedTrainer(model, data, data.subset([]), BatchTrainConfig(device="cpu", max_steps=2), tmp_path,
                           show_progress=False)


# -- learning on real data -----------------------------------------------------------------------------------
LANGUAGES = ("Chinese", "Japanese", "Russian", "Irish")


def test_names_by_language_learns_the_condition(tmp_path):
    source = require_data("names")
    folder = tmp_path / "names"
    folder.mkdir()
    for lang in LANGUAGES:
        lines = (source / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:300]
        (folder / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_generation(GenerationSpec(str(folder)))
    assert data.classes == sorted(LANGUAGES)
    torch.manual_seed(0)
    model = ConditionalGenerator(ConditionalGeneratorConfig(
        vocab_size=len(data.vocab), num_classes=len(data.classes), condition="both", cell="gru", hidden_size=64,
        num_layers=1, embedding_size=16, condition_embedding=16, dropout=0.0, condition_dropout=0.2))
    train_config = BatchTrainConfig(batch_size=32, lr=1e-2, max_steps=300, eval_interval=1000, warmup_steps=10,
                              device="cpu", seed=0)
    summary = ConditionedTrainer(model, data.train, data.val, train_config, tmp_path / "run", show_progress=False).fit()
    assert summary["step"] == 300 and summary["val_loss"] == pytest.approx(sequence_nll(model, data.val, CPU))
    conditioned = sequence_nll(model, data.test, CPU)
    unconditioned = sequence_nll(model, data.test, CPU, unconditioned=True)
    uniform = math.log(len(data.vocab))
    # measured: 1.69 conditioned, 2.00 unconditioned, log V = 3.97
    assert conditioned < unconditioned - 0.15
    assert conditioned < uniform - 1.5
    figures = evaluate(model.eval(), data)
    assert figures["val_nll"] == pytest.approx(conditioned)
    assert figures["val_nll_unconditioned"] == pytest.approx(unconditioned)
    assert figures["heldout_tokens"] == data.test.num_targets()
    assert 0 < figures["ngram3_per_label_nll"] < uniform and 0 < figures["ngram3_pooled_nll"] < uniform
    japanese = data.classes.index("Japanese")
    names = sample(model, data.vocab, japanese, prompt=["K"], num_samples=4, max_length=15, seed=0)
    assert all(n[0] == "K" for n in names)


def test_digit_captions_are_learnt(tmp_path, digits_data):
    data = digits_data
    torch.manual_seed(0)
    model = ConditionalGenerator(ConditionalGeneratorConfig(
        vocab_size=len(data.vocab), condition_size=64, image_shape=[8, 8], condition="both", cell="gru",
        hidden_size=64, num_layers=1, embedding_size=16, condition_embedding=32, encoder_hidden=64, dropout=0.0))
    model.set_scaling(*data.scaling)
    train_config = BatchTrainConfig(batch_size=32, lr=1e-2, epochs=5, eval_interval=1000, warmup_steps=10, device="cpu",
                              seed=0)
    ConditionedTrainer(model, data.train, data.val, train_config, tmp_path / "run", show_progress=False).fit()
    model.eval()
    images = torch.as_tensor(data.extra["test_images"])
    words = ["".join(data.vocab.decode(r)) for r in greedy_batch(model, images, 12)]
    truth = [DIGIT_WORDS[d] for d in data.extra["test_digits"]]
    exact = float(np.mean([w == t for w, t in zip(words, truth, strict=True)]))
    assert exact > 0.85  # measured 0.97 (chance: 0.1)
    # beam search on a few images agrees with the caption at least as often as greedy does there
    first = range(40)
    beamed = ["".join(beam(model, data.vocab, images[i], beam_size=3, max_length=12)[0][0]) for i in first]
    assert np.mean([beamed[i] == truth[i] for i in first]) >= np.mean([words[i] == truth[i] for i in first]) - 0.1
