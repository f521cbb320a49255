"""Speech data: sentence filtering and the text split, held-out voices, noise at the SNR asked for, deterministic and
resumable builds, log-mel frames of any WAV, and the one-line errors.

Needs espeak-ng (Debian package) and librosa + soundfile (``rnnkit[recognize]``): without them these tests skip, or
fail with ``RNNKIT_REQUIRE_SPEECH=1`` (set by .ci/run, which installs espeak-ng).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data

from rnnkit.errors import ConfigError, CorpusError


def _require_speech() -> None:
    missing = [m for m in ("librosa", "soundfile") if not _importable(m)]
    missing += [] if shutil.which("espeak-ng") else ["espeak-ng (apt-get install espeak-ng)"]
    if missing:
        reason = f"speech tests need {', '.join(missing)}"
        if os.environ.get("RNNKIT_REQUIRE_SPEECH") == "1":
            pytest.fail(reason)
        pytest.skip(reason, allow_module_level=True)


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


_require_speech()

import soundfile  # noqa: E402

from rnnkit.data import audio, speech  # noqa: E402
from rnnkit.data.speech import SpeechSpec, build_speech, wav_frames  # noqa: E402

RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """4,000 short lines of spa.txt: enough for every text part, quick to read and to speak."""
    lines = require_data("spa-eng/spa.txt").read_text(encoding="utf-8").splitlines()[20_000:24_000]
    path = tmp_path_factory.mktemp("corpus") / "spa.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny(corpus: Path, **kw) -> SpeechSpec:
    return replace(SpeechSpec(corpus, train=6, val=2, test=3, test_seen_voice=2), **kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and " — " in msg, msg
    return msg


def test_sentences_are_filtered_to_what_espeak_says():
    norm = speech.normalise_text
    assert norm("Don't go!") == "don't go"
    assert norm("\u2018Hello,\u2019 Tom said.") == "hello tom said"
    assert norm("It's a well-known fact; isn't it?") == "it's a well known fact isn't it"
    assert norm("The students' books.") == "the students books"
    for dropped in ("I have 3 cats.", "Mr. Smith is here.", "He lives in the U.S. now.", "Turn off the TV.",
                    "Is it OK?", "I like the café.", "Plan B failed.", "50% off", "Tom & Mary"):
        assert norm(dropped) is None, dropped
    assert set("".join(norm(s) or "" for s in ("A b?", "I am.", "Yes, I can!"))) <= set(speech.ALPHABET)


def test_read_sentences_tsv_plain_and_empty(tmp_path):
    tsv = tmp_path / "a.txt"
    tsv.write_text("Tom is here.\tTom está aquí.\tCC-BY 2.0\nTom is here!\tx\n\nIt is 5 pm.\tx\nWhere is it?\n",
                   encoding="utf-8")
    assert speech.read_sentences(tsv, min_chars=5) == [("Tom is here.", "tom is here"), ("Where is it?", "where is it")]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n1234\nTV\n", encoding="utf-8")
    with pytest.raises(CorpusError) as e:
        speech.read_sentences(empty)
    assert "no usable English sentence" in one_line(e)
    with pytest.raises(CorpusError) as e:
        speech.read_sentences(tmp_path / "missing.txt")
    one_line(e)


def test_text_split_disjoint_and_voices_held_out():
    spec = SpeechSpec(require_data("spa-eng/spa.txt"), train=3000, val=200, test=300, test_seen_voice=300)
    plan = speech.plan(spec, speech.read_sentences(spec.text))
    labels = {s: {u.label for u in us} for s, us in plan.items()}
    assert {s: len(us) for s, us in plan.items()} == {"train": 3000, "val": 200, "test": 300, "test_seen_voice": 300}
    assert not labels["test"] & labels["train"] and not labels["val"] & labels["train"]
    assert not labels["test"] & labels["val"]
    assert all(speech.text_part(label) == speech.TEXT_OF[s] for s, ls in labels.items() for label in ls)
    train_words = {w for label in labels["train"] for w in label.split()}
    assert {w for label in labels["test"] for w in label.split()} - train_words  # open vocabulary

    def voices(split):
        return {v for u in plan[split] for v in (u.voice, *(b[1] for b in u.babble))}

    seen = voices("train") | voices("val") | voices("test_seen_voice")
    held = voices("test")
    assert {v.split("+")[0] for v in held} == set(spec.test_accents)
    assert {v.split("+")[1] for v in held} == set(spec.test_variants)
    assert not {v.split("+")[0] for v in seen} & set(spec.test_accents)
    assert not {v.split("+")[1] for v in seen} & set(spec.test_variants)
    assert {v.split("+")[1] for v in seen} == set(spec.variants)
    for a, b in zip(plan["test"], plan["test_seen_voice"], strict=False):  # same sentence and noise, other voice
        same = ("label", "noise", "snr", "speed", "pitch", "seed")
        assert [getattr(a, k) for k in same] == [getattr(b, k) for k in same] and a.voice != b.voice
    babble = [u for u in plan["train"] if u.noise == "babble"]
    assert babble and all(4 <= len(u.babble) <= 7 and u.spoken not in {b[0] for b in u.babble} for u in babble)
    snrs = [u.snr for us in plan.values() for u in us]
    assert 5 <= min(snrs) < 6 and 19 < max(snrs) <= 20
    assert {u.noise for u in plan["train"]} == set(speech.NOISES)


def _active_power(x: np.ndarray) -> float:
    """The speech level as the module defines it, computed here independently: 20 ms frames within 40 dB of the
    loudest one."""
    frames = x[: len(x) // 320 * 320].astype(np.float64).reshape(-1, 320)
    energy = (frames ** 2).mean(axis=1)
    return float(energy[10 * np.log10(energy / energy.max() + 1e-30) >= -40].mean())


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_mix_reaches_the_snr(kind):
    clean = audio.synthesize("The quick brown fox jumps over the lazy dog.", "en-gb+m3", 175, 50, RATE)
    clean = np.concatenate([np.zeros(8000, np.float32), clean, np.zeros(4000, np.float32)])
    noise = audio.coloured_noise(kind, len(clean), np.random.default_rng(0))
    for snr in (5.0, 12.5, 20.0):
        mixed, scaled = audio.mix(clean, noise, snr, RATE)
        assert np.allclose(mixed - scaled, clean, atol=1e-6)
        measured = 10 * np.log10(_active_power(clean) / np.mean(scaled.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.01)
    whole = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(scaled.astype(np.float64) ** 2))
    assert whole < 20 - 1  # silence would lower a whole-clip SNR: the active level does not count it


def test_noise_colours_have_their_slopes():
    for kind, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        x = audio.coloured_noise(kind, 1 << 16, np.random.default_rng(1)).astype(np.float64)
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.arange(len(power))
        band = (f > 50) & (f < 20000)
        fitted = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.1), kind
        assert x.std() == pytest.approx(1.0, rel=1e-3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_is_deterministic_and_complete(corpus, tmp_path):
    spec = tiny(corpus)
    a = build_speech(tmp_path / "a", spec, progress=False, workers=1)
    build_speech(tmp_path / "b", spec, progress=False, workers=2)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    assert json.loads(files["dataset.json"]) == a and a["kind"] == "speech" and a["format_version"] == 1
    assert a["features"] == {"sample_rate": RATE, "n_mels": 80, "hop_length": 160, "win_length": 400,
                             "normalise": True}
    assert {s: a["splits"][s]["count"] for s in speech.SPLITS} == {"train": 6, "val": 2, "test": 3,
                                                                    "test_seen_voice": 2}
    assert a["splits"]["test"]["accents"] == ["en-029"]
    for split in speech.SPLITS:
        rows = speech.read_split(tmp_path / "a", split)
        assert len(rows) == a["splits"][split]["count"]
        for path, label, condition in rows:
            assert set(label) <= set(speech.ALPHABET) and " snr=" in condition
            info = soundfile.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
            assert 0.5 < info.duration < 12
    assert not (tmp_path / "a" / ".building.json").exists()
    assert build_speech(tmp_path / "a", spec, progress=False) == a  # already there: nothing to do


def test_interrupted_build_resumes_to_the_same_bytes(corpus, tmp_path, monkeypatch):
    spec = tiny(corpus, train=4, val=1, test=1, test_seen_voice=1)
    render, calls = speech._render_file, []

    def dies(job):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(job)
        return render(job)

    monkeypatch.setattr(speech, "_render_file", dies)
    with pytest.raises(KeyboardInterrupt):
        build_speech(tmp_path / "x", spec, progress=False, workers=1)
    assert not (tmp_path / "x" / "dataset.json").exists()
    with pytest.raises(ConfigError) as e:  # an unfinished build of another spec is not mixed with this one
        build_speech(tmp_path / "x", replace(spec, seed=1), progress=False, workers=1)
    assert "unfinished" in one_line(e)
    monkeypatch.setattr(speech, "_render_file", render)
    build_speech(tmp_path / "x", spec, progress=False, workers=1)
    build_speech(tmp_path / "y", spec, progress=False, workers=1)
    assert _files(tmp_path / "x") == _files(tmp_path / "y")


def test_out_holding_something_else_is_refused(corpus, tmp_path):
    spec = tiny(corpus, train=1, val=0, test=1, test_seen_voice=0)
    build_speech(tmp_path / "a", spec, progress=False, workers=1)
    with pytest.raises(ConfigError) as e:
        build_speech(tmp_path / "a", replace(spec, snr_db=(0.0, 5.0)), progress=False, workers=1)
    assert "different dataset" in one_line(e) and "snr_db" in str(e.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as e:
        build_speech(tmp_path / "other", spec, progress=False, workers=1)
    one_line(e)
    with pytest.raises(CorpusError) as e:
        speech.read_dataset(tmp_path / "other")
    one_line(e)


def test_wav_frames_shape_dtype_and_normalisation():
    x = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    frames = wav_frames(x)
    assert frames.shape == (101, 80) and frames.dtype == np.float32
    assert np.allclose(frames.mean(axis=0), 0, atol=1e-4) and np.allclose(frames.std(axis=0), 1, atol=1e-3)
    assert np.allclose(wav_frames(x * 0.01), frames, atol=1e-3)  # the level does not matter
    assert wav_frames(x, n_mels=40, hop_length=320).shape == (51, 40)


def test_wav_frames_of_a_sound_shorter_than_the_window_is_quiet():
    """A sound shorter than n_fft is padded (center=True) and framed; librosa's warning about it would reach the
    user's terminal before the transcript, so it is kept out (any other warning still shows)."""
    x = np.random.default_rng(1).standard_normal(200).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = wav_frames(x)  # 12.5 ms: less than one 25 ms window
    assert frames.shape == (1 + 200 // 160, 80) and np.isfinite(frames).all()


def test_wav_frames_resamples_and_mixes_down(tmp_path):
    speech16 = audio.synthesize("Where is the library?", "en-us+f3", 160, 50, RATE)
    speech44 = audio.synthesize("Where is the library?", "en-us+f3", 160, 50, 44100)
    assert abs(len(speech44) / 44100 - len(speech16) / RATE) < 1e-3
    soundfile.write(str(tmp_path / "mono16.wav"), speech16, RATE, subtype="PCM_16")
    stereo = np.stack([speech44, 0.5 * speech44], axis=1)
    soundfile.write(str(tmp_path / "stereo44.wav"), stereo, 44100, subtype="PCM_16")
    a, b = wav_frames(tmp_path / "mono16.wav"), wav_frames(tmp_path / "stereo44.wav")
    assert a.shape == b.shape == (1 + len(speech16) // 160, 80)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert wav_frames(stereo, source_rate=44100).shape == a.shape


def test_errors_are_one_line(corpus, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        build_speech(tmp_path / "a", tiny(corpus, snr_db=(20.0, 5.0)), progress=False)
    assert "SNR" in one_line(e)
    with pytest.raises(ConfigError) as e:
        build_speech(tmp_path / "a", tiny(corpus, test_variants=("m3", "m1")), progress=False)
    assert "m1" in one_line(e)
    with pytest.raises(ConfigError) as e:
        build_speech(tmp_path / "a", tiny(corpus, variants=("m1", "andy")), progress=False)
    assert "andy" in one_line(e) and "case-sensitive" in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("12\n34\n", encoding="utf-8")
    with pytest.raises(CorpusError) as e:
        build_speech(tmp_path / "b", tiny(empty), progress=False)
    one_line(e)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(CorpusError) as e:
        wav_frames(tmp_path / "bad.wav")
    assert "cannot read" in one_line(e)
    with pytest.raises(CorpusError) as e:
        wav_frames(np.zeros(0, np.float32))
    one_line(e)


def test_missing_espeak_or_extra_is_one_line(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CorpusError) as e:
        build_speech(tmp_path / "a", tiny(corpus), progress=False)
    assert "apt-get install espeak-ng" in one_line(e)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(CorpusError) as e:
        wav_frames(np.zeros(1600, np.float32))
    assert "pip install 'rnnkit[recognize]'" in one_line(e)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(CorpusError) as e:
        wav_frames(tmp_path / "x.wav")
    assert "pip install 'rnnkit[recognize]'" in one_line(e)


def test_worker_processes_run_one_thread_each_and_keep_the_order(monkeypatch):
    """``map_jobs``: results in the jobs' order from 2 spawned workers, each limited to one BLAS/OpenMP thread,
    and the caller's own settings as they were afterwards. (The functions are the standard library's: a spawned
    worker must import a job's function by name, and a test module is not importable from every worker.)"""
    from rnnkit.data.parallel import THREAD_VARIABLES, map_jobs

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    jobs = [v for v in THREAD_VARIABLES for _ in range(3)]
    assert map_jobs(os.getenv, jobs, workers=2, start="spawn", chunksize=1) == ["1"] * len(jobs)
    assert map_jobs(len, ["a", "bb", "ccc"], workers=2, start="spawn") == [1, 2, 3]
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_a_worker_that_dies_raises_instead_of_hanging():
    """A job that kills its worker process ends ``map_jobs`` with an error (multiprocessing.Pool would wait
    forever for the lost result)."""
    from concurrent.futures.process import BrokenProcessPool

    from rnnkit.data.parallel import map_jobs

    with pytest.raises(BrokenProcessPool):
        map_jobs(os._exit, [1, 1], workers=2, start="spawn")

