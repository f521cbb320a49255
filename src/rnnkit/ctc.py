"""CTC decoding (best path, greedy, prefix beam search) and corpus error rates (CER, WER).

Conventions: class 0 is the CTC blank, classes 1..K-1 are the characters of an alphabet string (class i is
``alphabet[i - 1]``), as ``torch.nn.CTCLoss(blank=0)`` is trained. Log-probs are batch-first ``(B, T, K)`` — the
transpose of what ``ctc_loss`` takes — or one sequence ``(T, K)``; either way the decoders return one list per
sequence (a single ``(T, K)`` gives a list of one). ``lengths (B,)`` marks the valid frames; frames past a length
are never read.

Decisions:

- The beam search runs in float64 numpy, one sequence at a time, vectorised over (prefix, class) within a frame:
  every prefix is extended by every candidate class at once as a ``(beam, classes)`` matrix, and only the ``beam``
  survivors become Python tuples. Without an LM the candidates are the frame's top ``beam + 1`` classes, which
  loses nothing: in a prefix's row every entry but one is at least as good as it looks from the frame's ranking —
  an extension that merges into a prefix already in the beam hands its mass to that prefix's own entry — and only
  the repeat of the last character (allowed after a blank only) can be worth less, so a class ranked below
  ``beam + 1`` always has ``beam`` entries at least as good. With a beam holding every prefix the search is exact:
  it returns each labeling with its full CTC probability, the sum over all the paths that collapse to it — what
  ``exp(-ctc_loss)`` gives. 600 lines x 150 frames, K=80, beam 10: about 4 s on one core.
- Per prefix it keeps two log-probabilities, of the paths ending in blank and of those ending in a character, so
  "aa" (needs a blank between) and "a" (repeat merged) are told apart — Graves' prefix search / Hannun et al. 2014.
- Language model (shallow fusion) and insertion bonus are a function of the prefix alone — ``lm_weight * log
  P_lm(c | prefix) + word_bonus`` summed over the appended characters — kept apart from the CTC probability, so
  merging two paths into one prefix never mixes scores; the ranking is CTC log-prob + that sum. The LM is called
  once per distinct prefix (cached); an LM with a ``rows(prefixes) -> (n, K)`` method gets each frame's new
  prefixes in one call instead (a recurrent LM steps them as one batch).
- Error rates are corpus-level: total edits / total reference length, not a mean of per-line rates (short lines
  would weigh as much as long ones). The alignment counts come from jiwer, the standard tool; words are split on
  any whitespace, characters are counted on each line stripped of leading and trailing whitespace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from rnnkit.errors import ConfigError

LanguageModel = Callable[[tuple[int, ...]], "Tensor | np.ndarray | Sequence[float]"]
Beam = list[tuple[tuple[int, ...], float, float]]  # (prefix, CTC log-prob, ranking score), best first

_NEG_INF = -math.inf


def _batch(log_probs: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None) -> tuple[Tensor, list[int]]:
    """-> ``(B, T, K)`` tensor and the valid length of each sequence."""
    lp = torch.as_tensor(log_probs)
    if lp.dim() == 2:
        lp = lp.unsqueeze(0)
    if lp.dim() != 3:
        raise ConfigError(f"log-probs must be (B, T, K) or (T, K) (got shape {tuple(lp.shape)})")
    B, T, _ = lp.shape
    if lengths is None:
        return lp, [T] * B
    lens = [int(n) for n in torch.as_tensor(lengths).reshape(-1).tolist()]
    if len(lens) != B or any(not 0 <= n <= T for n in lens):
        raise ConfigError(f"lengths must be {B} values in [0, {T}] (got {lens}) — one valid length per sequence")
    return lp, lens


def best_path(log_probs: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None = None) -> list[list[int]]:
    """``(B, T, K)`` or ``(T, K)`` -> each sequence's per-frame argmax class over its valid frames.

    This is the alignment the greedy decoder reads: where each character was emitted, blanks included.
    """
    lp, lens = _batch(log_probs, lengths)
    arg = lp.argmax(-1).tolist()
    return [row[:n] for row, n in zip(arg, lens, strict=True)]


def collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """Merge repeats, then drop blanks: ``[1, 1, 0, 1, 2, 2, 0] -> [1, 1, 2]``."""
    out: list[int] = []
    prev = None
    for c in path:
        c = int(c)
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def greedy_decode(log_probs: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None = None) -> list[list[int]]:
    """Best path, collapsed: fast, and usually within a hair of the beam search on a well-trained model."""
    return [collapse(p) for p in best_path(log_probs, lengths)]


def decode_text(ids: Sequence[int], alphabet: str) -> str:
    """Class ids -> text: class i is ``alphabet[i - 1]`` (class 0, the blank, has no character)."""
    bad = [i for i in ids if not 1 <= i <= len(alphabet)]
    if bad:
        raise ConfigError(f"class ids {bad[:5]} are outside 1..{len(alphabet)} — collapse the path (drop blanks) "
                          "and decode with the alphabet the model was trained on")
    return "".join(alphabet[i - 1] for i in ids)


def prefix_beam_search(log_probs: Tensor | np.ndarray, beam: int = 10, lm: LanguageModel | None = None,
                       lm_weight: float = 0.0, word_bonus: float = 0.0, prune: float | None = None,
                       blank: int = 0, lm_end: bool = False) -> Beam:
    """CTC prefix beam search over one sequence ``(T, K)`` of log-probs.

    Returns the final beam, best first, as ``(prefix, ctc_logp, score)``: ``ctc_logp`` is the log of the summed
    probability of the paths the search kept that collapse to ``prefix`` (all of them when the beam never had to
    drop a prefix), ``score`` adds the LM and insertion terms and ranks the beam.
    """
    if beam < 1:
        raise ConfigError(f"beam must be >= 1 (got {beam}) — e.g. 10; 1 is a greedy search over prefixes")
    lp = torch.as_tensor(log_probs).detach().to("cpu", torch.float64).numpy()
    if lp.ndim != 2:
        raise ConfigError(f"one sequence's log-probs must be (T, K) (got shape {lp.shape})")
    K = lp.shape[1]
    use_lm = lm is not None and lm_weight != 0.0
    lm_cache: dict[tuple[int, ...], np.ndarray] = {}

    def lm_rows(prefixes: list[tuple[int, ...]]) -> np.ndarray:
        """``(len(prefixes), K)``: each prefix's next-class log-probs, the new ones asked for in one call."""
        todo = [p for p in prefixes if p not in lm_cache]
        if todo:
            rows = lm.rows(todo) if hasattr(lm, "rows") else [lm(p) for p in todo]
            for p, row in zip(todo, rows, strict=True):
                row = torch.as_tensor(row).detach().to("cpu", torch.float64).numpy().reshape(-1)
                if row.shape[0] != K:
                    raise ConfigError(f"the language model must return {K} log-probs, one per class "
                                      f"(got {row.shape[0]})")
                lm_cache[p] = row
        return np.stack([lm_cache[p] for p in prefixes])

    chars = np.array([c for c in range(K) if c != blank], dtype=np.int64)
    top = beam + 1  # without an LM, a class below the frame's top beam + 1 never makes the beam (docstring)
    prefixes: list[tuple[int, ...]] = [()]
    pb, pnb, extra = np.zeros(1), np.full(1, _NEG_INF), np.zeros(1)  # ends in blank / in a character / LM + bonus
    for row in lp:
        cand = chars if prune is None else chars[row[chars] >= prune]
        if not use_lm and len(cand) > top:
            cand = cand[np.argpartition(-row[cand], top - 1)[:top]]
        n, c = len(prefixes), len(cand)
        last = np.array([p[-1] if p else -1 for p in prefixes], dtype=np.int64)
        total = np.logaddexp(pb, pnb)
        stay_b = total + row[blank]
        stay_nb = np.where(last >= 0, pnb + row[np.maximum(last, 0)], _NEG_INF)  # the last character repeated
        # appending c: from any path, or only from paths ending in blank when c repeats the last character
        ext = np.where(last[:, None] == cand[None, :], pb[:, None], total[:, None]) + row[cand][None, :]
        index = {p: i for i, p in enumerate(prefixes)}
        merge = [(j, i) for j, i in enumerate(index.get(p[:-1], -1) if p else -1 for p in prefixes) if i >= 0]
        if merge:  # prefix j's parent i is also in the beam: i extended by j's last character is j, merge the two
            js, parents = np.array(merge).T
            ch = last[js]
            src = np.where(last[parents] == ch, pb[parents], total[parents])  # a repeat only follows a blank
            stay_nb[js] = np.logaddexp(stay_nb[js], src + row[ch])
            col_of = np.full(K, -1, dtype=np.int64)
            col_of[cand] = np.arange(c)
            hit = col_of[ch] >= 0  # the extension was among this frame's candidates: drop the duplicate
            ext[parents[hit], col_of[ch][hit]] = _NEG_INF
        ext_extra = np.repeat(extra + word_bonus, c)
        if use_lm:
            ext_extra += lm_weight * lm_rows(prefixes)[:, cand].ravel()
        scores = np.concatenate([np.logaddexp(stay_b, stay_nb) + extra, ext.ravel() + ext_extra])
        keep = np.argpartition(-scores, beam - 1)[:beam] if len(scores) > beam else np.arange(len(scores))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        alive = keep[scores[keep] > _NEG_INF]
        keep = alive if len(alive) else keep[:1]
        prefixes = [prefixes[k] if k < n else prefixes[(k - n) // c] + (int(cand[(k - n) % c]),) for k in keep]
        pb = np.concatenate([stay_b, np.full(n * c, _NEG_INF)])[keep]
        pnb = np.concatenate([stay_nb, ext.ravel()])[keep]
        extra = np.concatenate([extra, ext_extra])[keep]
    ctc = np.logaddexp(pb, pnb)
    if use_lm and lm_end:  # the LM's probability that the line ends here (class ``blank``'s slot)
        extra = extra + lm_weight * lm_rows(prefixes)[:, blank]
    order = np.argsort(-(ctc + extra), kind="stable")
    return [(prefixes[k], float(ctc[k]), float(ctc[k] + extra[k])) for k in order]


def beam_decode(log_probs: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None = None, beam: int = 10,
                lm: LanguageModel | None = None, lm_weight: float = 0.0, word_bonus: float = 0.0,
                prune: float | None = None, lm_end: bool = False) -> list[list[int]]:
    """CTC prefix beam search: ``(B, T, K)`` or ``(T, K)`` log-probs -> the best label sequence per sequence.

    ``lm(prefix: tuple[int, ...])`` returns log-probs over the next class (size K; index 0 unused), added with
    weight ``lm_weight`` when a character is appended (shallow fusion); ``word_bonus`` is added per appended
    character (it offsets the LM's pull towards short outputs). ``prune`` skips, at each frame, the classes whose
    log-prob is below it.
    """
    lp, lens = _batch(log_probs, lengths)
    lp = lp.detach().to("cpu", torch.float64)
    return [list(prefix_beam_search(lp[b, :n], beam, lm, lm_weight, word_bonus, prune, lm_end=lm_end)[0][0])
            for b, n in enumerate(lens)]


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions that turn ``a`` into ``b``."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _rate(edits: int, total: int) -> float:
    if total:
        return edits / total
    return 0.0 if edits == 0 else math.inf  # every reference empty: any output at all is infinitely wrong


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus character and word error rates: ``{"cer", "wer", "chars", "words"}``.

    Each rate is total edits (substitutions + deletions + insertions) over total reference length — ``chars``
    and ``words`` — across the corpus. Words are split on whitespace; characters (spaces included) are counted
    on each line stripped of leading and trailing whitespace.
    """
    try:
        import jiwer
    except ImportError:
        raise ConfigError("error rates need jiwer — pip install 'rnnkit[recognize]'") from None
    if isinstance(references, str) or isinstance(hypotheses, str) or len(references) != len(hypotheses):
        raise ConfigError("references and hypotheses must be lists of lines of the same length "
                          f"(got {len(references)} and {len(hypotheses)})")
    if not references:
        return {"cer": 0.0, "wer": 0.0, "chars": 0, "words": 0}
    c = jiwer.process_characters([r.strip() for r in references], [h.strip() for h in hypotheses])
    w = jiwer.process_words([" ".join(r.split()) for r in references], [" ".join(h.split()) for h in hypotheses])
    chars, words = c.hits + c.substitutions + c.deletions, w.hits + w.substitutions + w.deletions
    return {"cer": _rate(c.substitutions + c.deletions + c.insertions, chars),
            "wer": _rate(w.substitutions + w.deletions + w.insertions, words), "chars": chars, "words": words}
