"""Random accents for the speech builder: espeak-ng's own accent mechanism, drawn at random.

An espeak-ng accent is a voice file: a phoneme table, spelling rules and ``replace FLAGS PHONEME REPLACEMENT`` lines
(Scottish English's ``replace 03 I i``; the flags, from espeak-ng's voice documentation: 1 only at the end of a
word, 2 only in an unstressed syllable, 3 both, 0 anywhere). A *random accent* is a training accent's own voice file
with more such lines (``SpeechSpec.accent_rules``, 6-12 by default) drawn uniformly at random: a phoneme the base
accent uses is said as another of the same kind (vowel for vowel, consonant for consonant), with random flags.
Nothing is drawn toward any accent in particular, held-out ones included: the pairs are uniform over the base
accent's inventory, so "th" said as "d" is one of some 500 ordered consonant pairs. The aim is a recogniser that has
heard English pronounced in ways no fixed accent pronounces it, and so leans on the rest of the word and the
sentence, as it must for an accent it never heard.

6-12 lines change 4-14% of RP's phonemes in ten of its random accents, on 200 training sentences (mean 8.7%;
``benchmarks/accent_distance.py``), as much as real accents differ: RP differs from General American on 6.7%, from
Scottish English on 10.6%, from the held-out Caribbean accent on 6.5%.

Measured (docs/recognize.md, 2,000 CPU steps): with half the training utterances in random accents the recogniser
was worse everywhere, by 3.9-5.2 points (held-out accent 36.9% CER against 33.0%), though the held-out accent's
excess over the same sentences in training voices shrank from 33% to 24% of the latter. It is off unless asked for.

Inventory: the phonemes espeak-ng writes (``-x --sep=_``) for a base accent reading the first 400 sentences of the
training text, those seen at least 5 times whose name starts with a letter, "@" or "3": that leaves out espeak's
marks (";" for palatalised), and with them its "0" (the vowel of British "lot") and "?" (glottal stop). Draws come
from ``numpy.random.default_rng([seed, 50])`` in a fixed order, so the pool is the same on any machine with the same
espeak-ng data. The voice files live in ``DATASET/.espeak/espeak-ng-data/voices/rand/``: a tree of links to the
installed espeak-ng data plus the new files, passed to espeak-ng with ``--path``.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np

from rnnkit.data import audio
from rnnkit.errors import CorpusError

FLAGS = ("00", "01", "02", "03")
MARK = "~"  # "en-us~7+m3": random accent 7 of en-us, variant m3
_VOWEL_START = set("aeiouAEIOUV@3")
_STRIP = "',%=_"  # stress and syllable marks that -x writes around phoneme names


def data_dir() -> Path:
    """The installed espeak-ng data directory, as ``espeak-ng --version`` reports it."""
    out = subprocess.run([audio.espeak_path(), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Data at:\s*(\S.*?)\s*$", out, re.MULTILINE)
    if not found or not Path(found[1]).is_dir():
        raise CorpusError(f"espeak-ng does not say where its data is ({out.strip()[:80]!r}) — reinstall espeak-ng")
    return Path(found[1])


def voice_files() -> dict[str, str]:
    """``accent -> voice file`` relative to ``lang/`` ("en-gb-x-rp" -> "gmw/en-GB-x-rp"); espeak-ng's own voices
    only (mbrola voices, "mb/...", need a synthesiser that is not assumed)."""
    listing = subprocess.run([audio.espeak_path(), "--voices"], capture_output=True, text=True, check=True).stdout
    files = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and not fields[4].startswith(("mb/", "!v/")):
            files.setdefault(fields[1], fields[4])
    return files


def transcription(voice: str, sentences: list[str], data_path: Path | None = None) -> str:
    """What espeak-ng says ``sentences`` are in ``voice``, as phoneme names (``-x --sep=_``: "D_@2 k_'a_t"), one
    line per clause; ``data_path`` as in ``audio.synthesize`` (a random accent's tree)."""
    where = [f"--path={data_path}"] if data_path is not None else []
    run = subprocess.run([audio.espeak_path(), *where, "-v", voice, "-q", "-x", "--sep=_"],
                         input="\n".join(sentences).encode("utf-8"), capture_output=True)
    if run.returncode != 0:
        raise CorpusError(f"espeak-ng could not transcribe in voice {voice} (status {run.returncode}) — check "
                          "`espeak-ng --voices=en` lists it")
    return run.stdout.decode("utf-8", "replace")


def inventory(accent: str, sentences: list[str], min_count: int = 5) -> tuple[list[str], list[str]]:
    """``(vowels, consonants)``: the phoneme names ``accent`` uses reading ``sentences``, each seen ``min_count``
    times or more, sorted."""
    counts = Counter(p.strip(_STRIP) for word in transcription(accent, sentences).split() for p in word.split("_"))
    names = sorted(p for p, n in counts.items() if n >= min_count and p and (p[0].isalpha() or p[0] in _VOWEL_START))
    vowels = [p for p in names if p[0] in _VOWEL_START]
    return vowels, [p for p in names if p[0] not in _VOWEL_START]


def draw(accents: tuple[str, ...], per_accent: int, rules: tuple[int, int], sentences: list[str],
         seed: int) -> dict[str, list[str]]:
    """``{"en-us~0": ["replace 02 I o@", ...], ...}``: ``per_accent`` random accents for each of ``accents``."""
    rng = np.random.default_rng([seed, 50])
    pool = {}
    for accent in accents:
        vowels, consonants = inventory(accent, sentences)
        if len(vowels) < 2 or len(consonants) < 2:
            raise CorpusError(f"espeak-ng's {accent} used too few phonemes on the text to draw substitutions from — "
                              "pass a text of English sentences")
        for k in range(per_accent):
            lines = []
            for _ in range(int(rng.integers(rules[0], rules[1] + 1))):
                kind = vowels if rng.random() < 0.5 else consonants
                a, b = rng.choice(len(kind), size=2, replace=False)
                lines.append(f"replace {FLAGS[rng.integers(len(FLAGS))]} {kind[a]} {kind[b]}")
            pool[f"{accent}{MARK}{k}"] = lines
    return pool


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target``, replacing a link already there (a stale one too), never a real file or folder."""
    tmp = link.with_name(f".{link.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def install(pool: dict[str, list[str]], root: Path) -> Path:
    """Write the pool's voice files under ``root`` (a tree of links to the installed data) and return the
    directory to pass as espeak-ng's ``--path``. Idempotent: a resumed build writes the same files."""
    source, files = data_dir(), voice_files()
    tree = root / "espeak-ng-data"
    try:
        (tree / "voices" / "rand").mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            if entry.name != "voices":
                _link(entry, tree / entry.name)
        for entry in (source / "voices").iterdir() if (source / "voices").is_dir() else ():
            _link(entry, tree / "voices" / entry.name)
        for name, lines in pool.items():
            base = name.partition(MARK)[0]
            if base not in files:
                raise CorpusError(f"accent {base} has no espeak-ng voice file of its own (mbrola only) — pick "
                                  "training accents from `espeak-ng --voices=en` whose file is not mb/...")
            text = (source / "lang" / files[base]).read_text(encoding="utf-8")
            path = tree / "voices" / "rand" / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
            tmp.replace(path)
    except OSError as e:
        raise CorpusError(f"cannot set up the random accents' voices in {root} ({e.strerror or e}: "
                          f"{e.filename or ''}) — delete {root} and build again") from None
    return root


def espeak_voice(voice: str) -> str:
    """The ``-v`` argument for an utterance's voice: "en-us~7+m3" -> "rand/en-us~7+m3"; others as they are."""
    return f"rand/{voice}" if MARK in voice else voice
