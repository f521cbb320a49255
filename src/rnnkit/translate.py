"""Translating with a Seq2Seq model: batched greedy decoding, batched beam search with a length penalty, BLEU.

Shape letters: B sentences, K beams, S source length, V target vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.generate import length_penalty
from rnnkit.nn.recurrent import map_state

BOS, EOS = 1, 2


def _prepare(model, src: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    device = model.head.weight.device
    lengths = torch.tensor([max(len(s), 1) for s in src], dtype=torch.long)
    x = torch.zeros(len(src), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(src):
        x[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return x.to(device), lengths


def _select(dec, rows: Tensor):
    """The decoding state ``(recurrent state (L, B, H), attentional vector (B, H))`` of batch rows ``rows``."""
    state, a = dec
    return map_state(lambda s: s.index_select(1, rows), state), a.index_select(0, rows)


@torch.no_grad()
def greedy(model, src: Sequence[Sequence[int]], max_length: int = 80,
           attention: bool = False) -> list[list[int]] | tuple[list[list[int]], list[Tensor]]:
    """The most likely next token at every step, for every source sentence at once; each output stops before its
    EOS. ``attention=True`` also returns each sentence's weights ``(output length, S)``."""
    was_training = model.training
    model.eval()
    try:
        x, lengths = _prepare(model, src)
        memory, init = model.encode(x, lengths)
        B = x.shape[0]
        dec = model.start(init, B)
        tokens = torch.full((B,), BOS, dtype=torch.long, device=x.device)
        out, alphas = [], []
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        for _ in range(max_length):
            logits, dec, alpha = model.step(tokens, dec, memory)
            tokens = logits.argmax(-1)
            out.append(tokens)
            alphas.append(alpha)
            done |= tokens == EOS
            if bool(done.all()):
                break
        rows = torch.stack(out, 1).tolist()
        seqs = [r[:r.index(EOS)] if EOS in r else r for r in rows]
        if not attention:
            return seqs
        weights = torch.stack(alphas, 1).cpu()  # (B, T, S)
        return seqs, [weights[i, :len(s) + (1 if len(s) < len(rows[i]) else 0), :int(lengths[i])]
                      for i, s in enumerate(seqs)]
    finally:
        model.train(was_training)


MAX_BEAM = 1024  # hypotheses per sentence; each holds a copy of its sentence's encoder memory


@torch.no_grad()
def beam(model, src: Sequence[Sequence[int]], beam_size: int = 5, max_length: int = 80,
         alpha: float = 0.6) -> list[list[int]]:
    """Beam search for every source sentence at once (B sentences x K beams advance in one batched step); the best
    finished hypothesis of each by log-probability / ``length_penalty(length, alpha)``; EOS not included."""
    if not 1 <= beam_size <= MAX_BEAM:
        raise ConfigError(f"beam size must be 1..{MAX_BEAM} (got {beam_size}) — e.g. --beam 5; wider beams rarely "
                          "raise BLEU")
    if alpha < 0:
        raise ConfigError(f"the length penalty alpha must be >= 0 (got {alpha}) — 0 ranks by log-probability")
    was_training = model.training
    model.eval()
    try:
        return _beam(model, src, beam_size, max_length, alpha)
    finally:
        model.train(was_training)


def _beam(model, src, K: int, max_length: int, alpha: float) -> list[list[int]]:
    x, lengths = _prepare(model, src)
    memory, init = model.encode(x, lengths)
    B = x.shape[0]
    device = x.device
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,): beam k of sentence b is row b*K + k
    memory, dec = memory.select(rows), _select(model.start(init, B), rows)
    tokens = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam per sentence at the start: the others would repeat it
    seqs: list[list[int]] = [[] for _ in range(B * K)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    open_ = [True] * B
    for t in range(max_length):
        logits, dec, _ = model.step(tokens, dec, memory)
        logp = logits.float().log_softmax(-1).view(B, K, -1)  # (B, K, V)
        V = logp.shape[-1]
        top = (scores[:, :, None] + logp).view(B, -1).topk(2 * K, dim=-1)  # (B, 2K)
        new_rows, new_tokens, new_scores = [], [], []
        for b, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
            kept = []
            if open_[b]:
                for score, flat in zip(vals, idx, strict=True):
                    if score == float("-inf"):
                        break
                    k, token = divmod(flat, V)
                    if token == EOS:
                        finished[b].append((score / length_penalty(t + 1, alpha), seqs[b * K + k]))
                    elif len(kept) < K:
                        kept.append((b * K + k, token, score))
                finished[b] = sorted(finished[b], key=lambda f: -f[0])[:K]
                if len(finished[b]) == K and (not kept or max(s for _, _, s in kept) /
                                              length_penalty(max_length, alpha) <= finished[b][-1][0]):
                    open_[b] = False  # no live beam can still beat the K finished ones
                    kept = []
            kept += [(b * K, EOS, float("-inf"))] * (K - len(kept))  # dead rows keep the shape
            for row, token, score in kept:
                new_rows.append(row), new_tokens.append(token), new_scores.append(score)
        if not any(open_):
            break
        if t + 1 == max_length:  # cut off: the live beams compete with the finished ones
            for i, (row, token, score) in enumerate(zip(new_rows, new_tokens, new_scores, strict=True)):
                if score > float("-inf"):
                    b = i // K
                    finished[b].append((score / length_penalty(t + 1, alpha), seqs[row] + [token]))
            break
        sel = torch.as_tensor(new_rows, device=device)
        seqs = [seqs[r] + [tok] for r, tok in zip(new_rows, new_tokens, strict=True)]
        dec = _select(dec, sel)
        tokens = torch.as_tensor(new_tokens, device=device)
        scores = torch.as_tensor(new_scores, device=device).view(B, K)
    return [max(f, key=lambda item: item[0])[1] if f else [] for f in finished]


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]],
         lowercase: bool = False) -> float:
    """Corpus BLEU (sacreBLEU, its default 13a tokenisation); ``references``: one per hypothesis, or several
    reference streams (each as long as ``hypotheses``). ``lowercase`` scores case-insensitively — for a model
    trained on lower-cased text, whose output has no capitals to get right."""
    try:
        import sacrebleu
    except ImportError:
        raise ConfigError("BLEU needs sacreBLEU — pip install 'rnnkit[translate]'") from None
    streams = [list(references)] if references and isinstance(references[0], str) else [list(r) for r in references]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, lowercase=lowercase).score)
