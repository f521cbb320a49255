"""One-to-many: a sequence generated from one input — a class label, or a feature vector through a small encoder.

The condition reaches the recurrent layer in one or both of two ways (``condition``):
- ``init``: it sets the initial hidden state (every layer, and the LSTM's cell), as in show-and-tell captioning;
- ``input``: it joins the embedding of every input step, so the network cannot forget it over a long sequence;
- ``both``, or ``none`` for the same network with no condition at all (the unconditioned baseline).

Shape letters: B batch, T time, E embedding size, H hidden units, L layers, V vocabulary size, F condition features,
C condition vector size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.output import Output, check_recurrent_config
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.recurrent import Recurrent, map_state

CONDITION_MODES = ("init", "input", "both", "none")
ENCODERS = ("auto", "mlp", "conv")


@dataclass
class ConditionalGeneratorConfig:
    """Everything needed to rebuild a ConditionalGenerator; saved as JSON beside the weights."""

    vocab_size: int = field(default=0, metadata={"cli": False})
    num_classes: int = field(default=0, metadata={"cli": False})  # > 0: the condition is a class label
    condition_size: int = field(default=0, metadata={"cli": False})  # > 0: the condition is F features
    image_shape: list[int] | None = field(default=None, metadata={"cli": False})  # (height, width) of conv inputs
    condition: str = field(default="both", metadata={
        "help": "how the condition enters: init (initial state), input (joins every step), both, none"})
    condition_embedding: int = field(default=64, metadata={"help": "size of the condition vector (C)"})
    encoder: str = field(default="auto", metadata={
        "help": "feature-vector encoder: mlp, conv (a small CNN, for images), or auto (conv for images)"})
    encoder_hidden: int = field(default=256, metadata={"help": "hidden units of the feature encoder"})
    condition_dropout: float = field(default=0.1, metadata={
        "help": "labels: the share of training sequences shown with no label, so that one model also scores "
                "unconditioned text"})
    cell: str = field(default="lstm", metadata={"help": f"recurrent cell: {', '.join(CELL_TYPES)}"})
    hidden_size: int = field(default=256, metadata={"help": "hidden units per layer (H)"})
    num_layers: int = field(default=2, metadata={"help": "stacked recurrent layers"})
    embedding_size: int = field(default=64, metadata={"help": "token embedding size (E)"})
    dropout: float = field(default=0.2, metadata={"help": "dropout between layers, before the head and in the encoder"})
    path: str = field(default="auto", metadata={"help": "recurrent path: auto (fused when possible), fused, explicit"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout probability per unit and step (explicit path)"})
    recurrent_dropout: float = field(
        default=0.0, metadata={"help": "dropout on each step's candidate, lstm/gru (explicit path)"})
    members: int = field(default=1, metadata={
        "help": "independently initialised generators trained side by side; their next-token probabilities are "
                "averaged"})

    def __post_init__(self) -> None:
        check_recurrent_config(self)
        if self.members < 1:
            raise ConfigError(f"members must be >= 1 (got {self.members}) — 1 trains a single generator")
        if self.condition not in CONDITION_MODES:
            raise ConfigError(f"unknown --condition {self.condition!r} — use one of {', '.join(CONDITION_MODES)}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown --encoder {self.encoder!r} — use one of {', '.join(ENCODERS)}")
        if self.encoder == "auto":
            self.encoder = "conv" if self.image_shape else "mlp"
        for name in ("condition_embedding", "encoder_hidden"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)}) — pass a positive "
                                  f"--{name.replace('_', '-')}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ConfigError(f"condition_dropout must be in [0, 1) (got {self.condition_dropout})")
        if (self.num_classes > 0) == (self.condition_size > 0):
            raise ConfigError("a conditional generator needs either num_classes or condition_size (not both)")
        if self.encoder == "conv":
            shape = self.image_shape or []
            if len(shape) != 2 or shape[0] * shape[1] != self.condition_size:
                raise ConfigError(f"the conv encoder needs image_shape (height, width) with height * width = "
                                  f"{self.condition_size} features (got {self.image_shape}) — use --encoder mlp")

    def to_dict(self) -> dict:
        return asdict(self)


class ConvEncoder(nn.Module):
    """A small CNN for little grey images given as flat feature vectors: ``(B, H*W) -> (B, C)``."""

    def __init__(self, shape: list[int], hidden: int, out: int, dropout: float) -> None:
        super().__init__()
        h, w = shape
        self.shape = (1, h, w)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(64 * (h // 2) * (w // 2), hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.view(x.shape[0], *self.shape))


class ConditionalGenerator(nn.Module):
    """condition -> vector c; tokens -> embedding (+ c) -> recurrent layer (state from c) -> head.

    ``forward(x (B, T) ids, state=None, targets=None (B, T), lengths=None, condition=None) -> Output(logits (B, T, V),
    loss, state)``. ``condition``: ``(B,)`` class ids or ``(B, F)`` features; ``None`` means "no label" (labels
    only: the extra row a model trained with ``condition_dropout`` learnt for that). A given ``state`` continues a
    sequence (the condition then only joins the inputs); ``state=None`` starts one from the condition.
    ``bind(condition)`` gives a model with the ``forward(x, state)`` / ``step(tokens, state)`` of a language
    model, which ``rnnkit.generate`` and ``beam_search`` sample from.
    """

    def __init__(self, config: ConditionalGeneratorConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ConfigError("vocab_size must be positive — build the vocabulary before the model")
        self.config = c = config
        C = c.condition_embedding
        if c.num_classes > 0:
            self.labels = nn.Embedding(c.num_classes + 1, C)  # the last row: "no label"
        elif c.encoder == "conv":
            self.encoder = ConvEncoder(c.image_shape, c.encoder_hidden, C, c.dropout)
        else:
            self.encoder = nn.Sequential(nn.Linear(c.condition_size, c.encoder_hidden), nn.ReLU(),
                                         nn.Dropout(c.dropout), nn.Linear(c.encoder_hidden, C))
        if c.condition_size > 0:  # features are standardised inside the model with the training statistics
            self.register_buffer("feature_mean", torch.zeros(c.condition_size))
            self.register_buffer("feature_std", torch.ones(c.condition_size))
        self.joins_input = c.condition in ("input", "both")
        self.sets_state = c.condition in ("init", "both")
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        self.rnn = Recurrent(
            c.cell, c.embedding_size + (C if self.joins_input else 0), c.hidden_size, c.num_layers,
            dropout=c.dropout, path=c.path, zoneout=c.zoneout, recurrent_dropout=c.recurrent_dropout,
        )
        self.lstm = isinstance(self.rnn.init_state(1), tuple)
        if self.sets_state:  # c -> every layer's h (and c for the LSTM)
            self.init = nn.Linear(C, c.num_layers * c.hidden_size * (2 if self.lstm else 1))
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def set_scaling(self, mean, std) -> None:
        """Standardise features with these training statistics (saved with the weights)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        std = torch.as_tensor(std, dtype=torch.float32)
        self.feature_std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))  # constant features: as they are

    # -- the condition ---------------------------------------------------------------------------------------
    def encode(self, condition: Tensor | None, batch_size: int) -> Tensor | None:
        """``condition`` -> ``c (B, C)``, or None when the model takes no condition."""
        cfg = self.config
        if cfg.condition == "none":
            return None
        device = self.embedding.weight.device
        if cfg.num_classes > 0:
            if condition is None:  # the "no label" row
                return self.labels(torch.full((batch_size,), cfg.num_classes, dtype=torch.long, device=device))
            condition = condition.to(device)
            if condition.dtype.is_floating_point or condition.shape != (batch_size,):
                raise ConfigError(f"this model takes class ids (B,) as its condition (got {tuple(condition.shape)}) "
                                  "— pass one label per row")
            if batch_size and not 0 <= int(condition.min()) <= int(condition.max()) < cfg.num_classes:
                raise ConfigError(f"class ids must be in 0..{cfg.num_classes - 1} (got {condition.tolist()[:5]}) — "
                                  "pass None for no label")
            if self.training and cfg.condition_dropout > 0:
                drop = torch.rand(batch_size, device=device) < cfg.condition_dropout
                condition = condition.masked_fill(drop, cfg.num_classes)
            return self.labels(condition)
        if condition is None:
            raise ConfigError("this model is conditioned on a feature vector — give one")
        condition = condition.to(device=device, dtype=self.feature_mean.dtype)
        if condition.shape != (batch_size, cfg.condition_size):
            raise ConfigError(f"the condition must have shape ({batch_size}, {cfg.condition_size}) "
                              f"(got {tuple(condition.shape)})")
        return self.encoder((condition - self.feature_mean) / self.feature_std)

    def initial_state(self, c: Tensor | None, batch_size: int) -> State:
        if c is None or not self.sets_state:
            return self.rnn.init_state(batch_size)
        L, H = self.config.num_layers, self.config.hidden_size
        s = torch.tanh(self.init(c)).view(batch_size, -1, L, H).permute(1, 2, 0, 3)  # (1 or 2, L, B, H)
        return (s[0].contiguous(), s[1].contiguous()) if self.lstm else s[0].contiguous()

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None, condition: Tensor | None = None) -> Output:
        return self._run(x, state, targets, lengths, self.encode(condition, x.shape[0]))

    def _run(self, x: Tensor, state: State | None, targets: Tensor | None, lengths: Tensor | None,
             c: Tensor | None) -> Output:
        B, T = x.shape
        emb = self.embedding(x)  # (B, T, E)
        if c is not None and self.joins_input:
            emb = torch.cat([emb, c.to(emb.dtype)[:, None].expand(B, T, -1)], dim=-1)  # (B, T, E + C)
        if state is None:
            state = self.initial_state(c, B)
        y, state = self.rnn(emb, state, lengths)  # (B, T, H)
        logits = self.head(self.drop(y))  # (B, T, V)
        loss = None
        if targets is not None:
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(wide.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return Output(logits, loss, state)

    @torch.no_grad()
    def _step(self, tokens: Tensor, state: State, c: Tensor | None) -> tuple[Tensor, State]:
        emb = self.embedding(tokens)  # (B, E)
        if c is not None and self.joins_input:
            emb = torch.cat([emb, c.expand(tokens.shape[0], -1)], dim=-1)
        y, state = self.rnn.step(emb, state)
        return self.head(y), state

    def bind(self, condition, batch: bool = False) -> Conditioned:
        """This generator with its condition fixed: one condition (a class id or ``(F,)`` features, None for no
        label) shared by every row, or with ``batch=True`` one per row (``(B,)`` ids or ``(B, F)`` features)."""
        return Conditioned(self, condition, batch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GeneratorEnsemble(nn.Module):
    """``members`` ConditionalGenerators whose next-token probabilities are averaged at every step.

    The same interface as one generator. Each member keeps its own condition vector and state; the ensemble's are
    the members' joined along the last dimension (``(B, M*C)``, ``(L, B, M*H)``), so beam search selects rows of
    them as of any state. ``logits`` are log mean probabilities. ``loss`` is the members' mean cross-entropy while
    training, so each member learns on its own, and the cross-entropy of the averaged probabilities in eval mode,
    so validation scores what the ensemble predicts.
    """

    def __init__(self, config: ConditionalGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        one = ConditionalGeneratorConfig(**{**config.to_dict(), "members": 1})
        self.members = nn.ModuleList(ConditionalGenerator(one) for _ in range(config.members))

    def set_scaling(self, mean, std) -> None:
        for m in self.members:
            m.set_scaling(mean, std)

    def encode(self, condition: Tensor | None, batch_size: int) -> Tensor | None:
        cs = [m.encode(condition, batch_size) for m in self.members]
        return None if cs[0] is None else torch.cat(cs, dim=-1)

    def _split(self, state: State | None) -> list:
        if state is None:
            return [None] * len(self.members)
        parts = map_state(lambda s: s.chunk(len(self.members), dim=-1), state)
        return list(zip(*parts, strict=True)) if isinstance(state, tuple) else list(parts)

    def _join(self, states: list) -> State:
        return map_state(lambda *s: torch.cat(s, dim=-1), *states)

    def _chunks(self, c: Tensor | None) -> list:
        return [None] * len(self.members) if c is None else list(c.chunk(len(self.members), dim=-1))

    def _mix(self, logits: list[Tensor]) -> Tensor:
        wide = torch.promote_types(logits[0].dtype, torch.float32)  # bf16 under autocast: mix in fp32
        logp = torch.stack([lg.to(wide).log_softmax(-1) for lg in logits])  # (M, ..., V)
        return logp.logsumexp(0) - math.log(len(logits))

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None, condition: Tensor | None = None) -> Output:
        return self._run(x, state, targets, lengths, self.encode(condition, x.shape[0]))

    def _run(self, x, state, targets, lengths, c) -> Output:
        outs = [m._run(x, s, targets if self.training else None, lengths, ci)
                for m, s, ci in zip(self.members, self._split(state), self._chunks(c), strict=True)]
        logits = self._mix([o.logits for o in outs])  # (B, T, V)
        loss = None
        if targets is not None:
            loss = (torch.stack([o.loss for o in outs]).mean() if self.training else
                    F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX))
        return Output(logits, loss, self._join([o.state for o in outs]))

    @torch.no_grad()
    def _step(self, tokens: Tensor, state: State, c: Tensor | None) -> tuple[Tensor, State]:
        steps = [m._step(tokens, s, ci) for m, s, ci in zip(self.members, self._split(state), self._chunks(c),
                                                             strict=True)]
        return self._mix([lg for lg, _ in steps]), self._join([s for _, s in steps])

    def bind(self, condition, batch: bool = False) -> Conditioned:
        return Conditioned(self, condition, batch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_generator(config: ConditionalGeneratorConfig) -> ConditionalGenerator | GeneratorEnsemble:
    """One generator, or an ensemble of ``config.members``."""
    return ConditionalGenerator(config) if config.members == 1 else GeneratorEnsemble(config)


class Conditioned(nn.Module):
    """A ConditionalGenerator with its condition fixed: the ``forward(x, state)`` / ``step(tokens, state)`` of a
    language model, which ``rnnkit.generate`` and ``beam_search`` sample from. One condition serves any batch size;
    a batch of conditions serves batches of its own size."""

    def __init__(self, generator: ConditionalGenerator | GeneratorEnsemble, condition, batch: bool = False) -> None:
        super().__init__()
        self.generator = generator
        if condition is not None:
            condition = torch.as_tensor(condition)
            condition = condition if batch else condition.unsqueeze(0)  # (n, ...)
        self.condition = condition
        self.train(generator.training)  # a new module starts in training mode: take the generator's

    def _c(self, batch_size: int) -> Tensor | None:
        n = 1 if self.condition is None else self.condition.shape[0]
        if n not in (1, batch_size):
            raise ConfigError(f"{n} conditions for a batch of {batch_size} rows")
        c = self.generator.encode(self.condition, n)
        return None if c is None else c.expand(batch_size, -1)  # (B, C)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None) -> Output:
        return self.generator._run(x, state, targets, None, self._c(x.shape[0]))

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        return self.generator._step(tokens, state, self._c(tokens.shape[0]))
