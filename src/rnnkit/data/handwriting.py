"""Handwriting lines for CTC recognition: corpus text drawn in Debian's handwriting fonts, one PNG per line.

Text: each line of the corpus up to its first tab is a sentence (so Tatoeba's ``English<TAB>Spanish<TAB>credit``
gives its English side, and a plain text file one sentence per line). Typographic quotes, dashes, the ellipsis and
no-break spaces become their ASCII forms; a sentence with any other character outside the alphabet is dropped
(0.1% of spa.txt: é, €, ...), never changed. ``ALPHABET`` is space, letters, digits and ``!"$%&'(),-./:;?``, less
anything the test font cannot draw. Sentences are deduplicated and split by crc32 of their lower-cased text
(``test_percent`` test, ``val_percent`` validation, the rest training) *before* lines are made, so no test sentence
is ever drawn for training. Lines are packed from a split's sentences in a seeded order, word by word, up to a length
drawn from [max_chars / 2, max_chars]; a line may span two sentences.

Fonts: ``FONT_FILES`` names each Debian package's files (file-name patterns, found under ``font_dirs``). The files
whose name starts with ``test_font`` (DancingScript: Regular and Bold) are the test hands, never used for training
or validation; every other file is a training hand. Each is probed (see ``handwriting_fonts``): a training font
that cannot draw every letter and digit is dropped, one that misses some punctuation keeps it, and lines holding
those marks go to other fonts; a file that draws the same as an earlier one (Breip's two files) is dropped;
capitals fonts get upper-cased text. A line's training hand is drawn by family (package) first, capitals-only
families at half weight, so the six Comic Neue styles weigh as much as one Kristi. Reasons are in dataset.json.

Splits: ``train`` (training hands, training text, ``augment``), ``val`` (training hands, validation text),
``test`` (the test font, test text) and ``test_seen`` (training hands, the same test lines): test_seen vs test is
the cost of an unseen hand. The evaluation splits use ``eval_augment`` (mild: a hand's ordinary wobble).
Line ``i`` of split ``s`` takes its hand and every augmentation draw from generators seeded by (seed, s, i), so a
build is deterministic whatever the number of workers.

Files: ``out/<split>/000000.png`` (8-bit grayscale, dark ink on light paper, ``height`` rows), ``out/<split>.tsv``
(``relative path<TAB>text<TAB>font``, no header), ``out/dataset.json`` written last: a build that stops leaves no
dataset.json, and building the same spec into it again finishes it.

``image_frames`` (from ``handwriting_render``) turns any image into what a recogniser reads: float32 (T = width,
C = height) in [0, 1], ink = 1; the dataset's loader and ``rnnkit recognize predict`` both use it.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.data.built import read_rows
from rnnkit.data.handwriting_fonts import ALPHABET, FONT_FILES, FONT_PACKAGES, Hand, find_hands
from rnnkit.data.handwriting_render import image_frames
from rnnkit.data.parallel import default_workers, map_jobs
from rnnkit.errors import ConfigError, CorpusError

__all__ = ["ALPHABET", "FONT_FILES", "FONT_PACKAGES", "HandwritingSpec", "build_handwriting", "find_hands",
           "image_frames", "read_dataset", "read_split"]

KIND, FORMAT_VERSION = "handwriting", 1
SPLITS = ("train", "val", "test", "test_seen")
_TEXT_OF = {"train": "train", "val": "val", "test": "test", "test_seen": "test"}
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u00b4": "'", "`": "'", "\u201c": '"', "\u201d": '"',
                        "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u00a0": " "})
_MARKER = ".incomplete.json"


@dataclass
class HandwritingSpec:
    """What a handwriting dataset is made of; saved as ``spec`` in its dataset.json."""

    text: str | Path  # UTF-8 corpus: one sentence per line, anything after a tab ignored (Tatoeba's spa.txt)
    train_lines: int = 12000
    val_lines: int = 600
    test_lines: int = 600
    test_seen: bool = True  # also the test lines in the training hands
    height: int = 32
    max_chars: int = 40
    seed: int = 20240610
    test_font: str = "DancingScript"
    font_dirs: list[str] = field(default_factory=lambda: ["/usr/share/fonts"])
    augment: str = "strong"  # training lines
    eval_augment: str = "mild"  # validation and test lines
    val_percent: int = 5
    test_percent: int = 5

    def __post_init__(self) -> None:
        from rnnkit.data.handwriting_render import LEVELS

        for name, low, high in (("train_lines", 1, 10**7), ("val_lines", 1, 10**6), ("test_lines", 1, 10**6),
                                ("height", 8, 512), ("max_chars", 5, 500), ("val_percent", 1, 45),
                                ("test_percent", 1, 45), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(f"{name} must be a whole number in [{low}, {high}] (got {value!r}) — e.g. "
                                  f"{getattr(HandwritingSpec, name)}")
        if self.val_percent + self.test_percent > 50:
            raise ConfigError(f"val_percent + test_percent is {self.val_percent + self.test_percent}, over 50 — "
                              "hold out less, e.g. 5 and 5")
        for name in ("augment", "eval_augment"):
            if getattr(self, name) not in LEVELS:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r} — use one of {', '.join(LEVELS)}")
        if not isinstance(self.test_font, str) or not self.test_font.strip():
            raise ConfigError("test_font is empty — name the held-out font's file, e.g. DancingScript")
        self.test_seen = bool(self.test_seen)
        if isinstance(self.font_dirs, (str, Path)):
            self.font_dirs = [str(self.font_dirs)]
        if not self.font_dirs:
            raise ConfigError("no font directory given — pass one, e.g. /usr/share/fonts")
        self.font_dirs = [str(Path(d).expanduser().resolve()) for d in self.font_dirs]
        for d in self.font_dirs:
            if not Path(d).is_dir():
                raise ConfigError(f"font directory {d} not found — pass a folder holding .ttf/.otf files, "
                                  "e.g. /usr/share/fonts")
        path = Path(self.text).expanduser()
        if not path.is_file():
            raise CorpusError(f"{path} not found — pass a UTF-8 text file, one sentence per line (e.g. spa.txt "
                              "from https://www.manythings.org/anki/spa-eng.zip)")
        self.text = str(path.resolve())


def read_sentences(path: str | Path, alphabet: str = ALPHABET) -> tuple[list[str], int]:
    """The distinct sentences of ``path`` within ``alphabet`` (see the module docstring), and how many were dropped."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}) — pass a UTF-8 file, one sentence per line") \
            from None
    except OSError as e:
        raise CorpusError(f"{path} cannot be read ({e.strerror}) — pass a readable text file") from None
    allowed, kept, dropped = set(alphabet), {}, 0
    for line in raw.splitlines():
        s = " ".join(unicodedata.normalize("NFC", line.split("\t", 1)[0]).translate(_ASCII).split())
        if not s:
            continue
        if set(s) <= allowed:
            kept.setdefault(s, None)
        else:
            dropped += 1
    if not kept:
        raise CorpusError(f"{path} holds no sentence written in the alphabet ({dropped} dropped) — pass English "
                          "text, one sentence per line")
    return list(kept), dropped


def text_split(sentence: str, test_percent: int, val_percent: int) -> str:
    """"train", "val" or "test": crc32 of the lower-cased sentence."""
    h = zlib.crc32(sentence.lower().encode("utf-8")) % 100
    return "test" if h < test_percent else "val" if h < test_percent + val_percent else "train"


def training_sentences(info: dict, path: str | Path) -> list[str]:
    """The sentences of ``path`` (within the dataset's alphabet) that the dataset's text split puts in its training
    part: text a language model may read without seeing a validation or test sentence."""
    spec = info["spec"]
    sentences, _ = read_sentences(path, info["alphabet"])
    return [s for s in sentences if text_split(s, spec["test_percent"], spec["val_percent"]) == "train"]


def pack_lines(sentences: list[str], count: int, max_chars: int, rng: np.random.Generator) -> list[str]:
    """``count`` lines of whole words, each up to a length drawn from [max_chars // 2, max_chars]."""
    if not any(len(w) <= max_chars for s in sentences for w in s.split()):
        raise CorpusError(f"no word of the corpus fits in max_chars={max_chars} — raise max_chars")
    lines: list[str] = []
    line, target = "", int(rng.integers(max_chars // 2, max_chars + 1))
    while len(lines) < count:  # another pass, in another order, if the sentences run out
        for i in rng.permutation(len(sentences)):
            for w in sentences[i].split():
                if len(w) > max_chars:
                    continue
                if line and len(line) + 1 + len(w) > target:
                    lines.append(line)
                    line, target = "", int(rng.integers(max_chars // 2, max_chars + 1))
                    if len(lines) == count:
                        return lines
                line = f"{line} {w}" if line else w
    return lines


def _pick(hands: list[Hand], text: str, rng: np.random.Generator) -> Hand:
    """A family (package) that can write ``text``, capitals-only families at half weight, then one of its fonts."""
    families: dict[str, list[Hand]] = {}
    for h in hands:
        if h.writes(text):
            families.setdefault(h.package, []).append(h)
    names = sorted(families)
    if not names:
        raise CorpusError(f"no font can write {text!r} — widen the font set or drop the line's marks")
    weight = np.array([0.5 if all(h.caps for h in families[n]) else 1.0 for n in names])
    members = families[names[rng.choice(len(names), p=weight / weight.sum())]]
    return members[rng.integers(len(members))]


def _render(job: tuple) -> int:
    """Draw one line and write its PNG; returns its width."""
    from PIL import Image

    from rnnkit.data.handwriting_render import LEVELS, render_line

    out, rel, text, path, entropy, level, height = job
    image = render_line(text, path, np.random.default_rng(entropy), LEVELS[level], height)
    Image.fromarray(image, "L").save(os.path.join(out, rel), format="PNG")
    return image.shape[1]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _sha256(path: str) -> str:
    from rnnkit.data.datasets import sha256_file

    return sha256_file(Path(path))


def _claim(out: Path, spec: dict, sha: str) -> dict | None:
    """The finished dataset in ``out`` if it is this one; None if ``out`` is free (empty, new, or our unfinished
    build of this spec); a ConfigError if it holds anything else."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise ConfigError(f"{out} is a file — pass a new or empty directory")
    for name in ("dataset.json", _MARKER):
        try:
            info = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):
            raise ConfigError(f"{out} holds a damaged {name} — pass a new or empty directory, or delete it")
        if info.get("kind") == KIND and info.get("spec") == spec and info.get("text_sha256") == sha:
            return info if name == "dataset.json" else None
        raise ConfigError(f"{out} already holds a different dataset — pass a new or empty directory, or delete it")
    raise ConfigError(f"{out} is not empty and holds no handwriting dataset — pass a new or empty directory")


def build_handwriting(out: str | Path, spec: HandwritingSpec, progress: bool = True,
                      workers: int | None = None) -> dict:
    """Write the dataset (see the module docstring) into ``out`` and return its dataset.json as a dict; a finished
    build of the same spec there is returned as it is. ``workers``: processes drawing lines (default: up to 4)."""
    from rnnkit.data.handwriting_fonts import layout_engine

    try:
        import PIL  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"drawing handwriting needs {e.name} — pip install 'rnnkit[recognize]'") from None
    out, spec_dict = Path(out), asdict(spec)
    sha = _sha256(spec.text)
    done = _claim(out, spec_dict, sha)
    if done is not None:
        return done
    hands = find_hands(spec.font_dirs, spec.test_font)
    sentences, dropped_sentences = read_sentences(spec.text, hands.alphabet)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for s in sentences:
        parts[text_split(s, spec.test_percent, spec.val_percent)].append(s)
    for part, ss in parts.items():
        if not ss:
            raise CorpusError(f"{spec.text} gives no {part} sentence ({len(sentences)} in all) — pass a larger corpus")
    counts = {"train": spec.train_lines, "val": spec.val_lines, "test": spec.test_lines, "test_seen": spec.test_lines}
    splits = [s for s in SPLITS if s != "test_seen" or spec.test_seen]
    lines = {p: pack_lines(parts[p], counts[p], spec.max_chars, np.random.default_rng([spec.seed, 100 + k]))
             for k, p in enumerate(parts)}
    out.mkdir(parents=True, exist_ok=True)
    _write(out / _MARKER, json.dumps({"kind": KIND, "spec": spec_dict, "text_sha256": sha}))
    jobs, rows = [], {s: [] for s in splits}
    for k, split in enumerate(SPLITS):
        if split not in splits:
            continue
        (out / split).mkdir(exist_ok=True)
        pool = hands.test if split == "test" else hands.train
        level = spec.augment if split == "train" else spec.eval_augment
        for i, text in enumerate(lines[_TEXT_OF[split]]):
            hand = _pick(pool, text, np.random.default_rng([spec.seed, k, i]))
            rel, label = f"{split}/{i:06d}.png", hand.label(text)
            rows[split].append(f"{rel}\t{label}\t{hand.name}\n")
            jobs.append((str(out), rel, label, hand.path, [spec.seed, k, i, 1], level, spec.height))
    widths = map_jobs(_render, jobs, workers or default_workers(4), progress, unit="line", desc="drawing",
                      chunksize=16)
    info = {"kind": KIND, "format_version": FORMAT_VERSION, "spec": spec_dict, "text_sha256": sha,
            "alphabet": hands.alphabet, "layout": layout_engine(), "splits": {}, "fonts": {},
            "dropped_fonts": hands.dropped, "sentences": {p: len(ss) for p, ss in parts.items()},
            "dropped_sentences": dropped_sentences}
    at = 0
    for split in splits:
        n = len(rows[split])
        _write(out / f"{split}.tsv", "".join(rows[split]))
        used = sorted({r.split("\t")[2].rstrip("\n") for r in rows[split]})
        info["splits"][split] = {"count": n, "conditions": used, "text": _TEXT_OF[split],
                                 "augment": spec.augment if split == "train" else spec.eval_augment,
                                 "mean_width": round(float(np.mean(widths[at:at + n])), 1)}
        at += n
    for h in hands.train + hands.test:
        info["fonts"][h.name] = {"file": h.path, "package": h.package, "use": "test" if h in hands.test else "train",
                                 "caps": h.caps, "missing": h.missing}
    _write(out / "dataset.json", json.dumps(info, indent=1))
    (out / _MARKER).unlink()
    if progress:
        sizes = ", ".join(f"{s} {info['splits'][s]['count']}" for s in splits)
        print(f"handwriting: {sizes} lines in {len(hands.train)} training fonts; dropped: {hands.dropped or 'none'}",
              file=sys.stderr)
    return info


def read_dataset(root: str | Path) -> dict:
    """A built dataset's dataset.json, checked for kind and version."""
    path = Path(root) / "dataset.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} not found — build the dataset first: rnnkit data handwriting {root}") from None
    except (OSError, ValueError) as e:
        raise CorpusError(f"{path} cannot be read ({e}) — build the dataset again into a new directory") from None
    if info.get("kind") != KIND or info.get("format_version") != FORMAT_VERSION:
        raise CorpusError(f"{path} is not a handwriting dataset of format {FORMAT_VERSION} — build it again with "
                          "this version of rnnkit")
    return info


def read_split(root: str | Path, split: str) -> list[tuple[Path, str, str]]:
    """(image path, text, font name) of each line of ``split``, in order."""
    return read_rows(root, split, read_dataset(root)["splits"])
