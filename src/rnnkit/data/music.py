"""Bach chorale melodies as tokens, and tokens back to music: music21 parses the corpus and writes MIDI and MusicXML.

Corpus: the 371 chorales of Riemenschneider's numbering that ship inside music21 (``corpus.chorales.Iterator``);
repeated numbers name the same file, so 350 distinct pieces, in that order. The melody is the soprano part (the part
named "Soprano...", else the first part). music21 (the ``music`` extra) is imported inside the functions that need it.

Key: every melody is transposed by the nearest interval (-6..+5 semitones) so that its tonic is C (major) or A
(minor): the model learns melodies relative to their key, and the key condition is the mode alone. Which key:
music21's analysis (Krumhansl-Schmuckler over all voices) and the key encoded in the file (signature plus MusicXML
mode; 4 files have none) disagree on 76 of 346. The encoded tonic is read off the signature, so G minor written with
one flat comes out as D minor; the analysis calls some E minor chorales G major. Chorales end on their tonic, so the
one whose tonic is the final bass note wins (the analysis 45 times, the file 22), else the analysis (Phrygian
endings on the dominant). Result: 180 major, 170 minor.

Tokens, alternating pitch and duration (each note is two tokens):
    pitch      "C5", "F#4", "B-4": music21 names with one fixed spelling per pitch class; "R" for a rest
    duration   the quarterLength as an exact fraction: "1", "1/2", "3/2", "1/3" (triplets)
    "^"        a fermata on the note before it (kept: fermatas end the chorale's phrases)
    "|"        a bar line, after the note in which it falls (tied notes are merged into one note)
Grace notes are dropped. Why alternating: on the 350 chorales the vocabulary is 48 tokens, against 186 for one token
per (pitch, duration) pair, 31 of which occur once; sequences are 1.7x longer (124 tokens per chorale, not 73).

``melody_to_stream`` reverses this. Invalid tokens are skipped (``parse_tokens`` counts them): a duration where a
pitch is expected, a pitch not followed by a duration, "^" not right after a note, a duration that is not a positive
multiple of 1/24 up to 16 quarters, anything unknown (a model's "<eos>"). The meter is the most common bar length
between "|" tokens (4 quarters: 4/4, 3: 3/4), a shorter first bar is a pickup; the measures are then laid out by
that meter, so a misplaced "|" in a sampled melody moves no note, and a note crossing a bar line is split and tied.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from rnnkit.errors import ConfigError, CorpusError

EXTRA = "pip install 'rnnkit[music]'"
FORMAT = 1  # bump when the tokens or the key rule change: old caches are then ignored
MODES = {"major": 0, "minor": 9}  # mode -> the tonic's pitch class after transposition (C, A)
NAMES = ["C", "C#", "D", "E-", "E", "F", "F#", "G", "G#", "A", "B-", "B"]
BAR, FERMATA, REST = "|", "^", "R"
MAX_QL = Fraction(16)
_PITCH = re.compile(r"([A-G])([#-]?)(-?\d)")
_STEP = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass
class Melody:
    name: str  # corpus identifier, e.g. "bwv26.6"
    mode: str  # "major" (tonic C) or "minor" (tonic A)
    tokens: list[str]
    opening: int  # tokens[:opening] is the pickup (if any) and the first full bar, ending with its "|"


class Chorales(list):
    """A ``list[Melody]``; ``skipped`` holds ``(name, reason)`` for each piece left out."""

    def __init__(self, melodies=(), skipped=()):
        super().__init__(melodies)
        self.skipped: list[tuple[str, str]] = list(skipped)


@dataclass
class Note:
    midi: int | None  # None: a rest
    offset: Fraction  # quarter notes from the start
    duration: Fraction
    fermata: bool = False


@dataclass
class Parsed:
    notes: list[Note] = field(default_factory=list)
    bars: list[Fraction] = field(default_factory=list)  # offsets of the "|" tokens
    skipped: int = 0  # invalid tokens left out


def _music21():
    try:
        import music21
    except ImportError:
        raise CorpusError(f"music generation needs music21 — {EXTRA}") from None
    return music21


def pitch_token(midi: int) -> str:
    return f"{NAMES[midi % 12]}{midi // 12 - 1}"


def duration_token(ql) -> str:
    return str(Fraction(ql).limit_denominator(1000))


def _pitch(token: str) -> int | None:
    m = _PITCH.fullmatch(token)
    if not m:
        return None
    midi = _STEP[m[1]] + {"#": 1, "-": -1, "": 0}[m[2]] + 12 * (int(m[3]) + 1)
    return midi if 0 <= midi <= 127 else None


def _duration(token: str) -> Fraction | None:
    if not re.fullmatch(r"\d+(/\d+)?", token):
        return None
    d = Fraction(token)
    return d if 0 < d <= MAX_QL and (d * 24).denominator == 1 else None


def parse_tokens(tokens: list[str]) -> Parsed:
    """Notes with their offsets, the bar-line offsets, and how many tokens were invalid (see the module docstring)."""
    out, pos = Parsed(), Fraction(0)
    pending, noted = None, False  # a pitch (or REST) waiting for its duration; the last token ended a note
    for token in tokens:
        d = _duration(token) if pending is not None else None
        if d is not None:
            out.notes.append(Note(None if pending == REST else pending, pos, d))
            pos, pending, noted = pos + d, None, True
            continue
        if pending is not None:  # a pitch with no duration after it
            out.skipped, pending = out.skipped + 1, None
        if token == REST or _pitch(token) is not None:
            pending = REST if token == REST else _pitch(token)
        elif token == BAR:
            out.bars.append(pos)
        elif token == FERMATA and noted:
            out.notes[-1].fermata = True
        else:
            out.skipped += 1
        noted = False
    out.skipped += pending is not None
    return out


def _meter(parsed: Parsed) -> tuple[Fraction, Fraction]:
    """``(bar length, pickup length)`` in quarter notes, from the "|" tokens (4/4 and no pickup without any)."""
    edges = [Fraction(0)] + [b for b in parsed.bars if b > 0]
    sizes = [b - a for a, b in zip(edges, edges[1:], strict=False) if b > a]
    full = Counter(sizes[1:] or sizes)
    bar = max(full.items(), key=lambda kv: (kv[1], kv[0]))[0] if full else Fraction(4)
    if not 1 <= bar <= MAX_QL or (bar * 2).denominator != 1:
        bar = Fraction(4)
    return bar, (sizes[0] if sizes and sizes[0] < bar else Fraction(0))


def melody_to_stream(tokens: list[str], mode: str = "major", title: str | None = None):
    """A ``music21.stream.Score`` of one part: the notes, rests and fermatas of ``tokens``, a key (C major or A minor)
    and the meter of its bar lines. Invalid tokens are skipped; a melody with no valid note is a ``CorpusError``."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)} — pass major or minor")
    m21 = _music21()
    parsed = parse_tokens(tokens)
    if not any(n.midi is not None for n in parsed.notes):
        raise CorpusError(f"the melody has no notes ({len(tokens)} tokens, {parsed.skipped} invalid) — "
                          "sample more tokens or check the model's vocabulary")
    bar, pickup = _meter(parsed)
    eighths = bar * 8 if bar.denominator == 2 else None
    part = m21.stream.Part()
    measure, capacity, pos = m21.stream.Measure(number=0 if pickup else 1), pickup or bar, Fraction(0)
    measure.append([m21.key.Key("C" if mode == "major" else "a"),
                    m21.meter.TimeSignature(f"{eighths}/8" if eighths else f"{int(bar)}/4")])
    if pickup:
        measure.paddingLeft = float(bar - pickup)
    for note in parsed.notes:
        left, pieces = note.duration, []
        while left > 0:
            if pos == capacity:
                part.append(measure)
                measure, capacity, pos = m21.stream.Measure(number=measure.number + 1), bar, Fraction(0)
            piece = min(left, capacity - pos)
            n = (m21.note.Rest(quarterLength=piece) if note.midi is None
                 else m21.note.Note(pitch_token(note.midi), quarterLength=piece))
            measure.insert(pos, n)
            pieces.append(n)
            pos, left = pos + piece, left - piece
        if len(pieces) > 1 and note.midi is not None:
            for i, n in enumerate(pieces):
                n.tie = m21.tie.Tie("start" if i == 0 else "stop" if i == len(pieces) - 1 else "continue")
        if note.fermata:
            pieces[-1].expressions.append(m21.expressions.Fermata())
    measure.paddingRight = float(capacity - pos)
    part.append(measure)
    score = m21.stream.Score([part])
    if title:
        score.insert(0, m21.metadata.Metadata(title=title))
    return score


def write_melody(tokens: list[str], mode: str, midi_path: str | Path | None, musicxml_path: str | Path | None,
                 title: str | None = None) -> None:
    """Write ``tokens`` as a MIDI file and a MusicXML file (``.mxl``: compressed), each atomically; a path that is
    None is not written."""
    score = melody_to_stream(tokens, mode, title)
    for fmt, path in (("midi", midi_path), ("musicxml", musicxml_path)):
        if path is not None:
            _replace(Path(path), lambda tmp, fmt=fmt: score.write(fmt, fp=tmp))


def _replace(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix), then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{path.suffix}"  # umask permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tonic_and_mode(score) -> tuple[int, str]:
    """Tonic pitch class and mode: the analysis or the encoded key, whichever ends on the final bass note."""
    analysed = score.analyze("key")
    candidates = [(analysed.tonic.pitchClass, analysed.mode)]
    encoded = next(iter(score.parts[0].recurse().getElementsByClass("Key")), None)
    if encoded is not None and encoded.mode in MODES:
        candidates.append((encoded.tonic.pitchClass, encoded.mode))
    bass = score.parts[-1].flatten().notes
    final = min(bass[-1].pitches, key=lambda p: p.ps).pitchClass if len(bass) else None
    tonic, mode = next((c for c in candidates if c[0] == final), candidates[0])
    if mode not in MODES:
        raise ValueError(f"key analysis gave mode {mode!r}")
    return tonic, mode


def melody_from_score(score, name: str) -> Melody:
    """The soprano melody of a chorale, transposed to C major / A minor and tokenised; ValueError if unusable."""
    parts = list(score.parts)
    part = next((p for p in parts if (p.partName or "").lower().startswith("soprano")), parts[0])
    measures = list(part.getElementsByClass("Measure"))
    tonic, mode = _tonic_and_mode(score)
    shift = (MODES[mode] - tonic) % 12
    shift -= 12 * (shift > 5)
    events, last, first_full = [], None, None  # events: [midi or None, duration, fermata] or BAR
    for i, m in enumerate(measures):
        for n in m.recurse().notesAndRests:
            if n.duration.isGrace or n.quarterLength == 0:
                continue
            midi = None if n.isRest else max(p.midi for p in n.pitches) + shift
            fermata = any(e.name == "fermata" for e in n.expressions)
            if n.tie is not None and n.tie.type in ("stop", "continue") and last is not None and last[0] == midi:
                last[1] += Fraction(n.quarterLength)
                last[2] = last[2] or fermata
                continue
            last = [midi, Fraction(n.quarterLength), fermata]
            events.append(last)
        events.append(BAR)
        pickup = i == 0 and (m.paddingLeft > 0 or m.duration.quarterLength < m.barDuration.quarterLength)
        if first_full is None and not pickup:
            first_full = len(events)
    if sum(e != BAR and e[0] is not None for e in events) < 8:
        raise ValueError("fewer than 8 notes")
    tokens, opening = [], 0
    for k, e in enumerate(events, 1):
        if e == BAR:
            tokens.append(BAR)
        else:
            if _duration(duration_token(e[1])) is None or (e[0] is not None and not 0 <= e[0] <= 127):
                raise ValueError(f"unusable note {e}")
            tokens += [REST if e[0] is None else pitch_token(e[0]), duration_token(e[1])] + [FERMATA] * e[2]
        if k == first_full:
            opening = len(tokens)
    return Melody(name, mode, tokens, opening or len(tokens))


def _parse(name: str):
    return _music21().corpus.parse(name)


def cache_path(cache_dir: str | Path | None = None) -> Path:
    from rnnkit.data.datasets import cache_dir as default_cache_dir

    version = _music21().__version__
    return Path(cache_dir or default_cache_dir()) / f"chorales-v{FORMAT}-music21-{version}.json"


def load_chorales(limit: int | None = None, cache_dir: str | Path | None = None) -> Chorales:
    """The chorale melodies (see the module docstring), the first ``limit`` of them if given, in corpus order.

    Pieces that fail to parse or hold under 8 notes are skipped and listed in ``.skipped``. Results are cached as
    JSON under ``cache_dir`` (default ``$RNNKIT_CACHE``, else ``~/.cache/rnnkit``), keyed by music21's version and
    the token format. The cache holds a prefix of the corpus and says whether it is complete: a limited load adds
    the pieces it had to parse, and a full load parses only what the cache lacks."""
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be > 0, got {limit} — pass a positive number of chorales")
    m21 = _music21()
    path = cache_path(cache_dir)
    names = list(dict.fromkeys(m21.corpus.chorales.Iterator(returnType="filename")))
    entries, grown = _read_cache(path, [n.split("/")[-1] for n in names]), False
    while len(entries) < len(names) and (limit is None or sum("tokens" in e for e in entries) < limit):
        name = names[len(entries)]
        short = name.split("/")[-1]
        try:
            entries.append(asdict(melody_from_score(_parse(name), short)))
        except Exception as e:  # a piece music21 cannot read is skipped, not fatal
            entries.append({"name": short, "skipped": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"})
        grown = True
    if grown:
        state = {"format": FORMAT, "music21": m21.__version__, "complete": len(entries) == len(names),
                 "entries": entries}
        _replace(path, lambda tmp: Path(tmp).write_text(json.dumps(state), encoding="utf-8"))
    out = Chorales()
    for e in entries:
        if limit is not None and len(out) == limit:
            break
        if "tokens" in e:
            out.append(Melody(**e))
        else:
            out.skipped.append((e["name"], e["skipped"]))
    if not out:
        raise CorpusError(f"no usable chorale in music21's corpus ({len(out.skipped)} skipped, first: "
                          f"{out.skipped[:1]}) — reinstall music21 ({EXTRA})")
    return out


def _read_cache(path: Path, names: list[str]) -> list[dict]:
    """The cached entries for a prefix of ``names``, or [] for a missing, stale or damaged cache file."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        entries = entries["entries"] if entries["format"] == FORMAT else []
        ok = [e["name"] for e in entries] == names[:len(entries)] and all(
            set(e) == {"name", "skipped"} or set(e) == {"name", "mode", "tokens", "opening"}
            and isinstance(e["tokens"], list) for e in entries)
        return entries if ok else []
    except (OSError, ValueError, KeyError, TypeError):
        return []
