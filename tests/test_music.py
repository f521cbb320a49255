"""Music data: tokens to a music21 stream and to MIDI and MusicXML files that re-open with the same notes, chorale
loading (keys, tokens, the opening bar) and its cache, invalid tokens, the missing-extra message, the piano roll."""

from __future__ import annotations

import json
import random
import sys
from fractions import Fraction

import pytest

from rnnkit.data import music
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.plots import plot_piano_roll

# 4/4 with a one-beat pickup; G5 2 starts on beat 4 and is tied over the bar line (the "|" follows the note it falls
# in), a triplet, a rest, fermatas, a final bar of three beats that completes the pickup.
MELODY = ("G4 1 | C5 1 D5 1/2 E5 1/2 F5 1 G5 2 | A5 1/3 G5 1/3 F5 1/3 E5 1 D5 1 ^ | E5 1 F5 1 G5 1 A5 1 | "
          "B-4 2 R 1 C5 1 | D5 1 E5 1 F5 2 | G4 1 B4 1 C5 1 ^ |").split()


def merged(events):
    """``(midi or None, quarterLength, fermata)`` -> the same list with runs of rests as one rest (a rest that
    crosses a bar line is written as two) -> ``(notes, indices of those with a fermata)``."""
    out = []
    for midi, ql, fermata in events:
        if out and midi is None and out[-1][0] is None and not out[-1][2]:
            out[-1] = (None, out[-1][1] + ql, fermata)
        else:
            out.append((midi, ql, fermata))
    return [(m, q) for m, q, _ in out], [i for i, e in enumerate(out) if e[2]]


def expected(tokens):
    """``(midi or None, quarterLength)`` of each note and rest, and the indices of the notes with a fermata."""
    return merged((n.midi, n.duration, n.fermata) for n in music.parse_tokens(tokens).notes)


def reopened(path):
    """What music21 reads back from a file: ``(midi or None, quarterLength)`` with ties merged, fermata indices."""
    from music21 import converter

    score = converter.parse(str(path))
    events = []  # music21's stripTies leaves some chains of start/continue/stop apart: merge them here
    for n in score.parts[0].flatten().notesAndRests:
        midi, fermata = None if n.isRest else n.pitch.midi, any(e.name == "fermata" for e in n.expressions)
        if midi is not None and n.tie and n.tie.type in ("continue", "stop") and events and events[-1][0] == midi:
            events[-1] = (midi, events[-1][1] + Fraction(n.quarterLength), fermata)
        else:
            events.append((midi, Fraction(n.quarterLength), fermata))
    return score, *merged(events)


def test_tokens_round_trip_through_midi_and_musicxml(tmp_path):
    mid, xml = tmp_path / "out" / "m.mid", tmp_path / "out" / "m.musicxml"
    music.write_melody(MELODY, "major", mid, xml, title="test")
    notes, fermatas = expected(MELODY)
    assert len(notes) == 24 and notes[5] == (79, 2) and notes[6] == (81, Fraction(1, 3))

    score, got, got_fermatas = reopened(xml)
    assert got == notes and got_fermatas == fermatas == [10, 23]
    part = score.parts[0]
    measures = list(part.getElementsByClass("Measure"))
    assert measures[0].paddingLeft == 3 and [m.number for m in measures] == list(range(7))
    assert part.recurse().getElementsByClass("TimeSignature")[0].ratioString == "4/4"
    key = part.recurse().getElementsByClass("Key")[0]
    assert (key.tonic.name, key.mode) == ("C", "major")
    tied = [n for n in part.flatten().notes if n.tie is not None]
    assert [(n.pitch.midi, n.quarterLength, n.tie.type) for n in tied] == [(79, 1, "start"), (79, 1, "stop")]
    assert music.melody_from_score(score, "again").tokens == MELODY  # re-tokenising the file gives the tokens back

    _, got, _ = reopened(mid)  # MIDI keeps no pickup, ties or fermatas: compare the notes and rests
    assert got == notes


def test_minor_melody_gets_a_minor_key(tmp_path):
    tokens = "E5 1 | A5 1 G#5 1/2 F#5 1/2 G#5 1 E5 1 | C6 1 B5 1 A5 2 ^ | E5 1 F5 1 E5 1 D5 1 | C5 1 B4 1 A4 2 ^ |"
    xml = tmp_path / "m.musicxml"
    music.write_melody(tokens.split(), "minor", tmp_path / "m.mid", xml)
    score, got, _ = reopened(xml)
    key = score.parts[0].recurse().getElementsByClass("Key")[0]
    assert (key.tonic.name, key.mode) == ("A", "minor") and got == expected(tokens.split())[0]
    assert music.melody_from_score(score, "a").mode == "minor"


def test_invalid_tokens_are_skipped():
    tokens = ["1/2", "C5", "1", "^", "^", "D5", "E5", "2", "<eos>", "R", "0", "R", "1/2", "|", "^", "X9",
              "C5", "17", "G4", "1/5", "F4", "1", "C#5"]
    parsed = music.parse_tokens(tokens)
    assert [(n.midi, n.duration, n.fermata) for n in parsed.notes] == [
        (72, 1, True), (76, 2, False), (None, Fraction(1, 2), False), (65, 1, False)]
    assert parsed.bars == [Fraction(7, 2)] and parsed.skipped == 13
    notes = [(None if n.isRest else n.pitch.midi, n.quarterLength)
             for n in music.melody_to_stream(tokens).parts[0].stripTies().flatten().notesAndRests]
    assert notes == [(72, 1), (76, 2), (None, 0.5), (65, 1)]


def test_sampled_tokens_always_make_files_that_reopen(tmp_path):
    """Tokens drawn at random from the vocabulary, as an untrained sampler would produce them."""
    vocab = ([music.pitch_token(m) for m in range(55, 85)] + ["R", "|", "^"]
             + ["1", "1/2", "2", "3", "3/2", "1/4", "4", "3/4", "6", "1/3"] * 3)
    rng = random.Random(0)
    tokens = [rng.choice(vocab) for _ in range(300)]
    xml = tmp_path / "s.mxl"  # compressed MusicXML
    music.write_melody(tokens, "minor", tmp_path / "s.mid", xml)
    notes, fermatas = expected(tokens)
    _, got, got_fermatas = reopened(xml)
    assert len(notes) > 40 and got == notes and got_fermatas == fermatas
    _, got, _ = reopened(tmp_path / "s.mid")
    assert [m for m, _ in got if m is not None] == [m for m, _ in notes if m is not None]
    music.write_melody(tokens, "minor", None, tmp_path / "only.musicxml")  # None: that file is not written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.musicxml", "s.mid", "s.mxl"]


def test_bad_mode_empty_melody_and_missing_music21(monkeypatch):
    with pytest.raises(ConfigError, match="major or minor"):
        music.melody_to_stream(MELODY, "dorian")
    with pytest.raises(CorpusError, match="no notes"):
        music.melody_to_stream(["|", "1", "<eos>", "R", "1"])
    with pytest.raises(ConfigError, match="limit"):
        music.load_chorales(limit=0)
    monkeypatch.setitem(sys.modules, "music21", None)  # import music21 now raises ImportError
    for call in (lambda: music.melody_to_stream(MELODY), lambda: music.load_chorales(limit=1)):
        with pytest.raises(CorpusError, match=r"pip install 'rnnkit\[music\]'"):
            call()


def test_load_chorales_gives_melodies_in_c_major_or_a_minor():
    melodies = music.load_chorales(limit=5)
    assert len(melodies) == 5 and len({m.name for m in melodies}) == 5 and melodies.skipped == []
    assert melodies[0].name == "bwv269"  # Riemenschneider's order
    for m in melodies:
        assert m.mode in ("major", "minor")
        parsed = music.parse_tokens(m.tokens)
        assert parsed.skipped == 0 and len(parsed.notes) > 20 and m.tokens[-1] == "|"
        pitches = [n.midi for n in parsed.notes if n.midi is not None]
        assert 55 <= min(pitches) and max(pitches) <= 84
        white = sum(p % 12 in (0, 2, 4, 5, 7, 9, 11) for p in pitches) / len(pitches)
        assert white > 0.8, (m.name, white)  # diatonic in C major / A minor (minor adds G# and F#)
        assert pitches[-1] % 12 in ({0, 4, 7} if m.mode == "major" else {9, 0, 4}), m.name  # ends on the tonic triad
        # the opening is the pickup (if any) and the first full bar, ending with its bar line
        assert m.tokens[m.opening - 1] == "|" and m.tokens[:m.opening].count("|") in (1, 2)
        bars = [Fraction(0)] + music.parse_tokens(m.tokens[:m.opening]).bars
        assert bars[-1] - bars[-2] == music._meter(parsed)[0]


def test_cache_is_used_and_a_limited_load_is_not_the_full_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    first = music.load_chorales(limit=3)
    [path] = tmp_path.glob("chorales-*.json")
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["complete"] is False and [e["name"] for e in state["entries"]] == [m.name for m in first]

    calls = []

    def parser_off(name):
        calls.append(name)
        raise ValueError("parser off")

    monkeypatch.setattr(music, "_parse", parser_off)
    assert music.load_chorales(limit=3) == first and music.load_chorales(limit=2) == first[:2] and calls == []
    full = music.load_chorales()  # parses only what the cache lacks: here every one of those fails
    assert full == first and len(full.skipped) == len(calls) > 300
    assert not {f"bach/{m.name}" for m in first} & set(calls)
    assert full.skipped[0][1] == "ValueError: parser off"
    assert json.loads(path.read_text(encoding="utf-8"))["complete"] is True


def test_damaged_or_stale_cache_is_rebuilt(monkeypatch, tmp_path):
    path = music.cache_path(tmp_path)
    path.write_text('{"format": 1, "entries": [{"name": "bwv269", "tokens": 5}]}', encoding="utf-8")
    melodies = music.load_chorales(limit=1, cache_dir=tmp_path)
    assert melodies[0].name == "bwv269" and melodies[0].tokens[:2] == ["C5", "1"]
    assert json.loads(path.read_text(encoding="utf-8"))["entries"][0]["tokens"] == melodies[0].tokens


def test_piano_roll_is_a_png(tmp_path):
    import matplotlib.image

    for notes in (MELODY, [(0, 1, 60), (1, 2, 64), (3, Fraction(1, 2), 67)], []):
        path = plot_piano_roll(notes, tmp_path / "roll.png", title="a melody")
        image = matplotlib.image.imread(path)
        assert image.shape[0] == 450 and image.shape[1] >= 600 and image.std() > 0.05
