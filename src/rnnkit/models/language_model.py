"""Many-to-many: the character-level language model.

Shape letters: B batch, T time, E embedding size, H hidden units, V vocabulary size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.output import Output, check_recurrent_config
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.penalty import activation_penalty
from rnnkit.nn.recurrent import Recurrent


@dataclass
class LanguageModelConfig:
    """Everything needed to rebuild a LanguageModel; saved as JSON beside the weights."""

    vocab_size: int = field(default=0, metadata={"cli": False})
    cell: str = field(default="lstm", metadata={"help": f"recurrent cell: {', '.join(CELL_TYPES)}"})
    hidden_size: int = field(default=512, metadata={"help": "hidden units per layer (H)"})
    num_layers: int = field(default=2, metadata={"help": "stacked recurrent layers"})
    embedding_size: int = field(default=128, metadata={"help": "character embedding size (E)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers and before the head"})
    tie_weights: bool = field(
        default=False, metadata={"help": "share the embedding and output weights (needs E == H)"}
    )
    path: str = field(default="auto", metadata={"help": "recurrent path: auto (fused when possible), fused, explicit"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout probability per unit and step (explicit path)"})
    recurrent_dropout: float = field(
        default=0.0, metadata={"help": "dropout on each step's candidate, lstm/gru (explicit path)"})
    # 0.2 rather than none: three 10-minute Tiny Shakespeare runs with 0.1-0.2 ended at 1.425-1.426 nats/char
    # against 1.433-1.435 without, over two seeds (BENCHMARKS.md, time to quality)
    weight_drop: float = field(default=0.2, metadata={
        "help": "DropConnect on the recurrent weights, one mask per training window (AWD-LSTM; either path); "
                "0 for none"})
    # AWD-LSTM's activation regularisation (Merity et al., 2017), on the top layer's outputs while training.
    # AR 2 / TAR 1 (AWD-LSTM's values): `rnnkit train`'s 10-minute Tiny Shakespeare run, then at weight decay
    # 0.01, ended at 1.3845-1.3896 nats/char over three seeds, against 1.4026-1.4120 without (BENCHMARKS.md)
    activation_reg: float = field(default=2.0, metadata={
        "help": "AR: while training, add this times the mean square of the top layer's outputs to the loss; 0 for "
                "none"})
    temporal_activation_reg: float = field(default=1.0, metadata={
        "help": "TAR: while training, add this times the mean square of the top layer's change from one step to "
                "the next; 0 for none"})

    #: What a saved config that lacks a field trained with: fields added after such runs were written, whose
    #: defaults differ from that (a run from before weight drop existed resumes without it)
    SAVED_WITHOUT: ClassVar[dict] = {"weight_drop": 0.0, "activation_reg": 0.0, "temporal_activation_reg": 0.0}

    def __post_init__(self) -> None:
        check_recurrent_config(self)
        if self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be >= 0 (0: set from the vocabulary) (got {self.vocab_size})")
        if not 0.0 <= self.weight_drop < 1.0:
            raise ConfigError(f"weight_drop must be in [0, 1) (got {self.weight_drop}) — pass --weight-drop between "
                              "0 and 1, e.g. 0.2")
        for name in ("activation_reg", "temporal_activation_reg"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number >= 0 (got {value}) — pass --"
                                  f"{name.replace('_', '-')} such as 1, or 0 for none")
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ConfigError(
                f"tie_weights needs embedding_size == hidden_size (got {self.embedding_size} and "
                f"{self.hidden_size}) — pass --embedding-size {self.hidden_size}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class LanguageModel(nn.Module):
    """embedding -> recurrent layer -> dropout -> linear head, predicting the next token at every step.

    ``forward(x (B, T) token ids, state=None, targets=None (B, T)) -> Output(logits (B, T, V), loss, state,
    penalty)``; ``penalty`` is the activation regularisation in training mode (None in eval mode or when it is off).
    Targets equal to -100 are ignored. ``step(tokens (B,), state)`` advances one token for generation.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ConfigError("vocab_size must be positive — build the vocabulary before the model")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.rnn = Recurrent(
            config.cell, config.embedding_size, config.hidden_size, config.num_layers,
            dropout=config.dropout, path=config.path, zoneout=config.zoneout,
            recurrent_dropout=config.recurrent_dropout, weight_drop=config.weight_drop,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight  # one (V, H) matrix reads and writes characters

    def init_state(self, batch_size: int) -> State:
        return self.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None) -> Output:
        emb = self.embedding(x)  # (B, T, E)
        y, state = self.rnn(emb, state)  # (B, T, H)
        logits = self.head(self.drop(y))  # (B, T, V)
        loss = None
        if targets is not None:
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under autocast: loss in fp32
            loss = F.cross_entropy(wide.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return Output(logits, loss, state, self._activation_penalty(y) if self.training else None)

    def _activation_penalty(self, y: Tensor) -> Tensor | None:
        """AR + TAR on the top layer's outputs ``y (B, T, H)`` (before the head's dropout); None when both are off.

        The change from step to step is taken within the window: the carried state's last output is not kept.
        """
        return activation_penalty(y, self.config.activation_reg, self.config.temporal_activation_reg)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One token per row: ``tokens (B,)`` -> ``(logits (B, V), state)``. Constant work per token."""
        y, state = self.rnn.step(self.embedding(tokens), state)  # (B, H)
        return self.head(y), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
