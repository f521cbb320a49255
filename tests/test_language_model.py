"""LanguageModel: the forward contract, its loss against a reference, weight tying, and the seeds' "happy"."""

import pytest
import torch

from rnnkit.checkpoint import build_model
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


def test_activation_regularisation_against_reference():
    """AR + TAR on the top layer's outputs in training mode, kept out of ``loss``; nothing in eval mode."""
    model = make(activation_reg=2.0, temporal_activation_reg=0.5).double()
    x, y = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 7))
    out = model.train()(x, targets=y)
    h, _ = model.rnn.to_torch()(model.embedding(x))  # no dropout, no weight drop: training mode is deterministic
    expected = 2.0 * h.pow(2).mean() + 0.5 * (h[:, 1:] - h[:, :-1]).pow(2).mean()
    torch.testing.assert_close(out.penalty, expected)
    plain = model.eval()(x, targets=y)
    assert plain.penalty is None
    torch.testing.assert_close(out.loss, plain.loss)  # the penalty is not in the loss...
    torch.testing.assert_close(out.objective(), plain.loss + expected)  # ...but in what a trainer minimises
    assert plain.objective() is plain.loss
    only_ar = make(activation_reg=3.0, temporal_activation_reg=0.0).double()
    only_ar.load_state_dict(model.state_dict())
    torch.testing.assert_close(only_ar.train()(x).penalty, 3.0 * h.pow(2).mean())
    assert make(activation_reg=0.0, temporal_activation_reg=0.0).train()(x).penalty is None
    one_step = model.train()(x[:, :1]).penalty  # a single step has no change to penalise
    torch.testing.assert_close(one_step, 2.0 * h[:, :1].pow(2).mean())


def test_configs_saved_before_activation_regularisation_load_without_it():
    """A run's config.json from before these fields existed rebuilds (``build_model``, what resume and sample use)
    the model it trained, without them; a config that names them keeps its values."""
    saved = make(weight_drop=0.1, activation_reg=0.5).config.to_dict()
    assert build_model({"kind": "language_model", "model": saved}).config.activation_reg == 0.5
    for name in ("weight_drop", "activation_reg", "temporal_activation_reg"):
        del saved[name]
    config = build_model({"kind": "language_model", "model": saved}).config
    assert (config.weight_drop, config.activation_reg, config.temporal_activation_reg) == (0.0, 0.0, 0.0)
    assert LanguageModelConfig(vocab_size=5).activation_reg > 0  # while a new run has it on


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
    (dict(activation_reg=-0.5), "activation_reg must be"), (dict(temporal_activation_reg=float("inf")), "temporal_"),
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
