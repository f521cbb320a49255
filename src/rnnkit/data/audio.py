"""Audio for the speech data: log-mel frames of any sound file, espeak-ng synthesis, noise and mixing at an SNR.

Frames (``wav_frames``): the sound is mixed down to mono and resampled (librosa, soxr "high quality") to the
dataset's rate, then a power mel spectrogram: 25 ms Hann windows (``win_length``; FFT of the next power of two), a
10 ms hop (``hop_length``), ``n_mels`` bands from 20 Hz to half the rate, ``center=True`` so a sound of ``n`` samples
gives ``1 + n // hop_length`` frames. Log: decibels relative to the loudest bin, floored 80 dB below it, so digital
silence in a user's file is not -inf. Normalisation: per utterance, each band to mean 0 and standard deviation 1
(cepstral mean and variance normalisation). It undoes the recording level and the channel's colouring (a microphone,
a codec, espeak's voice filters) with no statistics to store or keep in step with a checkpoint; the price is that a
clip must hold enough speech to estimate them (a second or so), which holds for sentence-sized recognition.

SNR (``mix``): the speech's power is its *active* power, the mean square over the 20 ms frames whose energy is
within 40 dB of the loudest frame (a simple stand-in for ITU-T P.56's active speech level), so the silence espeak
leaves around a sentence, and the padding around it, do not lower the speech level; the noise's power is its mean
square over the whole clip. The noise is scaled so that 10 log10(speech power / noise power) is the SNR asked for.

Noise (``make_noise``) is made on the machine, nothing is downloaded: ``white`` (Gaussian), ``pink`` (1/f power)
and ``brown`` (1/f^2 power) by shaping white noise's spectrum, and ``babble`` passed in by the caller as a sum of
other espeak sentences.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np

from rnnkit.errors import ConfigError, CorpusError

EXTRA = "pip install 'rnnkit[recognize]'"
ESPEAK = "espeak-ng"
ESPEAK_INSTALL = "apt-get install espeak-ng"
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # noise -> exponent of 1/f in its power spectrum
TOP_DB = 80.0
ACTIVE_DB = 40.0


def _librosa():
    try:
        import librosa
    except ImportError:
        raise CorpusError(f"speech features need librosa — {EXTRA}") from None
    return librosa


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise CorpusError(f"reading and writing WAV files needs soundfile — {EXTRA}") from None
    return soundfile


def read_audio(source: str | Path | np.ndarray, sample_rate: int, source_rate: int | None = None) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``: a sound file (any format libsndfile reads) or an array of samples,
    ``(n,)`` or ``(n, channels)`` as soundfile gives them, at ``source_rate`` (default: ``sample_rate``)."""
    if isinstance(source, np.ndarray):
        audio, rate = np.asarray(source, dtype=np.float32), source_rate or sample_rate
    else:
        try:
            audio, rate = _soundfile().read(str(source), dtype="float32", always_2d=True)
        except (OSError, RuntimeError) as e:  # soundfile.LibsndfileError is a RuntimeError
            reason = " ".join(str(e).split())[:120]
            raise CorpusError(f"cannot read {source} as audio ({reason}) — pass a WAV, FLAC or OGG file") from None
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1 or audio.size == 0:
        raise CorpusError(f"{'the array' if isinstance(source, np.ndarray) else source} holds no audio "
                          f"(shape {audio.shape}) — pass a non-empty mono or multi-channel sound")
    if rate != sample_rate:
        audio = _librosa().resample(audio, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return audio.astype(np.float32, copy=False)


def wav_frames(source: str | Path | np.ndarray, sample_rate: int = 16000, n_mels: int = 80, hop_length: int = 160,
               win_length: int = 400, normalise: bool = True, source_rate: int | None = None) -> np.ndarray:
    """Log-mel frames ``(T, n_mels)`` float32 of a sound file or an array (see the module docstring); the keyword
    names are those of a speech dataset's ``features`` in dataset.json, so ``wav_frames(path, **features)`` works."""
    if min(sample_rate, n_mels, hop_length, win_length) <= 0:
        raise ConfigError(f"sample_rate, n_mels, hop_length and win_length must be > 0, got {sample_rate}, {n_mels}, "
                          f"{hop_length}, {win_length} — pass positive sizes")
    librosa = _librosa()
    audio = read_audio(source, sample_rate, source_rate)
    n_fft = 1 << (win_length - 1).bit_length()
    with warnings.catch_warnings():  # a sound shorter than n_fft is padded (center=True); the caller judges length
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                             win_length=win_length, n_mels=n_mels, fmin=20.0, fmax=sample_rate / 2,
                                             power=2.0, center=True)
    logmel = librosa.power_to_db(np.maximum(mel, 1e-20), ref=np.max, top_db=TOP_DB).T
    if normalise:
        logmel = (logmel - logmel.mean(axis=0)) / (logmel.std(axis=0) + 1e-5)
    return np.ascontiguousarray(logmel, dtype=np.float32)


def active_power(audio: np.ndarray, sample_rate: int, floor_db: float = ACTIVE_DB) -> float:
    """Mean square over the 20 ms frames whose energy is within ``floor_db`` of the loudest (0.0 for silence)."""
    n = max(1, sample_rate // 50)
    frames = audio[: len(audio) // n * n].astype(np.float64).reshape(-1, n) if len(audio) >= n else audio[None, :]
    energy = (frames ** 2).mean(axis=1)
    if energy.max() <= 0:
        return 0.0
    return float(energy[energy >= energy.max() * 10 ** (-floor_db / 10)].mean())


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(clean + scaled noise, scaled noise)`` with the noise scaled to ``snr_db`` below the clean speech's active
    power; ``noise`` must be as long as ``clean``."""
    if len(noise) != len(clean):
        raise ValueError(f"noise has {len(noise)} samples, speech {len(clean)}")
    speech, power = active_power(clean, sample_rate), float(np.mean(noise.astype(np.float64) ** 2))
    if speech <= 0 or power <= 0:
        raise ValueError("silent speech or silent noise cannot be mixed at an SNR")
    scaled = noise * np.sqrt(speech / (power * 10 ** (snr_db / 10)))
    return clean + scaled, scaled


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of white, pink or brown noise (power spectrum ~ 1/f^0, 1/f, 1/f^2), unit variance."""
    white = rng.standard_normal(n)
    if COLOURS[kind]:
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= f ** (COLOURS[kind] / 2)
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    return (white / (white.std() + 1e-12)).astype(np.float32)


def loop_to(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``audio`` repeated and cut to ``n`` samples from a random offset."""
    tiled = np.tile(audio, n // len(audio) + 2)
    start = int(rng.integers(0, len(audio)))
    return tiled[start:start + n]


def espeak_path() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise CorpusError(f"{ESPEAK} is not installed (not on PATH) — {ESPEAK_INSTALL}")
    return path


def espeak_voices() -> tuple[set[str], set[str]]:
    """``(languages, variants)`` this espeak-ng knows: "en-029", "en-gb-x-rp" ...; "m3", "f2", "Andy" ... (a
    variant is named by its file, "!v/NAME" in the table, which may hold a space: "Mr serious")."""
    exe = espeak_path()
    languages, variants = set(), set()
    for line in subprocess.run([exe, "--voices"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]:
        if len(line.split()) >= 2:
            languages.add(line.split()[1])
    listing = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variants.update(re.findall(r"!v/(\S+(?: \S+)*)", listing))
    return languages, variants


def espeak_version() -> str:
    """"espeak-ng 1.51" (the data's version; the dataset records it, since another version speaks differently)."""
    out = subprocess.run([espeak_path(), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"text-to-speech:\s*(\S+)", out)
    return f"{ESPEAK} {found[1] if found else out.strip()[:40]}"


def synthesize(text: str, voice: str, speed: int, pitch: int, sample_rate: int,
               data_path: str | Path | None = None) -> np.ndarray:
    """espeak-ng's reading of ``text`` (given on stdin, never through a shell) in ``voice`` ("en-029+f2") at
    ``speed`` words per minute and ``pitch`` 0-99, as float32 samples at ``sample_rate``; ``data_path`` is the
    directory holding the espeak-ng-data to read instead of the installed one (its ``--path``)."""
    where = [f"--path={data_path}"] if data_path is not None else []
    run = subprocess.run([espeak_path(), *where, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"],
                         input=text.encode("utf-8"), capture_output=True)
    if run.returncode != 0 or len(run.stdout) <= 44:
        reason = " ".join(run.stderr.decode("utf-8", "replace").split())[:120] or f"status {run.returncode}"
        raise CorpusError(f"espeak-ng could not read {text[:40]!r} in voice {voice} ({reason}) — check "
                          f"`espeak-ng --voices` lists the voice")
    audio, rate = _soundfile().read(io.BytesIO(run.stdout), dtype="float32")
    return read_audio(audio, sample_rate, rate)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written to a temporary name and renamed, so a file that exists is complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    _soundfile().write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
