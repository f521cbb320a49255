"""The sequence tagger (many-to-many, same length): its loss against torch's cross-entropy by hand, padding, the
CoNLL reader and the derived tasks, the split, the scores against scikit-learn, the baselines, and learning on real
sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_data
from torch.nn import functional as F

from rnnkit.baselines.tag import maxent_tags, most_frequent_tag, window_features
from rnnkit.checkpoint import build_model
from rnnkit.data.labeled import TokenVocab
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.data.tagging import (
    TaggedExamples,
    TaggingSpec,
    derive,
    input_tokens,
    load_tagging,
    read_conll,
    render,
)
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.models.tagger import SequenceTagger, SequenceTaggerConfig
from rnnkit.tagging import predict_tags, score, tag_tokens
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


# -- data ----------------------------------------------------------------------------------------------------
def test_read_conll_columns_comments_and_sentences(tmp_path):
    path = tmp_path / "c.conll"
    path.write_text("# newdoc\nThe\tDT\nDogs\tNNS\n\n\n1\tThe\tthe\tDET\nbark\tVBP x\tVERB\n\nRun  VB\n", "utf-8")
    with pytest.raises(CorpusError, match=r"c.conll:2 has 2 column\(s\), a CoNLL line needs 4"):
        read_conll(path, token_column=2, tag_column=4)
    assert read_conll(path, tag_column=2) == [(["The", "Dogs"], ["DT", "NNS"]), (["1", "bark"], ["The", "VBP x"]),
                                              (["Run"], ["VB"])]  # "VBP x": a tab-separated column
    path.write_text("# newdoc\nThe\tDT\nDogs\tNNS\n\n\nbark\tVBP\n\nRun  VB\n", "utf-8")
    assert read_conll(path) == [(["The", "Dogs"], ["DT", "NNS"]), (["bark"], ["VBP"]), (["Run"], ["VB"])]
    conllu = tmp_path / "u.conllu"
    conllu.write_text("# sent_id = 1\n1\tDogs\tdog\tNOUN\t_\n2\tbark\tbark\tVERB\t_\n", "utf-8")
    assert read_conll(conllu, token_column=2, tag_column=4) == [(["Dogs", "bark"], ["NOUN", "VERB"])]
    ranges = tmp_path / "ranges.conllu"  # "al" is "a" + "el": the range line is not a word; nor is an empty node
    ranges.write_text("# text = Vamos al mar.\n1\tVamos\tir\tVERB\t_\t_\t_\t_\t_\t_\n"
                      "2-3\tal\t_\t_\t_\t_\t_\t_\t_\t_\t_\n2\ta\ta\tADP\t_\t_\t_\t_\t_\t_\n"
                      "3\tel\tel\tDET\t_\t_\t_\t_\t_\t_\n3.1\tmar\t_\t_\t_\t_\t_\t_\t_\t_\n"
                      "4\tmar\tmar\tNOUN\t_\t_\t_\t_\t_\t_\n", "utf-8")
    assert read_conll(ranges, token_column=2, tag_column=4) == [(["Vamos", "a", "el", "mar"],
                                                                 ["VERB", "ADP", "DET", "NOUN"])]
    spaced = tmp_path / "chunks.txt"  # CoNLL-2000 is space-separated and has no comments: "# # B-NP" is a token
    spaced.write_text("# # B-NP\n5 CD I-NP\n\n#hashtag NN O\n", "utf-8")
    assert read_conll(spaced) == [(["#", "5"], ["B-NP", "I-NP"]), (["#hashtag"], ["O"])]
    pound = tmp_path / "ptb.conll"  # the Penn Treebank's pound sign is a token, even first in a sentence
    pound.write_text("# a comment\n#\t#\n5\tCD\n\nUS\tNNP\n#\t#\n", "utf-8")
    assert read_conll(pound) == [(["#", "5"], ["#", "CD"]), (["US", "#"], ["NNP", "#"])]
    with pytest.raises(CorpusError, match="both 2 — the tag needs a column of its own"):
        read_conll(ranges, token_column=2, tag_column=2)
    with pytest.raises(CorpusError, match="--token-column 2 is the last column"):
        read_conll(pound, token_column=2)
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("The\tDT\tB-NP\ndog\tNN\n", "utf-8")
    with pytest.raises(CorpusError, match=r"ragged.conll:2 has 2 columns where earlier lines have 3"):
        read_conll(ragged)
    assert read_conll(ragged, tag_column=2) == [(["The", "dog"], ["DT", "NN"])]
    path.write_text("a\tB\nb\n", "utf-8")
    with pytest.raises(CorpusError, match=r"c.conll:2 has 1 column.*--task spaces\|case"):
        read_conll(path)


@pytest.mark.parametrize("sentence", ["Tom can't swim.", "I think İstanbul is big", "A B  C d"])
def test_derived_tasks_render_back_to_the_sentence(sentence):
    clean = " ".join(sentence.split())
    chars, tags = derive(clean, "spaces")
    assert " " not in chars and len(chars) == len(tags) and tags[-1] == "_"
    assert render(chars, tags, "spaces") == clean and input_tokens(clean, "spaces") == chars
    chars, tags = derive(clean, "case")
    assert "".join(chars) == "".join(c.lower() if len(c.lower()) == 1 else c for c in clean)
    assert render(chars, tags, "case") == clean  # "İ" has no one-character lower case: it is read as it is
    assert tags.count("U") == sum(c.isupper() and len(c.lower()) == 1 for c in clean)


def test_split_drops_duplicates_keeps_sentences_apart_and_is_reproducible(tmp_path):
    path = tmp_path / "t.txt"
    lines = [f"Sentence number {i % 40} is here.\tSpanish" for i in range(100)]  # 40 distinct, each 2-3 times
    path.write_text("\n".join(lines) + "\n", "utf-8")
    spec = TaggingSpec(str(path), task="case", test_fraction=0.25, val_fraction=0.2, split_seed=3)
    data = load_tagging(spec)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    test = {"".join(s) for s in data.test_tokens}
    assert len(test) == 10 and not test & {"".join(s) for s in data.train_tokens}
    again = load_tagging(TaggingSpec(str(path), task="case", test_fraction=0.25, val_fraction=0.2, split_seed=3))
    assert again.test_tokens == data.test_tokens
    assert load_tagging(TaggingSpec(str(path), task="case", max_sentences=20)).test.inputs.__len__() == 2
    path.write_text("Something else.\n" * 3 + "\n".join(lines), "utf-8")
    with pytest.raises(CorpusError, match="changed since the run was trained"):
        load_tagging(spec, data.vocab, data.tags, verify=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"path": ""}, "no data given"),
    ({"task": "pos"}, "unknown --task"),
    ({"test_fraction": 1.0}, "--test-fraction"),
    ({"val_fraction": -0.1}, "--val-fraction"),
    ({"min_count": 0}, "--min-count"),
    ({"max_sentences": -1}, "--max-sentences"),
    ({"token_column": 0}, "--token-column"),
])
def test_spec_errors(tmp_path, kwargs, message):
    with pytest.raises(CorpusError, match=message):
        TaggingSpec(**{"path": str(tmp_path / "x"), **kwargs})


def test_load_errors(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        TaggingSpec(str(tmp_path))
    with pytest.raises(CorpusError, match="does not exist"):
        load_tagging(TaggingSpec(str(tmp_path / "nowhere.txt")))
    one_tag = tmp_path / "one.conll"
    one_tag.write_text("".join(f"w{i}\tNN\n\n" for i in range(30)), "utf-8")
    with pytest.raises(CorpusError, match="one tag only"):
        load_tagging(TaggingSpec(str(one_tag)))
    many = tmp_path / "many.txt"
    many.write_text("".join(f"Sentence {i}.\n" for i in range(20)), "utf-8")
    with pytest.raises(CorpusError, match="--max-sentences 2 leaves no room"):
        load_tagging(TaggingSpec(str(many), task="case", max_sentences=2))
    two = tmp_path / "two.txt"
    two.write_text("One.\nTwo.\n", "utf-8")
    with pytest.raises(CorpusError, match="2 distinct sentence"):
        load_tagging(TaggingSpec(str(two), task="spaces"))


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


def test_vocab_ids_keep_tokens_as_they_are():
    vocab = TokenVocab(["Dog", "dog", "."], "word")
    assert vocab.ids(["Dog", "dog", "DOG", "."]).tolist() == [2, 3, 1, 4]


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
