"""One-to-many decoding: beam search against brute-force enumeration (wide beams are exact, scores are true
scores), greedy and batched greedy, sampling, and their errors."""

from __future__ import annotations

import pytest
import torch
from conditional_helpers import all_continuations, conditions, make, sequence_logprob

from rnnkit.data.conditional import SequenceVocab
from rnnkit.errors import ConfigError, VocabularyError
from rnnkit.generate import beam_search, generate, length_penalty
from rnnkit.one_to_many import beam, greedy_batch, sample


# -- beam search against brute force -------------------------------------------------------------------------
def brute_force(lm, prompt, max_length, end, alpha) -> dict[tuple[int, ...], float]:
    """Every possible result with its score: log-probability / length penalty."""
    vocab = lm.generator.config.vocab_size
    return {tuple(s): sequence_logprob(lm, prompt, s) / length_penalty(len(s), alpha)
            for s in all_continuations(vocab, max_length, end)}


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("max_length", [3, 4])
@pytest.mark.parametrize("prompt", [[0], [0, 2, 1]])
def test_beam_search_wide_beam_is_exact(max_length, alpha, prompt):
    """With a beam that holds every live prefix (3^(max_length - 1) of them for V=4), beam search is exhaustive:
    its results are exactly the top-K of all sequences by log-probability / length penalty."""
    model = make("lstm", "both", "label", vocab_size=4, scale=1.0, seed=max_length)
    bound = model.bind(1)
    scores = brute_force(bound, prompt, max_length, 0, alpha)
    width = 3 ** (max_length - 1)
    expected = sorted(scores.items(), key=lambda kv: -kv[1])[:width]
    found = beam_search(bound, prompt, max_length, beam_size=width, end=0, alpha=alpha)
    assert [tuple(s) for s, _ in found] == [s for s, _ in expected]
    assert [sc for _, sc in found] == pytest.approx([sc for _, sc in expected], abs=1e-4)
    assert len({tuple(s) for s, _ in found}) == width


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_scores_are_true_scores(alpha):
    """A narrow beam is a heuristic, but what it returns is scored honestly, sorted, and ends only at ``end``;
    a wide one finds the best sequence."""
    model = make("gru", "both", "label", vocab_size=4, scale=1.0, seed=7)
    bound = model.bind(2)
    scores = brute_force(bound, [0], 4, 0, alpha)
    for width in (1, 2, 3, 5):
        found = beam_search(bound, [0], 4, beam_size=width, end=0, alpha=alpha)
        assert 1 <= len(found) <= width
        values = [sc for _, sc in found]
        assert values == sorted(values, reverse=True)
        for seq, sc in found:
            assert 0 not in seq[:-1] and len(seq) <= 4
            assert sc == pytest.approx(scores[tuple(seq)], abs=1e-4)
    best = max(scores.values())
    wide = beam_search(bound, [0], 4, beam_size=27, end=0, alpha=alpha)
    assert wide[0][1] == pytest.approx(best, abs=1e-4)


@torch.no_grad()
def beam_without_early_stop(lm, prompt, max_length, beam_size, end, alpha) -> list[tuple[list[int], float]]:
    """The beam search written plainly, each beam's next distribution from a forward pass over prompt + beam, and
    run to ``max_length`` however many beams have finished: the early stop may only save work, never change this."""
    live: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for t in range(max_length):
        candidates = []
        for seq, score in live:
            logp = lm(torch.tensor([prompt + seq])).logits[0, -1].double().log_softmax(-1)
            candidates += [(seq + [tok], score + float(lp)) for tok, lp in enumerate(logp)]
        candidates.sort(key=lambda c: -c[1])
        live = []
        for seq, score in candidates[: 2 * beam_size]:
            if seq[-1] == end:
                finished.append((seq, score / length_penalty(t + 1, alpha)))
            elif len(live) < beam_size:
                live.append((seq, score))
        finished = sorted(finished, key=lambda f: -f[1])[:beam_size]
        if not live:
            break
    unfinished = [(s, sc / length_penalty(len(s), alpha)) for s, sc in live]
    return sorted(finished + unfinished, key=lambda f: -f[1])[:beam_size]


def test_the_early_stop_does_not_drop_a_longer_beam_the_length_penalty_favours():
    """With alpha > 0 a live beam's bound is its score over the penalty at ``max_length``, not at its length now:
    here the second beam is a longer one that a bound at the current length would have stopped before reaching."""
    bound = make("lstm", "both", "label", vocab_size=3, scale=2.0, seed=4).bind(1)
    found = beam_search(bound, [0], 6, beam_size=2, end=0, alpha=2.0)
    assert [s for s, _ in found] == [s for s, _ in beam_without_early_stop(bound, [0], 6, 2, 0, 2.0)]
    assert found[1][0] == [1, 2, 2, 2, 0]
    assert found[1][1] == pytest.approx(sequence_logprob(bound, [0], [1, 2, 2, 2, 0]) / length_penalty(5, 2.0),
                                        abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_narrow_beams_equal_the_search_without_early_stop(alpha):
    for seed in range(6):
        bound = make("lstm", "both", "label", vocab_size=3, scale=2.0, seed=seed).bind(seed % 3)
        for width in (1, 2, 3):
            found = beam_search(bound, [0], 6, beam_size=width, end=0, alpha=alpha)
            expected = beam_without_early_stop(bound, [0], 6, width, 0, alpha)
            assert [s for s, _ in found] == [s for s, _ in expected], (seed, width)
            assert [sc for _, sc in found] == pytest.approx([sc for _, sc in expected], abs=1e-4)


def test_beam_of_one_without_end_is_greedy():
    model = make("lstm", "both", "mlp", seed=4)
    cond = conditions("mlp", 1)[0]
    bound = model.bind(cond)
    for prompt in ([0], [0, 3, 5]):
        greedy = generate(bound, prompt, 8, temperature=0.0)[0].tolist()
        (seq, score), = beam_search(bound, prompt, 8, beam_size=1)
        assert seq == greedy
        assert score == pytest.approx(sequence_logprob(bound, prompt, seq), abs=1e-4)


def test_greedy_batch_equals_per_row_greedy():
    model = make("gru", "both", "conv", seed=5)
    conds = conditions("conv", 4)
    rows = greedy_batch(model, conds, 7)
    for i in range(4):
        assert rows[i] == generate(model.bind(conds[i]), [0], 7, temperature=0.0)[0].tolist()


def test_beam_search_errors():
    bound = make(vocab_size=4).bind(0)
    with pytest.raises(ConfigError, match="beam size"):
        beam_search(bound, [0], 3, beam_size=0)
    with pytest.raises(ConfigError, match="prompt"):
        beam_search(bound, [], 3)
    with pytest.raises(ConfigError, match="alpha"):
        beam_search(bound, [0], 3, alpha=-0.5)
    with pytest.raises(ConfigError, match="max length"):
        beam_search(bound, [0], 0)
    assert length_penalty(7, 0.0) == 1.0 and length_penalty(7, 1.0) == pytest.approx(2.0)


def test_sampling_leaves_the_generator_mode_alone():
    # BUG (reported): Conditioned is a new nn.Module, so it starts in training mode whatever the generator's mode;
    # generate/beam_search restore *its* mode on exit, and model.train(True) recurses into the generator. An eval
    # generator comes back from sample/beam/greedy_batch in training mode (dropout on in later forward calls).
    model = make("gru", "both", "label", dropout=0.3)
    vocab = SequenceVocab(list("abcdef"))
    model.eval()
    sample(model, vocab, 1, num_samples=2, max_length=4, seed=0)
    assert not model.training
    greedy_batch(model, torch.tensor([0, 1]), 4)
    assert not model.training
    beam(model, vocab, 1, max_length=4)
    assert not model.training


def test_sample_and_beam_helpers():
    model = make("lstm", "both", "label", seed=2)
    vocab = SequenceVocab(list("abcdef"))
    got = sample(model, vocab, 2, prompt=["c", "a"], num_samples=3, max_length=6, seed=11)
    assert got == sample(model, vocab, 2, prompt=["c", "a"], num_samples=3, max_length=6, seed=11)
    for s in got:
        assert s[:2] == ["c", "a"] and len(s) <= 8 and set(s) <= set("abcdef")
    found = beam(model, vocab, 2, prompt=["b"], beam_size=3, max_length=5)
    raw = beam_search(model.bind(2), [0, vocab.encode(["b"])[0]], 5, 3, end=0)
    assert [s for s, _ in found] == [["b", *vocab.decode(s)] for s, _ in raw]
    with pytest.raises(VocabularyError):
        sample(model, vocab, 0, prompt=["z"])
