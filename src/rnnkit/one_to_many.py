"""One-to-many, end to end: sample and beam-search a ``ConditionalGenerator``, and score it against its peers.

The figures per kind of data (``evaluate``):
- labelled text (names by language): held-out NLL per character (the end of each name included) with the label and
  with none, against interpolated character 3-gram models fitted per label and pooled;
- digits: exact-match caption accuracy of greedy and beam decoding, against an RBF SVM classifying the same images;
- music: held-out NLL per token with the mode and with none, against a unigram model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rnnkit.baselines.ngram import fit_tuned
from rnnkit.data.conditional import DIGIT_WORDS, GenerationData, SequenceVocab
from rnnkit.errors import ConfigError
from rnnkit.generate import beam_search, generate
from rnnkit.train.batches import sequence_nll


def sample(model, vocab: SequenceVocab, condition, prompt: Sequence[str] = (), num_samples: int = 1,
           max_length: int = 40, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None) -> list[list[str]]:
    """``num_samples`` sequences for one condition, each starting with ``prompt`` (tokens) and ending where the
    model draws the boundary or at ``max_length`` new tokens."""
    ids = [0, *vocab.encode(prompt).tolist()]
    rows = generate(model.bind(condition), ids, max_length, temperature, top_k, top_p, num_samples, seed)
    return [[*prompt, *vocab.decode(row)] for row in rows.tolist()]


def beam(model, vocab: SequenceVocab, condition, prompt: Sequence[str] = (), beam_size: int = 5,
         max_length: int = 40, alpha: float = 0.0) -> list[tuple[list[str], float]]:
    """The ``beam_size`` most likely sequences for one condition, best first, with their scores."""
    ids = [0, *vocab.encode(prompt).tolist()]
    found = beam_search(model.bind(condition), ids, max_length, beam_size, end=0, alpha=alpha)
    return [([*prompt, *vocab.decode(seq)], score) for seq, score in found]


@torch.no_grad()
def greedy_batch(model, conditions: torch.Tensor, max_length: int) -> list[list[int]]:
    """Greedy decoding of one sequence per condition (``(B,)`` ids or ``(B, F)`` features), all rows at once."""
    rows = generate(model.bind(conditions, batch=True), [0], max_length, temperature=0.0,
                    num_samples=len(conditions))
    return rows.tolist()


def evaluate(model, data: GenerationData, beam_size: int = 5, captions_png=None) -> dict:
    """The figures of ``model`` on the held-out (test) part of ``data`` against its classical peers; for digits,
    ``captions_png`` draws held-out images with their captions."""
    device = next(model.parameters()).device
    test = data.test
    labelled = model.config.num_classes > 0
    result = {"heldout_sequences": len(test), "heldout_tokens": test.num_targets(),
              "val_nll": sequence_nll(model, test, device)}
    if labelled:
        uncond = model.config.condition == "none" or model.config.condition_dropout > 0
        result["val_nll_unconditioned"] = sequence_nll(model, test, device, unconditioned=True) if uncond else None
    kind = data.kind
    V = len(data.vocab)
    train_seqs = [*data.train.sequences, *data.val.sequences]
    if kind == "text":
        pooled = fit_tuned(3, V, data.train.sequences, data.val.sequences)
        result["ngram3_pooled_nll"] = pooled.nll(test.sequences)
        total = 0.0
        for c in range(len(data.classes)):
            def part(s, c=c):
                return [seq for seq, y in zip(s.sequences, s.conditions, strict=True) if y == c]
            held = part(test)
            if held:
                total += fit_tuned(3, V, part(data.train), part(data.val)).nll(held) * sum(len(s) + 1 for s in held)
        result["ngram3_per_label_nll"] = total / test.num_targets()
    elif kind == "music":
        result["unigram_nll"] = fit_tuned(1, V, data.train.sequences, data.val.sequences).nll(test.sequences)
    else:
        result.update(_caption_figures(model, data, beam_size, captions_png))
    result["train_sequences"] = len(train_seqs)
    return result


def _caption_figures(model, data: GenerationData, beam_size: int, captions_png) -> dict:
    words = [DIGIT_WORDS[d] for d in data.extra["test_digits"]]
    images = torch.as_tensor(data.extra["test_images"])
    greedy = ["".join(data.vocab.decode(r)) for r in greedy_batch(model, images, 12)]
    beamed = ["".join(beam(model, data.vocab, img, beam_size=beam_size, max_length=12)[0][0]) for img in images]
    figures = {
        "exact_match": float(np.mean([g == w for g, w in zip(greedy, words, strict=True)])),
        "exact_match_beam": float(np.mean([b == w for b, w in zip(beamed, words, strict=True)])),
        "beam_size": beam_size,
        "not_a_digit_word": sum(g not in DIGIT_WORDS for g in greedy),
        "errors": [{"image": n, "truth": w, "greedy": g} for n, w, g in
                   zip(data.test_names, words, greedy, strict=True) if g != w][:20],
    }
    try:
        from sklearn.svm import SVC
    except ImportError:
        raise ConfigError("the digits baseline needs scikit-learn — pip install 'rnnkit[classical]'") from None
    # the RBF SVM of scikit-learn's own digits example (gamma=0.001 on the raw 0..16 pixels)
    svm = SVC(gamma=0.001).fit(data.extra["train_images"], data.extra["train_digits"])
    figures["svm_accuracy"] = float(np.mean(svm.predict(data.extra["test_images"]) == data.extra["test_digits"]))
    if captions_png is not None:
        figures["captions_png"] = str(plot_digit_captions(data, greedy, words, captions_png))
    return figures


def plot_digit_captions(data: GenerationData, captions: list[str], words: list[str], path, count: int = 40):
    """The held-out images the model got wrong first, then right ones, up to ``count``, with their captions."""
    from rnnkit.plots import plot_captions

    order = sorted(range(len(words)), key=lambda i: captions[i] == words[i])[:count]
    images = data.extra["test_images"].reshape(-1, 8, 8)
    wrong = sum(c != w for c, w in zip(captions, words, strict=True))
    return plot_captions(images[order], [captions[i] for i in order], [words[i] for i in order], path,
                         title=f"greedy captions of held-out digits: {len(words) - wrong} of {len(words)} exact")
