"""Sequence to sequence: a bidirectional recurrent encoder and an attentional recurrent decoder (Luong et al. 2015).

Encoder: source embedding -> bidirectional recurrent layer (packed, so padding never changes a result) -> memory
``m_s = W [fwd_s; bwd_s]``; the decoder's initial state is ``tanh(W [fwd_last; bwd_first])`` per layer.
Decoder, at step t: ``h_t = cell([embedding(y_{t-1}); a_{t-1}], h_{t-1})`` (``a_{t-1}`` only with input feeding),
attention weights over the valid source steps ``α_ts = softmax_s score(h_t, m_s)`` with

- ``dot``: ``h_t · m_s`` and ``general``: ``h_t · W m_s`` (Luong's multiplicative scores),
- ``additive``: ``v · tanh(W_h h_t + W_m m_s)`` (Bahdanau's score, here after the step as in Luong's decoder),

context ``c_t = Σ_s α_ts m_s``, attentional vector ``a_t = tanh(W_c [c_t; h_t])``, logits ``W_o a_t``.
Without input feeding the decoder's recurrence does not depend on attention, so teacher-forced training runs it
over the whole target at once on the fused kernel; input feeding (each step sees the previous step's attentional
vector, so the decoder knows what it attended to) needs a step-by-step loop.

Shape letters: B batch, S source length, T target length, E embedding size, H hidden units, L decoder layers,
V target vocabulary size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.output import Output, check_recurrent_config
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.recurrent import Recurrent, map_state

ATTENTIONS = ("dot", "general", "additive")
PAD = 0


@dataclass
class Seq2SeqConfig:
    """Everything needed to rebuild a Seq2Seq model; saved as JSON beside the weights."""

    src_vocab_size: int = field(default=0, metadata={"cli": False})
    tgt_vocab_size: int = field(default=0, metadata={"cli": False})
    cell: str = field(default="gru", metadata={"help": f"recurrent cell: {', '.join(CELL_TYPES)}"})
    hidden_size: int = field(default=256, metadata={"help": "hidden units per layer and direction (H)"})
    num_layers: int = field(default=1, metadata={"help": "layers of the encoder and of the decoder"})
    embedding_size: int = field(default=256, metadata={"help": "token embedding size (E)"})
    attention: str = field(default="general", metadata={"help": f"attention score: {', '.join(ATTENTIONS)}"})
    input_feeding: bool = field(default=False, metadata={
        "help": "feed each step's attentional vector into the next step (Luong; trains step by step)"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings, between layers, before the head"})
    tie_weights: bool = field(default=False, metadata={
        "help": "share the target embedding and the output weights (needs embedding size == hidden size)"})
    path: str = field(default="auto", metadata={"help": "recurrent path: auto (fused when possible), fused, explicit"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the training loss"})

    def __post_init__(self) -> None:
        check_recurrent_config(self)
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown --attention {self.attention!r} — use one of {', '.join(ATTENTIONS)}")
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ConfigError(f"tie_weights needs embedding_size == hidden_size (got {self.embedding_size} and "
                              f"{self.hidden_size}) — pass --embedding-size {self.hidden_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1) (got {self.label_smoothing}) — e.g. 0.1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Memory:
    """What the encoder hands the decoder: ``m (B, S, H)``, the source ``mask (B, S)`` (True on real tokens), and
    ``keys (B, S, H)`` (the memory as the score function reads it: ``W m`` for general/additive, ``m`` for dot)."""

    m: Tensor
    mask: Tensor
    keys: Tensor

    def select(self, rows: Tensor) -> Memory:
        return Memory(self.m.index_select(0, rows), self.mask.index_select(0, rows), self.keys.index_select(0, rows))


class Seq2Seq(nn.Module):
    """``forward(src (B, S), state=None, targets=None (B, T), lengths=None (B,), tgt_in=None (B, T))
    -> Output(logits (B, T, V), loss, state)``: teacher-forced scores of ``tgt_in`` (BOS + target) against
    ``targets`` (target + EOS, IGNORE_INDEX past the end). ``encode`` / ``start`` / ``step`` decode one token at a
    time (greedy and beam search: ``rnnkit.translate``)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if config.src_vocab_size <= 0 or config.tgt_vocab_size <= 0:
            raise ConfigError("vocabulary sizes must be positive — build the vocabularies before the model")
        self.config = c = config
        H, E, L = c.hidden_size, c.embedding_size, c.num_layers
        self.src_embedding = nn.Embedding(c.src_vocab_size, E, padding_idx=PAD)
        self.encoder = Recurrent(c.cell, E, H, L, bidirectional=True, dropout=c.dropout, path=c.path)
        self.memory = nn.Linear(2 * H, H)  # [fwd_s; bwd_s] -> m_s
        self.bridge = nn.Linear(2 * H, H)  # [fwd_last; bwd_first] -> the decoder's initial state, per layer
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, E, padding_idx=PAD)
        self.decoder = Recurrent(c.cell, E + (H if c.input_feeding else 0), H, L, dropout=c.dropout, path=c.path)
        self.lstm = isinstance(self.decoder.init_state(1), tuple)
        if c.attention == "general":
            self.key = nn.Linear(H, H, bias=False)
        elif c.attention == "additive":
            self.key = nn.Linear(H, H, bias=False)
            self.query = nn.Linear(H, H, bias=True)
            self.v = nn.Linear(H, 1, bias=False)
        self.combine = nn.Linear(2 * H, H, bias=False)  # [c_t; h_t] -> a_t
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(H, c.tgt_vocab_size)
        if c.tie_weights:
            self.head.weight = self.tgt_embedding.weight

    # -- encoder ---------------------------------------------------------------------------------------------
    def encode(self, src: Tensor, lengths: Tensor | None = None) -> tuple[Memory, State]:
        """``src (B, S)`` -> the memory and the decoder's initial state."""
        B, S = src.shape
        if lengths is None:
            lengths = (src != PAD).sum(1).clamp_min(1)
        y, state = self.encoder(self.drop(self.src_embedding(src)), None, lengths.cpu())  # (B, S, 2H)
        m = self.memory(y)  # (B, S, H)
        mask = torch.arange(S, device=src.device)[None, :] < lengths.to(src.device)[:, None]  # (B, S)
        keys = self.key(m) if self.config.attention != "dot" else m

        def bridge(s: Tensor) -> Tensor:  # (2L, B, H), index layer*2 + direction -> (L, B, H)
            s = s.view(self.config.num_layers, 2, B, -1)
            return torch.tanh(self.bridge(torch.cat([s[:, 0], s[:, 1]], dim=-1)))

        return Memory(m, mask, keys), map_state(bridge, state)

    # -- attention -------------------------------------------------------------------------------------------
    def attend(self, h: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """``h (B, T, H)`` decoder outputs -> ``(a (B, T, H) attentional vectors, α (B, T, S) weights)``."""
        if self.config.attention == "additive":
            scores = self.v(torch.tanh(self.query(h)[:, :, None] + memory.keys[:, None])).squeeze(-1)  # (B, T, S)
        else:
            scores = h @ memory.keys.transpose(1, 2)  # (B, T, S)
        scores = scores.masked_fill(~memory.mask[:, None], float("-inf"))
        alpha = scores.softmax(-1)
        context = alpha @ memory.m  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, h], dim=-1))), alpha

    # -- teacher forcing -------------------------------------------------------------------------------------
    def forward(self, src: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None, tgt_in: Tensor | None = None) -> Output:
        if tgt_in is None:
            raise ConfigError("Seq2Seq.forward needs tgt_in, the decoder's input (BOS + target)")
        memory, init = self.encode(src, lengths)
        emb = self.drop(self.tgt_embedding(tgt_in))  # (B, T, E)
        if self.config.input_feeding:
            a = emb.new_zeros(src.shape[0], self.config.hidden_size)
            s, outs = init, []
            for t in range(tgt_in.shape[1]):  # the layer on one step (its `step` is for inference: no grad)
                h, s = self.decoder(torch.cat([emb[:, t], a], dim=-1)[:, None], s)
                a, _ = self.attend(h, memory)
                a = a[:, 0]
                outs.append(a)
            att, state = torch.stack(outs, 1), s
        else:
            h, state = self.decoder(emb, init)  # (B, T, H): the whole target at once
            att, _ = self.attend(h, memory)
        logits = self.head(self.drop(att))  # (B, T, V)
        loss = None
        if targets is not None:
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(wide.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                   label_smoothing=self.config.label_smoothing if self.training else 0.0)
        return Output(logits, loss, state)

    # -- one token at a time ---------------------------------------------------------------------------------
    def start(self, init: State, batch_size: int) -> tuple[State, Tensor]:
        """The decoding state before the first token: the recurrent state and the last attentional vector."""
        w = self.head.weight
        return init, torch.zeros(batch_size, self.config.hidden_size, device=w.device, dtype=w.dtype)

    def step(self, tokens: Tensor, dec: tuple[State, Tensor], memory: Memory
             ) -> tuple[Tensor, tuple[State, Tensor], Tensor]:
        """``tokens (B,)`` -> ``(logits (B, V), next decoding state, α (B, S))``."""
        s, a = dec
        x = self.tgt_embedding(tokens)
        if self.config.input_feeding:
            x = torch.cat([x, a], dim=-1)
        h, s = self.decoder.step(x, s)
        att, alpha = self.attend(h[:, None], memory)
        return self.head(att[:, 0]), (s, att[:, 0]), alpha[:, 0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
