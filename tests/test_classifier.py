"""SequenceClassifier: pooling over valid steps only (padding never changes a prediction), against torch.nn and
NumPy references; the convolutional front end; time warping; ensembles; in-model scaling; config errors. The
trainer's tests are in test_classifier_training.py."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rnnkit.checkpoint import (
    CONFIG,
    FORMAT_VERSION,
    MODEL,
    load_weights,
    model_tensors,
    save_tensors,
)
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import SequenceClassifier, SequenceClassifierConfig, warp_time

LENGTHS = [3, 7, 1, 5]


def make(tokens=True, pooling="attention", bidirectional=True, path="auto", members=1, cell="lstm", layers=1,
         dropout=0.0, **kw):
    sizes = {"vocab_size": 12} if tokens else {"input_size": 3}
    torch.manual_seed(0)
    return SequenceClassifier(SequenceClassifierConfig(
        **sizes, num_classes=3, hidden_size=6, embedding_size=5, num_layers=layers, bidirectional=bidirectional,
        pooling=pooling, path=path, members=members, cell=cell, dropout=dropout, **kw)).double().eval()


def sequences(tokens=True, lengths=LENGTHS, seed=0):
    g = torch.Generator().manual_seed(seed)
    if tokens:
        return [torch.randint(2, 12, (n,), generator=g) for n in lengths]
    return [torch.randn(n, 3, generator=g, dtype=torch.float64) * 2 + 1 for n in lengths]


def padded(seqs, tokens=True, extra=2):
    """Pad to the longest + ``extra`` steps with garbage: random token ids, or NaN features."""
    T = max(len(s) for s in seqs) + extra
    if tokens:
        x = torch.randint(2, 12, (len(seqs), T))
    else:
        x = torch.full((len(seqs), T, 3), float("nan"), dtype=torch.float64)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    return x, torch.tensor([len(s) for s in seqs])


@pytest.mark.parametrize("path", ["fused", "explicit"])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "features"])
@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_padding_never_changes_a_prediction(pooling, bidirectional, tokens, path):
    model = make(tokens, pooling, bidirectional, path, layers=2)
    assert model.members[0].encoder.rnn.uses_fused == (path == "fused")
    seqs = sequences(tokens)
    x, lengths = padded(seqs, tokens)
    member = model.members[0]
    batch = member(x, None, lengths)[0]  # float64 (the model's own logits are cast to float32)
    assert torch.isfinite(batch).all() and batch.dtype == torch.float64
    for i, s in enumerate(seqs):
        torch.testing.assert_close(batch[i], member(s[None], None, None)[0][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(model(x, lengths=lengths).logits[i], model(s[None]).logits[0], rtol=0, atol=1e-6)
    x2, _ = padded(seqs, tokens, extra=5)  # other garbage, another length of padding
    torch.testing.assert_close(member(x2, None, lengths)[0], batch, rtol=0, atol=1e-12)


@pytest.mark.parametrize("beside", [False, True], ids=["before", "beside"])
@pytest.mark.parametrize("path", ["fused", "explicit"])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "features"])
def test_padding_never_changes_a_prediction_through_the_conv_front_end(tokens, path, beside):
    model = make(tokens, "mean", True, path, conv_layers=2, conv_channels=4, conv_kernel=3, conv_beside=beside)
    seqs = sequences(tokens)  # lengths 3, 7, 1, 5: the kernel reads past both ends of the length-1 sequence
    member = model.members[0]
    for extra in (2, 5):
        x, lengths = padded(seqs, tokens, extra=extra)
        batch = member(x, None, lengths)[0]
        assert torch.isfinite(batch).all()
        for i, s in enumerate(seqs):
            torch.testing.assert_close(batch[i], member(s[None], None, None)[0][0], rtol=0, atol=1e-12)


def test_conv_front_end_matches_a_step_by_step_numpy_reference():
    model = make(False, conv_layers=2, conv_channels=4, conv_kernel=5)
    front = model.members[0].encoder.frontend
    x = sequences(False, [6])[0]  # (T, 3)
    out = front(x[None], None)[0].detach().numpy()
    h = x.numpy()
    for conv, norm in zip(front.convs, front.norms, strict=True):
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()  # (out, in, K), (out,)
        K = w.shape[2]
        padded_h = np.concatenate([np.zeros((K // 2, h.shape[1])), h, np.zeros((K // 2, h.shape[1]))])
        z = np.stack([b + sum(w[:, :, k] @ padded_h[t + k] for k in range(K)) for t in range(len(h))])
        z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + norm.eps)
        h = np.maximum(z * norm.weight.detach().numpy() + norm.bias.detach().numpy(), 0.0)
    np.testing.assert_allclose(out, h, atol=1e-10)
    assert model.members[0].encoder.rnn.input_size == 4  # the recurrent layer reads the channels


def test_conv_beside_reads_the_inputs_next_to_the_recurrent_layer():
    """LSTM-FCN's layout: the blocks and the recurrent layer both read the standardised inputs; pooling and the
    head see their features side by side."""
    model = make(False, "attention", conv_layers=2, conv_channels=4, conv_kernel=3, conv_beside=True)
    encoder = model.members[0].encoder
    assert encoder.rnn.input_size == 3 and encoder.output_size == 2 * 6 + 4
    assert model.members[0].head.in_features == 16
    seqs = sequences(False)
    x, lengths = padded(seqs, False)
    y, _ = encoder(x, None, lengths)  # (B, T, 16)
    inputs = (x - encoder.input_mean) / encoder.input_std
    recurrent, _ = encoder.rnn(inputs, None, lengths)
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(y[..., :12][valid], recurrent[valid], rtol=0, atol=1e-12)
    torch.testing.assert_close(y[..., 12:], encoder.frontend(inputs, lengths), rtol=0, atol=1e-12)


def test_time_warp_resamples_each_series_like_numpy_interp():
    seqs = sequences(False, [3, 7, 1, 5, 12])
    x, lengths = padded(seqs, False)  # NaN padding: never read
    torch.manual_seed(3)
    out, new = warp_time(x, lengths, 0.4)
    assert out.shape == (5, int(new.max()), 3) and new.device == lengths.device
    assert torch.isfinite(out).all() and new.tolist() != lengths.tolist()
    for i, s in enumerate(seqs):
        n, L = int(new[i]), len(s)
        assert round(0.6 * L) <= n <= round(1.4 * L)
        grid = np.linspace(0, L - 1, n)  # first and last steps kept
        ref = np.stack([np.interp(grid, np.arange(L), s[:, c].numpy()) for c in range(3)], 1)
        np.testing.assert_allclose(out[i, :n].numpy(), ref, rtol=0, atol=1e-12)
        assert (out[i, n:] == 0).all()
    same, n = warp_time(x, lengths, 0.0)
    assert n.tolist() == lengths.tolist()
    torch.testing.assert_close(same, torch.nan_to_num(x, nan=0.0)[:, :same.shape[1]], rtol=0, atol=0)
    drawn = torch.cat([warp_time(torch.zeros(64, 20, 1), None, 0.3)[1] for _ in range(20)])  # 1,280 draws
    assert drawn.min() == 14 and drawn.max() == 26 and len(drawn.unique()) == 13  # every length from 0.7T to 1.3T
    assert abs(drawn.float().mean() - 20) < 0.35  # ± 3.6 standard errors


def test_time_warp_acts_in_training_only():
    model = make(False, "mean", members=2, time_warp=0.5)
    plain = make(False, "mean", members=2)  # the same weights (same seed), no warp
    x, lengths = padded(sequences(False, [6, 9, 8, 4]), False)
    torch.testing.assert_close(model(x, lengths=lengths).logits, plain(x, lengths=lengths).logits, rtol=0, atol=0)
    model.train()
    torch.manual_seed(1)
    warped = [m(x, None, lengths)[0] for m in model.members]
    unwarped = [m(x, None, lengths)[0] for m in plain.members]
    assert not torch.allclose(warped[0], unwarped[0]) and not torch.allclose(warped[1], unwarped[1])
    loss = model(x, targets=torch.tensor([0, 1, 2, 0]), lengths=lengths).loss
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_last_and_mean_pooling_match_torch_lstm(pooling, bidirectional):
    """Reference: torch.nn.LSTM run on each sequence alone, unpadded; `last` takes the forward direction's final
    output and the backward direction's output at step 0; `mean` averages all steps."""
    model = make(False, pooling, bidirectional)
    member, H = model.members[0], 6
    lstm = member.encoder.rnn.to_torch()
    seqs = sequences(False)
    x, lengths = padded(seqs, False)
    got = member(x, None, lengths)[0]
    for i, s in enumerate(seqs):
        out, _ = lstm(s[None])  # (1, T, D*H); no scaling is set: mean 0, std 1
        if pooling == "mean":
            pooled = out[0].mean(0)
        else:
            pooled = torch.cat([out[0, -1, :H], out[0, 0, H:]]) if bidirectional else out[0, -1]
        torch.testing.assert_close(got[i], member.head(pooled), rtol=0, atol=1e-12)


def test_attention_weights_are_a_softmax_over_valid_steps():
    model = make(True, "attention")
    member = model.members[0]
    x, lengths = padded(sequences(True), True)
    y, _ = member.encoder(x, None, lengths)
    pooled, weights = member.pool(y, lengths)
    mask = torch.arange(x.shape[1])[None] < lengths[:, None]
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(len(lengths), dtype=torch.float64))
    lin1, _, lin2 = member.pool.score
    for i, n in enumerate(lengths.tolist()):
        a = torch.softmax(lin2(torch.tanh(lin1(y[i, :n]))).squeeze(-1), 0)
        torch.testing.assert_close(weights[i, :n], a)
        torch.testing.assert_close(pooled[i], (a[:, None] * y[i, :n]).sum(0))
    assert member.pool(y, None)[1].shape == y.shape[:2]  # no lengths: every step counts


def test_ensemble_averages_probabilities_and_losses():
    model = make(True, "mean", members=3)
    x, lengths = padded(sequences(True), True)
    y = torch.tensor([0, 2, 1, 1])
    out = model(x, None, y, lengths)
    each = [m(x, None, lengths)[0] for m in model.members]
    mean_prob = torch.stack([e.softmax(-1) for e in each]).mean(0)
    torch.testing.assert_close(out.logits, mean_prob.log().float())
    torch.testing.assert_close(out.loss, torch.stack([F.cross_entropy(e.float(), y) for e in each]).mean())
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(4))
    heads = [m.head.weight for m in model.members]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    embeddings = [m.encoder.embedding.weight for m in model.members]
    assert not torch.equal(embeddings[0], embeddings[2])
    single = make(True, "mean")
    one = single(x, None, y, lengths)
    torch.testing.assert_close(one.loss, F.cross_entropy(one.logits, y))


def test_scaling_standardises_inside_the_model_and_survives_a_checkpoint(tmp_path):
    model = make(False, "attention", members=2)
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0])
    x, lengths = padded(sequences(False), False)
    plain = model.members[1](x.sub(torch.tensor(mean)).div(torch.tensor(std)), None, lengths)[0]
    model.set_scaling(mean, std)
    torch.testing.assert_close(model.members[1](x, None, lengths)[0], plain, rtol=0, atol=1e-12)
    state = model.state_dict()
    assert torch.equal(state["members.1.encoder.input_std"], torch.tensor(std, dtype=torch.float64))
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": "classifier",
                                          "model": model.config.to_dict()}))
    save_tensors(run / MODEL, model_tensors(model.float()))
    loaded, config = load_weights(run, kind="classifier")
    assert not loaded.training and config["model"]["members"] == 2
    assert torch.equal(loaded.members[0].encoder.input_mean, torch.tensor(mean, dtype=torch.float32))
    torch.testing.assert_close(loaded(x.float(), lengths=lengths).logits, model(x.float(), lengths=lengths).logits)
    with pytest.raises(ConfigError, match="features per step"):
        loaded(torch.zeros(1, 4, 2))  # 2 features, the model takes 3


def test_input_noise_acts_in_training_only():
    model = make(False, "mean", input_noise=0.5)
    quiet = make(False, "mean")  # the same weights (same seed), no noise
    x, lengths = padded(sequences(False), False)
    torch.testing.assert_close(model(x, lengths=lengths).logits, quiet(x, lengths=lengths).logits, rtol=0, atol=0)
    model.train(), quiet.train()
    a, b = model(x, lengths=lengths).logits, model(x, lengths=lengths).logits
    assert not torch.allclose(a, b) and torch.isfinite(a).all()  # NaN padding stays out even with noise
    torch.testing.assert_close(quiet(x, lengths=lengths).logits, quiet(x, lengths=lengths).logits)  # dropout 0


def test_token_dropout_replaces_tokens_with_unk_in_training_only():
    model = make(token_dropout=0.3)
    seen = []
    model.members[0].encoder.embedding.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(2, 12, (64, 50), generator=g)
    x[:, 40:] = 0  # padding
    model(x)
    assert torch.equal(seen[-1], x)  # eval: untouched
    model.train()
    model(x)
    ids = seen[-1]
    assert (ids[:, 40:] == 0).all()  # padding stays padding
    hit = ids[:, :40] != x[:, :40]
    assert (ids[:, :40][hit] == 1).all()  # replaced by <unk>, nothing else
    assert 0.27 < hit.float().mean() < 0.33  # 2,560 draws at p = 0.3
    subword = torch.randint(2, 12, (8, 6, 4), generator=g)
    model(subword)  # (B, T, K) subword ids take it too
    assert seen[-1].shape == subword.shape and ((seen[-1] == subword) | (seen[-1] == 1)).all()


@pytest.mark.parametrize("kw, fragment", [
    (dict(pooling="max"), "unknown pooling"),
    (dict(members=0), "members must be >= 1"),
    (dict(num_classes=1), "at least 2 classes"),
    (dict(input_size=3), "exactly one of vocab_size"),
    (dict(input_noise=-1.0), "input_noise"),
    (dict(token_dropout=1.0), "token_dropout"),
    (dict(token_dropout=-0.1), "token_dropout"),
    (dict(path="cuda"), "unknown path"),
    (dict(conv_layers=1, conv_kernel=4), "conv_kernel odd"),
    (dict(conv_layers=-1), "conv_layers must be >= 0"),
    (dict(conv_layers=1, conv_channels=0), "conv_channels >= 1"),
    (dict(conv_beside=True), "give --conv-layers too"),
    (dict(conv_beside=True, conv_layers=1, pooling="last"), "use --pooling mean or attention"),
    (dict(time_warp=1.0), "time_warp must be in"),
    (dict(time_warp=-0.1), "time_warp must be in"),
    (dict(time_warp=0.2), "does not apply to token inputs"),
])
def test_config_errors(kw, fragment):
    cfg = dict(vocab_size=10, num_classes=3, hidden_size=4)
    with pytest.raises(ConfigError, match=fragment):
        SequenceClassifier(SequenceClassifierConfig(**{**cfg, **kw}))
