"""rnnkit.inspect_units: traced activations equal the model stepped by hand, features and rankings are right on
texts where the answer is known, and the PNG shows the colours."""

import numpy as np
import pytest
import torch

from rnnkit.data import CharVocab
from rnnkit.errors import ConfigError, VocabularyError
from rnnkit.inspect_units import (
    Trace,
    check_inspectable,
    correlations,
    plot_unit,
    rank_units,
    text_features,
    trace_text,
)
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig

TEXT = 'say "hi" (to [me])\nand so on.\n'


def model_for(cell: str, vocab: CharVocab, **kw) -> LanguageModel:
    torch.manual_seed(0)
    config = LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=12, num_layers=2, embedding_size=6,
                                 **kw)
    return LanguageModel(config).eval()


@pytest.mark.parametrize("cell, extra", [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn_relu", {}),
                                         ("lstm", {"zoneout": 0.3, "dropout": 0.2})])
def test_trace_equals_the_model_stepped_one_character_at_a_time(cell, extra):
    vocab = CharVocab(TEXT)
    model = model_for(cell, vocab, **extra)
    tr = trace_text(model, vocab, TEXT)
    ids = torch.as_tensor(vocab.encode(TEXT))
    L, T, H = tr.h.shape
    assert (L, T, H) == (2, len(TEXT), 12) and tr.probs.shape == (T, len(vocab))
    state = model.init_state(1)
    for t in range(T):  # the reference: LanguageModel.step, one token, every layer, as generation runs it
        logits, state = model.step(ids[t:t + 1], state)
        h, c = state if isinstance(state, tuple) else (state, None)
        torch.testing.assert_close(tr.h[:, t], h[:, 0], atol=1e-6, rtol=1e-5)
        if cell == "lstm":
            torch.testing.assert_close(tr.c[:, t], c[:, 0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tr.probs[t], logits[0].softmax(-1), atol=1e-6, rtol=1e-5)
    assert (tr.c is not None) == (cell == "lstm") and tr.states == (("h", "c") if cell == "lstm" else ("h",))
    whole = model(ids[None]).logits[0].softmax(-1)  # and the whole-sequence forward (the fused kernel)
    torch.testing.assert_close(tr.probs, whole, atol=1e-5, rtol=1e-4)
    assert not model.training


def test_trace_leaves_training_mode_and_rejects_what_it_cannot_read():
    vocab = CharVocab(TEXT)
    model = model_for("gru", vocab).train()
    trace_text(model, vocab, "say")
    assert model.training
    with pytest.raises(ConfigError, match="empty"):
        trace_text(model, vocab, "")
    with pytest.raises(VocabularyError, match="'Z'"):
        trace_text(model, vocab, "saZ")
    model.rnn.bidirectional = True
    with pytest.raises(ConfigError, match="rnnkit train"):
        check_inspectable(model)
    with pytest.raises(ConfigError, match="rnnkit train"):
        check_inspectable(torch.nn.Linear(2, 2))


def test_unit_and_top_next():
    tr = Trace("ab", torch.arange(12.0).view(2, 2, 3), None,
               torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    assert tr.unit(1, "h", 2).tolist() == [8.0, 11.0]
    for bad, match in (((2, "h", 0), "layer"), ((0, "h", 3), "unit"), ((0, "c", 0), "state")):
        with pytest.raises(ConfigError, match=match):
            tr.unit(*bad)
    assert tr.top_next(["x", "y", "z"], k=2) == [[("y", 0.6), ("z", 0.3)], [("x", 0.5), ("z", 0.3)]]


def test_text_features():
    f = text_features('a"bc"d (e[f)g)\nxy “q”!')
    assert f["in_quotes"].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert f["in_brackets"].tolist() == [0] * 7 + [1, 1, 1, 1, 1, 1, 0] + [0] * 8
    assert f["line_position"].tolist() == list(range(15)) + list(range(7))
    vowel = f["vowel"]
    assert vowel[0] == 1 and vowel[2] == 0 and np.isnan(vowel[1]) and np.isnan(vowel[14])  # '"' and '\n'


def test_correlations_find_a_planted_unit():
    rng = np.random.default_rng(0)
    feature = np.tile(np.arange(10.0), 20)  # (200,) like a line position
    acts = rng.normal(size=(200, 6))
    acts[:, 4] = -0.5 * feature + 3  # tracks it exactly, with the opposite sign
    acts[:, 1] = 7.0  # never moves
    r = correlations(feature, acts)
    assert r[4] == pytest.approx(-1.0) and r[1] == 0.0 and np.abs(np.delete(r, 4)).max() < 0.3
    with_gaps = feature.copy()
    with_gaps[::3] = np.nan  # undefined positions are left out, not counted as zero
    assert correlations(with_gaps, acts)[4] == pytest.approx(-1.0)
    assert correlations(np.ones(200), acts) is None


def test_rank_units_orders_by_strength_and_names_units():
    text = "ab\n" * 30
    T, H = len(text), 4
    h = torch.randn(2, T, H) * 0.01
    column = torch.tensor(text_features(text)["line_position"], dtype=torch.float32)
    h[1, :, 2] = column  # layer 1, unit 2 is a line-position unit
    c = torch.randn(2, T, H) * 0.01
    c[0, :, 3] = -column
    ranking = rank_units(Trace(text, h, c, torch.full((T, 3), 1 / 3)), top=3)
    units = ranking["line_position"]["units"]
    assert {(u["layer"], u["state"], u["unit"]) for u in units[:2]} == {(1, "h", 2), (0, "c", 3)}
    assert [abs(u["r"]) for u in units[:2]] == [pytest.approx(1.0)] * 2 and abs(units[2]["r"]) < 0.9
    assert not ranking["in_quotes"]["available"] and ranking["in_quotes"]["units"] == []
    assert ranking["vowel"]["available"]


def test_plot_unit_colours_negative_blue_and_positive_red(tmp_path):
    import matplotlib.image

    text = "hello\nworld, a longer line that wraps"
    values = np.where(np.arange(len(text)) < 6, -1.0, 1.0)
    path = plot_unit(text, values, 1.0, tmp_path / "u.png", title="unit", width=12)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)[..., :3]
    red = (pixels[..., 0] > 0.8) & (pixels[..., 2] < 0.4)
    blue = (pixels[..., 2] > 0.8) & (pixels[..., 0] < 0.4)
    assert red.sum() > 500 and blue.sum() > 500
