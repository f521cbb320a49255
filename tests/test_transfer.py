"""Transfer from a character language model into a classifier's encoder (`rnnkit classify train --init-from`)."""

import pytest
import torch
from classify_helpers import sentiment_sample
from test_classify_cli import SMALL, assert_user_error
from test_cli import run

from rnnkit.checkpoint import load_run, load_weights
from rnnkit.data.labeled import TokenVocab
from rnnkit.data.vocab import CharVocab
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel, LanguageModelConfig, SequenceClassifier, SequenceClassifierConfig
from rnnkit.models.transfer import init_from_language_model


def models(cell="lstm", layers=1, bidirectional=True, hidden=12, emb=6, members=1):
    torch.manual_seed(0)
    lm_vocab = CharVocab("abcdefgh ")
    lm = LanguageModel(LanguageModelConfig(vocab_size=len(lm_vocab), cell=cell, hidden_size=hidden,
                                           num_layers=layers, embedding_size=emb)).double().eval()
    vocab = TokenVocab(list("abcxyz "), "char")  # shares a, b, c and the space with the language model
    clf = SequenceClassifier(SequenceClassifierConfig(
        vocab_size=len(vocab), num_classes=2, cell=cell, hidden_size=hidden, num_layers=layers,
        embedding_size=emb, bidirectional=bidirectional, members=members, dropout=0.0)).double().eval()
    return lm, lm_vocab, clf, vocab


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_forward_direction_reads_text_as_the_language_model_does(cell, bidirectional):
    layers = 1 if bidirectional else 2  # a bidirectional encoder takes the first layer only
    lm, lm_vocab, clf, vocab = models(cell, layers=layers, bidirectional=bidirectional, members=2)
    assert init_from_language_model(clf, vocab, lm, lm_vocab) == (4, layers)  # a, b, c, space
    text = "abc cab ba"
    for member in clf.members:
        enc = member.encoder
        for ch in "abc ":
            torch.testing.assert_close(enc.embedding.weight[vocab.encode(ch)[0]],
                                       lm.embedding.weight[lm_vocab.encode(ch)[0]])
        y, _ = enc(torch.as_tensor(vocab.encode(text))[None], None, None)  # (1, T, D*H)
        want, _ = lm.rnn(lm.embedding(torch.as_tensor(lm_vocab.encode(text))[None]))  # (1, T, H)
        torch.testing.assert_close(y[..., :12], want)  # forward direction: same features as the LM's top layer


def test_a_bidirectional_encoder_takes_the_first_layer():
    lm, lm_vocab, _, _ = models(layers=2)
    _, _, clf, vocab = models(layers=2, bidirectional=True)
    assert init_from_language_model(clf, vocab, lm, lm_vocab) == (4, 1)
    cells = clf.members[0].encoder.rnn.cells
    torch.testing.assert_close(cells[0].weight_hh, lm.rnn.cells[0].weight_hh)
    assert not torch.equal(cells[2].weight_hh, lm.rnn.cells[1].weight_hh)


def test_unshared_characters_and_the_backward_direction_keep_their_initialisation():
    lm, lm_vocab, clf, vocab = models()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    init_from_language_model(clf, vocab, lm, lm_vocab)
    after = clf.state_dict()
    x = vocab.encode("x")[0]
    prefix = "members.0.encoder."
    assert torch.equal(after[prefix + "embedding.weight"][x], before[prefix + "embedding.weight"][x])
    assert torch.equal(after[prefix + "rnn.cells.1.weight_hh"], before[prefix + "rnn.cells.1.weight_hh"])
    assert not torch.equal(after[prefix + "rnn.cells.0.weight_hh"], before[prefix + "rnn.cells.0.weight_hh"])
    assert torch.equal(after["members.0.head.weight"], before["members.0.head.weight"])


@pytest.mark.parametrize("change, fragment", [
    ({"cell": "gru"}, "--cell lstm"),
    ({"hidden": 10}, "--hidden-size 12"),
    ({"emb": 4}, "--embedding-size 6"),
])
def test_mismatched_shapes_are_refused(change, fragment):
    lm, lm_vocab, _, _ = models()
    _, _, clf, vocab = models(cell=change.get("cell", "lstm"), hidden=change.get("hidden", 12),
                              emb=change.get("emb", 6))
    with pytest.raises(ConfigError, match=fragment):
        init_from_language_model(clf, vocab, lm, lm_vocab)
    deeper, deeper_vocab, _, _ = models(layers=2)
    with pytest.raises(ConfigError, match="--num-layers 2"):
        init_from_language_model(models()[2], vocab, deeper, deeper_vocab)
    with pytest.raises(ConfigError, match="--tokens char"):
        init_from_language_model(models()[2], TokenVocab(["ab"], "word"), lm, lm_vocab)


def test_cli_init_from_a_trained_language_model(tmp_path, capsys):
    data = sentiment_sample(tmp_path / "s.tsv", per_file=40)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(data.read_text(encoding="utf-8").replace("\t", " ") * 3, encoding="utf-8")
    lm_dir = tmp_path / "lm"
    code, _, err = run(capsys, "train", "--data", corpus, "--out", lm_dir, "--max-steps", 3, "--hidden-size", 16,
                       "--embedding-size", 16, "--num-layers", 1, "--batch-size", 4, "--seq-len", 16, "--quiet",
                       "--sample-length", 0, "--precision", "fp32", "--device", "cpu")
    assert code == 0, err
    out = tmp_path / "clf"
    code, _, err = run(capsys, "classify", "train", "--data", data, "--init-from", lm_dir, "--out", out,
                       "--max-steps", 2, *SMALL)
    assert_user_error(code, err, "cell 'lnlstm'", "--cell lnlstm")  # `rnnkit train`'s cell on the CPU
    code, _, err = run(capsys, "classify", "train", "--data", data, "--init-from", lm_dir, "--out", out,
                       "--max-steps", 2, *SMALL, "--cell", "lnlstm")
    assert code == 0, err
    assert "encoder initialised from" in err
    lm, lm_vocab, _ = load_run(lm_dir)
    clf, config = load_weights(out, "last", kind="classifier")
    assert config["init_from"] == str(lm_dir)
    vocab = TokenVocab.from_dict(config["vocab"])
    # two small updates later the embedding is still close to the language model's, far from a fresh init
    row = vocab.encode("e")[0]
    gap = (clf.members[0].encoder.embedding.weight[row] - lm.embedding.weight[lm_vocab.encode("e")[0]]).abs().max()
    assert gap < 0.05
    code, _, err = run(capsys, "classify", "train", "--data", data, "--init-from", lm_dir, "--tokens", "word",
                       "--out", tmp_path / "w", "--max-steps", 2, *SMALL, "--cell", "lnlstm")
    assert_user_error(code, err, "--tokens char")
    code, _, err = run(capsys, "classify", "train", "--data", data, "--init-from", lm_dir, "--out",
                       tmp_path / "h", "--max-steps", 2, *SMALL[:1], "24", *SMALL[2:], "--cell", "lnlstm")
    assert_user_error(code, err, "--hidden-size 16")
