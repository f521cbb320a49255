"""The sequence tagger (many-to-many, same length): its loss against torch's cross-entropy by hand, padding, the CRF
against every tag sequence, decoding and validation figures, the scores against scikit-learn, the baselines, and
learning on real sentences. Its data: test_tagging_data.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_data
from torch.nn import functional as F

from rnnkit.baselines.tag import maxent_tags, most_frequent_tag, window_features
from rnnkit.checkpoint import build_model
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.data.tagging import (
    TaggedExamples,
    TaggingSpec,
    input_tokens,
    load_tagging,
)
from rnnkit.errors import ConfigError
from rnnkit.models.tagger import SequenceTagger, SequenceTaggerConfig
from rnnkit.tagging import evaluate, predict_tags, score, tag_tokens
from rnnkit.train.batches import BatchTrainConfig, TaggingTrainer, tagging_figures


def make(**kwargs) -> SequenceTagger:
    torch.manual_seed(0)
    return SequenceTagger(SequenceTaggerConfig(vocab_size=12, num_tags=4, hidden_size=16, embedding_size=8,
                                               dropout=0.0, **kwargs)).eval()


def examples(lengths=(5, 3, 7), seed=0) -> TaggedExamples:
    rng = np.random.default_rng(seed)
    return TaggedExamples([rng.integers(2, 12, n) for n in lengths], [rng.integers(0, 4, n) for n in lengths])


# -- the model -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_loss_is_cross_entropy_over_the_valid_steps_only(cell):
    model = make(cell=cell, num_layers=2)
    batch = examples().batch([0, 1, 2])
    assert batch.y[1, 3:].eq(IGNORE_INDEX).all() and batch.x[1, 3:].eq(0).all()  # padded with IGNORE_INDEX, <pad>
    out = model(batch.x, None, batch.y, lengths=batch.lengths)
    assert out.logits.shape == (3, 7, 4)
    rows = [(i, t) for i, n in enumerate(batch.lengths.tolist()) for t in range(n)]
    by_hand = torch.stack([F.cross_entropy(out.logits[i, t], batch.y[i, t]) for i, t in rows]).mean()
    torch.testing.assert_close(out.loss, by_hand)


@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_padding_never_changes_a_valid_step(path):
    model = make(path=path, num_layers=2)
    data = examples()
    together = model(data.batch([0, 1, 2]).x, lengths=data.batch([0, 1, 2]).lengths).logits
    for i, n in enumerate((5, 3, 7)):
        alone = model(data.batch([i]).x).logits[0]
        torch.testing.assert_close(together[i, :n], alone, atol=1e-5, rtol=1e-5)


def test_ignored_targets_count_for_nothing_and_shapes_are_checked():
    model = make()
    batch = examples().batch([0, 2])
    y = batch.y.clone()
    y[0, 1] = IGNORE_INDEX  # a step without a label
    out = model(batch.x, None, y, lengths=batch.lengths)
    rows = [(i, t) for i, n in enumerate(batch.lengths.tolist()) for t in range(n) if (i, t) != (0, 1)]
    by_hand = torch.stack([F.cross_entropy(out.logits[i, t], y[i, t]) for i, t in rows]).mean()
    torch.testing.assert_close(out.loss, by_hand)
    assert abs(out.loss.item() - model(batch.x, None, batch.y, lengths=batch.lengths).loss.item()) > 1e-6
    none = torch.full_like(batch.y, IGNORE_INDEX)  # a batch with no tagged step: a loss of 0, not NaN
    empty = model(batch.x, None, none, lengths=batch.lengths).loss
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ConfigError, match="one tag per step"):
        model(batch.x, None, batch.y[:, :3], lengths=batch.lengths)
    with pytest.raises(ConfigError, match="at least 2 tags"):
        SequenceTagger(SequenceTaggerConfig(vocab_size=5, num_tags=1))
    with pytest.raises(ConfigError, match="conv_kernel odd"):
        SequenceTaggerConfig(vocab_size=5, num_tags=2, conv_layers=1, conv_kernel=4)


def test_a_config_rebuilds_the_model_and_a_front_end_keeps_the_shapes():
    model = make(conv_layers=2, conv_channels=6, conv_kernel=3)
    again = build_model({"kind": "tagger", "model": model.config.to_dict()})
    again.load_state_dict(model.state_dict())
    batch = examples().batch([0, 1, 2])
    torch.testing.assert_close(again.eval()(batch.x, lengths=batch.lengths).logits,
                               model(batch.x, lengths=batch.lengths).logits)


# -- scores and baselines ------------------------------------------------------------------------------------
def test_score_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="the reference scores come from scikit-learn")
    rng = np.random.default_rng(1)
    truth = [rng.integers(0, 4, n) for n in (6, 9, 4, 11)]
    pred = [np.where(rng.random(len(t)) < 0.7, t, rng.integers(0, 4, len(t))) for t in truth]
    pred[2] = truth[2].copy()  # one sentence entirely right
    got = score(truth, pred, ["A", "B", "C", "D"])
    y, p = np.concatenate(truth), np.concatenate(pred)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, p))
    assert got["macro_f1"] == pytest.approx(metrics.f1_score(y, p, average="macro"))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(y, p, labels=[0, 1, 2, 3])
    for i, tag in enumerate("ABCD"):
        assert got["per_tag"][tag]["f1"] == pytest.approx(f1[i]) and got["per_tag"][tag]["support"] == support[i]
        assert got["per_tag"][tag]["precision"] == pytest.approx(precision[i])
    right = [np.array_equal(a, b) for a, b in zip(truth, pred, strict=True)]
    assert right[2] and got["sentence_accuracy"] == pytest.approx(sum(right) / 4)


def test_most_frequent_tag_by_hand_and_the_window_tagger_reads_context():
    train_tokens = [["the", "can", "rusts"], ["we", "can", "swim"], ["the", "can", "is"], ["x"]]
    train_tags = [[0, 1, 2], [3, 4, 2], [0, 1, 2], [5]]
    got = most_frequent_tag(train_tokens, train_tags, [["we", "can", "fly"]])
    assert got[0].tolist() == [3, 1, 2]  # "can" is a noun twice, a modal once; an unseen word gets tag 2 (4 of 11)
    assert window_features(["a", "Bee"])[1][:5] == ["-2=<s>", "-1=a", "0=Bee", "1=</s>", "2=</s>"]
    pytest.importorskip("sklearn", reason="the maximum-entropy baseline needs scikit-learn")
    # "can" after "we" is a modal, after "the" a noun: only a tagger that reads the context gets both
    train_tokens = [["the", "can"], ["we", "can"]] * 20
    train_tags = [[0, 1], [3, 4]] * 20
    got = maxent_tags(train_tokens, train_tags, [["we", "can"], ["the", "can"]])
    assert [g.tolist() for g in got] == [[3, 4], [0, 1]]


# -- learning on real sentences ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_sentences(tmp_path_factory):
    """3,000 distinct English sentences of spa.txt, drawn by the split's permutation."""
    return require_data("spa-eng/spa.txt")


@pytest.mark.parametrize("task", ["spaces", "case"])
def test_learns_a_real_task_beyond_the_per_character_baseline(real_sentences, task, tmp_path):
    spec = TaggingSpec(str(real_sentences), task=task, max_sentences=3000)
    data = load_tagging(spec)
    torch.manual_seed(0)
    model = SequenceTagger(SequenceTaggerConfig(vocab_size=len(data.vocab), num_tags=2, hidden_size=64))
    before = tagging_figures(model, data.val, torch.device("cpu"))
    trainer = TaggingTrainer(model, data.train, data.val, BatchTrainConfig(max_steps=150, eval_interval=150,
                                                                           batch_size=32), tmp_path,
                             show_progress=False)
    trainer.fit()
    loss, accuracy = tagging_figures(model, data.val, torch.device("cpu"))
    assert loss < before[0] - 0.2
    pred = predict_tags(model, data.test)
    ours = score(data.test.targets, pred, data.tags)
    base = score(data.test.targets, most_frequent_tag(data.train_tokens, [*data.train.targets, *data.val.targets],
                                                      data.test_tokens), data.tags)
    # spaces: each letter's usual tag is "-"; case: lower case, except "I" — context is what the model adds
    assert ours["macro_f1"] > base["macro_f1"] + 0.05, (ours, base)
    texts = ["".join(s) for s in data.test_tokens[:5]]
    tagged = tag_tokens(model, data.vocab, data.tags, [input_tokens(t, task) for t in texts])
    assert [[data.tags.index(t) for t in row] for row in tagged] == [p.tolist() for p in pred[:5]]


# -- the CRF -------------------------------------------------------------------------------------------------
def crf_model(seed=0) -> SequenceTagger:
    pytest.importorskip("torchcrf", reason="--crf needs pytorch-crf (the crf extra)")
    torch.manual_seed(seed)
    model = SequenceTagger(SequenceTaggerConfig(vocab_size=12, num_tags=3, hidden_size=8, embedding_size=4,
                                                dropout=0.0, crf=True)).double().eval()
    with torch.no_grad():  # transitions far from their small initial values, so they decide something
        for p in model.crf.parameters():
            p.normal_(0.0, 2.0)
    return model


def sequence_score(model, emissions, tags) -> torch.Tensor:
    """start + emissions + transitions + end of one tag sequence, written out."""
    crf = model.crf
    score = crf.start_transitions[tags[0]] + crf.end_transitions[tags[-1]]
    score = score + sum(emissions[t, k] for t, k in enumerate(tags))
    return score + sum(crf.transitions[a, b] for a, b in zip(tags, tags[1:], strict=False))


def test_crf_loss_and_viterbi_against_every_tag_sequence():
    import itertools

    model = crf_model()
    data = examples(lengths=(4, 2, 3), seed=5)
    data = TaggedExamples(data.inputs, [y % 3 for y in data.targets])
    batch = data.batch([0, 1, 2])
    out = model(batch.x, None, batch.y, lengths=batch.lengths)
    total, best = 0.0, []
    for i, n in enumerate(batch.lengths.tolist()):
        emissions = out.logits[i, :n]
        scores = {seq: sequence_score(model, emissions, seq) for seq in itertools.product(range(3), repeat=n)}
        log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
        total = total + log_z - scores[tuple(batch.y[i, :n].tolist())]
        best.append(max(scores, key=lambda s: scores[s].item()))
    torch.testing.assert_close(out.loss, total / 9)  # the sentences' NLL over their 9 tagged steps
    decoded = model.decode(batch.x, batch.lengths)
    assert [decoded[i, :len(b)].tolist() for i, b in enumerate(best)] == [list(b) for b in best]
    assert decoded[1, 2:].eq(0).all()
    argmax = out.logits.argmax(-1)  # the transitions matter here: some sentence's Viterbi path is not the argmax
    assert any(decoded[i, :n].tolist() != argmax[i, :n].tolist() for i, n in enumerate(batch.lengths.tolist()))


def test_crf_refuses_untagged_steps_inside_a_sentence_and_learns_a_real_task(tmp_path):
    model = crf_model()
    batch = examples(lengths=(4, 3)).batch([0, 1])
    y = batch.y % 3
    y[0, 1] = IGNORE_INDEX
    with pytest.raises(ConfigError, match="a CRF reads whole sentences"):
        model(batch.x, None, y, lengths=batch.lengths)
    spec = TaggingSpec(str(require_data("spa-eng/spa.txt")), task="spaces", max_sentences=3000)
    data = load_tagging(spec)
    torch.manual_seed(0)
    tagger = SequenceTagger(SequenceTaggerConfig(vocab_size=len(data.vocab), num_tags=2, hidden_size=64, crf=True))
    trainer = TaggingTrainer(tagger, data.train, data.val, BatchTrainConfig(max_steps=150, eval_interval=150),
                             tmp_path, show_progress=False)
    trainer.fit()
    ours = score(data.test.targets, predict_tags(tagger, data.test), data.tags)
    base = score(data.test.targets, most_frequent_tag(data.train_tokens, [*data.train.targets, *data.val.targets],
                                                      data.test_tokens), data.tags)
    assert ours["macro_f1"] > base["macro_f1"] + 0.05, (ours, base)
    assert -trainer.best_key[0] == pytest.approx(tagging_figures(tagger, data.val, torch.device("cpu"))[1])


# -- decoding, validation figures, scores and baselines, pinned down by mutation testing ----------------------
def test_decode_is_each_step_s_argmax_and_zero_past_each_length():
    model = make()
    with torch.no_grad():
        model.head.bias[1] = 10.0  # tag 1 wins every step, the padded ones included
    batch = examples().batch([0, 1, 2])
    logits = model(batch.x, lengths=batch.lengths).logits
    decoded = model.decode(batch.x, batch.lengths)
    argmax = logits.argmax(-1)
    for i, n in enumerate(batch.lengths.tolist()):
        assert decoded[i, :n].tolist() == argmax[i, :n].tolist() and decoded[i, n:].eq(0).all()
    assert argmax.eq(1).all()  # the padded steps' own argmax is 1: the masking is what zeroes them


def test_tagging_figures_are_per_tagged_step_by_hand():
    model = make()
    data = examples()  # 5, 3 and 7 steps: batches of 2 sentences (8 steps) then 1 (7 steps)
    ce, right, steps = 0.0, 0, 0
    for i in range(3):
        logits = model(data.batch([i]).x).logits[0]
        y = torch.from_numpy(data.targets[i])
        ce += F.cross_entropy(logits, y, reduction="sum").item()
        right, steps = right + int((logits.argmax(-1) == y).sum()), steps + len(y)
    loss, accuracy = tagging_figures(model, data, torch.device("cpu"), batch_size=2)
    assert loss == pytest.approx(ce / steps, rel=1e-5) and accuracy == pytest.approx(right / steps)


def test_crf_tagging_figures_count_the_viterbi_path():
    model = crf_model()
    data = examples(lengths=(4, 2, 3), seed=5)
    data = TaggedExamples(data.inputs, [y % 3 for y in data.targets])
    pred = predict_tags(model, data)
    right = sum(int((p == y).sum()) for p, y in zip(pred, data.targets, strict=True))
    batch = data.batch([0, 1, 2])
    argmax = model(batch.x, lengths=batch.lengths).logits.argmax(-1)
    greedy = sum(int((argmax[i, :len(y)].numpy() == y).sum()) for i, y in enumerate(data.targets))
    assert right != greedy  # the Viterbi path scores differently from each step's argmax here
    assert tagging_figures(model, data, torch.device("cpu"))[1] == pytest.approx(right / 9)


def test_score_by_hand_with_a_tag_never_predicted_one_never_present_and_one_unused():
    # A: 3 steps, 4 predicted, 2 right; B: 2 steps, never predicted; C: predicted once, never present; D: neither
    got = score([np.array([0, 0, 1]), np.array([1, 0])], [np.array([0, 2, 0]), np.array([0, 0])], list("ABCD"))
    assert set(got["per_tag"]) == {"A", "B", "C"}
    assert got["per_tag"]["A"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert got["per_tag"]["B"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 2}
    assert got["per_tag"]["C"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    assert got["macro_f1"] == pytest.approx(4 / 7 / 3) and got["accuracy"] == pytest.approx(2 / 5)
    assert got["sentence_accuracy"] == 0.0


def test_score_recall_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="the reference scores come from scikit-learn")
    rng = np.random.default_rng(7)
    truth = [rng.integers(0, 5, n) for n in (8, 5, 12)]
    pred = [np.where(rng.random(len(t)) < 0.6, t, rng.integers(0, 5, len(t))) for t in truth]
    got = score(truth, pred, list("ABCDE"))
    y, p = np.concatenate(truth), np.concatenate(pred)
    _, recall, _, _ = metrics.precision_recall_fscore_support(y, p, labels=range(5), zero_division=0)
    assert [got["per_tag"][t]["recall"] for t in "ABCDE"] == pytest.approx(recall.tolist())


def test_most_frequent_tag_breaks_ties_by_the_lower_id():
    got = most_frequent_tag([["a", "b"], ["a", "b"]], [[3, 2], [1, 2]], [["a", "new"]])
    assert got[0].tolist() == [1, 2]  # "a": 3 once, 1 once -> 1; overall 2 twice
    got = most_frequent_tag([["a"], ["b"]], [[4], [2]], [["c"]])
    assert got[0].tolist() == [2]  # overall 4 once, 2 once -> 2


def test_the_maximum_entropy_tagger_stops_fitting_at_its_step_cap(monkeypatch):
    pytest.importorskip("sklearn", reason="the maximum-entropy baseline needs scikit-learn")
    from rnnkit.baselines import tag as baselines

    monkeypatch.setattr(baselines, "MAX_TRAIN_STEPS", 4)  # the first sentences up to 4 steps: tags 3 and 4 unseen
    train_tokens = [["a", "b"], ["c", "d"], ["e", "f"]]
    got = maxent_tags(train_tokens, [[0, 1], [1, 0], [3, 4]], [["e", "f"], ["a", "b"]])
    assert {int(t) for g in got for t in g} <= {0, 1}


def test_evaluate_scores_each_baseline_under_its_own_name(tmp_path):
    pytest.importorskip("sklearn", reason="the maximum-entropy baseline needs scikit-learn")
    path = tmp_path / "e.txt"
    path.write_text("".join(f"Tom saw Mary {i} times.\nthe cat {i} sat.\n" for i in range(15)), "utf-8")
    data = load_tagging(TaggingSpec(str(path), task="case", test_fraction=0.2))
    torch.manual_seed(0)
    model = SequenceTagger(SequenceTaggerConfig(vocab_size=len(data.vocab), num_tags=2, hidden_size=8))
    got = evaluate(model, data)
    train_tags = [*data.train.targets, *data.val.targets]
    for name, method in (("most_frequent_tag", most_frequent_tag), ("maxent_window", maxent_tags)):
        want = score(data.test.targets, method(data.train_tokens, train_tags, data.test_tokens), data.tags)
        assert got["baselines"][name] == pytest.approx({k: want[k] for k in ("accuracy", "macro_f1",
                                                                             "sentence_accuracy")}), name
    assert got["baselines"]["most_frequent_tag"] != got["baselines"]["maxent_window"]
