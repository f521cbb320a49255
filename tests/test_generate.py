"""Generation: the carried state against full forward passes, the filters against NumPy, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.generate import filter_logits, generate, next_token
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig

V = 13
CELLS = ("lstm", "gru", "rnn")


def make_model(cell: str, dtype=torch.float64, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    model = LanguageModel(
        LanguageModelConfig(vocab_size=V, cell=cell, hidden_size=16, num_layers=2, embedding_size=8)
    )
    with torch.no_grad():  # larger weights than the default init, so logits (and greedy chains) vary a lot
        for p in model.parameters():
            p.normal_(0.0, 0.6)
    return model.to(dtype).eval()


@pytest.fixture(params=CELLS)
def model(request) -> LanguageModel:
    return make_model(request.param)


def greedy_by_hand(model: LanguageModel, prompt: list[int], length: int) -> list[int]:
    """The greedy chain from forward passes over the whole growing sequence: no carried state at all."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(length):
            logits = model(torch.tensor([seq])).logits[0, -1]  # (V,)
            seq.append(int(logits.argmax()))
    return seq[len(prompt):]


# -- the carried state ---------------------------------------------------------------------------------------
def test_step_matches_forward(model):
    B, T = 3, 25
    x = torch.randint(0, V, (B, T))
    with torch.no_grad():
        out = model(x)
        state = model.init_state(B)
        stepped = []
        for t in range(T):
            logits, state = model.step(x[:, t], state)
            assert logits.shape == (B, V)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), out.logits, rtol=1e-10, atol=1e-10)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    out.state if isinstance(out.state, tuple) else (out.state,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_step_after_forward_prefix_matches_forward(model):
    """A prompt primed in one forward pass, then stepped: what generate does."""
    x = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :7])
        state = out.state
        torch.testing.assert_close(out.logits, full[:, :7], rtol=1e-10, atol=1e-10)
        for t in range(7, 20):
            logits, state = model.step(x[:, t], state)
            torch.testing.assert_close(logits, full[:, t], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prompt", [[3], [1, 4, 1, 5, 9, 2, 6]])
def test_greedy_generate_equals_greedy_by_hand(model, prompt):
    length = 40
    expected = greedy_by_hand(model, prompt, length)
    tokens = generate(model, prompt, length, temperature=0.0)
    assert tokens.shape == (1, length)
    assert tokens.dtype == torch.long
    assert tokens[0].tolist() == expected


def test_greedy_chain_depends_on_history(model):
    """Guard for the test above: a generator that forgot its state would produce a different chain."""
    prompt, length = [1, 4, 1, 5, 9, 2, 6], 40
    expected = greedy_by_hand(model, prompt, length)
    with torch.no_grad():
        forgetful = [int(model(torch.tensor([[prompt[-1]]])).logits[0, -1].argmax())]
        for _ in range(length - 1):
            forgetful.append(int(model(torch.tensor([[forgetful[-1]]])).logits[0, -1].argmax()))
    assert forgetful != expected


def test_greedy_in_float32():
    model = make_model("lstm", dtype=torch.float32)
    assert generate(model, [2, 3], 30, temperature=0)[0].tolist() == greedy_by_hand(model, [2, 3], 30)


# -- filters -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.3, 1.0, 5.0])
def test_top_k_1_is_greedy(model, temperature):
    prompt = [0, 5]
    greedy = greedy_by_hand(model, prompt, 30)
    for seed in range(3):
        tokens = generate(model, prompt, 30, temperature=temperature, top_k=1, seed=seed, num_samples=2)
        assert tokens.tolist() == [greedy, greedy]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_tiny_top_p_is_greedy(model, temperature):
    prompt = [7]
    greedy = greedy_by_hand(model, prompt, 30)
    tokens = generate(model, prompt, 30, temperature=temperature, top_p=1e-6, seed=1, num_samples=2)
    assert tokens.tolist() == [greedy, greedy]


def _kept(filtered: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in filtered]


@pytest.mark.parametrize("k", [1, 2, 5, 19, 20, 50])
def test_filter_top_k_keeps_the_k_largest(k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(6, 20, generator=g, dtype=torch.float64) * 3
    filtered = filter_logits(logits, top_k=k)
    order = np.argsort(-logits.numpy(), axis=-1)
    for b, kept in enumerate(_kept(filtered)):
        assert kept == set(order[b, : min(k, 20)].tolist())
    survivors = torch.isfinite(filtered)
    assert torch.equal(filtered[survivors], logits[survivors])  # survivors keep their value
    assert torch.isneginf(filtered[~survivors]).all()


def _numpy_top_p(logits: np.ndarray, p: float) -> set[int]:
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    assert np.min(np.abs(cum - p)) > 1e-9, "p too close to a cumulative sum for a stable comparison"
    n = int(np.searchsorted(cum, p)) + 1  # smallest prefix whose probability reaches p
    return set(order[:n].tolist())


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.33, 0.5, 0.77, 0.9, 0.999])
def test_filter_top_p_keeps_the_smallest_prefix_reaching_p(p):
    g = torch.Generator().manual_seed(int(p * 1000))
    logits = torch.randn(8, 30, generator=g, dtype=torch.float64) * 2
    kept = _kept(filter_logits(logits, top_p=p))
    for b in range(8):
        expected = _numpy_top_p(logits[b].numpy(), p)
        assert kept[b] == expected
        assert int(logits[b].argmax()) in kept[b]
        # Smallest: without its least likely member the prefix falls short of p.
        probs = logits[b].softmax(-1).numpy()
        assert probs[list(expected)].sum() >= p
        assert probs[list(expected)].sum() - probs[list(expected)].min() < p


def test_filter_top_p_at_exactly_a_cumulative_sum_stops_there():
    """Two equal logits: the first token alone holds exactly p = 0.5, so the smallest prefix reaching p is it."""
    logits = torch.zeros(3, 2, dtype=torch.float64)
    assert logits.softmax(-1)[0, 0].item() == 0.5
    kept = _kept(filter_logits(logits, top_p=0.5))
    assert [len(k) for k in kept] == [1, 1, 1]
    quarters = torch.zeros(1, 4)  # 0.25 each: 0.75 is reached by three tokens, not four
    assert len(_kept(filter_logits(quarters, top_p=0.75))[0]) == 3


def test_filter_top_p_one_and_large_k_keep_everything():
    logits = torch.randn(4, 9, dtype=torch.float64)
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=9), logits)
    assert torch.equal(filter_logits(logits), logits)


def test_filter_always_keeps_the_argmax():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(50, 40, generator=g) * 10  # peaked and flat rows
    logits[0] = 0.0  # all equal: one of the tied maxima must survive
    logits[1, :3] = logits[1].max() + 1  # a three-way tie at the top
    for top_k, top_p in [(1, None), (None, 1e-9), (1, 1e-9), (3, 0.2), (40, 0.01)]:
        filtered = filter_logits(logits, top_k=top_k, top_p=top_p)
        assert torch.equal(filtered.max(-1).values, logits.max(-1).values)
        if top_k == 1 and top_p is None:
            assert torch.isfinite(filtered[1, :3]).all()  # top-k keeps every tied maximum


def test_filter_top_k_and_top_p_together_keep_no_more_than_either():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(10, 25, generator=g, dtype=torch.float64) * 2
    both = _kept(filter_logits(logits, top_k=6, top_p=0.6))
    only_k = _kept(filter_logits(logits, top_k=6))
    only_p = _kept(filter_logits(logits, top_p=0.6))
    for b in range(10):
        assert both[b] <= only_k[b] & only_p[b]
        assert int(logits[b].argmax()) in both[b]


# -- seeds, batches, streaming -------------------------------------------------------------------------------
def test_same_seed_same_samples_different_seed_different_samples(model):
    a = generate(model, [1, 2], 200, temperature=1.0, seed=1234)
    b = generate(model, [1, 2], 200, temperature=1.0, seed=1234)
    c = generate(model, [1, 2], 200, temperature=1.0, seed=4321)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0
    assert a.max() < V
    assert len(set(a[0].tolist())) > 1  # really sampled


def test_seeded_sampling_ignores_the_global_rng(model):
    torch.manual_seed(1)
    a = generate(model, [3], 50, seed=9)
    torch.manual_seed(2)
    b = generate(model, [3], 50, seed=9)
    assert torch.equal(a, b)


def test_unseeded_generate_leaves_the_global_rng_alone():
    """Regression: generate(seed=None) once called torch.seed(), reseeding torch's global RNG."""
    model = make_model("gru")
    torch.manual_seed(77)
    expected = torch.rand(5)
    torch.manual_seed(77)
    generate(model, [1], 10)
    assert torch.equal(torch.rand(5), expected)


def test_unseeded_samples_differ():
    model = make_model("lstm")
    a = generate(model, [1], 200, temperature=1.0)
    b = generate(model, [1], 200, temperature=1.0)
    assert not torch.equal(a, b)


def test_num_samples(model):
    greedy = generate(model, [4, 2], 30, temperature=0)
    assert greedy.shape == (1, 30)
    many = generate(model, [4, 2], 30, temperature=0, num_samples=4)
    assert many.shape == (4, 30)
    assert (many == greedy).all()
    sampled = generate(model, [4, 2], 60, temperature=1.0, num_samples=4, seed=3)
    assert sampled.shape == (4, 60)
    assert len({tuple(row) for row in sampled.tolist()}) > 1  # rows are independent draws


def test_on_tokens_streams_every_column(model):
    seen = []
    tokens = generate(model, [5], 17, temperature=1.0, num_samples=3, seed=0, on_tokens=seen.append)
    assert len(seen) == 17
    for t, tok in enumerate(seen):
        assert isinstance(tok, torch.Tensor)
        assert tok.shape == (3,)
        assert torch.equal(tok, tokens[:, t])


def test_zero_length(model):
    seen = []
    tokens = generate(model, [1, 2], 0, on_tokens=seen.append, num_samples=2)
    assert tokens.shape == (2, 0)
    assert seen == []


def test_generate_leaves_parameters_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generate(model, [1, 2, 3], 20, temperature=1.0, seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("cell", CELLS)
def test_a_model_in_training_mode_samples_as_in_eval_mode_and_stays_in_training(cell):
    """Dropout (between layers and before the head) and weight drop act only in training: generate samples with them
    off, and gives the model back in the mode it came in."""
    torch.manual_seed(1)
    model = LanguageModel(LanguageModelConfig(vocab_size=V, cell=cell, hidden_size=16, num_layers=2,
                                              embedding_size=8, dropout=0.5, weight_drop=0.5))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.6)
    model.double().eval()
    prompt = [1, 4, 1, 5, 9, 2, 6]
    expected = greedy_by_hand(model, prompt, 30)
    model.train()
    for _ in range(3):
        assert generate(model, prompt, 30, temperature=0)[0].tolist() == expected
        assert model.training
    assert generate(model, prompt, 30, temperature=1.0, seed=4).equal(
        generate(model.eval(), prompt, 30, temperature=1.0, seed=4))
    assert not model.training


# -- the sampling distribution -------------------------------------------------------------------------------
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


def _frequencies(tokens: torch.Tensor) -> np.ndarray:
    return np.bincount(tokens.numpy(), minlength=len(LOGITS)) / len(tokens)


def _assert_close_to(freq: np.ndarray, probs: np.ndarray, n: int) -> None:
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampled_frequencies_follow_softmax(temperature):
    n = 200_000
    g = torch.Generator().manual_seed(0)
    tokens = next_token(LOGITS.expand(n, -1), temperature, None, None, g)
    assert tokens.shape == (n,)
    probs = (LOGITS.double() / temperature).softmax(-1).numpy()
    _assert_close_to(_frequencies(tokens), probs, n)


def test_sampled_frequencies_with_top_k_and_top_p():
    n = 200_000
    g = torch.Generator().manual_seed(1)
    probs = LOGITS.double().softmax(-1).numpy()  # sorted descending already
    top3 = np.where(np.arange(len(probs)) < 3, probs, 0.0)
    _assert_close_to(_frequencies(next_token(LOGITS.expand(n, -1), 1.0, 3, None, g)), top3 / top3.sum(), n)
    # probs ~ [.51, .19, .11, .07, ...]: top_p 0.75 keeps the first three (0.70 < 0.75 <= 0.81)
    assert probs[:2].sum() < 0.75 <= probs[:3].sum()
    _assert_close_to(_frequencies(next_token(LOGITS.expand(n, -1), 1.0, None, 0.75, g)), top3 / top3.sum(), n)


def test_next_token_greedy_at_temperature_zero():
    logits = torch.randn(20, 9)
    assert torch.equal(next_token(logits, 0.0, None, None, None), logits.argmax(-1))


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"top_k": 0}, "top-k"),
        ({"top_k": -3}, "top-k"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": -0.5}, "top-p"),
        ({"top_p": 1.01}, "top-p"),
        ({"length": -1}, "length"),
        ({"num_samples": 0}, "num-samples"),
        ({"num_samples": -2}, "num-samples"),
        ({"prompt": []}, "prompt"),
    ],
)
def test_bad_settings(kwargs, match):
    model = make_model("rnn")
    args = {"prompt": [1], "length": 5} | kwargs
    seen = []
    with pytest.raises(ConfigError, match=match) as info:
        generate(model, on_tokens=seen.append, **args)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    assert seen == []
