"""Seq2Seq (rnnkit.models.seq2seq): teacher-forced logits against a plain-torch reference written out step by step,
stepping against forward, padding, the loss and its gradients, and every error path. Decoding, BLEU and learning:
test_seq2seq_decoding.py."""

from __future__ import annotations

import math

import pytest
import torch
from seq2seq_helpers import ATTENTIONS, BOS, batch, make_model
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import translate as tr
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.seq2seq import Memory, Seq2Seq, Seq2SeqConfig


# -- the reference: everything written out in plain torch, one step and one sentence at a time -------------------
def reference_logits(model: Seq2Seq, src, lengths, tgt_in) -> torch.Tensor:
    c = model.config
    H, L = c.hidden_size, c.num_layers
    B, S = src.shape
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    # encoder: torch.nn.GRU / LSTM, bidirectional, with the model's weights copied in under torch.nn's names
    Module = nn.GRU if c.cell == "gru" else nn.LSTM
    enc = Module(c.embedding_size, H, L, batch_first=True, bidirectional=True).double().eval()
    enc.load_state_dict(model.encoder.torch_state_dict())
    emb = sd["src_embedding.weight"][src]  # (B, S, E)
    y, final = enc(pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False))
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=S)  # (B, S, 2H)
    m = y @ sd["memory.weight"].T + sd["memory.bias"]  # (B, S, H)

    def bridge(s):  # (2L, B, H) -> L tensors (B, H): tanh(W [forward's last; backward's first] + b)
        return [torch.tanh(torch.cat([s[2 * layer], s[2 * layer + 1]], -1) @ sd["bridge.weight"].T
                           + sd["bridge.bias"]) for layer in range(L)]

    if c.cell == "gru":
        h = bridge(final)
        cells = [nn.GRUCell(1, 1).double() for _ in range(L)]
    else:
        h, cst = bridge(final[0]), bridge(final[1])
        cells = [nn.LSTMCell(1, 1).double() for _ in range(L)]
    for k, cell in enumerate(cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, name, nn.Parameter(sd[f"decoder.cells.{k}.{name}"].clone()))
    a = torch.zeros(B, H, dtype=torch.float64)
    logits = []
    for t in range(tgt_in.shape[1]):
        x = sd["tgt_embedding.weight"][tgt_in[:, t]]
        if c.input_feeding:
            x = torch.cat([x, a], -1)
        for layer in range(L):
            if c.cell == "gru":
                h[layer] = cells[layer](x, h[layer])
            else:
                h[layer], cst[layer] = cells[layer](x, (h[layer], cst[layer]))
            x = h[layer]
        top = x  # (B, H)
        new_a = torch.zeros(B, H, dtype=torch.float64)
        for b in range(B):  # attention over the valid source steps only, softmax written out
            n = int(lengths[b])
            scores = []
            for s in range(n):
                if c.attention == "dot":
                    scores.append(top[b] @ m[b, s])
                elif c.attention == "general":
                    scores.append(top[b] @ (sd["key.weight"] @ m[b, s]))
                else:
                    scores.append(sd["v.weight"][0] @ torch.tanh(sd["query.weight"] @ top[b] + sd["query.bias"]
                                                                 + sd["key.weight"] @ m[b, s]))
            scores = torch.stack(scores)
            e = torch.exp(scores - scores.max())
            alpha = e / e.sum()
            context = (alpha[:, None] * m[b, :n]).sum(0)
            new_a[b] = torch.tanh(sd["combine.weight"] @ torch.cat([context, top[b]]))
        a = new_a
        logits.append(a @ sd["head.weight"].T + sd["head.bias"])
    return torch.stack(logits, 1)  # (B, T, V)


CASES = [(att, cell, feed, 1, "auto") for att in ATTENTIONS for cell in ("gru", "lstm") for feed in (False, True)]
CASES += [("general", "gru", True, 2, "auto"), ("additive", "lstm", False, 2, "auto"),
          ("dot", "lstm", True, 2, "explicit"), ("additive", "gru", False, 1, "explicit")]


@pytest.mark.parametrize("attention,cell,feed,layers,path", CASES)
def test_teacher_forced_logits_equal_a_hand_written_loop(attention, cell, feed, layers, path):
    model = make_model(attention, cell, feed, layers, path=path)
    src, lengths, tgt_in = batch()
    got = model(src, None, None, lengths=lengths, tgt_in=tgt_in).logits
    want = reference_logits(model, src, lengths, tgt_in)
    assert got.shape == (3, 4, 11)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_attention_by_hand():
    """Dot attention on numbers worked out by hand: h = (1, 0) against memory rows (1, 0), (0, 1) and a masked
    (5, 5); combine = [I 0] so the attentional vector is tanh(context)."""
    model = make_model("dot", hidden=2)
    m = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype=torch.float64)
    memory = Memory(m, torch.tensor([[True, True, False]]), m)
    with torch.no_grad():
        model.combine.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    a, alpha = model.attend(torch.tensor([[[1.0, 0.0]]], dtype=torch.float64), memory)
    e = math.e
    want_alpha = [e / (e + 1), 1 / (e + 1), 0.0]
    assert alpha[0, 0].tolist() == pytest.approx(want_alpha, abs=1e-12)
    assert a[0, 0].tolist() == pytest.approx([math.tanh(e / (e + 1)), math.tanh(1 / (e + 1))], abs=1e-12)


@pytest.mark.parametrize("attention,cell,feed,layers", [(a, c, f, 1) for a in ATTENTIONS for c in ("gru", "lstm")
                                                         for f in (False, True)] + [("general", "lstm", True, 2)])
def test_start_and_step_token_by_token_equal_forward(attention, cell, feed, layers):
    model = make_model(attention, cell, feed, layers)
    src, lengths, tgt_in = batch(seed=3, tgt_len=5)
    want = model(src, None, None, lengths=lengths, tgt_in=tgt_in).logits
    memory, init = model.encode(src, lengths)
    dec = model.start(init, src.shape[0])
    got = []
    for t in range(tgt_in.shape[1]):
        logits, dec, alpha = model.step(tgt_in[:, t], dec, memory)
        got.append(logits)
        assert alpha.shape == (3, 5)
    torch.testing.assert_close(torch.stack(got, 1), want, rtol=0, atol=1e-10)


# -- padding ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell,feed", [("general", "gru", False), ("additive", "lstm", True),
                                                 ("dot", "gru", True)])
def test_padding_never_changes_a_result(attention, cell, feed):
    model = make_model(attention, cell, feed)
    src, lengths, tgt_in = batch(seed=4)
    want = model(src, None, None, lengths=lengths, tgt_in=tgt_in).logits
    # three more PAD steps, lengths given
    wider = torch.cat([src, torch.zeros(3, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(wider, None, None, lengths=lengths, tgt_in=tgt_in).logits, want,
                               rtol=0, atol=1e-12)
    # lengths left out: read from the PAD positions
    torch.testing.assert_close(model(wider, None, None, tgt_in=tgt_in).logits, want, rtol=0, atol=1e-12)
    # whatever the padding holds, given lengths it is never read
    garbage = wider.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 7
    torch.testing.assert_close(model(garbage, None, None, lengths=lengths, tgt_in=tgt_in).logits, want,
                               rtol=0, atol=1e-12)
    # each sentence alone, unpadded, gets the logits it had in the padded batch
    for b, n in enumerate(lengths.tolist()):
        alone = model(src[b:b + 1, :n], None, None, lengths=lengths[b:b + 1], tgt_in=tgt_in[b:b + 1]).logits
        torch.testing.assert_close(alone, want[b:b + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_weights_are_zero_on_padding_and_sum_to_one(attention):
    model = make_model(attention, "lstm", True)
    src, lengths, tgt_in = batch(seed=5, lengths=(6, 1, 3, 6))
    memory, init = model.encode(src, lengths)
    assert memory.mask.tolist() == [[t < n for t in range(6)] for n in lengths.tolist()]
    dec = model.start(init, 4)
    for t in range(tgt_in.shape[1]):
        _, dec, alpha = model.step(tgt_in[:, t], dec, memory)
        for b, n in enumerate(lengths.tolist()):
            assert (alpha[b, n:] == 0).all()  # exactly zero, not small
            assert (alpha[b, :n] > 0).all()
        torch.testing.assert_close(alpha.sum(-1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (alpha[1] == torch.tensor([1.0, 0, 0, 0, 0, 0], dtype=torch.float64)).all()  # one source step: all on it


def test_greedy_attention_weights_have_one_row_per_output_token_and_one_column_per_source_token():
    model = make_model("general", "gru", True, eos_bias=1.5)
    srcs = [[5, 6, 7, 8], [9], [4, 4, 4, 4, 4, 4]]
    seqs, weights = tr.greedy(model, srcs, max_length=7, attention=True)
    assert seqs == tr.greedy(model, srcs, max_length=7)
    for s, out, w in zip(srcs, seqs, weights, strict=True):
        ended = len(out) < 7  # stopped by EOS: its row is there too
        assert w.shape == (len(out) + ended, len(s))
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0], dtype=w.dtype), rtol=0, atol=1e-12)
    # the rows are the decoder's own weights when it is fed its own output
    memory, init = model.encode(torch.tensor([srcs[0]]))
    dec = model.start(init, 1)
    for t, tok in enumerate([BOS, *seqs[0]][:weights[0].shape[0]]):
        _, dec, alpha = model.step(torch.tensor([tok]), dec, memory)
        torch.testing.assert_close(alpha[0], weights[0][t], rtol=0, atol=1e-12)


# -- loss and gradients -------------------------------------------------------------------------------------------
def test_loss_is_the_mean_cross_entropy_over_real_targets_and_label_smoothing_only_trains():
    model = make_model("general", "gru", False, label_smoothing=0.1)
    src, lengths, tgt_in = batch(seed=6)
    targets = torch.tensor([[5, 6, 2, IGNORE_INDEX], [7, 2, IGNORE_INDEX, IGNORE_INDEX], [4, 4, 4, 2]])
    with torch.no_grad():
        out = model(src, None, targets, lengths=lengths, tgt_in=tgt_in)
    logp = out.logits.log_softmax(-1)
    picked = [-logp[b, t, targets[b, t]] for b in range(3) for t in range(4) if targets[b, t] != IGNORE_INDEX]
    assert out.loss.item() == pytest.approx(float(sum(picked) / len(picked)), abs=1e-12)
    model.train()  # dropout is 0: the same logits, but the loss is smoothed
    with torch.no_grad():
        smoothed = model(src, None, targets, lengths=lengths, tgt_in=tgt_in).loss
    want = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(want.item(), abs=1e-12) and smoothed.item() > out.loss.item()


@pytest.mark.parametrize("feed", [False, True])  # True once failed: input feeding stepped a no-grad decoder
def test_every_parameter_gets_a_gradient(feed):
    model = make_model("additive", "lstm", feed).train()
    src, lengths, tgt_in = batch(seed=7)
    targets = torch.randint(3, 11, tgt_in.shape)
    model(src, None, targets, lengths=lengths, tgt_in=tgt_in).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_decoding_state_has_the_model_dtype():
    model = make_model("general", "gru", True).to(torch.bfloat16)
    memory, init = model.encode(torch.tensor([[5, 6, 7]]))
    assert model.start(init, 1)[1].dtype == torch.bfloat16
    assert len(tr.greedy(model, [[5, 6, 7]], max_length=3)[0]) <= 3


def test_tied_weights_share_the_target_embedding():
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=10, hidden_size=8, embedding_size=8,
                                  tie_weights=True))
    assert model.head.weight is model.tgt_embedding.weight
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("kwargs,fragment", [
    ({"attention": "cosine"}, "--attention"),
    ({"tie_weights": True, "embedding_size": 4, "hidden_size": 8}, "--embedding-size 8"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"cell": "transformer"}, "transformer"),
])
def test_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=5, **kwargs)


def test_model_errors():
    with pytest.raises(ConfigError, match="vocabulary sizes must be positive"):
        Seq2Seq(Seq2SeqConfig(src_vocab_size=0, tgt_vocab_size=5))
    model = make_model()
    with pytest.raises(ConfigError, match="needs tgt_in"):
        model(torch.tensor([[4, 5]]))
    with pytest.raises(ConfigError, match="beam size must be 1..1024 .got 0. —"):
        tr.beam(model, [[4, 5]], beam_size=0)
    with pytest.raises(ConfigError, match="beam size must be 1..1024 .got 1025. —"):
        tr.beam(model, [[4, 5]], beam_size=1025)
    assert not model.training
    model.train()
    with pytest.raises(ConfigError):
        tr.beam(model, [[4, 5]], beam_size=-1)
    assert model.training  # an error leaves the mode as it was
