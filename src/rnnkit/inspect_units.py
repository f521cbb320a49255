"""Look inside a trained character model: every unit's activation at every character, the next-character
probabilities, and which units track simple features of the text.

Shape letters: T characters, L layers, H hidden units per layer, V vocabulary size.

``trace`` runs the model's own cells one step at a time over a text, so an LSTM's cell state ``c`` is recorded
beside its output ``h``. ``rank_units`` correlates every unit with ``text_features`` — inside quotes, inside
brackets, position in the line, vowel or consonant — the kind of interpretable cells Karpathy, Johnson and Fei-Fei
found in char-rnn ("Visualizing and Understanding Recurrent Networks", 2015). ``plot_unit`` draws a text coloured
by one unit, as a PNG. Nothing here needs the web extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.nn.recurrent import Recurrent

FEATURES = {
    "in_quotes": "inside double quotes",
    "in_brackets": "inside brackets ( [ {",
    "line_position": "position in the line",
    "vowel": "vowel (1) or consonant (0)",
}
VOWELS = set("aeiouàáâäèéêëìíîïòóôöùúûü")
NEWLINE_MARK = "↵"  # how a newline is drawn in a coloured text
NEGATIVE, POSITIVE = "#4285f4", "#ef5350"  # full-colour ends, light enough to read black text on (as on the page)


@dataclass
class Trace:
    """What the model computed over ``text``: after reading ``text[t]``, ``h[l, t]`` is layer ``l``'s output,
    ``c[l, t]`` its LSTM cell state (None for other cells) and ``probs[t]`` the next character's distribution."""

    text: str
    h: Tensor  # (L, T, H)
    c: Tensor | None  # (L, T, H)
    probs: Tensor  # (T, V)

    @property
    def states(self) -> tuple[str, ...]:
        return ("h", "c") if self.c is not None else ("h",)

    def unit(self, layer: int, state: str, unit: int) -> Tensor:
        """One unit's activation at every character: ``(T,)``. Bad indices raise ConfigError."""
        L, _, H = self.h.shape
        if state not in self.states:
            raise ConfigError(f"unknown state {state!r} — use {' or '.join(self.states)} (c: LSTM cells only)")
        if not 0 <= layer < L:
            raise ConfigError(f"layer must be in 0..{L - 1} (got {layer}) — the model has {L} layer(s)")
        if not 0 <= unit < H:
            raise ConfigError(f"unit must be in 0..{H - 1} (got {unit}) — each layer has {H} units")
        return (self.h if state == "h" else self.c)[layer, :, unit]

    def top_next(self, chars: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """At each position, the ``k`` most likely next characters with their probabilities, most likely first."""
        p, idx = torch.topk(self.probs, min(k, self.probs.shape[-1]), dim=-1)  # (T, k)
        return [[(chars[i], round(q, 4)) for i, q in zip(row_i, row_p, strict=True)]
                for row_i, row_p in zip(idx.tolist(), p.tolist(), strict=True)]


def check_inspectable(model) -> Recurrent:
    """The model's recurrent layer, if the model is embedding -> unidirectional Recurrent -> head."""
    rnn = getattr(model, "rnn", None)
    if not isinstance(rnn, Recurrent) or rnn.bidirectional or not hasattr(model, "embedding") \
            or not hasattr(model, "head"):
        raise ConfigError("only character language models (embedding -> one-way recurrent layer -> head) can be "
                          "inspected — pass a run directory made by `rnnkit train`")
    return rnn


@torch.inference_mode()
def trace(model, ids: list[int] | Tensor, text: str = "") -> Trace:
    """Run ``model`` over the token ids one step of its cells at a time, from the zero state, recording everything.

    Each layer's input half is computed for the whole text at once; the loop then steps the cell as
    ``Recurrent`` does, keeping each state. Runs in evaluation mode (no dropout; zoneout at its expectation).
    """
    rnn = check_inspectable(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.dim() != 1 or len(ids) == 0:
        raise ConfigError("the text is empty — pass at least one character")
    was_training = model.training
    model.eval()
    try:
        x = model.embedding(ids)[None]  # (1, T, E)
        hs, cs = [], []
        for cell in rnn.cells:
            s = cell.init_state(1, device, x.dtype)
            outs, mems = [], []
            for gx in cell.input_projection(x).unbind(1):  # T x (1, G*H)
                s = cell.step(gx, s)
                outs.append(cell.output(s))
                if isinstance(s, tuple):
                    mems.append(s[1])
            x = torch.stack(outs, dim=1)  # (1, T, H)
            hs.append(x[0])
            if mems:
                cs.append(torch.cat(mems))  # (T, H)
        probs = model.head(x[0]).float().softmax(-1)  # (T, V)
    finally:
        model.train(was_training)
    h = torch.stack(hs).float().cpu()  # (L, T, H)
    c = torch.stack(cs).float().cpu() if cs else None
    return Trace(text, h, c, probs.cpu())


def trace_text(model, vocab, text: str) -> Trace:
    """``trace`` over a string; characters outside the vocabulary raise VocabularyError naming them."""
    if not text:
        raise ConfigError("the text is empty — pass at least one character")
    return trace(model, vocab.encode(text), text)


# -- features and ranking --------------------------------------------------------------------------------------
def text_features(text: str) -> dict[str, np.ndarray]:
    """One value per character for each of ``FEATURES``, describing the text up to and including that character
    (an opening quote is inside, a closing one outside); NaN where a feature does not apply (``vowel`` at a
    character that is not a letter)."""
    T = len(text)
    out = {name: np.zeros(T) for name in FEATURES}
    out["vowel"][:] = np.nan
    inside, depth, column = False, 0, 0
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        elif ch in "“”":
            inside = ch == "“"
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        out["in_quotes"][t] = inside
        out["in_brackets"][t] = depth > 0
        out["line_position"][t] = column
        column = 0 if ch == "\n" else column + 1
        if ch.isalpha():
            out["vowel"][t] = ch.lower() in VOWELS
    return out


def correlations(feature: np.ndarray, acts: np.ndarray) -> np.ndarray | None:
    """Pearson r of ``feature (T,)`` with each column of ``acts (T, N)``, over the positions where the feature is
    defined; None when it is constant there (nothing to track). A unit that never moves gets r = 0."""
    keep = ~np.isnan(feature)
    f, a = feature[keep].astype(np.float64), acts[keep].astype(np.float64)
    if f.size < 2 or f.std() == 0:
        return None
    f = (f - f.mean()) / f.std()
    a = a - a.mean(axis=0)
    sd = a.std(axis=0)
    return (f[:, None] * a).mean(axis=0) / np.where(sd > 0, sd, np.inf)


def rank_units(tr: Trace, top: int = 5) -> dict[str, dict]:
    """For each feature: the ``top`` units by |r|, as ``{"layer", "state", "unit", "r"}``, strongest first.

    ``available`` is False (and the list empty) when the text never varies the feature, e.g. holds no quotes.
    """
    L, T, H = tr.h.shape
    blocks = [(state, layer) for state in tr.states for layer in range(L)]
    acts = torch.cat([(tr.h if s == "h" else tr.c)[layer] for s, layer in blocks], dim=1).numpy()  # (T, S*L*H)
    ranking = {}
    for name, feature in text_features(tr.text).items():
        r = correlations(feature, acts)
        units = []
        if r is not None:
            for j in np.argsort(-np.abs(r), kind="stable")[:top]:
                state, layer = blocks[j // H]
                units.append({"layer": layer, "state": state, "unit": int(j % H), "r": round(float(r[j]), 4)})
        ranking[name] = {"label": FEATURES[name], "available": r is not None, "units": units}
    return ranking


def colour_scale(values: Tensor, state: str) -> float:
    """The activation drawn at full colour: 1 for ``h`` (tanh-bounded), the largest |value| for a cell state."""
    if state == "h":
        return 1.0
    return max(float(values.abs().max()), 1e-6)


# -- static picture ---------------------------------------------------------------------------------------------
def plot_unit(text: str, values, vmax: float, path: Path, title: str = "", width: int = 80) -> Path:
    """Draw ``text`` in a monospace grid, each character on a background coloured by its value (blue negative,
    red positive, white zero; full colour at ±``vmax``), wrapped at newlines and at ``width`` columns."""
    from rnnkit.plots import save_figure, subplots  # matplotlib is imported here, on the first plot

    values = np.asarray(values, dtype=np.float64)
    cells, row, col = [], 0, 0
    for ch in text:
        if col == width:
            row, col = row + 1, 0
        cells.append((row, col, NEWLINE_MARK if ch == "\n" else ch))
        row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
    rows = cells[-1][0] + 1
    cols = max(c for _, c, _ in cells) + 1
    grid = np.full((rows, cols), np.nan)
    for (r, c, _), v in zip(cells, values, strict=True):
        grid[r, c] = v
    fig, ax = subplots(figsize=(1.4 + 0.09 * cols, 0.9 + 0.22 * rows), dpi=110)
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("unit", [NEGATIVE, "white", POSITIVE])
    image = ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    for r, c, ch in cells:
        ax.text(c, r, ch, ha="center", va="center", family="monospace", fontsize=9,
                color="0.55" if ch == NEWLINE_MARK else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    return save_figure(fig, path)
