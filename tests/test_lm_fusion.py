"""A character language model trained by rnnkit as the CTC beam search's LM (``RecurrentCharLM``): its rows
against a plain forward pass of the model, the batched and one-prefix paths of the beam search against each other,
and a trained LM turning a CTC output that is ambiguous between two spellings into the one the LM has read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit import ctc
from rnnkit.data.recognition import Alphabet
from rnnkit.data.vocab import CharVocab
from rnnkit.errors import ConfigError
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.recognize import RecurrentCharLM

ALPHABET = Alphabet(" acehst")


def _model(vocab: CharVocab, cell: str = "lstm", layers: int = 2, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=24, num_layers=layers,
                                             embedding_size=8, weight_drop=0.0)).eval()


def _reference_row(model: LanguageModel, vocab: CharVocab, text: str) -> np.ndarray:
    """The model read "\\n" + text in one forward pass; its last distribution over the newline and the alphabet."""
    ids = torch.as_tensor(vocab.encode("\n" + text)).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids).logits[0, -1].double()
    columns = torch.as_tensor(vocab.encode("\n" + ALPHABET.chars))
    return torch.log_softmax(logits[columns], -1).numpy()


@pytest.mark.parametrize("cell", ["lstm", "gru", "lnlstm"])
def test_rows_are_the_models_next_character_distribution(cell):
    vocab = CharVocab("\n !" + ALPHABET.chars)  # "!" is outside the recogniser's alphabet: it takes no share
    model = _model(vocab, cell)
    lm = RecurrentCharLM(model, vocab, ALPHABET, max_states=4)  # small: the last call below rebuilds from scratch
    rng = np.random.default_rng(0)
    prefixes = [(), *{tuple(int(c) for c in rng.integers(1, ALPHABET.num_classes, size=n))
                      for n in (1, 2, 2, 3, 5, 8, 8, 13)}]
    prefixes += [p[:-1] for p in prefixes if p]  # parents and children in one call
    rows = lm.rows(prefixes)
    assert rows.shape == (len(prefixes), ALPHABET.num_classes)
    for prefix, row in zip(prefixes, rows, strict=True):
        np.testing.assert_allclose(row, _reference_row(model, vocab, ALPHABET.decode(prefix)), atol=1e-5)
        assert abs(np.logaddexp.reduce(row)) < 1e-6  # renormalised over the newline and the alphabet
    np.testing.assert_allclose(lm(prefixes[3]), rows[3], atol=1e-6)  # one prefix at a time (rebuilt): the same row


def test_beam_search_asks_a_batched_lm_for_the_same_scores():
    vocab = CharVocab("\n" + ALPHABET.chars)
    lm = RecurrentCharLM(_model(vocab), vocab, ALPHABET)
    calls = []

    def one_at_a_time(prefix):
        calls.append(prefix)
        return _reference_row(lm.model, vocab, ALPHABET.decode(prefix))

    log_probs = torch.log_softmax(torch.randn(30, ALPHABET.num_classes, generator=torch.Generator().manual_seed(1)), -1)
    batched = ctc.prefix_beam_search(log_probs, beam=6, lm=lm, lm_weight=0.8, word_bonus=0.5)
    single = ctc.prefix_beam_search(log_probs, beam=6, lm=one_at_a_time, lm_weight=0.8, word_bonus=0.5)
    assert [p for p, _, _ in batched] == [p for p, _, _ in single]
    np.testing.assert_allclose([s for *_, s in batched], [s for *_, s in single], atol=1e-6)
    assert len(calls) == len(set(calls)) > 30  # the search caches a row per prefix: never asked twice
    for end in (False, True):  # states dropped every few frames and rebuilt from the line's start: the same beam
        small = RecurrentCharLM(lm.model, vocab, ALPHABET, max_states=7)
        dropped = ctc.prefix_beam_search(log_probs, beam=6, lm=small, lm_weight=0.8, word_bonus=0.5, lm_end=end)
        kept = ctc.prefix_beam_search(log_probs, beam=6, lm=lm, lm_weight=0.8, word_bonus=0.5, lm_end=end)
        assert [p for p, _, _ in dropped] == [p for p, _, _ in kept]
        np.testing.assert_allclose([s for *_, s in dropped], [s for *_, s in kept], atol=1e-5)


def test_a_trained_lm_picks_the_spelling_it_has_read():
    """CTC hears "the cat" or "the cet" (the vowel's frame 0.45 / 0.55 for e): alone it writes "the cet"; with an
    LM that has read "the cat sat" lines it writes "the cat"."""
    text = "the cat sat\nthe cats\nthat cat\n" * 20
    vocab = CharVocab(text + ALPHABET.chars)
    model = _model(vocab, layers=1, seed=2).train()
    data = torch.as_tensor(vocab.encode(text)).unsqueeze(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        loss = model(data[:, :-1], targets=data[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5  # it has learnt the lines
    lm = RecurrentCharLM(model.eval(), vocab, ALPHABET)
    frames = []
    for ch in "the c?t":
        row = np.full(ALPHABET.num_classes, 1e-4)
        if ch == "?":
            row[ALPHABET.index["a"]], row[ALPHABET.index["e"]] = 0.45, 0.55
        else:
            row[ALPHABET.index[ch]] = 1.0
        frames += [row, np.eye(ALPHABET.num_classes)[0] * 0.999 + 1e-4]  # each character, then a blank
    log_probs = torch.log(torch.as_tensor(np.array(frames)))
    assert ALPHABET.decode(ctc.beam_decode(log_probs, beam=8)[0]) == "the cet"
    assert ALPHABET.decode(ctc.beam_decode(log_probs, beam=8, lm=lm, lm_weight=1.0)[0]) == "the cat"


def test_characters_the_lm_never_read_score_as_its_least_likely_and_leave_its_context_alone():
    vocab = CharVocab("\n" + ALPHABET.chars.replace("s", ""))
    model = _model(vocab)
    lm = RecurrentCharLM(model, vocab, ALPHABET)
    s, t, a = (ALPHABET.index[c] for c in "sta")
    assert lm.missing == "s"
    rows = lm.rows([(), (t,), (t, s), (t, s, a), (t, a)])
    np.testing.assert_allclose(rows[2], rows[1])  # "ts" reads as "t"
    np.testing.assert_allclose(rows[3], rows[4])  # "tsa" as "ta"
    for row in rows:
        assert row[s] == np.delete(row, s).min()
    with pytest.raises(ConfigError, match="lacks 's'"):  # where the recogniser's training text holds an "s"
        RecurrentCharLM(model, vocab, ALPHABET, required="the cats")
    vocab = CharVocab(ALPHABET.chars)  # no newline: not trained on lines
    with pytest.raises(ConfigError, match="lacks '\\\\n'"):
        RecurrentCharLM(_model(vocab), vocab, ALPHABET)
