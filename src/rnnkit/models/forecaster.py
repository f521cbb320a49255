"""Many-to-one forecasting: a window of a series in, the next H values of its target column out.

Shape letters: B batch, T time (the lookback window), C features (column 0 is the target), H horizon, S hidden
size of one encoder direction times its directions, N ensemble members.

The model takes raw values and returns raw values; everything in between lives in the weights and buffers:

1. ``log``: the target is log-transformed (multiplicative seasonality becomes additive);
2. the target is centred on the window's level (the mean of its last ``season`` values), so a series that trends
   beyond its training range still looks familiar, and features are standardised with statistics fitted on the
   training series (``fit_scaling``; the target's scale is that of its lag-``season`` differences);
3. the forecast is the seasonal-naive forecast plus what the network adds, ``z_{T+h} = z_{T+h-m·k} + s·f_h``
   (``m = season``, ``k = ceil(h/m)``; ``m = 1`` is the naive forecast): an untrained network starts at the
   classical baseline and learns the correction (trend, damping, cycle shape);
4. ``direct``: one linear head maps the encoded window to all H corrections; ``autoregressive``: a one-step head,
   its prediction fed back in as the next input, H times (the loss runs through the whole free-running rollout,
   so training sees the errors the model will make at test time);
5. ``members`` N > 1: N independently initialised members; the forecast is their mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError, CorpusError
from rnnkit.models.classifier import Encoder, EncoderConfig, Pooling
from rnnkit.models.output import Output
from rnnkit.nn.cells import State

MODES = ("direct", "autoregressive")
LOSSES = ("mse", "l1")


@dataclass
class ForecasterConfig(EncoderConfig):
    """Everything needed to rebuild a SequenceForecaster; saved as JSON beside the weights."""

    hidden_size: int = field(default=32, metadata={"help": "hidden units per layer and direction (H)"})
    bidirectional: bool = field(default=False, metadata={"help": "read each window both ways (direct mode only)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers and before the head"})
    embedding_size: int = field(default=64, metadata={"cli": False})  # no token inputs
    token_dropout: float = field(default=0.0, metadata={"cli": False})
    horizon: int = field(default=1, metadata={"cli": False})
    mode: str = field(default="direct", metadata={"help": f"multi-step strategy: {', '.join(MODES)}"})
    season: int = field(default=1, metadata={
        "help": "forecast the residual over the seasonal-naive forecast with this period (1: over the last value; "
                "0: forecast standardised levels, no baseline)"})
    log: bool = field(default=False, metadata={"help": "model the log of the target (it must be positive)"})
    loss: str = field(default="mse", metadata={"help": f"training loss on the scaled target: {', '.join(LOSSES)}"})
    members: int = field(default=1, metadata={
        "help": "independently initialised networks (an ensemble); the forecast is their mean"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.horizon <= 0 or self.season < 0 or self.members <= 0:
            raise ConfigError("horizon and members must be positive, season >= 0")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r} — use one of {', '.join(MODES)}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r} — use one of {', '.join(LOSSES)}")
        if self.mode == "autoregressive" and (self.bidirectional or self.input_size != 1):
            raise ConfigError("autoregressive mode feeds its own forecasts back in, so it reads the target alone and "
                              "forwards only — use --mode direct for covariates or --bidirectional")


class _Member(nn.Module):
    """One network: encoder -> last valid step -> dropout -> head (H corrections, or 1 in autoregressive mode)."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.pool = Pooling("last", self.encoder.output_size, config.bidirectional)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.output_size, config.horizon if config.mode == "direct" else 1)
        nn.init.zeros_(self.head.weight)  # start at the seasonal-naive forecast
        nn.init.zeros_(self.head.bias)


class SequenceForecaster(nn.Module):
    """``forward(x (B, T, C) raw values, state=None, targets=None (B, H) raw, lengths=None (B,))
    -> Output(logits = forecasts (B, H) raw values, loss, state)``; see the module docstring for what happens.

    ``loss`` is the mean ``loss`` (L1 or MSE) between forecast and target on the scaled, transformed target, for the
    ensemble mean. Padding never changes a forecast: the encoder packs or masks, and the level and seasonal-naive
    values are read at each window's own last steps. ``state`` is the first member's final state.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        if config.input_size <= 0 or config.vocab_size:
            raise ConfigError("a forecaster reads numeric features: input_size >= 1, vocab_size 0")
        self.config = config
        self.members = nn.ModuleList(_Member(config) for _ in range(config.members))
        self.register_buffer("input_mean", torch.zeros(config.input_size))
        self.register_buffer("input_std", torch.ones(config.input_size))

    # -- scaling -------------------------------------------------------------------------------------------------
    def transform_target(self, v: Tensor) -> Tensor:
        if not self.config.log:
            return v
        if bool((v <= 0).any()):
            raise CorpusError("the model takes the log of the target, which must be positive — pass a positive "
                              "series, or train a run without --log for this one")
        return torch.log(v)

    def untransform_target(self, z: Tensor) -> Tensor:
        return torch.exp(z) if self.config.log else z

    def fit_scaling(self, series: list[np.ndarray]) -> None:
        """Fit the feature statistics on raw training series ``[(T_i, C)]`` and store them in the buffers."""
        m = self.config.season
        rows, diffs = [], []
        for s in series:
            s = torch.tensor(np.asarray(s, dtype=np.float64)).reshape(len(s), -1)
            if not torch.isfinite(s).all():
                raise CorpusError("the series holds NaN or infinite values — fill or drop them first")
            s = s.clone()
            s[:, 0] = self.transform_target(s[:, 0])
            rows.append(s)
            diffs.append(s[m:, 0] - s[:-m, 0] if m else s[:, 0])
        steps, d = torch.cat(rows), torch.cat(diffs)
        if len(d) < 2:
            raise CorpusError(f"the training series is too short to fit scaling (needs more than season={m} steps)")
        std = steps.std(0, unbiased=False)
        mean = steps.mean(0)
        if m:
            mean[0], std[0] = 0.0, d.std(unbiased=False)  # the target is centred per window, scaled by its changes
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.input_mean.copy_(mean.float())
        self.input_std.copy_(std.float())

    # -- forward -------------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> State:
        return self.members[0].encoder.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None) -> Output:
        x = x.float()
        B, T, _ = x.shape
        m, H = self.config.season, self.config.horizon
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long)
        if int(lengths.min()) < m:
            raise ConfigError(f"every window needs at least season={m} steps (got {int(lengths.min())}) — pass "
                              f"--lookback {m} or more, or a shorter --season")
        valid = _valid(lengths, T, x.device)[..., None]  # (B, T, 1)
        x = torch.where(valid > 0, x, torch.ones_like(x))  # padding may hold anything; 1 is safe for the log
        z = (torch.cat([self.transform_target(x[..., :1]), x[..., 1:]], -1) - self.input_mean) / self.input_std
        if m:
            idx = (lengths.to(x.device)[:, None] - m + torch.arange(m, device=x.device)).clamp(min=0)  # (B, m)
            last = z[..., 0].gather(1, idx)  # (B, m): the last season of the scaled target
            level = last.mean(1, keepdim=True)  # (B, 1)
        else:  # no baseline: standardised levels
            last = level = z.new_zeros(B, 1)
        z = torch.cat([z[..., :1] - level[..., None], z[..., 1:]], -1)  # (B, T, C)
        z = z * valid  # (B, T, C); padding is zero
        preds, final = [], None
        for i, member in enumerate(self.members):
            p, s = (self._direct if self.config.mode == "direct" else self._autoregressive)(
                member, z, last - level, lengths, state if i == 0 else None)
            preds.append(p + level)  # (B, H) scaled target
            final = s if i == 0 else final
        mean = torch.stack(preds).mean(0)  # (B, H)
        forecast = self.untransform_target(mean * self.input_std[0] + self.input_mean[0])
        loss = None
        if targets is not None:
            if targets.shape != (B, H):
                raise ConfigError(f"targets must be (B, H) = ({B}, {H}), got {tuple(targets.shape)}")
            goal = (self.transform_target(targets.float()) - self.input_mean[0]) / self.input_std[0]  # (B, H)
            fn = F.l1_loss if self.config.loss == "l1" else F.mse_loss
            if not self.training:  # evaluation scores the forecast itself: the ensemble's, free-running
                loss = fn(mean.float(), goal)
            elif self.config.mode == "direct":  # each member on its own error, so they stay diverse
                loss = torch.stack([fn(p.float(), goal) for p in preds]).mean()
            else:
                loss = torch.stack([self._teacher_forced_loss(mb, z, goal - level, lengths, fn)
                                    for mb in self.members]).mean()
        return Output(forecast, loss, final)

    def _direct(self, member: _Member, z: Tensor, last: Tensor, lengths: Tensor, state) -> tuple[Tensor, State]:
        y, state = member.encoder(z, state, lengths)  # (B, T, S)
        pooled, _ = member.pool(y, lengths)  # (B, S)
        H = self.config.horizon
        naive = last[:, torch.arange(H, device=z.device) % last.shape[1]]  # (B, H): seasonal naive (or 0)
        return naive + member.head(member.drop(pooled)).float(), state

    def _autoregressive(self, member: _Member, z: Tensor, last: Tensor, lengths: Tensor,
                        state) -> tuple[Tensor, State]:
        y, state = member.encoder(z, state, lengths)  # (B, T, S)
        h, _ = member.pool(y, lengths)  # (B, S)
        window, out = last, []  # window: the last m scaled, centred values, rolled forward as forecasts come
        for step in range(self.config.horizon):
            nxt = window[:, :1] + member.head(member.drop(h)).float()  # (B, 1): seasonal naive + correction
            out.append(nxt)
            if self.config.season:  # with no baseline the window stays zero
                window = torch.cat([window[:, 1:], nxt], 1)
            if step + 1 < self.config.horizon:
                y, state = member.encoder(nxt[:, None, :].to(z.dtype), state, None)  # (B, 1, S)
                h = y[:, -1]
        return torch.cat(out, 1), state  # (B, H)

    def _teacher_forced_loss(self, member: _Member, z: Tensor, goal: Tensor, lengths: Tensor, fn) -> Tensor:
        """Autoregressive training: the one-step-ahead loss at every step of window + horizon, each step reading
        the true values before it (teacher forcing), as a classical AR model is fitted."""
        B, T, _ = z.shape
        H, m = self.config.horizon, self.config.season
        lengths = lengths.to(z.device)
        seq = torch.cat([z, z.new_zeros(B, H, 1)], 1)  # (B, T+H, 1)
        seq = seq.scatter(1, (lengths[:, None] + torch.arange(H, device=z.device))[..., None], goal[..., None])
        y, _ = member.encoder(seq[:, :-1], None, lengths + H - 1)  # (B, T+H-1, S)
        t = torch.arange(T + H - 1, device=z.device)
        base = seq[:, (t + 1 - m).clamp(min=0), 0] * (m > 0)  # (B, T+H-1): seasonal naive of step t+1
        pred = base + member.head(member.drop(y)).squeeze(-1).float()
        mask = ((t[None] + 1 < (lengths + H)[:, None]) & (t[None] + 1 >= m)).float()  # (B, T+H-1)
        err = fn(pred, seq[:, 1:, 0].float(), reduction="none")
        return (err * mask).sum() / mask.sum().clamp(min=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _valid(lengths: Tensor, T: int, device) -> Tensor:
    return (torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]).float()  # (B, T)
