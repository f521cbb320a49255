"""Errors a user can cause. Each message is one line: what is wrong, then what to do.

The CLI prints ``error: <message>`` and exits with status 2 for any ``RnnkitError``; library callers can catch
the subclasses they care about.
"""


class RnnkitError(Exception):
    """Base class of every error rnnkit raises for bad input."""


class ConfigError(RnnkitError, ValueError):
    """An invalid setting: a size <= 0, an unknown cell, a temperature < 0, ..."""


class CorpusError(RnnkitError):
    """A corpus that cannot be used: missing, empty, binary, not UTF-8, or too short."""


class VocabularyError(RnnkitError, KeyError):
    """Text with characters the model's vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(RnnkitError):
    """A run directory with no checkpoint, a corrupt or tampered one, or one from another format version."""


class DownloadError(RnnkitError):
    """A dataset download that failed or whose checksum does not match."""


class TrainingDiverged(RnnkitError):
    """The loss or gradient became NaN or infinite; the last good checkpoint is left as it was."""
