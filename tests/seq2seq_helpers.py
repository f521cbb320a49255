"""Helpers for the sequence-to-sequence tests: tiny nudged Seq2Seq models and padded batches."""

from __future__ import annotations

import torch

from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS = 0, 1, 2
ATTENTIONS = ("dot", "general", "additive")


def make_model(attention="general", cell="gru", input_feeding=False, num_layers=1, src_vocab=13, tgt_vocab=11,
               hidden=6, emb=5, path="auto", seed=0, eos_bias=0.0, head_scale=1.0, **kw) -> Seq2Seq:
    """A tiny float64 model in eval mode; every parameter nudged so no bias is zero and no structure is special."""
    torch.manual_seed(seed)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, cell=cell, hidden_size=hidden,
                                  embedding_size=emb, num_layers=num_layers, attention=attention,
                                  input_feeding=input_feeding, dropout=0.0, path=path, **kw)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.head.weight.mul_(head_scale)
        model.head.bias[EOS] += eos_bias
    return model.eval()


def batch(seed=1, lengths=(5, 2, 4), tgt_len=4, src_vocab=13, tgt_vocab=11):
    """Sources padded with PAD past their lengths, and a teacher-forced decoder input starting with BOS."""
    g = torch.Generator().manual_seed(seed)
    B, S = len(lengths), max(lengths)
    src = torch.randint(4, src_vocab, (B, S), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = PAD
    tgt_in = torch.randint(3, tgt_vocab, (B, tgt_len), generator=g)
    tgt_in[:, 0] = BOS
    return src, torch.tensor(lengths), tgt_in
