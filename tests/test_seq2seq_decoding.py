"""Decoding (rnnkit.translate): greedy and beam search against brute force and against each other in batches,
BLEU against sacreBLEU itself, and learning a small task with TranslationTrainer."""

from __future__ import annotations

import copy
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from seq2seq_helpers import BOS, EOS, PAD, make_model

from rnnkit import translate as tr
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.data.translation import Pairs
from rnnkit.errors import ConfigError
from rnnkit.generate import length_penalty
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.train.batches import BatchTrainConfig, TranslationTrainer, translation_nll

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
