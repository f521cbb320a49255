"""Seq2Seq (rnnkit.models.seq2seq) and decoding (rnnkit.translate): teacher-forced logits against a plain-torch
reference written out step by step, stepping against forward, padding, greedy and beam search against brute force,
BLEU against sacreBLEU itself, learning a small task with TranslationTrainer, and every error path."""

from __future__ import annotations

import copy
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import translate as tr
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.data.translation import Pairs
from rnnkit.errors import ConfigError
from rnnkit.generate import length_penalty
from rnnkit.models.seq2seq import Memory, Seq2Seq, Seq2SeqConfig
from rnnkit.train.batches import BatchTrainConfig, TranslationTrainer, translation_nll

PAD, BOS, EOS = 0, 1, 2
ATTENTIONS = ("dot", "general", "additive")


def make_model(attention="general", cell="gru", input_feeding=False, num_layers=1, src_vocab=13, tgt_vocab=11,
               hidden=6, emb=5, path="auto", seed=0, eos_bias=0.0, head_scale=1.0, **kw) -> Seq2Seq:
    """A tiny float64 model in eval mode; every parameter nudged so no bias is zero and no structure is special."""
    torch.manual_seed(seed)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, cell=cell, hidden_size=hidden,
                                  embedding_size=emb, num_layers=num_layers, attention=attention,
                                  input_feeding=input_feeding, dropout=0.0, path=path, **kw)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.head.weight.mul_(head_scale)
        model.head.bias[EOS] += eos_bias
    return model.eval()


def batch(seed=1, lengths=(5, 2, 4), tgt_len=4, src_vocab=13, tgt_vocab=11):
    """Sources padded with PAD past their lengths, and a teacher-forced decoder input starting with BOS."""
    g = torch.Generator().manual_seed(seed)
    B, S = len(lengths), max(lengths)
    src = torch.randint(4, src_vocab, (B, S), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = PAD
    tgt_in = torch.randint(3, tgt_vocab, (B, tgt_len), generator=g)
    tgt_in[:, 0] = BOS
    return src, torch.tensor(lengths), tgt_in


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
    with pytest.raises(ConfigError, match="beam size must be >= 1.*—"):
        tr.beam(model, [[4, 5]], beam_size=0)
    assert not model.training
    model.train()
    with pytest.raises(ConfigError):
        tr.beam(model, [[4, 5]], beam_size=-1)
    assert model.training  # an error leaves the mode as it was


# -- greedy and beam search ---------------------------------------------------------------------------------------
SOURCES = [[5, 6, 7, 8, 9], [10], [4, 11, 4], [11, 11, 6, 7, 8, 9, 10], [8, 9]]


@pytest.mark.parametrize("feed,seed,eos_bias", [(False, 0, 0.0), (True, 1, 0.3)])
def test_greedy_is_the_argmax_of_the_teacher_forced_logits_and_batching_changes_nothing(feed, seed, eos_bias):
    model = make_model("additive", "gru", feed, seed=seed, eos_bias=eos_bias)
    model.train()  # greedy switches to eval itself, and back
    got = tr.greedy(model, SOURCES, max_length=8)
    assert model.training
    model.eval()
    assert got == [tr.greedy(model, [s], max_length=8)[0] for s in SOURCES]
    assert any(len(g) < 8 for g in got) and any(len(g) > 0 for g in got)  # some stop at EOS, some say something
    for s, out in zip(SOURCES, got, strict=True):
        assert EOS not in out
        expected = out + [EOS] if len(out) < 8 else out
        tgt_in = torch.tensor([[BOS, *expected[:-1]]])
        logits = model(torch.tensor([s]), None, None, tgt_in=tgt_in).logits[0]
        assert logits.argmax(-1).tolist() == expected


@torch.no_grad()
def sequence_logp(model, src, seqs: list[list[int]], ended: list[bool]) -> torch.Tensor:
    """Log-probability of each output sequence (its EOS included when it ended), teacher-forced in one batch."""
    T = max(len(s) + e for s, e in zip(seqs, ended, strict=True))
    tgt_in = torch.full((len(seqs), T), PAD)
    targets = torch.full((len(seqs), T), IGNORE_INDEX)
    for i, (s, e) in enumerate(zip(seqs, ended, strict=True)):
        full = s + [EOS] * e
        tgt_in[i, :len(full)] = torch.tensor([BOS, *full[:-1]])
        targets[i, :len(full)] = torch.tensor(full)
    src_b = torch.tensor([src] * len(seqs))
    logp = model(src_b, None, None, tgt_in=tgt_in).logits.log_softmax(-1)
    picked = logp.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return torch.where(targets != IGNORE_INDEX, picked, 0.0).sum(-1)


def normalised(model, src, seq, max_length, alpha) -> float:
    ended = len(seq) < max_length
    return float(sequence_logp(model, src, [seq], [ended])[0]) / length_penalty(len(seq) + ended, alpha)


def test_exhaustive_beam_returns_the_best_sequence_by_brute_force():
    """Target vocabulary of 5 (4 tokens besides EOS), at most 3 tokens: 1 + 4 + 16 sequences that end with EOS and
    64 cut off at the limit. A beam of 40 keeps every live prefix and ranks all 2K = 80 candidates of the last
    step, so it must find the best of all 85 by log-probability / length_penalty(tokens, EOS counted). Two of the
    cases rank differently when EOS is not counted in the length."""
    L, V, src = 3, 5, [5, 9, 7, 6]
    words = [t for t in range(V) if t != EOS]
    seqs = [list(s) for n in range(L) for s in itertools.product(words, repeat=n)]
    flags = [True] * len(seqs)
    seqs += [list(s) for s in itertools.product(words, repeat=L)]
    flags += [False] * (len(seqs) - len(flags))
    assert len(seqs) == 85
    bests, beaten_narrow, beaten_greedy = set(), 0, 0
    cases = ((False, 0, -1.0), (False, 0, -0.5), (False, 2, 0.0), (True, 1, -0.5), (True, 3, -0.5), (True, 4, -0.5))
    for feed, seed, eos_bias in cases:
        model = make_model("general", "gru", feed, tgt_vocab=V, seed=seed, eos_bias=eos_bias, head_scale=3.0)
        logp = sequence_logp(model, src, seqs, flags)
        # everything that can be generated within the limit: probabilities summing to one
        assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)
        greedy = tr.greedy(model, [src], max_length=L)[0]
        for alpha in (0.0, 0.6, 1.0):
            score = [float(lp) / length_penalty(len(s) + f, alpha) for s, f, lp in zip(seqs, flags, logp, strict=True)]
            best = seqs[int(np.argmax(score))]
            assert tr.beam(model, [src], beam_size=40, max_length=L, alpha=alpha) == [best], (feed, seed, alpha)
            assert tr.beam(model, [src], beam_size=64, max_length=L, alpha=alpha) == [best]  # wider: the same
            narrow = tr.beam(model, [src], beam_size=2, max_length=L, alpha=alpha)[0]
            assert normalised(model, src, narrow, L, alpha) <= max(score) + 1e-12  # never beats the best
            bests.add(tuple(best))
            beaten_narrow += narrow != best
            beaten_greedy += greedy != best
    # the cases are not all alike: several different winners, and ones a narrow beam or greedy misses
    assert len(bests) >= 3 and beaten_narrow >= 1 and beaten_greedy >= 3


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_of_one_scores_at_least_greedy_and_follows_its_path(reverse_run, alpha):
    """With K = 1 the live beam follows greedy's path until greedy ends, so its pick (the best finished hypothesis
    it saw) scores at least greedy's, and is a prefix of greedy's output or an extension of it. It need not be
    greedy's own: an EOS ranked second on the way is kept as a finished hypothesis (the CLI's --beam 1 is greedy)."""
    model, src = reverse_run["half"], reverse_run["val_src"][:40]
    greedy = tr.greedy(model, src, max_length=10)
    beamed = tr.beam(model, src, beam_size=1, max_length=10, alpha=alpha)
    for s, g, b in zip(src, greedy, beamed, strict=True):
        assert b == g[:len(b)] or b[:len(g)] == g
        assert normalised(model, s, b, 10, alpha) >= normalised(model, s, g, 10, alpha) - 1e-9
    if alpha <= 0.6:  # on the confident, fully trained model they agree (alpha 2 rewards length enough to differ)
        full, val_src = reverse_run["full"], reverse_run["val_src"]
        assert tr.beam(full, val_src, beam_size=1, max_length=10, alpha=alpha) == tr.greedy(full, val_src, 10)


def test_greedy_and_beam_in_batches_equal_one_sentence_at_a_time_on_a_half_trained_model(reverse_run):
    model, src = reverse_run["half"], reverse_run["val_src"][:12] + [[7], [], [4] * 9]
    model.train()
    greedy = tr.greedy(model, src, max_length=10)
    assert model.training
    assert greedy == [tr.greedy(model, [s], max_length=10)[0] for s in src]
    lengths = {len(g) for g in greedy}
    assert len(lengths) >= 3  # the outputs stop at different steps: the batch carries finished rows along
    for K, alpha in ((1, 0.0), (3, 0.6), (5, 1.0)):
        beamed = tr.beam(model, src, beam_size=K, max_length=10, alpha=alpha)
        assert model.training  # back in the mode it came in
        assert beamed == [tr.beam(model, [s], beam_size=K, max_length=10, alpha=alpha)[0] for s in src]
        assert all(EOS not in b and len(b) <= 10 for b in beamed)


@pytest.mark.parametrize("feed,K", [(False, 3), (True, 4), (True, 1)])
def test_batched_beam_equals_one_sentence_at_a_time(feed, K):
    model = make_model("additive", "gru", feed, seed=0 if not feed else 1, eos_bias=0.0 if not feed else 0.3)
    got = tr.beam(model, SOURCES, beam_size=K, max_length=7, alpha=0.6)
    assert got == [tr.beam(model, [s], beam_size=K, max_length=7, alpha=0.6)[0] for s in SOURCES]
    assert all(EOS not in g and len(g) <= 7 for g in got)


def test_decoding_an_empty_source_does_not_crash():
    model = make_model(eos_bias=1.0)
    assert len(tr.greedy(model, [[], [5, 6]], max_length=4)) == 2
    assert len(tr.beam(model, [[], [5, 6]], beam_size=3, max_length=4)) == 2


# -- BLEU ---------------------------------------------------------------------------------------------------------
HYPS = ["the cat sat on the mat .", "where is the library ?", "i owe you thirty dollars .", "help !",
        "tom 's dog does n't bark ."]
REFS = ["The cat sat on the mat.", "Where is the library?", "I owe you $30.", "Help me!", "Tom's dog doesn't bark."]
REFS2 = ["A cat was sitting on the mat.", "Where's the library?", "I owe you thirty dollars.", "Help!",
         "Tom's dog never barks."]


def test_bleu_is_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    assert tr.bleu(REFS, REFS) == pytest.approx(100.0)
    assert tr.bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert 0.0 < tr.bleu(HYPS, REFS) < 100.0
    assert tr.bleu(HYPS, [REFS]) == tr.bleu(HYPS, REFS)  # one stream, either way
    multi = tr.bleu(HYPS, [REFS, REFS2])
    assert multi == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score, abs=1e-9)
    assert multi > max(tr.bleu(HYPS, REFS), tr.bleu(HYPS, REFS2))  # more references match more n-grams
    assert tr.bleu(["x y z"] * 5, REFS) == pytest.approx(0.0)
    # case-insensitive scoring, for a lower-cased model: its output matches capitalised references again
    lower = [r.lower() for r in REFS]
    assert tr.bleu(lower, REFS) < 100.0 and tr.bleu(lower, REFS, lowercase=True) == pytest.approx(100.0)
    assert tr.bleu(HYPS, [REFS, REFS2], lowercase=True) == pytest.approx(
        sacrebleu.corpus_bleu(HYPS, [REFS, REFS2], lowercase=True).score, abs=1e-9)


def test_bleu_without_sacrebleu_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # import sacrebleu -> ImportError
    with pytest.raises(ConfigError, match=r"sacreBLEU — pip install 'rnnkit\[translate\]'"):
        tr.bleu(HYPS, REFS)


# -- learning -----------------------------------------------------------------------------------------------------
def reverse_pairs(n: int, seed: int, V: int = 12) -> tuple[list[list[int]], list[list[int]]]:
    """Sources of 3-7 random tokens from 4..V-1; the target is the source reversed."""
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, V, size=rng.integers(3, 8)).tolist() for _ in range(n)]
    return src, [s[::-1] for s in src]


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    """A small model trained with TranslationTrainer to reverse 3-7 tokens: a float64 copy at step 100 (half
    trained: right on about half, unsure elsewhere) and at the end, step 250."""
    V = 12
    train_src, train_tgt = reverse_pairs(2000, seed=0, V=V)
    val_src, val_tgt = reverse_pairs(100, seed=1, V=V)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=V, tgt_vocab_size=V, hidden_size=32, embedding_size=16,
                                  attention="general", dropout=0.0))
    val = Pairs(val_src, val_tgt)
    start = translation_nll(model, val, torch.device("cpu"))
    config = BatchTrainConfig(batch_size=32, lr=1e-2, warmup_steps=10, max_steps=250, eval_interval=100,
                              device="cpu", precision="fp32", seed=0)
    run_dir = tmp_path_factory.mktemp("reverse") / "run"
    trainer = TranslationTrainer(model, Pairs(train_src, train_tgt), val, config, run_dir, show_progress=False)
    trainer.fit(until_step=100)
    half = copy.deepcopy(model).double().eval()
    summary = trainer.fit()
    return {"V": V, "start": start, "summary": summary, "model": model, "val": val, "run_dir": run_dir,
            "half": half, "full": copy.deepcopy(model).double().eval(), "train_src": train_src,
            "train_tgt": train_tgt, "val_src": val_src, "val_tgt": val_tgt}


def test_learns_to_reverse_with_the_translation_trainer(reverse_run):
    r = reverse_run
    V, start, summary, model = r["V"], r["start"], r["summary"], r["model"]
    assert start == pytest.approx(math.log(V), abs=0.3)  # untrained: about uniform
    assert summary["step"] == 250 and (r["run_dir"] / "best.safetensors").exists()
    assert summary["val_loss"] == pytest.approx(translation_nll(model, r["val"], torch.device("cpu")), rel=1e-4)
    assert summary["val_loss"] < 0.1 * start and summary["val_loss"] < math.log(V) - 2.0
    out = tr.greedy(model, r["train_src"][:100], max_length=10)
    assert sum(o == t for o, t in zip(out, r["train_tgt"][:100], strict=True)) >= 75
    held_out = tr.greedy(model, r["val_src"], max_length=10)
    assert sum(o == t for o, t in zip(held_out, r["val_tgt"], strict=True)) >= 75
    wide = tr.beam(model, r["val_src"], beam_size=4, max_length=10)
    assert sum(o == t for o, t in zip(wide, r["val_tgt"], strict=True)) >= 75
    # the half-trained copy was worse: learning went on between the two
    half = tr.greedy(r["half"], r["val_src"], max_length=10)
    assert sum(o == t for o, t in zip(half, r["val_tgt"], strict=True)) < sum(
        o == t for o, t in zip(held_out, r["val_tgt"], strict=True))
