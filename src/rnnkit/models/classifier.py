"""Many-to-one: a sequence in, one class out (sentiment, a name's language, a spoken vowel's speaker).

Shape letters: B batch, T time, C input features, E embedding size, H hidden units, D directions, K classes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.labeled import PAD_ID, UNK_ID
from rnnkit.errors import ConfigError
from rnnkit.models.output import Output, check_recurrent_config
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.recurrent import Recurrent

POOLING = ("last", "mean", "attention")


@dataclass
class EncoderConfig:
    """The recurrent encoder many-to-one models share; token inputs when ``vocab_size`` > 0, else ``input_size``
    features per step."""

    vocab_size: int = field(default=0, metadata={"cli": False})
    input_size: int = field(default=0, metadata={"cli": False})
    cell: str = field(default="lstm", metadata={"help": f"recurrent cell: {', '.join(CELL_TYPES)}"})
    hidden_size: int = field(default=128, metadata={"help": "hidden units per layer and direction (H)"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    bidirectional: bool = field(default=True, metadata={"help": "read each sequence both ways"})
    embedding_size: int = field(default=64, metadata={"help": "token embedding size (E), for token inputs"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings, between layers and before the head"})
    path: str = field(default="auto", metadata={"help": "recurrent path: auto (fused when possible), fused, explicit"})
    input_noise: float = field(default=0.0, metadata={
        "help": "std of Gaussian noise added to standardised features while training (feature inputs)"})
    token_dropout: float = field(default=0.0, metadata={
        "help": "fraction of input tokens replaced by <unk> while training (token inputs)"})

    def __post_init__(self) -> None:
        check_recurrent_config(self)
        if self.vocab_size < 0 or self.input_size < 0:
            raise ConfigError("vocab_size and input_size must be >= 0")
        if self.input_noise < 0:
            raise ConfigError(f"input_noise must be >= 0 (got {self.input_noise})")
        if not 0 <= self.token_dropout < 1:
            raise ConfigError(f"token_dropout must be in [0, 1) (got {self.token_dropout}) — 0.1 replaces one "
                              "token in ten by <unk>, 0 none")

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Token embedding (or standardised features) -> dropout -> front end, if any -> recurrent layer;
    ``(y (B, T, D*H), state)``. With ``beside``, the front end reads the same inputs as the recurrent layer instead
    of feeding it, and its channels follow the recurrent features: ``y (B, T, D*H + channels)``.

    Feature inputs are standardised inside the model, ``(x - input_mean) / input_std``, with statistics fitted on
    the training data (``set_scaling``) and saved with the weights, so a checkpoint takes raw features. While
    training, a ``token_dropout`` fraction of token ids (never padding) become ``<unk>``: the model cannot lean on
    any one character or word, and a name or sentence seen in training is not simply recalled.
    """

    def __init__(self, config: EncoderConfig, frontend: ConvFrontEnd | None = None, beside: bool = False) -> None:
        super().__init__()
        if (config.vocab_size > 0) == (config.input_size > 0):
            raise ConfigError("give exactly one of vocab_size (token inputs) and input_size (feature inputs)")
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=PAD_ID) \
            if config.vocab_size else None
        size = config.embedding_size if config.vocab_size else config.input_size
        self.input_noise, self.token_dropout = config.input_noise, config.token_dropout
        self.drop = nn.Dropout(config.dropout)
        self.frontend, self.beside = frontend, beside
        if frontend is not None and not beside:
            size = frontend.output_size
        self.rnn = Recurrent(config.cell, size, config.hidden_size, config.num_layers,
                             bidirectional=config.bidirectional, dropout=config.dropout, path=config.path)
        self.output_size = config.hidden_size * (2 if config.bidirectional else 1) \
            + (frontend.output_size if beside else 0)
        if config.input_size:
            self.register_buffer("input_mean", torch.zeros(config.input_size))
            self.register_buffer("input_std", torch.ones(config.input_size))

    def set_scaling(self, mean, std) -> None:
        """Per-feature statistics of the training data (see ``rnnkit.data.series.fit_scaler``)."""
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor, state: State | None, lengths: Tensor | None) -> tuple[Tensor, State]:
        if self.embedding is not None and self.training and self.token_dropout:
            hit = torch.rand(x.shape, device=x.device) < self.token_dropout
            x = x.masked_fill(hit & (x != PAD_ID), UNK_ID)  # padding stays padding
        if self.embedding is not None and x.dim() == 3:  # subword ids (B, T, K): average each word's pieces
            n = (x != PAD_ID).sum(-1, keepdim=True).clamp(min=1)  # (B, T, 1)
            inputs = self.embedding(x).sum(2) / n  # (B, T, E); <pad> rows are zero
        elif self.embedding is not None:
            inputs = self.embedding(x)  # (B, T, E)
        else:
            if x.dim() != 3 or x.shape[-1] != self.input_mean.shape[0]:
                raise ConfigError(f"inputs of shape {tuple(x.shape)} do not fit this model's "
                                  f"{self.input_mean.shape[0]} features per step — pass series like the training data")
            inputs = (x - self.input_mean) / self.input_std  # (B, T, C)
            if self.training and self.input_noise:
                inputs = inputs + self.input_noise * torch.randn_like(inputs)
        inputs = self.drop(inputs)
        if self.frontend is not None and self.beside:  # both read the inputs; their features side by side
            y, state = self.rnn(inputs, state, lengths)
            return torch.cat([y, self.frontend(inputs, lengths)], dim=-1), state  # (B, T, D*H + channels)
        if self.frontend is not None:
            inputs = self.frontend(inputs, lengths)  # (B, T, channels)
        return self.rnn(inputs, state, lengths)  # (B, T, D*H)


def valid_mask(lengths: Tensor | None, B: int, T: int, device: torch.device) -> Tensor:
    """``(B, T)`` True where a step is inside its sequence."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]


class ConvFrontEnd(nn.Module):
    """1-D convolutions over time before the recurrent layer (as in LSTM-FCN): each block is a "same"-padded
    convolution, layer normalisation over the channels of each step, and ReLU.

    ``(x (B, T, S), lengths) -> (B, T, channels)``. Steps past a sequence's length are zeroed before every
    convolution, so a valid step near the end reads the zeros that the convolution's own padding would give: padding
    a batch never changes a valid step's output. (Layer norm acts per step, so no statistic mixes padding in.)
    """

    def __init__(self, size: int, channels: int, kernel: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(size if i == 0 else channels, channels, kernel, padding=kernel // 2)
                                   for i in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))
        self.output_size = channels

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        pad = ~valid_mask(lengths, x.shape[0], x.shape[1], x.device).unsqueeze(-1)  # (B, T, 1)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x.masked_fill(pad, 0.0).transpose(1, 2)).transpose(1, 2)))  # (B, T, channels)
        return x.masked_fill(pad, 0.0)


class Pooling(nn.Module):
    """Many steps to one vector, over valid steps only.

    ``last``: the forward direction's output at the last valid step (and the backward direction's at step 0,
    which has read the whole sequence); ``mean``: the average; ``attention``: a learnt softmax weighting
    ``a_t ∝ exp(v·tanh(W y_t))`` (additive attention with one learnt query).
    """

    def __init__(self, kind: str, size: int, bidirectional: bool) -> None:
        super().__init__()
        if kind not in POOLING:
            raise ConfigError(f"unknown pooling {kind!r} — use one of {', '.join(POOLING)}")
        self.kind, self.bidirectional = kind, bidirectional
        if kind == "attention":
            self.score = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))

    def forward(self, y: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``y (B, T, S)`` -> ``(pooled (B, S), weights (B, T) or None)``."""
        B, T, S = y.shape
        mask = valid_mask(lengths, B, T, y.device)
        if self.kind == "last":
            last = (mask.sum(1) - 1).clamp(min=0)  # (B,)
            fwd = y[torch.arange(B, device=y.device), last]  # (B, S)
            if not self.bidirectional:
                return fwd, None
            half = S // 2
            return torch.cat([fwd[:, :half], y[:, 0, half:]], dim=1), None
        if self.kind == "mean":
            weights = mask.to(y.dtype) / mask.sum(1, keepdim=True).to(y.dtype)  # (B, T)
        else:
            scores = self.score(y).squeeze(-1).float()  # (B, T)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).to(y.dtype)
        return torch.einsum("bt,bts->bs", weights, y), weights


@dataclass
class SequenceClassifierConfig(EncoderConfig):
    """Everything needed to rebuild a SequenceClassifier; saved as JSON beside the weights."""

    num_classes: int = field(default=0, metadata={"cli": False})
    pooling: str = field(default="attention", metadata={"help": f"steps to one vector: {', '.join(POOLING)}"})
    members: int = field(default=1, metadata={
        "help": "independently initialised classifiers trained side by side; predictions average their "
                "probabilities"})
    conv_layers: int = field(default=0, metadata={
        "help": "1-D convolution blocks over time before the recurrent layer, or beside it with --conv-beside "
                "(0: none)"})
    conv_channels: int = field(default=64, metadata={"help": "channels of each convolution block"})
    conv_kernel: int = field(default=5, metadata={"help": "steps each convolution reads (odd)"})
    conv_beside: bool = field(default=False, metadata={
        "help": "run the convolution blocks beside the recurrent layer on the same inputs, not before it "
                "(LSTM-FCN); pooling reads both (mean or attention pooling)"})
    time_warp: float = field(default=0.0, metadata={
        "help": "while training, resample each series to between 1-W and 1+W times its length (feature inputs)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conv_layers < 0 or self.conv_channels < 1 or self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_layers must be >= 0, conv_channels >= 1 and conv_kernel odd (got "
                              f"{self.conv_layers}, {self.conv_channels}, {self.conv_kernel}) — e.g. 2, 64, 5")
        if self.pooling not in POOLING:
            raise ConfigError(f"unknown pooling {self.pooling!r} — use one of {', '.join(POOLING)}")
        if self.conv_beside and not self.conv_layers:
            raise ConfigError("conv_beside places convolution blocks beside the recurrent layer — give "
                              "--conv-layers too (e.g. 3)")
        if self.conv_beside and self.pooling == "last":
            raise ConfigError("last pooling reads the recurrent directions' ends, not convolution features — use "
                              "--pooling mean or attention with --conv-beside")
        if self.members < 1:
            raise ConfigError(f"members must be >= 1 (got {self.members}) — 1 trains a single classifier")
        if not 0 <= self.time_warp < 1:
            raise ConfigError(f"time_warp must be in [0, 1) (got {self.time_warp}) — 0.2 stretches or squeezes "
                              "each training series by up to 20%, 0 not at all")
        if self.time_warp and self.vocab_size:
            raise ConfigError("time_warp resamples numeric series — it does not apply to token inputs (text)")


def warp_time(x: Tensor, lengths: Tensor | None, amount: float) -> tuple[Tensor, Tensor]:
    """Each series of ``x (B, T, C)`` resampled by linear interpolation to ``round(L * f)`` steps, ``f`` drawn
    uniformly from ``[1 - amount, 1 + amount]`` per series (its first and last steps kept): the same utterance
    spoken faster or slower. ``-> (x' (B, T', C) zero-padded, new lengths (B,))`` on the devices of the inputs."""
    B, T, C = x.shape
    n = (lengths if lengths is not None else torch.full((B,), T)).to(x.device)  # (B,)
    factor = 1.0 + amount * (2.0 * torch.rand(B, device=x.device) - 1.0)
    new = (n.double() * factor.double()).round().long().clamp(min=1)  # (B,)
    width = int(new.max())
    step = (n - 1).double() / (new - 1).clamp(min=1).double()  # source steps per new step
    pos = (torch.arange(width, device=x.device, dtype=torch.float64)[None, :] * step[:, None])  # (B, T')
    pos = torch.minimum(pos, (n - 1).double()[:, None])
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, (n - 1)[:, None])
    frac = (pos - lo.double()).to(x.dtype).unsqueeze(-1)  # (B, T', 1)
    below, above = (x.gather(1, i.unsqueeze(-1).expand(B, width, C)) for i in (lo, hi))  # (B, T', C)
    out = below * (1 - frac) + above * frac
    out = out.masked_fill(~valid_mask(new, B, width, x.device).unsqueeze(-1), 0.0)
    return out, new.to(lengths.device if lengths is not None else "cpu")


class Member(nn.Module):
    """One classifier: encoder (with its convolutional front end, if any) -> pooling over valid steps -> dropout ->
    linear head; ``(logits (B, K), state)``. With ``time_warp``, each training batch is first resampled in time
    (``warp_time``), a fresh draw for every member."""

    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        size = config.embedding_size if config.vocab_size else config.input_size
        frontend = ConvFrontEnd(size, config.conv_channels, config.conv_kernel, config.conv_layers) \
            if config.conv_layers else None
        self.encoder = Encoder(config, frontend, beside=config.conv_beside)
        self.pool = Pooling(config.pooling, self.encoder.output_size, config.bidirectional)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.output_size, config.num_classes)
        self.time_warp = config.time_warp

    def forward(self, x: Tensor, state: State | None, lengths: Tensor | None) -> tuple[Tensor, State]:
        if self.training and self.time_warp:
            x, lengths = warp_time(x, lengths, self.time_warp)
        y, state = self.encoder(x, state, lengths)  # (B, T, D*H)
        pooled, _ = self.pool(y, lengths)  # (B, D*H)
        return self.head(self.drop(pooled)), state  # (B, K)


class SequenceClassifier(nn.Module):
    """One or more ``Member`` classifiers (encoder -> pooling -> head) whose probabilities are averaged.

    ``forward(x (B, T) ids or (B, T, C), state=None, targets=None (B,), lengths=None (B,))
    -> Output(logits (B, K), loss, state)``. ``logits`` are log mean probabilities over the members (plain logits
    for one member, up to a constant); ``loss`` is the members' mean cross-entropy, so each member learns on its own;
    ``state`` is the first member's final encoder state. Padding never changes a prediction: the encoder packs
    (fused path) or masks (explicit path), and pooling reads valid steps only.
    """

    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        if config.num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes (got {config.num_classes})")
        self.config = config
        self.members = nn.ModuleList(Member(config) for _ in range(config.members))

    def set_scaling(self, mean, std) -> None:
        for m in self.members:
            m.encoder.set_scaling(mean, std)

    def init_state(self, batch_size: int) -> State:
        return self.members[0].encoder.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None) -> Output:
        outs = [m(x, state, lengths) for m in self.members]
        logits = torch.stack([o[0].float() for o in outs])  # (M, B, K)
        loss = None
        if targets is not None:
            loss = torch.stack([F.cross_entropy(lg, targets) for lg in logits]).mean()
        if len(outs) > 1:
            logits = logits.log_softmax(-1).logsumexp(0) - math.log(len(outs))  # (B, K) log mean probability
        else:
            logits = logits[0]
        return Output(logits, loss, outs[0][1])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
