"""Random accents in the speech builder (``rnnkit.data.speech_accents``): espeak-ng's replace rules through a tree
of links, the pool's draws, builds that change only the utterances in a random accent, and the refusals.

Needs what tests/test_speech_data.py needs (espeak-ng, librosa, soundfile), and skips or fails the same way.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_speech_data as sd

from rnnkit.data import audio, speech
from rnnkit.data import speech_accents as sa
from rnnkit.data.speech import build_speech
from rnnkit.errors import ConfigError, CorpusError

corpus = sd.corpus  # the module-scoped fixture of the plain builder's tests
RATE, _files, one_line, tiny = sd.RATE, sd._files, sd.one_line, sd.tiny


def _phonemes(text: str, voice: str, path: Path | None = None) -> str:
    where = [f"--path={path}"] if path else []
    return subprocess.run(["espeak-ng", *where, "-v", voice, "-q", "-x"], input=text.encode(), capture_output=True,
                          check=True).stdout.decode().split()


def test_a_random_accent_is_espeaks_own_replace_rules(tmp_path):
    root = sa.install({"en-us~0": ["replace 00 D d", "replace 00 k t"]}, tmp_path / "esd")
    plain, spoken = _phonemes("the cat", "en-us"), _phonemes("the cat", "rand/en-us~0+m3", root)
    assert plain[0].startswith("D") and plain[1].startswith("k")
    assert spoken == [plain[0].replace("D", "d", 1), plain[1].replace("k", "t", 1)]
    assert sa.install({"en-us~0": ["replace 00 D d", "replace 00 k t"]}, tmp_path / "esd") == root  # idempotent
    clip = audio.synthesize("the cat", "rand/en-us~0+m3", 170, 50, RATE, data_path=root)
    assert len(clip) > RATE // 4 and not np.array_equal(clip, audio.synthesize("the cat", "en-us+m3", 170, 50, RATE))


def test_random_accent_pool_is_uniform_within_kind_and_seeded(corpus):
    text = [spoken for spoken, label in speech.read_sentences(corpus) if speech.text_part(label) == "train"][:200]
    vowels, consonants = sa.inventory("en-gb", text)
    assert {"D", "s", "t", "n"} <= set(consonants) and {"@", "I", "i:"} <= set(vowels)
    assert not set(vowels) & set(consonants) and all(p[0].isalpha() or p[0] in "@3" for p in vowels + consonants)
    pool = sa.draw(("en-gb",), 40, (2, 5), text, seed=0)
    assert list(pool) == [f"en-gb~{k}" for k in range(40)] and pool == sa.draw(("en-gb",), 40, (2, 5), text, seed=0)
    assert pool != sa.draw(("en-gb",), 40, (2, 5), text, seed=1)
    rules = [line.split() for lines in pool.values() for line in lines]
    assert all(2 <= len(lines) <= 5 for lines in pool.values())
    assert all(r[0] == "replace" and r[1] in sa.FLAGS and r[2] != r[3] for r in rules)
    assert all((r[2] in vowels and r[3] in vowels) or (r[2] in consonants and r[3] in consonants) for r in rules)
    assert 0.3 < np.mean([r[2] in vowels for r in rules]) < 0.7  # a fair coin per rule


def test_random_accents_touch_only_their_own_utterances(corpus, tmp_path):
    sentences = speech.read_sentences(corpus)
    every = speech.plan(tiny(corpus, random_accents=1.0), sentences)
    assert all(("~" in u.voice) == (split in ("train", "val")) for split, us in every.items() for u in us)
    assert all("~" not in voice for us in every.values() for u in us for _, voice, _, _ in u.babble)
    plain = build_speech(tmp_path / "plain", tiny(corpus, train=5), progress=False, workers=2)
    mixed = build_speech(tmp_path / "a", tiny(corpus, train=5, random_accents=0.5, accent_pool=3), progress=False,
                         workers=2)
    assert sorted(mixed["random_accents"]) == sorted(f"{a}~{k}" for a in speech.TRAIN_ACCENTS for k in range(3))
    changed = 0
    for split in speech.SPLITS:
        rows = [(p.name, c) for p, _, c in speech.read_split(tmp_path / "a", split)]
        before = [(p.name, c) for p, _, c in speech.read_split(tmp_path / "plain", split)]
        # every other draw is the plain build's: the same sentence, base accent, variant, speed, pitch and noise
        assert [(n, re.sub(r"~\d+\+", "+", c)) for n, c in rows] == before
        random = [n for n, c in rows if "~" in c]
        assert mixed["splits"][split]["random_accent_share"] == round(len(random) / len(rows), 4)
        assert mixed["splits"][split]["accents"] == plain["splits"][split]["accents"]
        if split in ("test", "test_seen_voice"):
            assert not random
        for name, _ in rows:
            same = (tmp_path / "a" / split / name).read_bytes() == (tmp_path / "plain" / split / name).read_bytes()
            assert same or name in random
            changed += not same
    drawn = sum(round(mixed["splits"][s]["random_accent_share"] * mixed["splits"][s]["count"])
                for s in ("train", "val"))
    assert 0 < drawn < 7 and changed > 0  # half of the 7 asked for, by chance; some of them heard differently
    assert "random_accents" not in plain and all("random_accent_share" not in v for v in plain["splits"].values())
    assert not {"random_accents", "accent_pool", "accent_rules"} & set(plain["spec"])  # as built before them


def test_random_accent_settings_are_refused_one_line(corpus, tmp_path):
    spec = tiny(corpus, train=1, val=0, test=1, test_seen_voice=0)
    build_speech(tmp_path / "a", spec, progress=False, workers=1)
    with pytest.raises(ConfigError) as e:  # the same directory with random accents asked for is another dataset
        build_speech(tmp_path / "a", replace(spec, random_accents=0.5), progress=False)
    assert "random_accents" in one_line(e)
    for bad in ({"random_accents": 1.5}, {"random_accents": -0.1}, {"accent_pool": 0}, {"accent_rules": (3, 2)}):
        with pytest.raises(ConfigError) as e:
            build_speech(tmp_path / "c", replace(spec, **bad), progress=False)
        assert "random accents" in one_line(e)
    with pytest.raises(CorpusError) as e:  # an accent with mbrola voices only has no voice file to add rules to
        sa.install({"en-uk~0": ["replace 00 D d"]}, tmp_path / "esd")
    assert "mbrola" in one_line(e)
    (tmp_path / "esd2" / "espeak-ng-data" / "phontab").mkdir(parents=True)  # a real folder where a link goes
    with pytest.raises(CorpusError) as e:
        sa.install({"en-us~0": ["replace 00 D d"]}, tmp_path / "esd2")
    assert "delete" in one_line(e)
