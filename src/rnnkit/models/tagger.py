"""Many-to-many, same length: a label for every step of a sequence (word segmentation, truecasing, part-of-speech
or named-entity tags, frame labels).

Shape letters: B batch, T time, C input features, E embedding size, H hidden units, D directions, K tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import ConvFrontEnd, Encoder, EncoderConfig, valid_mask
from rnnkit.models.output import Output
from rnnkit.nn.cells import State


@dataclass
class SequenceTaggerConfig(EncoderConfig):
    """Everything needed to rebuild a SequenceTagger; saved as JSON beside the weights."""

    num_tags: int = field(default=0, metadata={"cli": False})
    conv_layers: int = field(default=0, metadata={
        "help": "1-D convolution blocks over time before the recurrent layer (0: none)"})
    conv_channels: int = field(default=64, metadata={"help": "channels of each convolution block"})
    conv_kernel: int = field(default=5, metadata={"help": "steps each convolution reads (odd)"})
    crf: bool = field(default=False, metadata={
        "help": "a linear-chain CRF over the tags (BiLSTM-CRF): trained on each sentence's log-likelihood, tags "
                "decoded jointly (Viterbi); pytorch-crf, pip install 'rnnkit[crf]'"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conv_layers < 0 or self.conv_channels < 1 or self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_layers must be >= 0, conv_channels >= 1 and conv_kernel odd (got "
                              f"{self.conv_layers}, {self.conv_channels}, {self.conv_kernel}) — e.g. 2, 64, 5")


class SequenceTagger(nn.Module):
    """Encoder (token embedding or standardised features -> optional convolutions -> recurrent layer, usually
    bidirectional, so each step's tag reads the whole sequence) -> dropout -> a linear head at every step.

    ``forward(x (B, T) ids or (B, T, C), state=None, targets=None (B, T), lengths=None (B,))
    -> Output(logits (B, T, K), loss, state)``. ``loss`` is the cross-entropy averaged over the valid steps:
    targets equal to ``IGNORE_INDEX`` (padding, or steps without a label) count for nothing. Padding never changes a
    valid step's logits: the encoder packs (fused path) or masks (explicit path) the padded steps.

    With ``crf``, ``logits`` are the emission scores of a linear-chain CRF (Lafferty et al., 2001; the BiLSTM-CRF
    of Huang et al., 2015), which adds a learnt score for each pair of neighbouring tags; ``loss`` is the negative
    log-likelihood of each sentence's tags, summed and divided by the tagged steps, and ``decode`` finds the best
    sequence (Viterbi) instead of each step's best tag. A CRF reads whole sentences: every step up to each length
    needs a tag.
    """

    def __init__(self, config: SequenceTaggerConfig) -> None:
        super().__init__()
        if config.num_tags < 2:
            raise ConfigError(f"a tagger needs at least 2 tags (got {config.num_tags})")
        self.config = config
        size = config.embedding_size if config.vocab_size else config.input_size
        frontend = ConvFrontEnd(size, config.conv_channels, config.conv_kernel, config.conv_layers) \
            if config.conv_layers else None
        self.encoder = Encoder(config, frontend)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.output_size, config.num_tags)
        self.crf = _crf(config.num_tags) if config.crf else None

    def set_scaling(self, mean, std) -> None:
        self.encoder.set_scaling(mean, std)

    def init_state(self, batch_size: int) -> State:
        return self.encoder.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None) -> Output:
        y, state = self.encoder(x, state, lengths)  # (B, T, D*H)
        logits = self.head(self.drop(y)).float()  # (B, T, K)
        loss = None
        if targets is not None:
            if targets.shape != logits.shape[:2]:
                raise ConfigError(f"targets of shape {tuple(targets.shape)} do not match the {tuple(logits.shape[:2])}"
                                  " steps — one tag per step, IGNORE_INDEX where there is none")
            tagged = targets != IGNORE_INDEX
            if self.crf is not None:
                if not torch.equal(tagged, valid_mask(lengths, *targets.shape, targets.device)):
                    raise ConfigError("a CRF reads whole sentences: every step up to each length needs a tag, and "
                                      "no step past it — train without --crf to leave steps untagged")
                total = -self.crf(logits, targets.masked_fill(~tagged, 0), tagged, reduction="sum")
            else:  # the sum over the tagged steps / their count: 0, not torch's NaN, for a batch with none tagged
                total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                        reduction="sum")
            loss = total / tagged.sum().clamp(min=1)
        return Output(logits, loss, state)

    @torch.no_grad()
    def decode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The tags ``(B, T)`` of every step, 0 past each length: each step's most likely tag, or with a CRF the
        most likely sequence (Viterbi)."""
        return self.best_tags(self(x, lengths=lengths).logits, lengths)

    @torch.no_grad()
    def best_tags(self, logits: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``decode`` from the logits ``(B, T, K)`` that ``forward`` gave."""
        mask = valid_mask(lengths, *logits.shape[:2], logits.device)
        if self.crf is None:
            return logits.argmax(-1).masked_fill(~mask, 0)
        out = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
        for i, path in enumerate(self.crf.decode(logits, mask)):
            out[i, :len(path)] = torch.tensor(path, device=logits.device)
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _crf(num_tags: int) -> nn.Module:
    """pytorch-crf's linear-chain CRF (start, end and tag-to-tag transition scores; batch first)."""
    try:
        from torchcrf import CRF
    except ImportError:
        raise ConfigError("a CRF tagger (--crf) needs pytorch-crf — pip install 'rnnkit[crf]'") from None
    return CRF(num_tags, batch_first=True)
