"""One-to-many: ConditionalGenerator against hand-assembled torch.nn models, bound stepping, padding and the
condition's effect. Decoding (beam search, greedy, sampling): test_conditional_search.py; data, trainer and learning
on real data: test_conditional_data.py; the n-gram baseline: test_ngram.py."""

from __future__ import annotations

import pytest
import torch
from conditional_helpers import KINDS, MODES, C, E, H, K, L, V, as_tuple, conditions, make
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.conditional import ConditionalGenerator, ConditionalGeneratorConfig, ConvEncoder

TIGHT = dict(rtol=1e-10, atol=1e-10)


def repeat(cond: torch.Tensor, n: int) -> torch.Tensor:
    """One condition (a scalar id or (F,) features) for ``n`` rows."""
    return cond.expand(n) if cond.dim() == 0 else cond.expand(n, -1)


# -- against a hand-assembled torch.nn model -----------------------------------------------------------------
def reference(model: ConditionalGenerator, x: torch.Tensor, cond: torch.Tensor | None):
    """The generator rebuilt from torch.nn parts with copied weights: ``(logits, state)``."""
    cfg = model.config
    B, T = x.shape
    lstm = cfg.cell == "lstm"
    with torch.no_grad():
        # the condition vector c (B, C)
        if cfg.num_classes:
            ids = torch.full((B,), cfg.num_classes) if cond is None else cond
            c = model.labels.weight[ids]
        else:
            z = (cond.double() - model.feature_mean) / model.feature_std
            first, last = model.encoder[0], model.encoder[3]
            c = F.linear(torch.relu(F.linear(z, first.weight, first.bias)), last.weight, last.bias)
        emb = nn.Embedding(cfg.vocab_size, E).double()
        emb.weight.copy_(model.embedding.weight)
        inputs = emb(x)
        if cfg.condition in ("input", "both"):
            inputs = torch.cat([inputs, c[:, None, :].expand(B, T, C)], dim=-1)
        rnn = (nn.LSTM if lstm else nn.GRU)(inputs.shape[-1], H, L, batch_first=True).double()
        for layer, cell in enumerate(model.rnn.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnn, f"{name}_l{layer}").copy_(getattr(cell, name))
        if cfg.condition in ("init", "both"):
            s = torch.tanh(F.linear(c, model.init.weight, model.init.bias))  # (B, [h | c] x L x H)
            h0 = s[:, :L * H].reshape(B, L, H).transpose(0, 1)  # (L, B, H)
            state = (h0, s[:, L * H:].reshape(B, L, H).transpose(0, 1)) if lstm else h0
        else:
            zeros = torch.zeros(L, B, H, dtype=torch.float64)
            state = (zeros, zeros.clone()) if lstm else zeros
        y, state = rnn(inputs, state)
        return F.linear(y, model.head.weight, model.head.bias), state


@pytest.mark.parametrize("path", ["fused", "explicit"])
@pytest.mark.parametrize("kind", ["label", "mlp"])
@pytest.mark.parametrize("cell,mode", [("lstm", "init"), ("gru", "input"), ("lstm", "both"), ("gru", "both"),
                                       ("gru", "init"), ("lstm", "input"), ("lstm", "none")])
def test_matches_hand_assembled_torch_nn(cell, mode, kind, path):
    model = make(cell, mode, kind, path=path)
    B, T = 3, 6
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    y[1, 3:] = IGNORE_INDEX
    cond = conditions(kind, B)
    out = model(x, targets=y, condition=cond)
    logits, state = reference(model, x, cond)
    assert out.logits.shape == (B, T, V) and out.logits.dtype == torch.float64
    assert_close(out.logits, logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(as_tuple(out.state), as_tuple(state), strict=True):
        assert a.shape == (L, B, H)
        assert_close(a, b, rtol=1e-5, atol=1e-5)
    valid = y != IGNORE_INDEX
    loss = -logits.log_softmax(-1)[valid].gather(-1, y[valid][:, None]).mean()
    assert_close(out.loss, loss, rtol=1e-5, atol=1e-5)


def test_no_label_row_matches_reference():
    model = make("lstm", "both", "label")
    x = torch.randint(0, V, (2, 5))
    logits, _ = reference(model, x, None)
    assert_close(model(x, condition=None).logits, logits, rtol=1e-5, atol=1e-5)
    assert model.labels.num_embeddings == K + 1  # the extra "no label" row


def test_feature_standardisation_lives_in_the_model():
    """``set_scaling`` standardises inside the model: a model scaled by (mean, std) on raw features equals an
    unscaled copy on standardised features; a zero std (a constant pixel) becomes 1, never a NaN."""
    for kind in ("mlp", "conv"):
        model = make("gru", "both", kind)
        n = model.config.condition_size
        plain = ConditionalGenerator(model.config).double().eval()
        plain.load_state_dict(model.state_dict())
        plain.set_scaling(torch.zeros(n), torch.ones(n))
        raw = conditions(kind, 3)
        x = torch.randint(0, V, (3, 4))
        standardised = (raw.double() - model.feature_mean) / model.feature_std
        assert_close(model(x, condition=raw).logits, plain(x, condition=standardised).logits, rtol=1e-7, atol=1e-9)
        assert "feature_mean" in model.state_dict() and "feature_std" in model.state_dict()
        std = torch.ones(n)
        std[0] = 0.0
        model.set_scaling(torch.zeros(n), std)
        assert model.feature_std[0] == 1.0  # a constant feature is left as it is, like StandardScaler does
        assert torch.isfinite(model(x, condition=raw).logits).all()


def test_encoder_choice_and_conv_shapes():
    assert isinstance(make(kind="conv").encoder, ConvEncoder)
    assert isinstance(make(kind="mlp").encoder, nn.Sequential)
    auto = ConditionalGeneratorConfig(vocab_size=5, condition_size=16, image_shape=[4, 4])
    assert auto.encoder == "conv"
    assert ConditionalGeneratorConfig(vocab_size=5, condition_size=16).encoder == "mlp"
    model = ConditionalGenerator(ConditionalGeneratorConfig(vocab_size=5, condition_size=64, image_shape=[8, 8],
                                                            condition_embedding=7, hidden_size=8, num_layers=1))
    assert model.encoder(torch.randn(3, 64)).shape == (3, 7)


# -- bound generators: stepping and batches of conditions ----------------------------------------------------
@pytest.mark.parametrize("kind", ["label", "mlp"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bound_step_matches_forward(cell, mode, kind):
    model = make(cell, mode, kind)
    cond = conditions(kind, 2)[1]
    bound = model.bind(cond)
    B, T = 2, 9
    x = torch.randint(0, V, (B, T))
    whole = bound(x)
    assert_close(whole.logits, model(x, condition=repeat(cond, B)).logits, **TIGHT)
    first = bound(x[:, :1])
    state, stepped = first.state, [first.logits[:, 0]]
    for t in range(1, T):
        logits, state = bound.step(x[:, t], state)
        assert logits.shape == (B, V)
        stepped.append(logits)
    assert_close(torch.stack(stepped, 1), whole.logits, **TIGHT)
    for a, b in zip(as_tuple(state), as_tuple(whole.state), strict=True):
        assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batch_binding_equals_per_row_binding(cell, kind):
    model = make(cell, "both", kind)
    B, T = 3, 6
    conds = conditions(kind, B)
    x = torch.randint(0, V, (B, T))
    batched = model.bind(conds, batch=True)
    out = batched(x)
    first = batched(x[:, :2])
    state = first.state
    for t in range(2, T):
        step_logits, state = batched.step(x[:, t], state)
    for i in range(B):
        alone = model.bind(conds[i])
        assert_close(out.logits[i], alone(x[i:i + 1]).logits[0], **TIGHT)
        s = alone(x[i:i + 1, :T - 1]).state
        last, _ = alone.step(x[i:i + 1, T - 1], s)
        assert_close(step_logits[i], last[0], **TIGHT)
    with pytest.raises(ConfigError, match="3 conditions for a batch of 2"):
        batched(x[:2])


def test_bind_none_is_the_no_label_row():
    model = make("gru", "both", "label")
    x = torch.randint(0, V, (2, 5))
    assert_close(model.bind(None)(x).logits, model(x, condition=None).logits, **TIGHT)
    assert not torch.allclose(model.bind(0)(x).logits, model(x, condition=None).logits)


# -- padding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["fused", "explicit"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_changes_nothing(cell, path):
    """Per-row initial states from the condition survive unsorted lengths (the fused path packs and sorts)."""
    model = make(cell, "both", "label", path=path)
    lengths = torch.tensor([3, 7, 1, 5])
    cond = torch.tensor([2, 0, 1, 2])
    B, T = 4, 7
    x = torch.randint(1, V, (B, T))
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0
    out = model(x, lengths=lengths, condition=cond)
    other = torch.cat([torch.randint(0, V, (B, T)), torch.randint(0, V, (B, 5))], 1)  # longer, other padding
    for i, n in enumerate(lengths.tolist()):
        other[i, :n] = x[i, :n]
    out2 = model(other, lengths=lengths, condition=cond)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i:i + 1, :n], condition=cond[i:i + 1])
        assert_close(out.logits[i, :n], alone.logits[0], **TIGHT)
        assert_close(out2.logits[i, :n], alone.logits[0], **TIGHT)
        for a, b, s in zip(as_tuple(out.state), as_tuple(out2.state), as_tuple(alone.state), strict=True):
            assert_close(a[:, i], s[:, 0], **TIGHT)
            assert_close(b[:, i], s[:, 0], **TIGHT)


# -- the condition matters -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_condition_changes_the_output_unless_none(mode, kind):
    model = make("lstm", mode, kind)
    cond = conditions(kind, 2)
    x = torch.randint(0, V, (1, 6)).expand(2, -1)
    logits = model(x, condition=cond).logits
    if mode == "none":
        assert_close(logits[0], logits[1], **TIGHT)
        if kind == "label":
            assert_close(model(x, condition=None).logits, logits, **TIGHT)
    else:
        assert (logits[0] - logits[1]).abs().min() > 0  # every position differs
    if mode == "init":  # the condition reaches only the initial state: with a given state it changes nothing
        state = model(x[:, :2], condition=cond[:1].expand(2, *cond.shape[1:])).state
        a = model(x[:, 2:], state, condition=cond).logits
        assert_close(a[0], a[1], **TIGHT)


def test_condition_dropout_only_in_training():
    model = make("gru", "both", "label", condition_dropout=0.99, seed=3)
    B = 64
    x = torch.randint(0, V, (1, 5)).expand(B, -1)
    labels = torch.arange(B) % K
    with torch.no_grad():
        labelled = model(x, condition=labels).logits
        unlabelled = model(x, condition=None).logits
        assert_close(model(x, condition=labels).logits, labelled, **TIGHT)  # eval: deterministic, no dropout
        model.train()  # dropout=0 elsewhere: only the condition dropout differs from eval mode
        train = model(x, condition=labels).logits
    same_as_unlabelled = [torch.equal(train[i], unlabelled[i]) for i in range(B)]
    assert sum(same_as_unlabelled) >= 56  # expected 63.4 of 64
    assert not torch.allclose(labelled, unlabelled)

    half = make("gru", "both", "label", condition_dropout=0.5, seed=3).train()
    with torch.no_grad():
        train = half(x, condition=labels).logits
    dropped = [torch.equal(train[i], unlabelled[i]) for i in range(B)]
    kept = [torch.equal(train[i], labelled[i]) for i in range(B)]
    assert all(d != k for d, k in zip(dropped, kept, strict=True))  # every row is exactly one of the two
    assert 16 <= sum(dropped) <= 48

    plain = make("gru", "both", "label", condition_dropout=0.0, seed=3).train()
    with torch.no_grad():
        assert_close(plain(x, condition=labels).logits, labelled, **TIGHT)


def test_condition_errors():
    feat = make("gru", "both", "mlp")
    x = torch.randint(0, V, (2, 4))
    with pytest.raises(ConfigError, match="feature vector"):
        feat(x, condition=None)
    with pytest.raises(ConfigError, match="feature vector"):
        feat.bind(None)(x)
    for bad in (torch.randn(2, 7), torch.randn(3, 6), torch.randn(2), torch.randn(2, 6, 1)):
        with pytest.raises(ConfigError, match=r"shape \(2, 6\)"):
            feat(x, condition=bad)
    lab = make("gru", "both", "label")
    for bad in (torch.tensor([[0], [1]]), torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2])):
        with pytest.raises(ConfigError, match="class ids"):
            lab(x, condition=bad)
    with pytest.raises(ConfigError):
        lab.bind(torch.randn(6))(x)


@pytest.mark.parametrize("kw,match", [
    (dict(condition="sometimes"), "unknown --condition"),
    (dict(encoder="rnn"), "unknown --encoder"),
    (dict(num_classes=3, condition_size=4), "either num_classes or condition_size"),
    (dict(), "either num_classes or condition_size"),
    (dict(condition_size=64, image_shape=[4, 4], encoder="conv"), "image_shape"),
    (dict(condition_size=64, encoder="conv"), "image_shape"),
    (dict(condition_size=64, image_shape=[64], encoder="conv"), "image_shape"),
    (dict(num_classes=3, condition_dropout=1.0), "condition_dropout"),
    (dict(num_classes=3, condition_dropout=-0.1), "condition_dropout"),
    (dict(num_classes=3, condition_embedding=0), "condition_embedding"),
    (dict(condition_size=4, encoder_hidden=0), "encoder_hidden"),
    (dict(num_classes=3, cell="transformer"), "unknown cell"),
    (dict(num_classes=3, hidden_size=0), "hidden_size"),
])
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        ConditionalGeneratorConfig(vocab_size=5, **kw)


def test_model_needs_a_vocabulary():
    with pytest.raises(ConfigError, match="vocab_size"):
        ConditionalGenerator(ConditionalGeneratorConfig(num_classes=3))
