"""Transfer: start a classifier's encoder from a trained character-level language model (the ULMFiT recipe, and
the "sentiment neuron" observation that a char-LSTM trained only to predict text learns features that classify it).

What carries over: the embedding row of every character both vocabularies share, and each recurrent layer's
weights into the classifier's forward direction (the backward direction, pooling and head start fresh).
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
                             lm_vocab: CharVocab) -> int:
    """Copy the language model's weights into every member's encoder; returns how many characters matched."""
    check_transfer(classifier.config, lm.config, vocab)
    directions = 2 if classifier.config.bidirectional else 1
    matched = 0
    for member in classifier.members:
        encoder = member.encoder
        matched = 0
        for i, token in enumerate(vocab.tokens):
            if len(token) == 1 and token in lm_vocab:
                encoder.embedding.weight[i] = lm.embedding.weight[int(lm_vocab.encode(token)[0])]
                matched += 1
        for layer in range(lm.config.num_layers):
            source, target = lm.rnn.cells[layer], encoder.rnn.cells[layer * directions]
            target.load_state_dict(source.state_dict())
    return matched
