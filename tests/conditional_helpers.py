"""Helpers for the one-to-many tests: tiny ConditionalGenerators, their conditions, and a brute-force scorer."""

from __future__ import annotations

import itertools

import torch

from rnnkit.models.conditional import ConditionalGenerator, ConditionalGeneratorConfig

V, K, F, C, H, E, L = 7, 3, 6, 5, 6, 4, 2  # vocabulary, classes, features, condition vector, hidden, embedding, layers
IMAGE = [4, 4]  # conv inputs: 16 features
MODES = ("init", "input", "both", "none")
KINDS = ("label", "mlp", "conv")


def config(cell: str = "lstm", condition: str = "both", kind: str = "label", **kw) -> ConditionalGeneratorConfig:
    sizes = dict(vocab_size=V, cell=cell, condition=condition, hidden_size=H, num_layers=L, embedding_size=E,
                 condition_embedding=C, encoder_hidden=8, dropout=0.0, condition_dropout=0.0)
    if kind == "label":
        sizes["num_classes"] = K
    elif kind == "mlp":
        sizes.update(condition_size=F, encoder="mlp")
    else:
        sizes.update(condition_size=IMAGE[0] * IMAGE[1], image_shape=IMAGE, encoder="conv")
    sizes.update(kw)
    return ConditionalGeneratorConfig(**sizes)


def make(cell: str = "lstm", condition: str = "both", kind: str = "label", scale: float = 0.6, seed: int = 0,
         dtype=torch.float64, **kw) -> ConditionalGenerator:
    """A small generator in eval mode with large random weights (so logits and greedy chains vary a lot) and, for
    features, a non-trivial standardisation."""
    torch.manual_seed(seed)
    model = ConditionalGenerator(config(cell, condition, kind, **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
        if kind != "label":
            n = model.config.condition_size
            model.set_scaling(torch.linspace(-1.0, 1.0, n), torch.linspace(0.5, 2.0, n))
    return model.to(dtype).eval()


def conditions(kind: str, n: int, seed: int = 1) -> torch.Tensor:
    """``n`` distinct conditions: class ids (cycling through every class) or feature rows (float32)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "label":
        return torch.arange(n) % K
    size = F if kind == "mlp" else IMAGE[0] * IMAGE[1]
    return (torch.randn(n, size, generator=g) * 2.0).float()


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


@torch.no_grad()
def sequence_logprob(lm, prompt: list[int], seq: list[int]) -> float:
    """log P(seq | prompt) from one forward pass over prompt + seq (float64)."""
    x = torch.tensor([prompt + seq[:-1]])
    logp = lm(x).logits[0].double().log_softmax(-1)  # (P + n - 1, V)
    first = len(prompt) - 1
    return float(sum(logp[first + i, tok] for i, tok in enumerate(seq)))


def all_continuations(vocab_size: int, max_length: int, end: int) -> list[list[int]]:
    """Every sequence beam search can return: ``n - 1`` non-end tokens then ``end`` (n <= max_length), and every
    ``max_length`` non-end tokens (cut off)."""
    others = [t for t in range(vocab_size) if t != end]
    out = []
    for n in range(1, max_length + 1):
        out += [[*p, end] for p in itertools.product(others, repeat=n - 1)]
    out += [list(p) for p in itertools.product(others, repeat=max_length)]
    return out
