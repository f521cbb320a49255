"""Using a CTC recogniser: transcripts of many utterances (greedy or beam search), their error rates, and the
picture of where each character was emitted.

``transcribe`` runs the model over ``Utterances`` in batches and decodes every item; with references it also
returns the mean CTC loss per character and the corpus-level character and word error rates (``rnnkit.ctc``).
``char_lm`` fits a character n-gram on transcripts (the training and validation text of the dataset, never the
test text) for the beam search to weigh its prefixes with (shallow fusion: ``score = log P_ctc + w log P_lm + b
per character``); ``RecurrentCharLM`` does the same with a character language model trained by ``rnnkit
train``. ``plot_alignment`` draws an input (an image's pixels, or a log-mel spectrogram) with the best path
under it: each output step's most likely class, characters placed at the frames that emitted them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnkit import ctc
from rnnkit.errors import ConfigError
from rnnkit.nn.recurrent import map_state


@dataclass
class Transcripts:
    """Decoded ``texts``; per item its best ``paths`` (class per output step); with references, ``loss`` (CTC per
    character) and ``rates`` (``cer``, ``wer``, ...)."""

    texts: list[str]
    paths: list[list[int]]
    loss: float | None = None
    rates: dict = field(default_factory=dict)


def char_lm(train_texts: list[str], val_texts: list[str], alphabet, order: int = 5):
    """``lm(prefix) -> log P(next class)`` (K,) for ``ctc.beam_decode``: an interpolated character n-gram
    (``baselines.ngram``; class 0, the blank, stands for the line's end), weights tuned on ``val_texts``."""
    from rnnkit.baselines.ngram import fit_tuned

    ngram = fit_tuned(order, alphabet.num_classes, [alphabet.encode(t) for t in train_texts],
                      [alphabet.encode(t) for t in val_texts], step=0.1)
    return ngram.next_log_probs


class RecurrentCharLM:
    """A character language model (a run of ``rnnkit train``: lines of text, one sentence per line) as the beam
    search's LM: ``rows(prefixes) -> (n, K)`` log-probs of the next class after each prefix of classes.

    The model reads a newline first (a line starts after one), then the prefix's characters; the end of the line
    (class 0's slot) is its newline. Its distribution is renormalised over the recogniser's characters and the
    newline: characters the recogniser cannot write take no share. A character of the recogniser's alphabet that
    the LM never read (``missing``; those in ``required`` are refused) is scored as its least likely character
    and left out of its context. A prefix's state is its parent's stepped by one character, so each frame's new
    prefixes cost one batched step; states are kept per prefix (up to ``max_states``, then dropped and rebuilt
    from the line's start on demand).
    """

    def __init__(self, model: nn.Module, vocab, alphabet, required: str = "", max_states: int = 20_000) -> None:
        lacking = [c for c in dict.fromkeys("\n" + required) if c not in vocab]
        if lacking:
            raise ConfigError(f"the language model's vocabulary lacks {''.join(lacking)!r} — train it on lines of the "
                              "recogniser's training text (rnnkit data lm-text writes them)")
        self.model, self.max_states = model.eval(), max_states
        self.device = next(model.parameters()).device
        self.missing = "".join(c for c in alphabet.chars if c not in vocab)
        known = [0] + [k for k, c in enumerate(alphabet.chars, 1) if c in vocab]  # classes the LM can read
        self.known = torch.as_tensor(known, device=self.device)
        self.columns = torch.as_tensor(vocab.encode("\n" + "".join(alphabet.chars[k - 1] for k in known[1:])),
                                       device=self.device)  # the LM's id of each known class
        self.lm_id = dict(zip(known, self.columns.tolist(), strict=True))
        self.num_classes = alphabet.num_classes
        self.states: dict[tuple[int, ...], tuple] = {}  # prefix -> (log-probs (K,), state after the prefix)

    def _step(self, parents: list[tuple] | None, classes: list[int]) -> list[tuple]:
        """Each parent entry stepped by one class (``parents`` None: the zero state, by the newline) -> entries.
        A class the LM cannot read leaves its parent's entry as it was."""
        rows = [i for i, c in enumerate(classes) if c in self.lm_id]
        out = [None if i in rows else parents[i] for i in range(len(classes))]
        if not rows:
            return out
        if parents is None:
            state = self.model.init_state(len(rows))
        else:
            state = map_state(lambda *s: torch.stack(s, 1), *(parents[i][1] for i in rows))  # (L, n, H)
        tokens = torch.as_tensor([self.lm_id[classes[i]] for i in rows], device=self.device)
        logits, state = self.model.step(tokens, state)
        known = torch.log_softmax(logits.float()[:, self.columns], -1).double()
        full = known.min(-1, keepdim=True).values.expand(-1, self.num_classes).clone()
        full[:, self.known] = known
        full = full.cpu().numpy()
        for j, i in enumerate(rows):
            out[i] = (full[j], map_state(lambda t, j=j: t[:, j], state))
        return out

    def _ensure(self, prefix: tuple[int, ...]) -> None:
        """Rebuild a prefix's entry (and its ancestors') one character at a time from the nearest kept one."""
        k = len(prefix)
        while k and prefix[:k] not in self.states:
            k -= 1
        if () not in self.states:
            self.states[()] = self._step(None, [0])[0]
        for j in range(k + 1, len(prefix) + 1):
            self.states[prefix[:j]] = self._step([self.states[prefix[:j - 1]]], [prefix[j - 1]])[0]

    @torch.inference_mode()
    def rows(self, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        if len(self.states) > self.max_states:
            self.states.clear()
        todo = [p for p in dict.fromkeys(prefixes) if p not in self.states]
        for p in todo:
            self._ensure(p[:-1])  # the parent: kept from the frame before, unless the states were dropped
        todo = [p for p in todo if p]
        if todo:
            stepped = self._step([self.states[p[:-1]] for p in todo], [p[-1] for p in todo])
            self.states.update(zip(todo, stepped, strict=True))
        return np.stack([self.states[p][0] for p in prefixes])

    def __call__(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self.rows([prefix])[0]


@torch.no_grad()
def transcribe(model: nn.Module, utterances, alphabet, device: torch.device | str = "cpu", batch_size: int = 64,
               beam: int | None = None, references: bool = True, lm=None, lm_weight: float = 0.0,
               char_bonus: float = 0.0, lm_end: bool = False) -> Transcripts:
    """Decode every utterance (greedy, or prefix beam search with ``beam`` prefixes, optionally weighed by ``lm``
    (``char_lm``) with ``lm_weight`` and ``char_bonus`` per character); score against the utterances' own
    transcripts when ``references``."""
    was_training = model.training
    model.eval()
    texts, paths, total, count = [], [], 0.0, 0
    for b in utterances.batches(batch_size):
        out = model(b.x.to(device), lengths=b.lengths,
                    targets=b.targets.to(device) if references else None,
                    target_lengths=b.target_lengths if references else None)
        steps = model.output_lengths(b.lengths).clamp_min(1)
        log_probs = out.logits.float().cpu()
        paths += ctc.best_path(log_probs, steps)
        if beam and beam > 1:
            ids = ctc.beam_decode(log_probs, steps, beam=beam, lm=lm, lm_weight=lm_weight, word_bonus=char_bonus,
                                  lm_end=lm_end)
        else:
            ids = ctc.greedy_decode(log_probs, steps)
        texts += [alphabet.decode(x) for x in ids]
        if references:
            total, count = total + out.loss.item() * len(b.lengths), count + len(b.lengths)
    model.train(was_training)
    result = Transcripts(texts, paths)
    if references:
        result.loss = total / max(count, 1)
        result.rates = ctc.error_rates(utterances.texts, texts)
    return result


def plot_alignment(frames: np.ndarray, path: list[int], alphabet, stride: int, out: str | Path, title: str = "",
                   kind: str = "handwriting") -> Path:
    """The input (``frames`` (T, C): rows of an image, or mel bands over time) with the best path under it: each
    non-blank step's character at the frames it covers; a repeated character is drawn once per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(frames)
    width = min(40.0, max(6.0, T / 40, len(path) * 0.16 + 1))  # room for a letter per output step
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 3.4), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.imshow(frames.T, aspect="auto", origin="lower" if kind == "speech" else "upper",
               cmap="magma" if kind == "speech" else "gray_r", extent=(0, T, 0, frames.shape[1]))
    top.set_yticks([])
    top.set_title("\n".join(textwrap.wrap(title, int(width * 14))), fontsize=8, loc="left")
    previous = 0
    for step, cls in enumerate(path):
        x0 = step * stride
        if cls != 0:
            bottom.axvspan(x0, x0 + stride, color="tab:orange" if cls != previous else "tab:olive", alpha=0.35, lw=0)
            if cls != previous:
                top.axvline(x0 + stride / 2, color="tab:orange", lw=0.6, alpha=0.8)
                bottom.text(x0 + stride / 2, 0.5, alphabet.chars[cls - 1] if alphabet.chars[cls - 1] != " " else "␣",
                            ha="center", va="center", fontsize=9, family="monospace")
        previous = cls
    bottom.set_ylim(0, 1)
    bottom.set_yticks([])
    bottom.set_xlim(0, T)
    bottom.set_xlabel(f"input frame (one output step = {stride} frames; shaded: a character's steps, blank: none)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
