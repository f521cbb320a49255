"""Dynamic evaluation: the update rule against a functional reference, scoring before learning, the model left
untouched, adaptation that pays on text the model has not seen, unseen characters, and every settings error."""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from rnnkit.data import CharVocab
from rnnkit.data.streams import Streams
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import DynamicConfig, detach_state, dynamic_evaluate, evaluate
from rnnkit.train.dynamic import RMS_FLOOR

CPU = torch.device("cpu")
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. ")


def tiny_model(vocab_size: int, cell: str = "lstm", seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelConfig(vocab_size=vocab_size, cell=cell, hidden_size=12, num_layers=2,
                                             embedding_size=6, weight_drop=0.0))


@pytest.fixture
def vocab() -> CharVocab:
    return CharVocab(sorted(set(TEXT)))


def reference(model, tokens, stats, config: DynamicConfig) -> float:
    """The rule written out on plain dicts of weights with ``functional_call``, one window after another."""
    names = [n for n, _ in model.named_parameters()]
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    def window_losses(theta, toks):
        batches, state = Streams(toks, 1, config.window), None
        for k in range(len(batches)):
            x, y = batches.window(k)
            out = functional_call(model, theta, (x, state, y))
            state = detach_state(out.state)
            yield out.loss, y.numel()

    squares = {n: torch.zeros_like(p) for n, p in theta0.items()}
    leaves = {n: p.clone().requires_grad_() for n, p in theta0.items()}
    windows = 0
    for loss, _ in window_losses(leaves, stats):
        for n, g in zip(names, torch.autograd.grad(loss, [leaves[n] for n in names]), strict=True):
            squares[n] += g ** 2
        windows += 1
    rms = {n: (s / windows).sqrt() for n, s in squares.items()}
    mean = torch.cat([r.flatten() for r in rms.values()]).mean()
    theta = {n: p.clone().requires_grad_() for n, p in theta0.items()}
    batches, state, total, count = Streams(tokens, 1, config.window), None, 0.0, 0
    for k in range(len(batches)):
        x, y = batches.window(k)
        out = functional_call(model, theta, (x, state, y))
        state = detach_state(out.state)
        total, count = total + out.loss.item() * y.numel(), count + y.numel()
        grads = dict(zip(names, torch.autograd.grad(out.loss, [theta[n] for n in names]), strict=True))
        new = {}
        for n in names:
            r = rms[n]
            pull = config.decay * torch.minimum(r / mean, torch.tensor(1 / config.decay))
            step = -config.lr * grads[n] / torch.maximum(r, RMS_FLOOR * mean) + pull * (theta0[n] - theta[n])
            new[n] = (theta[n] + step).detach().requires_grad_()
        theta = new
    return total / count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_the_rule_written_out(vocab, cell):
    model = tiny_model(len(vocab), cell).eval()
    ids = vocab.encode(TEXT)
    config = DynamicConfig(lr=0.05, decay=0.02, window=16)
    got = dynamic_evaluate(model, ids[:90], ids[100:], CPU, config)
    want = reference(model, ids[:90], ids[100:], config)
    assert got == pytest.approx(want, rel=1e-5)
    static = evaluate(model, ids[:90], 1, CPU)
    assert abs(got - static) > 1e-3  # the updates moved the loss: the comparison above is not static vs static


def test_each_window_is_scored_before_it_is_learned(vocab):
    model = tiny_model(len(vocab)).eval()
    ids = vocab.encode(TEXT)
    config = DynamicConfig(lr=0.5, window=40)
    one_window = ids[:41]
    assert dynamic_evaluate(model, one_window, ids, CPU, config) == pytest.approx(
        evaluate(model, one_window, 1, CPU), rel=1e-6)
    two_windows = ids[:81]  # the second window is scored by weights that learned from the first
    assert dynamic_evaluate(model, two_windows, ids, CPU, config) != pytest.approx(
        evaluate(model, two_windows, 1, CPU), rel=1e-4)


def test_the_model_is_left_as_it_was(vocab):
    model = tiny_model(len(vocab))
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    ids = vocab.encode(TEXT)
    dynamic_evaluate(model, ids, ids, CPU, DynamicConfig(lr=0.5, window=20))
    assert model.training  # not switched to eval mode behind the caller's back
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_adapting_pays_on_text_the_model_never_saw(vocab):
    """Trained on one sentence, read a passage three times: the adapted model learns it as it goes."""
    model = tiny_model(len(vocab))
    ids = vocab.encode(TEXT)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    words = vocab.encode(TEXT[:60] * 20)
    for _ in range(30):
        out = model(torch.as_tensor(words[None, :-1]).long(), None, torch.as_tensor(words[None, 1:]).long())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    unseen = np.concatenate([ids[100:]] * 3)
    static = evaluate(model, unseen, 1, CPU)
    dynamic = dynamic_evaluate(model, unseen, words, CPU, DynamicConfig(lr=1e-2, decay=0.0, window=10))
    assert dynamic < static - 0.1, (dynamic, static)  # 2.87 against 3.07 here


def test_a_character_the_training_text_lacks_stays_finite(vocab):
    """Its embedding has zero gradient scale: the floor keeps the first step it takes bounded."""
    model = tiny_model(len(vocab)).eval()
    ids = vocab.encode(TEXT)
    stats = vocab.encode(TEXT.replace("w", "").replace("W", ""))
    config = DynamicConfig(window=10)
    loss = dynamic_evaluate(model, ids, stats, CPU, config)
    assert math.isfinite(loss) and loss < evaluate(model, ids, 1, CPU) + 0.5


@pytest.mark.parametrize("settings, fragment", [
    ({"lr": 0.0}, "--dynamic-lr"), ({"lr": -1e-3}, "--dynamic-lr"), ({"lr": float("nan")}, "--dynamic-lr"),
    ({"decay": 1.0}, "--dynamic-decay"), ({"decay": -0.1}, "--dynamic-decay"), ({"window": 0}, "--dynamic-window"),
    ({"stats_tokens": 1}, "stats_tokens"),
])
def test_bad_settings(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DynamicConfig(**settings)


def test_too_little_text(vocab):
    model = tiny_model(len(vocab))
    ids = vocab.encode(TEXT)
    for tokens, stats in ((ids[:1], ids), (ids, ids[:1])):
        with pytest.raises(ConfigError, match="at least 2 tokens"):
            dynamic_evaluate(model, tokens, stats, CPU)
