"""Cells with no fused kernel: the layer-normalised LSTM, zoneout and recurrent dropout — each against a
hand-written reference, and run by the layer on its explicit path; and weight drop, which runs on either path."""

import pytest
import torch
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.generate import generate
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.nn import GRUCell, LSTMCell, Recurrent, RNNCell
from rnnkit.nn.cells import LayerNormLSTMCell

B, C, H = 4, 5, 6


def lnlstm_by_hand(cell, x, h, c):
    ln = lambda t, m: F.layer_norm(t, t.shape[-1:], m.weight, m.bias, m.eps)  # noqa: E731
    gates = ln(x @ cell.weight_ih.T, cell.ln_ih) + cell.bias_ih + ln(h @ cell.weight_hh.T, cell.ln_hh) + cell.bias_hh
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(ln(c, cell.ln_c)), c


def test_layer_norm_lstm_equals_its_equations():
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(C, H).double()
    with torch.no_grad():  # move the norms off their identity start so they matter
        for m in (cell.ln_ih, cell.ln_hh, cell.ln_c):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(B, C, dtype=torch.float64)
    h, c = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    got = cell(x, (h, c))
    want = lnlstm_by_hand(cell, x, h, c)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(sum(t.sum() for t in got), list(cell.parameters()))
    ref = torch.autograd.grad(sum(t.sum() for t in want), list(cell.parameters()))
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert all(g.abs().sum() > 0 for g in grads)


def test_layer_norm_lstm_gradcheck_and_init():
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(3, 4).double()
    assert torch.equal(cell.ln_c.weight, torch.ones(4)) and torch.equal(cell.ln_ih.bias, torch.zeros(16))
    cell.reset_parameters()  # must leave the norms' gains at 1
    assert torch.equal(cell.ln_c.weight, torch.ones(4))
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))


def test_layer_norm_lstm_layer_runs_explicit_and_padding_changes_nothing():
    torch.manual_seed(0)
    layer = Recurrent("lnlstm", C, H, num_layers=2, bidirectional=True).double()
    assert not layer.uses_fused
    with pytest.raises(ConfigError, match="LayerNormLSTMCell has no fused kernel"):
        Recurrent("lnlstm", C, H, path="fused")
    x = torch.randn(3, 7, C, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    y, (h, c) = layer(x, lengths=lengths)
    for b in range(3):
        yb, (hb, cb) = layer(x[b : b + 1, : lengths[b]])
        torch.testing.assert_close(y[b, : lengths[b]], yb[0])
        torch.testing.assert_close(h[:, b], hb[:, 0])
    assert (y[1, 2:] == 0).all()


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_zoneout(cls):
    torch.manual_seed(0)
    z = 0.3
    cell = cls(C, H, zoneout=z).double()
    plain = cls(C, H).double()
    plain.load_state_dict(cell.state_dict())
    assert cell.fused_kernel is None and plain.fused_kernel is not None
    x = torch.randn(64, C, dtype=torch.float64)
    state = plain.init_state(64, dtype=torch.float64)
    state = plain(torch.randn(64, C, dtype=torch.float64), state)  # a non-zero previous state
    new = plain(x, state)
    as_tuple = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    # evaluation: the expectation of the mixture
    for got, n, o in zip(as_tuple(cell.eval()(x, state)), as_tuple(new), as_tuple(state), strict=True):
        torch.testing.assert_close(got, z * o + (1 - z) * n)
    # training: every unit is exactly its old or its new value, about z of them old
    kept = []
    for got, n, o in zip(as_tuple(cell.train()(x, state)), as_tuple(new), as_tuple(state), strict=True):
        is_old, is_new = got == o, got == n
        assert (is_old | is_new).all()
        kept.append(is_old.double().mean().item())
    assert all(0.2 < k < 0.4 for k in kept), kept


@pytest.mark.parametrize("cls", [LSTMCell, GRUCell])
def test_recurrent_dropout_drops_the_candidate_only(cls):
    torch.manual_seed(0)
    p = 0.4
    cell = cls(C, H, recurrent_dropout=p).double()
    plain = cls(C, H).double()
    plain.load_state_dict(cell.state_dict())
    x = torch.randn(B, C, dtype=torch.float64)
    state = plain(torch.randn(B, C, dtype=torch.float64))
    as_tuple = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    for a, b in zip(as_tuple(cell.eval()(x, state)), as_tuple(plain(x, state)), strict=True):
        torch.testing.assert_close(a, b)  # evaluation: no dropout
    torch.manual_seed(5)
    got = cell.train()(x, state)
    torch.manual_seed(5)  # the same draw, applied by hand to the candidate
    gx, gh = cell.input_projection(x), cell.hidden_projection(as_tuple(state)[0])
    if cls is LSTMCell:
        h, c = state
        i, f, g, o = (gx + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * F.dropout(torch.tanh(g), p, True)
        want = (torch.sigmoid(o) * torch.tanh(c), c)
    else:
        (xr, xz, xn), (hr, hz, hn) = gx.chunk(3, -1), gh.chunk(3, -1)
        r, zz = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        want = (1 - zz) * F.dropout(torch.tanh(xn + r * hn), p, True) + zz * state
    for a, b in zip(as_tuple(got), as_tuple(want), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_weight_drop_is_one_dropconnect_mask_on_the_recurrent_weights_per_call(cell, path):
    torch.manual_seed(0)
    p = 0.4
    rnn = Recurrent(cell, C, H, num_layers=2, path=path, weight_drop=p).double()
    assert rnn.uses_fused == (path == "fused")
    x = torch.randn(B, 7, C, dtype=torch.float64)
    reference = getattr(torch.nn, cell.upper())(C, H, num_layers=2, batch_first=True).double()
    reference.load_state_dict(rnn.torch_state_dict())
    torch.manual_seed(1)
    y, state = rnn(x)
    torch.manual_seed(1)  # the same draws, in the same order: one mask per layer's W_hh for the whole window
    masks = [F.dropout(torch.ones_like(c.weight_hh), p) for c in rnn.cells]
    with torch.no_grad():
        for layer, mask in enumerate(masks):
            getattr(reference, f"weight_hh_l{layer}").mul_(mask)
    want_y, want_state = reference(x)
    torch.testing.assert_close(y, want_y)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    want_state if isinstance(want_state, tuple) else (want_state,), strict=True):
        torch.testing.assert_close(a, b)
    y.sum().backward()  # a dropped weight gets no gradient; the parameters themselves are untouched
    for c, mask in zip(rnn.cells, masks, strict=True):
        assert (c.weight_hh.grad[mask == 0] == 0).all() and (c.weight_hh.grad[mask > 0] != 0).any()
    assert all((m == 0).float().mean().item() > 0.2 for m in masks)
    rnn.eval()  # evaluation reads the whole weights
    reference.load_state_dict(rnn.torch_state_dict())
    torch.testing.assert_close(rnn(x)[0], reference(x)[0])


def test_language_model_weight_drop_config():
    model = LanguageModel(LanguageModelConfig(vocab_size=9, hidden_size=8, embedding_size=4, weight_drop=0.3))
    assert model.rnn.weight_drop == 0.3 and model.rnn.uses_fused
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="--weight-drop"):
            LanguageModelConfig(vocab_size=9, weight_drop=bad)
    with pytest.raises(ConfigError, match="weight_drop"):
        Recurrent("lstm", C, H, weight_drop=1.0)


def test_a_run_saved_before_weight_drop_existed_is_rebuilt_without_it():
    from rnnkit.checkpoint import build_model

    config = {"kind": "language_model",
              "model": LanguageModelConfig(vocab_size=9, hidden_size=8, embedding_size=4).to_dict()}
    assert build_model(config).rnn.weight_drop == LanguageModelConfig.weight_drop > 0  # a new run: the default
    del config["model"]["weight_drop"]  # config.json of a run written before the field
    assert build_model(config).rnn.weight_drop == 0.0  # so a resume trains as that run did
    config["model"]["weight_drop"] = 0.3
    assert build_model(config).rnn.weight_drop == 0.3


def test_regulariser_errors():
    with pytest.raises(ConfigError, match="recurrent dropout applies to lstm and gru"):
        RNNCell(C, H, recurrent_dropout=0.1)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        LSTMCell(C, H, zoneout=1.0)
    with pytest.raises(ConfigError, match="zoneout or recurrent dropout has no fused kernel"):
        Recurrent("gru", C, H, path="fused", zoneout=0.1)
    assert not Recurrent("lstm", C, H, recurrent_dropout=0.1).uses_fused
    with pytest.raises(ConfigError, match="cell name"):
        Recurrent(lambda c, h, b: LSTMCell(c, h, b), C, H, zoneout=0.1)


def test_language_model_with_every_regulariser_learns_and_samples(small_corpus):
    from rnnkit.data import Streams, build_vocab, encode_file

    vocab, _ = build_vocab(small_corpus)
    ids = encode_file(small_corpus, vocab)
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), cell="lnlstm", hidden_size=64, num_layers=1,
                                              embedding_size=16, zoneout=0.1, recurrent_dropout=0.1))
    assert not model.rnn.uses_fused
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    streams = Streams(ids, 16, 32)
    losses, state = [], None
    for k in range(60):
        x, y = streams.window(k % len(streams))
        out = model(x, state, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        state = tuple(s.detach() for s in out.state)
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.8, losses
    tokens = generate(model, vocab.encode("def ").tolist(), 30, temperature=0, seed=0)
    assert tokens.shape == (1, 30)
    model.eval()
    assert model(torch.as_tensor(vocab.encode("class"))[None]).logits.shape == (1, 5, len(vocab))
