"""Transfer: start a classifier's encoder from a trained character-level language model (the ULMFiT recipe, and
the "sentiment neuron" observation that a char-LSTM trained only to predict text learns features that classify it).

What carries over: the embedding row of every character both vocabularies share, and the recurrent layers'
weights into the classifier's forward direction — every layer for a one-way encoder, the first layer for a
bidirectional one (its upper layers read both directions, a different input). The backward direction, pooling
and head start fresh.
"""

from __future__ import annotations

import torch

from rnnkit.data.labeled import TokenVocab
from rnnkit.data.vocab import CharVocab
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import SequenceClassifier
from rnnkit.models.language_model import LanguageModel


def check_transfer(classifier_config, lm_config, vocab: TokenVocab | None) -> None:
    """ConfigError naming the first mismatch between the classifier to build and the language model."""
    if vocab is None or vocab.kind != "char":
        raise ConfigError("--init-from a language model needs character tokens — pass --tokens char")
    for name in ("cell", "hidden_size", "embedding_size"):
        mine, theirs = getattr(classifier_config, name), getattr(lm_config, name)
        if mine != theirs:
            raise ConfigError(f"the language model has {name} {theirs!r}, the classifier {mine!r} — pass "
                              f"--{name.replace('_', '-')} {theirs}")
    if lm_config.num_layers > classifier_config.num_layers:
        raise ConfigError(f"the language model has {lm_config.num_layers} layers — pass --num-layers "
                          f"{lm_config.num_layers} or more")


@torch.no_grad()
def init_from_language_model(classifier: SequenceClassifier, vocab: TokenVocab, lm: LanguageModel,
                             lm_vocab: CharVocab) -> tuple[int, int]:
    """Copy the language model's weights into every member's encoder; returns (characters, layers) copied."""
    check_transfer(classifier.config, lm.config, vocab)
    directions = 2 if classifier.config.bidirectional else 1
    layers = 1 if directions == 2 else lm.config.num_layers
    matched = 0
    for member in classifier.members:
        encoder = member.encoder
        matched = 0
        for i, token in enumerate(vocab.tokens):
            if len(token) == 1 and token in lm_vocab:
                encoder.embedding.weight[i] = lm.embedding.weight[int(lm_vocab.encode(token)[0])]
                matched += 1
        for layer in range(layers):
            encoder.rnn.cells[layer * directions].load_state_dict(lm.rnn.cells[layer].state_dict())
    return matched, layers
