"""CTC decoding and error rates: hand-worked cases, brute force over every path, and torch's ctc_loss."""

from __future__ import annotations

import itertools
import math
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.ctc import (
    beam_decode,
    best_path,
    collapse,
    decode_text,
    edit_distance,
    error_rates,
    greedy_decode,
    prefix_beam_search,
)
from rnnkit.errors import ConfigError

ALPHABET = "helo"  # class 1 = h, 2 = e, 3 = l, 4 = o; class 0 = blank


def peaked(path: list[int], K: int, p: float = 0.9) -> torch.Tensor:
    """(T, K) log-probs whose argmax at frame t is path[t], with probability p."""
    probs = torch.full((len(path), K), (1 - p) / (K - 1), dtype=torch.float64)
    probs[torch.arange(len(path)), torch.tensor(path)] = p
    return probs.log()


def random_log_probs(T: int, K: int, gen: torch.Generator, scale: float = 1.5) -> torch.Tensor:
    return (torch.randn(T, K, generator=gen, dtype=torch.float64) * scale).log_softmax(-1)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Probability of every labeling: the sum over all K^T paths that collapse to it."""
    lp = log_probs.numpy()
    T, K = lp.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(K), repeat=T):
        label = tuple(collapse(path))
        probs[label] = probs.get(label, 0.0) + math.exp(sum(lp[t, c] for t, c in enumerate(path)))
    return probs


def lm_from(table: dict[tuple[int, ...], list[float]], K: int):
    calls: list[tuple[int, ...]] = []

    def lm(prefix: tuple[int, ...]) -> torch.Tensor:
        calls.append(prefix)
        return torch.tensor([1.0] + table.get(prefix, [1.0] * (K - 1))).log()

    return lm, calls


# --- collapse, best path, greedy -------------------------------------------------------------------------------


def test_collapse_hand_worked():
    assert collapse([1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    assert collapse([]) == [] and collapse([0, 0, 0]) == []
    assert collapse([3, 3, 3]) == [3]
    assert collapse([0, 3, 0, 3, 0]) == [3, 3]
    assert collapse([2, 2, 5, 1, 5], blank=5) == [2, 1]


def test_greedy_needs_a_blank_between_the_two_ls_of_hello():
    h, e, l, o = 1, 2, 3, 4
    with_blank = peaked([0, h, h, e, l, l, 0, l, o, 0], K=5)
    without = peaked([h, e, e, l, l, l, o], K=5)
    assert best_path(with_blank) == [[0, h, h, e, l, l, 0, l, o, 0]]
    assert [decode_text(ids, ALPHABET) for ids in greedy_decode(with_blank)] == ["hello"]
    assert [decode_text(ids, ALPHABET) for ids in greedy_decode(without)] == ["helo"]
    assert beam_decode(with_blank) == greedy_decode(with_blank)


def test_decode_text_maps_class_i_to_alphabet_i_minus_1():
    assert decode_text([1, 2, 3, 3, 4], ALPHABET) == "hello"
    assert decode_text([], ALPHABET) == ""
    with pytest.raises(ConfigError, match="outside"):
        decode_text([0, 1], ALPHABET)
    with pytest.raises(ConfigError):
        decode_text([5], ALPHABET)


def test_bad_shapes_lengths_and_beam_are_config_errors():
    with pytest.raises(ConfigError, match="shape"):
        best_path(torch.zeros(5))
    with pytest.raises(ConfigError, match="lengths"):
        greedy_decode(torch.zeros(2, 3, 4), lengths=[3, 4])
    with pytest.raises(ConfigError, match="lengths"):
        greedy_decode(torch.zeros(2, 3, 4), lengths=[3])
    with pytest.raises(ConfigError, match="beam"):
        beam_decode(torch.zeros(3, 4), beam=0)


# --- prefix beam search against brute force and ctc_loss ------------------------------------------------------


def test_beam_finds_the_labeling_greedy_misses():
    # each frame: blank 0.6, "a" 0.4 -> best path is blank blank (empty, p = 0.36), but "a" sums aa + a_ + _a = 0.64
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64).log()
    assert greedy_decode(lp) == [[]]
    assert beam_decode(lp) == [[1]]
    (best, ctc_logp, _), (second, second_logp, _) = prefix_beam_search(lp)
    assert best == (1,) and second == ()
    assert math.exp(ctc_logp) == pytest.approx(0.64) and math.exp(second_logp) == pytest.approx(0.36)


@pytest.mark.parametrize("seed", range(60))
def test_full_beam_is_exact_against_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    T, K = 1 + seed % 5, 2 + seed % 2
    lp = random_log_probs(T, K, gen, scale=1.0 + seed % 3)
    truth = brute_force(lp)
    found = {prefix: math.exp(logp) for prefix, logp, _ in prefix_beam_search(lp, beam=64)}
    assert found.keys() == {label for label, p in truth.items() if p > 0}
    for label, p in truth.items():
        assert found[label] == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert sum(found.values()) == pytest.approx(1.0)
    assert beam_decode(lp, beam=64) == [list(max(truth, key=truth.get))]


def test_beam_beats_greedy_somewhere_in_random_cases():
    gen = torch.Generator().manual_seed(1)
    wins = 0
    for _ in range(40):
        lp = random_log_probs(4, 3, gen, scale=0.7)
        truth = brute_force(lp)
        best = list(max(truth, key=truth.get))
        assert beam_decode(lp, beam=64) == [best]
        wins += greedy_decode(lp) != [best]
    assert wins > 0  # flat distributions: the best path is often not the best labeling


def test_top_classes_shortcut_matches_searching_every_class():
    # without an LM only each frame's top beam + 1 classes are tried; a no-op LM makes the search try them all.
    # Tight case, beam 1: after two frames the beam is "a", half its paths ending in blank; at the last frame
    # "a" (0.5) outranks "b" (0.4), yet staying "a" is worth 0.1 + 0.5 * 0.5, a new "a" 0.5 * 0.5, and "ab" 0.4.
    lp = torch.tensor([[1e-6, 1 - 2e-6, 1e-6], [0.5, 0.5 - 1e-6, 1e-6], [0.1, 0.5, 0.4]], dtype=torch.float64).log()
    assert beam_decode(lp, beam=1) == [[1, 2]]
    gen = torch.Generator().manual_seed(11)
    no_op, _ = lm_from({}, K=30)
    for beam in (1, 2, 3, 5):
        for _ in range(5):
            lp = random_log_probs(25, 30, gen, scale=2.5)
            lp[:, 1:4] += 2.0  # a few strong classes, so that prefixes repeat and merge
            lp = lp.log_softmax(-1)
            fast = prefix_beam_search(lp, beam=beam)
            full = prefix_beam_search(lp, beam=beam, lm=no_op, lm_weight=1.0)
            assert [p for p, _, _ in fast] == [p for p, _, _ in full]
            np.testing.assert_allclose([s for _, s, _ in fast], [s for _, s, _ in full], rtol=1e-12)


def test_labeling_probabilities_equal_exp_minus_ctc_loss():
    gen = torch.Generator().manual_seed(7)
    T, K = 6, 4
    lp = random_log_probs(T, K, gen)
    beam = prefix_beam_search(lp, beam=1100)  # more than every prefix of up to 6 of 3 characters: 1093
    feasible = [label for n in range(T + 1) for label in itertools.product(range(1, K), repeat=n)
                if n + sum(a == b for a, b in itertools.pairwise(label)) <= T]  # a repeat needs a blank between
    assert sorted(prefix for prefix, _, _ in beam) == sorted(feasible)
    assert sum(math.exp(logp) for _, logp, _ in beam) == pytest.approx(1.0)
    labels = [prefix for prefix, _, _ in beam]
    targets = torch.zeros(len(labels), T, dtype=torch.long)
    for i, label in enumerate(labels):
        targets[i, :len(label)] = torch.tensor(label, dtype=torch.long)
    losses = F.ctc_loss(lp.unsqueeze(1).expand(T, len(labels), K), targets, torch.full((len(labels),), T),
                        torch.tensor([len(label) for label in labels]), blank=0, reduction="none")
    np.testing.assert_allclose([logp for _, logp, _ in beam], (-losses).numpy(), rtol=1e-9, atol=1e-12)
    best, best_logp, _ = beam[0]  # and one the way the brief states it: exp(-CTCLoss(reduction='sum'))
    loss = torch.nn.CTCLoss(blank=0, reduction="sum")(lp.unsqueeze(1), torch.tensor([best]), torch.tensor([T]),
                                                       torch.tensor([len(best)]))
    assert math.exp(best_logp) == pytest.approx(math.exp(-loss.item()), rel=1e-9)


def test_padding_past_a_length_never_changes_a_result():
    gen = torch.Generator().manual_seed(3)
    B, T, K = 5, 12, 6
    lp = random_log_probs(B * T, K, gen, scale=3.0).reshape(B, T, K)
    lengths = torch.tensor([12, 0, 7, 1, 9])
    garbage = lp.clone()
    for b, n in enumerate(lengths.tolist()):
        if n < T:  # NaN, or a confident run of class 1 that would add characters if it were read
            garbage[b, n:] = float("nan") if b % 2 else peaked([1] * (T - n), K, p=0.999)
    for fn in (best_path, greedy_decode, beam_decode):
        alone = [fn(lp[b, :n])[0] for b, n in enumerate(lengths.tolist())]
        assert fn(lp, lengths) == alone
        assert fn(garbage, lengths) == alone
        assert fn(garbage.numpy(), lengths.tolist()) == alone
    assert best_path(lp, lengths)[1] == [] and beam_decode(lp, lengths)[1] == []


# --- language model, insertion bonus, pruning -----------------------------------------------------------------


def test_a_language_model_that_prefers_b_flips_the_choice():
    lp = torch.tensor([[0.1, 0.5, 0.4]], dtype=torch.float64).log()
    likes_b, _ = lm_from({(): [0.01, 0.99]}, K=3)
    assert beam_decode(lp) == [[1]]
    assert beam_decode(lp, lm=likes_b, lm_weight=1.0) == [[2]]
    assert beam_decode(lp, lm=likes_b, lm_weight=0.0) == beam_decode(lp)


def test_the_language_model_sees_the_prefix():
    # "a", then blank, then a near tie between a and b: plain CTC says "aa", an LM that wants b after a says "ab"
    lp = torch.tensor([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.55, 0.4]], dtype=torch.float64).log()
    lm, calls = lm_from({(1,): [0.02, 0.98]}, K=3)
    assert beam_decode(lp) == [[1, 1]]
    assert beam_decode(lp, lm=lm, lm_weight=1.0) == [[1, 2]]
    assert () in calls and (1,) in calls and all(isinstance(p, tuple) for p in calls)
    assert len(calls) == len(set(calls))  # cached: once per prefix
    with pytest.raises(ConfigError, match="log-probs"):
        beam_decode(lp, lm=lambda prefix: torch.zeros(5), lm_weight=1.0)


def test_the_lines_end_is_scored_by_the_lm_when_asked():
    """With ``lm_end`` each final prefix also pays the LM's log-probability of the line ending after it (class 0's
    slot): the full beam's scores against the brute-force CTC probabilities plus every LM term by hand, and an LM
    that says a line rarely ends after "a" turns "a" (without) into "b" (with)."""
    lp = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.15, 0.35]], dtype=torch.float64).log()
    table = {(): [0.1, 0.45, 0.45], (1,): [0.01, 0.495, 0.495]}

    def lm(prefix):
        return torch.tensor(table.get(prefix, [1 / 3] * 3), dtype=torch.float64).log()

    exact = brute_force(lp)
    for end in (False, True):
        beam = prefix_beam_search(lp, beam=20, lm=lm, lm_weight=0.7, word_bonus=1.0, lm_end=end)
        for prefix, ctc_logp, score in beam:
            by_hand = math.log(exact[prefix]) + sum(0.7 * lm(prefix[:i])[c].item() + 1.0 for i, c in enumerate(prefix))
            by_hand += 0.7 * lm(prefix)[0].item() if end else 0.0
            assert ctc_logp == pytest.approx(math.log(exact[prefix])) and score == pytest.approx(by_hand)
    assert beam_decode(lp, lm=lm, lm_weight=1.0, word_bonus=1.0) == [[1]]
    assert beam_decode(lp, lm=lm, lm_weight=1.0, word_bonus=1.0, lm_end=True) == [[2]]
    assert beam_decode(lp, word_bonus=1.0, lm_end=True) == beam_decode(lp, word_bonus=1.0)  # no LM: nothing to ask


def test_word_bonus_lengthens_and_a_penalty_shortens():
    # "" 0.25, "a" 0.335, "b" 0.26, "ab" 0.14, "ba" 0.015
    lp = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.15, 0.35]], dtype=torch.float64).log()
    plain = beam_decode(lp, beam=20)[0]
    longer = beam_decode(lp, beam=20, word_bonus=3.0)[0]
    shorter = beam_decode(lp, beam=20, word_bonus=-3.0)[0]
    assert len(shorter) < len(plain) < len(longer)
    assert longer == [1, 2] and shorter == []


def test_prune_skips_unlikely_classes():
    gen = torch.Generator().manual_seed(5)
    lp = random_log_probs(20, 8, gen, scale=2.0)
    assert beam_decode(lp, prune=-1e9) == beam_decode(lp)
    assert beam_decode(lp, prune=1.0) == [[]]  # no log-prob reaches 1: nothing may be appended
    kept = beam_decode(lp, prune=math.log(0.2))[0]
    assert set(kept) <= set(torch.nonzero(lp.exp() >= 0.2)[:, 1].tolist())


def test_prune_keeps_a_class_exactly_at_the_threshold():
    """Classes *below* ``prune`` are skipped: one exactly at it is kept."""
    lp = torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64).log()
    at = float(lp[0, 1])
    assert at == math.log(0.5)
    assert beam_decode(lp, prune=at) == [[1]]
    assert beam_decode(lp, prune=math.nextafter(at, 0.0)) == [[]]  # just above it: nothing may be appended


def test_a_language_model_at_weight_zero_is_never_asked():
    """``lm_weight=0`` is the search without an LM, even for an LM whose rows hold -inf (0 * -inf would be NaN)."""
    gen = torch.Generator().manual_seed(3)
    lp = random_log_probs(6, 5, gen, scale=2.0)
    calls = []

    def never(prefix):
        calls.append(prefix)
        return torch.tensor([0.0, float("-inf"), 0.0, float("-inf"), 0.0])

    for beam in (1, 4):
        plain = prefix_beam_search(lp, beam=beam)
        off = prefix_beam_search(lp, beam=beam, lm=never, lm_weight=0.0, lm_end=True)
        assert off == plain
        assert beam_decode(lp, beam=beam, lm=never, lm_weight=0.0) == beam_decode(lp, beam=beam)
    assert calls == []


# --- edit distance and error rates ----------------------------------------------------------------------------


def test_edit_distance_hand_worked():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("", "") == 0
    assert edit_distance("the cat sat".split(), "the hat sat down".split()) == 2
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0


def test_error_rates_hand_worked():
    sub = error_rates(["abc"], ["abd"])
    assert sub == {"cer": pytest.approx(1 / 3), "wer": 1.0, "chars": 3, "words": 1}
    assert error_rates(["the cat"], ["the black cat"])["wer"] == pytest.approx(1 / 2)  # insertion
    dele = error_rates(["the black cat"], ["the cat"])
    assert dele["wer"] == pytest.approx(1 / 3) and dele["cer"] == pytest.approx(6 / 13)
    empty = error_rates(["hello world"], [""])
    assert empty == {"cer": 1.0, "wer": 1.0, "chars": 11, "words": 2}
    assert error_rates(["a  b\tc "], [" a b c"]) == {"cer": pytest.approx(2 / 6), "wer": 0.0, "chars": 6,
                                                     "words": 3}
    # characters are counted on each line stripped of its leading and trailing whitespace
    assert error_rates([" ab "], ["ab"]) == {"cer": 0.0, "wer": 0.0, "chars": 2, "words": 1}
    assert error_rates(["ab"], ["\tab  "]) == {"cer": 0.0, "wer": 0.0, "chars": 2, "words": 1}


def test_error_rates_are_corpus_level_not_a_mean_of_lines():
    r = error_rates(["a", "abcdefghi"], ["b", "abcdefghi"])
    assert r["cer"] == pytest.approx(1 / 10) and r["chars"] == 10  # the mean of per-line rates would be 0.5
    r = error_rates(["a", "b c d e f g h i j"], ["x", "b c d e f g h i j"])
    assert r["wer"] == pytest.approx(1 / 10) and r["words"] == 10


def test_error_rates_match_edit_distance_on_random_lines():
    rng = random.Random(0)

    def line() -> str:
        return "".join(rng.choice("ab  c") for _ in range(rng.randint(0, 12)))

    refs = [line() for _ in range(40)]
    hyps = [line() for _ in range(40)]
    r = error_rates(refs, hyps)
    chars = sum(len(x.strip()) for x in refs)
    words = sum(len(x.split()) for x in refs)
    assert r["chars"] == chars and r["words"] == words
    pairs = list(zip(refs, hyps, strict=True))
    assert r["cer"] == pytest.approx(sum(edit_distance(x.strip(), y.strip()) for x, y in pairs) / chars)
    assert r["wer"] == pytest.approx(sum(edit_distance(x.split(), y.split()) for x, y in pairs) / words)


def test_error_rates_edge_cases(monkeypatch):
    assert error_rates([""], [""]) == {"cer": 0.0, "wer": 0.0, "chars": 0, "words": 0}
    assert error_rates([""], ["x"])["cer"] == math.inf
    assert error_rates([], []) == {"cer": 0.0, "wer": 0.0, "chars": 0, "words": 0}
    with pytest.raises(ConfigError, match="same length"):
        error_rates(["a", "b"], ["a"])
    monkeypatch.setitem(sys.modules, "jiwer", None)  # import jiwer now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rnnkit\[recognize\]'"):
        error_rates(["a"], ["a"])
