"""Task models. Every one returns ``Output(logits, loss, state)`` from ``forward(x, state=None, targets=None)``."""

from rnnkit.models.classifier import SequenceClassifier, SequenceClassifierConfig
from rnnkit.models.conditional import ConditionalGenerator, ConditionalGeneratorConfig, build_generator
from rnnkit.models.forecaster import ForecasterConfig, SequenceForecaster
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.output import Output
from rnnkit.models.recognizer import CTCRecognizer, CTCRecognizerConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.models.tagger import SequenceTagger, SequenceTaggerConfig

# kind name in config.json -> (model class, config class); the checkpoint loader rebuilds models from it.
MODEL_KINDS = {
    "language_model": (LanguageModel, LanguageModelConfig),
    "classifier": (SequenceClassifier, SequenceClassifierConfig),
    "forecaster": (SequenceForecaster, ForecasterConfig),
    "conditional_generator": (build_generator, ConditionalGeneratorConfig),
    "seq2seq": (Seq2Seq, Seq2SeqConfig),
    "ctc_recognizer": (CTCRecognizer, CTCRecognizerConfig),
    "tagger": (SequenceTagger, SequenceTaggerConfig),
}

__all__ = [
    "MODEL_KINDS", "CTCRecognizer", "CTCRecognizerConfig", "ConditionalGenerator", "ConditionalGeneratorConfig",
    "ForecasterConfig", "LanguageModel", "LanguageModelConfig", "Output", "SequenceClassifier",
    "SequenceClassifierConfig", "SequenceForecaster", "SequenceTagger", "SequenceTaggerConfig", "Seq2Seq",
    "Seq2SeqConfig",
]
