"""The speech datasets' text: which corpus sentences espeak-ng reads as they are spelled, and their split.

Text: the English side of Tatoeba's ``spa.txt`` (``English<TAB>Spanish<TAB>attribution``; a line without a tab is
one sentence). Labels use ``speech.ALPHABET``: space, apostrophe, a-z. A sentence is dropped, not rewritten, where its
spelling and what espeak says would disagree: one with a digit (espeak reads 1984 as "nineteen eighty-four"), an
abbreviation (Mr. -> "mister", U.S.), a word in capitals (TV and OK are spelled out or expanded), a lone letter
other than a and I, a symbol ($ % & / ...), or a letter outside ASCII (café); also one under ``min_chars`` or over
``max_chars`` characters. Of spa.txt's 102,904 distinct sentences, 100,147 remain. Label: lower case, hyphens as
spaces, other punctuation gone, an apostrophe kept only inside a word (don't, Tom's); espeak reads the sentence as
written (punctuation shapes its prosody). Duplicates (same label) count once.

Split: crc32 of the label puts 5% of the sentences in the test text, 5% in the val text, the rest in the train
text, whatever the counts, so no test sentence is trained on and a test word can be one never heard in training
(dataset.json gives the share of such words per split: open vocabulary).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from pathlib import Path

from rnnkit.errors import CorpusError

_SUBST = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_SPEAKABLE = re.compile(r"[A-Za-z'\s.,?!;:\"-]+")
_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|mt|prof)\.|\b(?:[a-z]\.){2,}", re.IGNORECASE)
_CAPITALS = re.compile(r"\b[A-Z]{2,}\b")
_LONE_LETTER = re.compile(r"(?<![\w'])(?![aAI])[A-Za-z](?![\w'])")


def normalise_text(sentence: str) -> str | None:
    """The label of ``sentence`` in ``ALPHABET``, or None where espeak would say something else (module docstring)."""
    s = unicodedata.normalize("NFC", sentence).translate(_SUBST).strip()
    if not s.isascii() or not _SPEAKABLE.fullmatch(s) or _ABBREVIATION.search(s) or _CAPITALS.search(s) \
            or _LONE_LETTER.search(s):
        return None
    s = re.sub(r"[^a-z']", " ", s.lower())
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    label = " ".join(s.split())
    return label or None


def read_sentences(path: str | Path, min_chars: int = 10, max_chars: int = 80) -> list[tuple[str, str]]:
    """``(spoken, label)`` of each usable sentence, the first of each label, in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"{path} not found — pass a text file of English sentences (spa.txt)") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}) — pass a UTF-8 file of sentences") from None
    out, seen = [], set()
    for line in text.splitlines():
        spoken = line.split("\t")[0].strip()
        label = normalise_text(spoken) if spoken else None
        if label and min_chars <= len(label) <= max_chars and label not in seen:
            seen.add(label)
            out.append((spoken.translate(_SUBST), label))
    if not out:
        raise CorpusError(f"{path} holds no usable English sentence ({min_chars}-{max_chars} letters, no digits or "
                          "abbreviations) — pass spa.txt or a file of one sentence per line")
    return out


def text_part(label: str) -> str:
    """"test" for 5% of the labels, "val" for 5%, "train" for the rest, by crc32."""
    bucket = zlib.crc32(label.encode("utf-8")) % 20
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def training_sentences(info: dict, path: str | Path) -> list[str]:
    """The labels of ``path``'s sentences that ``text_part`` puts in the training part: text a language model may
    read without seeing a validation or test sentence."""
    spec = info["spec"]
    return [label for _, label in read_sentences(path, spec["min_chars"], spec["max_chars"])
            if text_part(label) == "train"]
