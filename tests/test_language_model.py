"""LanguageModel: the forward contract, its loss against a reference, weight tying, and the seeds' "happy"."""

import pytest
import torch

from rnnkit.data import CharVocab
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel, LanguageModelConfig, Output


def make(cell="lstm", **kw):
    cfg = dict(vocab_size=11, cell=cell, hidden_size=16, num_layers=2, embedding_size=8, weight_drop=0.0)
    cfg.update(kw)
    return LanguageModel(LanguageModelConfig(**cfg))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu"])
def test_forward_contract_and_loss_against_reference(cell):
    model = make(cell).double()
    x = torch.randint(0, 11, (3, 7))
    y = torch.randint(0, 11, (3, 7))
    y[1, 4:] = -100  # ignored targets
    out = model(x, targets=y)
    assert isinstance(out, Output)
    assert out.logits.shape == (3, 7, 11)
    # reference: embedding -> torch.nn module with the same weights -> head, loss by hand over valid targets
    ref_rnn = model.rnn.to_torch()
    h, _ = ref_rnn(model.embedding(x))
    logits = model.head(h)
    torch.testing.assert_close(out.logits, logits)
    logp = logits.log_softmax(-1)
    valid = y != -100
    expected = -logp[valid].gather(-1, y[valid][:, None]).mean()
    torch.testing.assert_close(out.loss, expected)
    no_targets = model(x)
    assert no_targets.loss is None and isinstance(no_targets, Output)


def test_state_carries_between_calls():
    model = make().double().eval()
    x = torch.randint(0, 11, (2, 10))
    whole = model(x)
    first = model(x[:, :6])
    second = model(x[:, 6:], first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole.logits)


def test_fused_and_explicit_paths_agree():
    fused = make(path="fused").double()
    explicit = make(path="explicit").double()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randint(0, 11, (2, 9))
    torch.testing.assert_close(fused(x).logits, explicit(x).logits)


def test_weight_tying_shares_one_matrix():
    model = make(hidden_size=8, embedding_size=8, tie_weights=True)
    assert model.head.weight is model.embedding.weight
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="embedding-size 16"):
        make(hidden_size=16, embedding_size=8, tie_weights=True)


@pytest.mark.parametrize("bad, match", [
    (dict(cell="transformer"), "unknown cell"), (dict(hidden_size=0), "hidden_size"),
    (dict(num_layers=-1), "num_layers"), (dict(dropout=1.0), "dropout"), (dict(path="gpu"), "unknown path"),
])
def test_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        make(**bad)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_happy(cell):
    """The seeds' example: trained on "happy" from the letters h, a, p, y, the model predicts
    h -> a -> p -> p -> y. After "p" it must say "p" once and "y" the second time: that needs memory."""
    torch.manual_seed(0)
    vocab = CharVocab("hapy")
    ids = torch.as_tensor(vocab.encode("happy"))
    x, y = ids[None, :-1], ids[None, 1:]  # inputs h a p p, targets a p p y
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=16, num_layers=1,
                                              embedding_size=8))
    before = model(x).logits.softmax(-1)[0, torch.arange(4), y[0]]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        loss = model(x, targets=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model(x).logits.softmax(-1)[0, torch.arange(4), y[0]]
    assert (before < 0.5).all()  # untrained: about 1/4 each
    assert (after > 0.9).all(), f"p(next letter) after training: {after.tolist()}"
    # the same input letter "p" leads to different predictions, from the carried state alone
    argmax = model(x).logits.argmax(-1)[0]
    assert vocab.decode(argmax.tolist()) == "appy"
