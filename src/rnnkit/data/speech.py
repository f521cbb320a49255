"""Synthetic English speech for CTC recognition: sentences read by espeak-ng in many voices, mixed with noise.

Text and its split into train, val and test parts: ``rnnkit.data.speech_text``.

Voices: espeak-ng's eight English accents with its own (formant) synthesiser; mbrola voices need a package that is
not assumed. Training: en-us, en-us-nyc, en-gb, en-gb-x-rp, en-gb-scotland, en-gb-x-gbclan, en-gb-x-gbcwmd. Held
out: en-029 (Caribbean), the one farthest from the others in a way that changes words, not only vowels: it stops
"th" (think -> t[INk, the -> d@) and drops final r; its phonemes differ from the nearest training accent (RP) on 6%
of 200 sample sentences, where Lancaster's differ from en-gb's on 2%. Variants (timbre, pitch range, formants,
Klatt synthesis) are espeak's ``!v`` files, case-sensitive (an unknown one silently falls back to the default, so
the names are checked against ``espeak-ng --voices=variant``). Of its 101, 72 train, 6 are held out from training
(m3, m8, f2, f5, klatt3, steph3: two men, two women, a Klatt voice, one other) and 23 are left out, judged by their
settings as effects rather than speakers: robots (robosoft*, UniRobot, anikaRobot, announcer), whisper, whisperf,
Demonic, Tweaky, the echoing RicishayMax*, and Storm, AnxiousAndy, "Mr serious", kaukovalta, fast (extreme formant
or timing settings). Speed (words per minute) and pitch (0-99) are drawn uniformly per utterance. With
``random_accents`` > 0, that share of the train and val utterances is read in a random accent: a training accent
with random phoneme substitutions (``rnnkit.data.speech_accents``), drawn from a stream of its own, so every other
choice, and every utterance not in a random accent, is the same as without.

Splits: ``train`` and ``val`` (train text / val text, training accents and variants: val picks checkpoints);
``test`` (test text, the held-out accent with the held-out variants); ``test_seen_voice`` (the same test sentences
with the same speed, pitch, SNR and noise, the very samples but for babble's voices, utterance for utterance, in
training voices: the gap between the two is what the unseen voice costs). Each utterance gets a noise type (uniform
over ``noise``) at an SNR drawn uniformly in ``snr_db`` (see ``rnnkit.data.audio``); ``babble`` is 4-7 other
sentences of the same text part in the split's voices, each at the same active level, looped to the clip's length.
0.05-0.3 s of silence (then noise) pads each side; the mix is scaled to a peak of -12 to -1 dBFS and stored as
16-bit PCM at ``sample_rate``.

Determinism: every random choice comes from ``numpy.random.default_rng([seed, part, index])``, so the same spec on
the same espeak-ng and libsoxr gives the same bytes, with any number of workers. The build writes the WAVs (each
atomically), then the TSVs, then dataset.json: a directory with dataset.json is complete; an interrupted build
resumes where it stopped when run again with the same spec.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.data import audio, speech_accents
from rnnkit.data.audio import wav_frames
from rnnkit.data.built import read_rows
from rnnkit.data.datasets import sha256_file
from rnnkit.data.parallel import map_jobs
from rnnkit.data.speech_text import normalise_text, read_sentences, text_part, training_sentences
from rnnkit.errors import ConfigError, CorpusError

FORMAT = 1
KIND = "speech"
ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
NOISES = ("white", "pink", "brown", "babble")
SPLITS = ("train", "val", "test", "test_seen_voice")
TEXT_OF = {"train": "train", "val": "val", "test": "test", "test_seen_voice": "test"}  # split -> text part
HELD_OUT_SPLITS = ("test",)
RANDOM_ACCENT_SPLITS = ("train", "val")  # test_seen_voice stays in the training accents as they are
ESPEAK_ROOT = ".espeak"  # in the dataset: the random accents' voice files
_ID = {"train": 1, "val": 2, "test": 3, "test_seen_voice": 4}
TRAIN_ACCENTS = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TEST_ACCENTS = ("en-029",)
TRAIN_VARIANTS = (
    "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f3", "f4", "klatt", "klatt2", "klatt4", "klatt5", "klatt6", "adam",
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david",
    "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique", "Hugo", "iven", "iven2",
    "iven3", "iven4", "Jacky", "john", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel",
    "miguel", "Mike", "Nguyen", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
    "steph", "steph2", "travis", "victor", "zac", "anika", "grandma", "grandpa", "croak")
TEST_VARIANTS = ("m3", "m8", "f2", "f5", "klatt3", "steph3")


@dataclass
class SpeechSpec:
    text: Path  # spa.txt (English<TAB>Spanish...) or one sentence per line
    train: int = 6000  # utterances per split
    val: int = 400
    test: int = 600
    test_seen_voice: int = 400
    sample_rate: int = 16000
    n_mels: int = 80
    hop_ms: float = 10.0
    win_ms: float = 25.0
    snr_db: tuple[float, float] = (5.0, 20.0)
    speed: tuple[int, int] = (130, 210)  # espeak-ng words per minute (its default: 175)
    pitch: tuple[int, int] = (20, 80)  # espeak-ng 0-99 (default 50)
    noise: tuple[str, ...] = NOISES
    accents: tuple[str, ...] = TRAIN_ACCENTS
    variants: tuple[str, ...] = TRAIN_VARIANTS
    test_accents: tuple[str, ...] = TEST_ACCENTS
    test_variants: tuple[str, ...] = TEST_VARIANTS
    min_chars: int = 10
    max_chars: int = 80
    seed: int = 0
    random_accents: float = 0.0  # share of train/val utterances in a random accent (rnnkit.data.speech_accents)
    accent_pool: int = 30  # random accents per training accent
    accent_rules: tuple[int, int] = (6, 12)  # substitutions per random accent

    def check(self) -> None:
        counts = {s: getattr(self, s) for s in SPLITS}
        if self.train <= 0 or min(counts.values()) < 0:
            raise ConfigError(f"utterance counts must be >= 0 and train > 0, got {counts} — pass positive counts")
        if self.sample_rate < 8000 or self.n_mels <= 0 or not 0 < self.hop_ms <= self.win_ms:
            raise ConfigError(f"sample_rate {self.sample_rate}, n_mels {self.n_mels}, hop {self.hop_ms} ms, window "
                              f"{self.win_ms} ms — pass a rate >= 8000, n_mels > 0 and 0 < hop <= window")
        lo, hi = self.snr_db
        if not (np.isfinite(lo) and np.isfinite(hi) and -10 <= lo <= hi <= 60):
            raise ConfigError(f"SNR range {lo}..{hi} dB is not low <= high within -10..60 — pass e.g. 5,20")
        if not 80 <= self.speed[0] <= self.speed[1] <= 450 or not 0 <= self.pitch[0] <= self.pitch[1] <= 99:
            raise ConfigError(f"speed {self.speed} or pitch {self.pitch} out of range — pass a speed range within "
                              "80..450 words per minute and a pitch range within 0..99, low <= high")
        if not self.noise or set(self.noise) - set(NOISES):
            raise ConfigError(f"noise types {list(self.noise)} — pick one or more of {', '.join(NOISES)}")
        if not (self.accents and self.variants and self.test_accents and self.test_variants):
            raise ConfigError("an empty list of accents or variants — name at least one of each for train and test")
        if set(self.accents) & set(self.test_accents) or set(self.variants) & set(self.test_variants):
            both = sorted(set(self.accents) & set(self.test_accents) | set(self.variants) & set(self.test_variants))
            raise ConfigError(f"{', '.join(both)} both trained on and held out — keep test voices out of training")
        if not 1 <= self.min_chars <= self.max_chars:
            raise ConfigError(f"sentence length {self.min_chars}..{self.max_chars} — pass 1 <= min_chars <= max_chars")
        if not (0 <= self.random_accents <= 1 and self.accent_pool >= 1 and 1 <= self.accent_rules[0]
                <= self.accent_rules[1] <= 20):
            raise ConfigError(f"random accents: share {self.random_accents}, pool {self.accent_pool}, rules "
                              f"{self.accent_rules} — pass a share within 0..1 (e.g. 0.5), a pool >= 1 and rules "
                              "1 <= low <= high <= 20")

    @property
    def features(self) -> dict:
        """``wav_frames``' keyword arguments for this dataset."""
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels,
                "hop_length": round(self.sample_rate * self.hop_ms / 1000),
                "win_length": round(self.sample_rate * self.win_ms / 1000), "normalise": True}

    def to_json(self) -> dict:
        d = asdict(self)
        d["text"] = str(self.text)
        if not self.random_accents:  # the same spec, and dataset.json, as a build before random accents existed
            for key in ("random_accents", "accent_pool", "accent_rules"):
                del d[key]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class Utterance:
    """One clip to render: what espeak reads, the label, the voice and the noise (see the module docstring)."""
    path: str  # relative to the dataset directory
    spoken: str
    label: str
    voice: str  # "en-029+f2"
    speed: int
    pitch: int
    noise: str
    snr: float
    pad: tuple[float, float]  # seconds of silence before and after the speech
    peak_db: float
    seed: tuple[int, ...]  # of the noise samples and the babble offsets
    babble: tuple[tuple[str, str, int, int], ...] = field(default=())  # (spoken, voice, speed, pitch) per talker

    @property
    def condition(self) -> str:
        return f"{self.voice} speed={self.speed} pitch={self.pitch} snr={self.snr:.1f} {self.noise}"


def _voice(rng: np.random.Generator, accents: tuple[str, ...], variants: tuple[str, ...]) -> str:
    return f"{accents[rng.integers(len(accents))]}+{variants[rng.integers(len(variants))]}"


def _speed_pitch(rng: np.random.Generator, spec: SpeechSpec) -> tuple[int, int]:
    return int(rng.integers(spec.speed[0], spec.speed[1] + 1)), int(rng.integers(spec.pitch[0], spec.pitch[1] + 1))


def plan(spec: SpeechSpec, sentences: list[tuple[str, str]]) -> dict[str, list[Utterance]]:
    """Every utterance of every split, drawn from ``spec.seed`` alone (see the module docstring)."""
    parts: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for sentence in sentences:
        parts[text_part(sentence[1])].append(sentence)
    order = {p: np.random.default_rng([spec.seed, _ID[p]]).permutation(len(s)) for p, s in parts.items()}
    out: dict[str, list[Utterance]] = {}
    for split in SPLITS:
        part, pool = TEXT_OF[split], parts[TEXT_OF[split]]
        if getattr(spec, split) and not pool:
            raise CorpusError(f"no sentence of {spec.text} falls in the {part} text (5% each for val and test) — "
                              "pass a corpus of at least a few hundred sentences")
        held = split in HELD_OUT_SPLITS
        accents, variants = (spec.test_accents, spec.test_variants) if held else (spec.accents, spec.variants)
        out[split] = []
        for i in range(getattr(spec, split)):
            cond = np.random.default_rng([spec.seed, _ID[part], i])  # shared by test and test_seen_voice
            who = np.random.default_rng([spec.seed, 10 + _ID[split], i])
            own = int(order[part][i % len(pool)])
            spoken, label = pool[own]
            speaker, (speed, pitch) = _voice(who, accents, variants), _speed_pitch(cond, spec)
            if spec.random_accents and split in RANDOM_ACCENT_SPLITS:  # its own stream: other draws stay as they were
                pick = np.random.default_rng([spec.seed, 60 + _ID[split], i])
                if pick.random() < spec.random_accents:
                    accent, variant = speaker.split("+")
                    speaker = f"{accent}{speech_accents.MARK}{pick.integers(spec.accent_pool)}+{variant}"
            noise = spec.noise[cond.integers(len(spec.noise))]
            snr = round(float(cond.uniform(*spec.snr_db)), 2)
            pad = (round(float(cond.uniform(0.05, 0.3)), 3), round(float(cond.uniform(0.05, 0.3)), 3))
            peak_db = round(float(cond.uniform(-12, -1)), 2)
            babble = ()
            if noise == "babble":
                others = [k for k in cond.choice(len(pool), size=min(len(pool), 8), replace=False) if k != own]
                babble = tuple((pool[k][0], _voice(who, accents, variants), *_speed_pitch(cond, spec))
                               for k in others[:int(cond.integers(4, 8))] or [own])
            out[split].append(Utterance(f"{split}/{i:06d}.wav", spoken, label, speaker, speed, pitch, noise, snr,
                                        pad, peak_db, (spec.seed, 20 + _ID[part], i), babble))
    return out


def render(u: Utterance, sample_rate: int, espeak_root: Path | None = None) -> np.ndarray:
    """The noisy clip of ``u``, float32 at ``sample_rate``, peak at ``u.peak_db`` dBFS; a random accent's voice
    file is read from ``espeak_root`` (``speech_accents.install``)."""
    speech = audio.synthesize(u.spoken, speech_accents.espeak_voice(u.voice), u.speed, u.pitch, sample_rate,
                              data_path=espeak_root if speech_accents.MARK in u.voice else None)
    before, after = (np.zeros(round(p * sample_rate), np.float32) for p in u.pad)
    clean = np.concatenate([before, speech, after])
    rng = np.random.default_rng(list(u.seed))
    if u.noise == "babble":
        noise = np.zeros(len(clean), np.float64)
        for text, voice, speed, pitch in u.babble:
            talker = audio.synthesize(text, voice, speed, pitch, sample_rate)
            noise += audio.loop_to(talker, len(clean), rng) / np.sqrt(audio.active_power(talker, sample_rate))
    else:
        noise = audio.coloured_noise(u.noise, len(clean), rng)
    mixed, _ = audio.mix(clean, noise, u.snr, sample_rate)
    return (mixed * (10 ** (u.peak_db / 20) / np.abs(mixed).max())).astype(np.float32)


def _render_file(job: tuple[Utterance, Path, int]) -> float:
    """Write ``job``'s WAV unless it exists (a resumed build); its length in seconds."""
    u, out, rate = job
    path = out / u.path
    if path.exists():
        return audio._soundfile().info(str(path)).frames / rate
    clip = render(u, rate, out / ESPEAK_ROOT)
    audio.write_wav(path, clip, rate)
    return len(clip) / rate


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _identity(spec: SpeechSpec, digest: str) -> dict:
    return {"kind": KIND, "format_version": FORMAT, "text_sha256": digest,
            "spec": {k: v for k, v in spec.to_json().items() if k != "text"}}


def _claim(out: Path, identity: dict) -> dict | None:
    """The finished dataset in ``out`` if it is this one; None to (re)start; ConfigError for anything else."""
    for name, what in (("dataset.json", "a different dataset"), (".building.json", "an unfinished build of another")):
        path = out / name
        if path.exists():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
                mine = {k: found.get(k) for k in identity} | {"spec": {k: v for k, v in found["spec"].items()
                                                                       if k != "text"}}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise ConfigError(f"{out} holds a damaged {name} — pass another directory or delete it") from None
            if mine != identity:
                diff = [k for k in identity["spec"] if mine["spec"].get(k) != identity["spec"][k]]
                diff += [k for k in identity if k != "spec" and mine[k] != identity[k]]
                raise ConfigError(f"{out} holds {what} dataset (differs in {', '.join(diff)}) — pass another "
                                  "directory or delete it")
            return found if name == "dataset.json" else None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not an empty directory and holds no speech dataset — pass a new directory")
    return None


def build_speech(out: str | Path, spec: SpeechSpec, progress: bool = True, workers: int = 2) -> dict:
    """Build the dataset into ``out`` and return its dataset.json; an ``out`` already holding this dataset is left
    as it is, one holding a part-built one is finished (see the module docstring for the layout)."""
    spec.check()
    out = Path(out)
    audio.espeak_path()
    if not Path(spec.text).is_file():
        raise CorpusError(f"{spec.text} not found — pass a text file of English sentences (spa.txt)")
    identity = _identity(spec, sha256_file(Path(spec.text)))
    if (done := _claim(out, identity)) is not None:
        return done
    languages, variants = audio.espeak_voices()
    for name, known, kind in (("accent", languages, spec.accents + spec.test_accents),
                              ("variant", variants, spec.variants + spec.test_variants)):
        if missing := [v for v in kind if v not in known]:
            raise ConfigError(f"espeak-ng has no {name} {', '.join(missing)} — pick from `espeak-ng --voices"
                              f"{'=variant' if name == 'variant' else '=en'}` (names are case-sensitive)")
    sentences = read_sentences(spec.text, spec.min_chars, spec.max_chars)
    utterances = plan(spec, sentences)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    _write_atomic(out / ".building.json", json.dumps(identity | {"spec": spec.to_json()}, indent=1))
    pool = {}
    if spec.random_accents:
        text = [spoken for spoken, label in sentences if text_part(label) == "train"][:400]
        pool = speech_accents.draw(spec.accents, spec.accent_pool, spec.accent_rules, text, spec.seed)
        speech_accents.install(pool, out / ESPEAK_ROOT)
    jobs = [(u, out, spec.sample_rate) for split in SPLITS for u in utterances[split]]
    seconds = map_jobs(_render_file, jobs, workers, progress, unit="clip", start="spawn")
    train_words = {w for u in utterances["train"] for w in u.label.split()}
    dataset = identity | {"spec": spec.to_json(), "espeak": audio.espeak_version(), "alphabet": ALPHABET,
                          "features": spec.features, "sentences": Counter(text_part(s[1]) for s in sentences),
                          "splits": {}}
    start = 0
    for split in SPLITS:
        us, secs = utterances[split], seconds[start:start + len(utterances[split])]
        start += len(us)
        _write_atomic(out / f"{split}.tsv", "".join(f"{u.path}\t{u.label}\t{u.condition}\n" for u in us))
        words = [w for u in us for w in u.label.split()]
        dataset["splits"][split] = {
            "count": len(us), "text": TEXT_OF[split], "sentences": len({u.label for u in us}),
            "accents": sorted({u.voice.split("+")[0].split(speech_accents.MARK)[0] for u in us}),
            "variants": sorted({u.voice.split("+")[1] for u in us}),
            "noise": dict(sorted(Counter(u.noise for u in us).items())), "snr_db": list(spec.snr_db),
            "hours": round(sum(secs) / 3600, 3), "mean_seconds": round(float(np.mean(secs)), 3) if us else 0.0,
            "unseen_words": round(sum(w not in train_words for w in words) / max(1, len(words)), 4)}
        if pool:
            share = sum(speech_accents.MARK in u.voice for u in us) / max(1, len(us))
            dataset["splits"][split]["random_accent_share"] = round(share, 4)
    if pool:
        dataset["random_accents"] = pool
    _write_atomic(out / "dataset.json", json.dumps(dataset, indent=1))
    (out / ".building.json").unlink()
    return dataset


def read_dataset(out: str | Path) -> dict:
    """dataset.json of a finished speech dataset; CorpusError for a missing, unfinished or other one."""
    path = Path(out) / "dataset.json"
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{out} holds no finished speech dataset (no dataset.json) — build it with "
                          "`rnnkit data speech`") from None
    except ValueError:
        raise CorpusError(f"{path} is damaged — delete {out} and build it again") from None
    if dataset.get("kind") != KIND or dataset.get("format_version") != FORMAT:
        raise CorpusError(f"{out} holds a {dataset.get('kind')} dataset of format {dataset.get('format_version')}, "
                          f"not speech format {FORMAT} — build it again with `rnnkit data speech`")
    return dataset


def read_split(out: str | Path, split: str) -> list[tuple[Path, str, str]]:
    """``(wav path, label, condition)`` of each utterance of ``split`` in a finished dataset."""
    return read_rows(out, split, read_dataset(out)["splits"])


__all__ = ["ALPHABET", "SPLITS", "SpeechSpec", "Utterance", "build_speech", "normalise_text", "plan", "read_dataset",
           "read_sentences", "read_split", "render", "text_part", "training_sentences", "wav_frames"]
