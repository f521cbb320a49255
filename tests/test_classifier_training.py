"""BatchTrainer on sequence classifiers: epoch budgets, validation figures against a manual count, exact resume,
divergence, best-checkpoint selection; and learning on real names and JapaneseVowels."""

import math

import numpy as np
import pytest
import torch
from classify_helpers import names_sample
from torch.nn import functional as F

from rnnkit.checkpoint import (
    BEST,
    MODEL,
    TRAINER_STATE,
    load_tensors,
)
from rnnkit.data.labeled import Examples, TokenVocab, read_labeled_texts, stratified_split
from rnnkit.errors import ConfigError, CorpusError, TrainingDiverged
from rnnkit.models.classifier import SequenceClassifier, SequenceClassifierConfig
from rnnkit.train.batches import BatchTrainConfig, BatchTrainer, evaluate_examples, predict


def toy_examples(n=60, seed=0):
    """Token sequences whose class is their most frequent of the tokens 2, 3, 4: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(2, 10, size=rng.integers(3, 12)) for _ in range(n)]
    y = np.array([int(np.argmax([np.sum(s == t) + 0.1 * t for t in (2, 3, 4)])) for s in seqs])
    return Examples(seqs, y)


def trainer_for(run_dir, train, val, dropout=0.0, seed=0, **kw):
    torch.manual_seed(seed)
    model = SequenceClassifier(SequenceClassifierConfig(vocab_size=10, num_classes=3, hidden_size=12,
                                                        embedding_size=6, dropout=dropout))
    cfg = dict(batch_size=8, lr=1e-2, warmup_steps=2, eval_interval=5, log_interval=5, precision="fp32",
               device="cpu")
    return BatchTrainer(model, train, val, BatchTrainConfig(**{**cfg, **kw}), run_dir, show_progress=False)


def test_epochs_set_the_step_budget(tmp_path):
    train, val = toy_examples(50), toy_examples(10, 1)
    assert BatchTrainer.steps_per_epoch(50, 8) == 6 and BatchTrainer.steps_per_epoch(5, 8) == 1
    assert trainer_for(tmp_path, train, val, epochs=2.5).config.max_steps == 15
    assert trainer_for(tmp_path, train, val, epochs=2.5, max_steps=7).config.max_steps == 7
    assert trainer_for(tmp_path, train, val, epochs=1, max_steps=100).config.max_steps == 6
    with pytest.raises(ConfigError, match="give a budget"):
        trainer_for(tmp_path, train, val)
    with pytest.raises(ConfigError, match="epochs must be positive"):
        BatchTrainConfig(epochs=0)
    with pytest.raises(CorpusError, match="0 validation"):
        trainer_for(tmp_path, train, Examples([], np.array([], dtype=np.int64)), max_steps=3)


def test_a_data_parallel_launch_is_refused(tmp_path, monkeypatch):
    """Under torchrun every rank would train alone and write the same run directory."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="without torchrun"):
        trainer_for(tmp_path, toy_examples(50), toy_examples(10, 1), epochs=1)
    assert not (tmp_path / MODEL).exists()


def test_validation_figures_match_a_manual_count(tmp_path):
    train, val = toy_examples(50), toy_examples(23, 1)
    trainer = trainer_for(tmp_path, train, val, max_steps=10)
    trainer.fit()
    logits = predict(trainer.model, val, torch.device("cpu"), batch_size=4)
    manual_acc = int((logits.argmax(-1).numpy() == val.targets).sum()) / len(val)
    manual_loss = F.cross_entropy(logits, torch.from_numpy(val.targets)).item()
    figures = trainer.validate()
    assert figures["val_accuracy"] == pytest.approx(manual_acc, abs=1e-12)
    assert figures["val_loss"] == pytest.approx(manual_loss, rel=1e-5)
    assert trainer.last_figures["val_accuracy"] == figures["val_accuracy"]
    for i in (0, 7, 22):  # predictions keep the examples' order, and each equals the example alone
        alone = trainer.model(torch.from_numpy(val.inputs[i])[None]).logits[0]
        torch.testing.assert_close(logits[i], alone.detach(), rtol=1e-5, atol=1e-5)
    loss, acc = evaluate_examples(trainer.model, val, torch.device("cpu"), 5)
    assert acc == pytest.approx(manual_acc) and loss == pytest.approx(manual_loss, rel=1e-5)


def test_resume_is_exact(tmp_path):
    """9 steps, stop, resume in a new trainer, 7 more == 16 straight (dropout on; an epoch edge at step 6)."""
    train, val = toy_examples(50), toy_examples(10, 1)
    straight = trainer_for(tmp_path / "a", train, val, dropout=0.2, max_steps=16)
    straight.fit()
    first = trainer_for(tmp_path / "b", train, val, dropout=0.2, max_steps=16)
    first.fit(until_step=9)
    assert (first.epoch, first.index) == (1, 3)
    second = trainer_for(tmp_path / "b", train, val, dropout=0.2, seed=99, max_steps=16)
    second.resume()
    assert second.step == 9 and (second.epoch, second.index) == (1, 3)
    second.fit()
    assert second.step == straight.step == 16
    for (name, a), b in zip(straight.model.named_parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_divergence_keeps_the_last_checkpoint(tmp_path):
    trainer = trainer_for(tmp_path, toy_examples(50), toy_examples(10, 1), max_steps=20)
    trainer.fit(until_step=5)
    files = {n: (tmp_path / n).read_bytes() for n in (MODEL, BEST, TRAINER_STATE)}
    with torch.no_grad():
        trainer.model.members[0].head.bias[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="untouched"):
        trainer.fit()
    assert all((tmp_path / n).read_bytes() == data for n, data in files.items())


def test_learns_the_language_of_real_names(tmp_path):
    """A few seconds of training on four languages of the real names data beat the majority class by a wide
    margin on held-out names, and the loss goes down from about log(4)."""
    texts, labels = read_labeled_texts(names_sample(tmp_path / "names"))
    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    rest, test_idx = stratified_split(labels, 0.15, seed=0)
    fit, val = stratified_split(y[rest], 0.1, seed=1)
    fit_idx, val_idx = rest[fit], rest[val]
    vocab = TokenVocab.build([texts[i] for i in fit_idx], "char")
    ex = Examples([vocab.encode(t) for t in texts], y)
    torch.manual_seed(0)
    model = SequenceClassifier(SequenceClassifierConfig(vocab_size=len(vocab), num_classes=4, cell="gru",
                                                        hidden_size=48, embedding_size=16, dropout=0.1))
    cfg = BatchTrainConfig(batch_size=32, lr=1e-2, warmup_steps=10, max_steps=200, eval_interval=100,
                           precision="fp32", device="cpu", seed=0)
    trainer = BatchTrainer(model, ex.subset(fit_idx), ex.subset(val_idx), cfg, tmp_path / "run",
                           show_progress=False)
    start, _ = evaluate_examples(model, ex.subset(val_idx), torch.device("cpu"))
    summary = trainer.fit()
    assert start == pytest.approx(math.log(4), abs=0.3)
    assert summary["val_loss"] < start - 0.7
    test = ex.subset(test_idx)
    accuracy = float(np.mean(predict(model, test, torch.device("cpu")).argmax(-1).numpy() == test.targets))
    majority = float(np.mean(test.targets == np.bincount(y[fit_idx]).argmax()))
    assert majority < 0.5 and accuracy > majority + 0.3, (accuracy, majority)


def test_the_best_checkpoint_is_the_most_accurate_with_loss_breaking_ties(tmp_path, monkeypatch):
    trainer = trainer_for(tmp_path / "run", toy_examples(40), toy_examples(10, 1), max_steps=10)
    seen = iter([
        {"val_loss": 0.40, "val_accuracy": 0.80},  # first: best
        {"val_loss": 0.50, "val_accuracy": 0.85},  # more accurate, higher loss: best
        {"val_loss": 0.60, "val_accuracy": 0.85},  # as accurate, higher loss: not
        {"val_loss": 0.45, "val_accuracy": 0.85},  # as accurate, lower loss: best
        {"val_loss": 0.30, "val_accuracy": 0.70},  # lowest loss, less accurate: not
    ])
    monkeypatch.setattr(trainer, "validate", lambda: next(seen))
    (tmp_path / "run").mkdir()
    marks = []
    for _ in range(5):
        trainer._validate_and_save()
        marks.append(load_tensors(tmp_path / "run" / BEST)[1]["val_loss"])
    assert marks == [0.40, 0.50, 0.50, 0.45, 0.45]
    assert trainer.best_key == [-0.85, 0.45] and trainer.best_val == 0.45
    again = trainer_for(tmp_path / "run", toy_examples(40), toy_examples(10, 1), max_steps=10)
    again.resume()
    assert again.best_key == [-0.85, 0.45]
    regression = trainer_for(tmp_path / "reg", toy_examples(40), toy_examples(10, 1), max_steps=10)
    regression.classes = False
    assert regression.selection_key({"val_loss": 0.3, "val_accuracy": 0.1}) == (0.3,)


def test_learns_the_speakers_of_japanese_vowels_with_time_warp(tmp_path):
    """A time-warped GRU learns the nine speakers of the real JapaneseVowels series (official split) in a few
    seconds, far above the majority class: the resampled training series still carry the speaker."""
    pytest.importorskip("aeon", reason="JapaneseVowels ships with the classical extra (aeon)")
    from rnnkit.data.series import fit_scaler, load_uea

    train_x, train_y, test_x, test_y = load_uea("JapaneseVowels")
    classes = sorted(set(train_y))

    def as_ids(labels):
        return np.array([classes.index(c) for c in labels])

    fit, val = stratified_split(train_y, 0.1, seed=0)
    train = Examples(train_x, as_ids(train_y))
    torch.manual_seed(0)
    model = SequenceClassifier(SequenceClassifierConfig(input_size=12, num_classes=9, cell="gru", hidden_size=32,
                                                        dropout=0.1, time_warp=0.2))
    model.set_scaling(*fit_scaler([train_x[i] for i in fit]))
    cfg = BatchTrainConfig(batch_size=16, lr=1e-2, warmup_steps=10, max_steps=150, eval_interval=150,
                           precision="fp32", device="cpu", seed=0)
    BatchTrainer(model, train.subset(fit), train.subset(val), cfg, tmp_path / "run", show_progress=False).fit()
    test = Examples(test_x, as_ids(test_y))
    accuracy = float(np.mean(predict(model, test, torch.device("cpu")).argmax(-1).numpy() == test.targets))
    assert accuracy > 0.85, accuracy  # majority class: 8.4%
