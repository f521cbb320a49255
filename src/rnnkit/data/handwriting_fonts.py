"""Handwriting fonts: which Debian packages hold them, finding them on disk, and probing what each can draw.

``FONT_FILES`` maps each Debian package to its font files' names (fnmatch patterns); ``find_hands`` looks for them
under the font directories, probes each and splits them into test and training hands (the machinery of
``handwriting``; the lines themselves are drawn by ``handwriting_render``).

Probing (``probe_font``): a character is missing from a font when it draws no ink (some fonts' .notdef is empty) or
the same bitmap as the font's .notdef (drawn for U+10FFFD, a private-use code point no font maps). A font whose
lowercase letters are its capitals (mean cosine similarity of a b d e g h n q r t to A B D ..., after scaling each to
24x24, >= ``CAPS_SIMILARITY``; small caps count) is a capitals font: it is given upper-cased text, so its labels are
what it shows. ``signature`` is a fixed pangram's bitmap, to find two files that draw the same hand.
Pillow is imported inside the functions that use it.
"""

from __future__ import annotations

import fnmatch
import os
import string
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from rnnkit.errors import ConfigError

RENDER_SIZE = 48  # font size (px) lines are drawn at, before the resize to the dataset's height
CAPS_SIMILARITY = 0.75  # lowercase vs capital glyphs; measured: capitals fonts 0.80-1.00, all others <= 0.69
PANGRAM = "The quick brown fox jumps over 12 lazy dogs?"
_CASE_TEST = "abdeghnqrt"
_NOTDEF = "\U0010fffd"
ALPHABET = " !\"$%&'(),-./0123456789:;?" + string.ascii_uppercase + string.ascii_lowercase
_ALNUM = set(string.ascii_letters + string.digits)
FONT_FILES: dict[str, tuple[str, ...]] = {  # Debian package -> its font files (fnmatch patterns on the file name)
    "fonts-dancingscript": ("DancingScript-*",),
    "fonts-rufscript": ("Rufscript*",),
    "fonts-breip": ("Breip.*", "breipfont.*"),
    "fonts-dkg-handwriting": ("dkg.*", "dkgBd.*", "dkgIt.*", "dkgBI.*"),
    "fonts-femkeklaver": ("femkeklaver.*",),
    "fonts-bwht": ("BecauseWe*",),
    "fonts-comic-neue": ("ComicNeue-*",),
    "fonts-humor-sans": ("Humor-Sans.*",),
    "fonts-ecolier-court": ("Ecolier-court.*",),
    "fonts-kaushanscript": ("KaushanScript-*",),
    "fonts-kristi": ("Kristi.*",),
    "fonts-lobster": ("lobster.*",),
    "fonts-tlwg-purisa-ttf": ("Purisa*",),
    "fonts-tomsontalks": ("TomsonTalks.*",),
    "fonts-leckerli-one": ("LeckerliOne-*",),
    "fonts-levien-typoscript": ("TypoScript.*",),
    "fonts-klee": ("KleeOne-*",),
    "fonts-havana": ("Havana-*",),
}
FONT_PACKAGES = tuple(FONT_FILES)  # what .ci/run installs


@dataclass(frozen=True)
class Hand:
    """A font file used as one writer. ``caps``: it draws capitals for lowercase, so it is given upper-cased text."""

    name: str  # the file's stem: the condition column of the .tsv files
    path: str
    package: str
    caps: bool = False
    missing: str = ""  # punctuation it cannot draw

    def label(self, text: str) -> str:
        return text.upper() if self.caps else text

    def writes(self, text: str) -> bool:
        return not self.missing or not set(self.label(text)) & set(self.missing)


@dataclass
class Hands:
    train: list[Hand]
    test: list[Hand]
    alphabet: str
    dropped: dict[str, str]  # font name -> why it is not used


def _scan(font_dirs: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (path, package) of every table font under the directories; the first of equal names wins."""
    found: dict[str, tuple[str, str]] = {}
    for d in font_dirs:
        for root, dirs, files in os.walk(d):
            dirs.sort()
            for f in sorted(files):
                if not f.lower().endswith((".ttf", ".otf")):
                    continue
                package = next((p for p, pats in FONT_FILES.items() if any(fnmatch.fnmatchcase(f, x) for x in pats)),
                               None)
                if package is not None:
                    found.setdefault(Path(f).stem, (os.path.join(root, f), package))
    return found


@cache
def _probe(path: str, mtime: float, alphabet: str) -> dict:
    return probe_font(path, alphabet)


def find_hands(font_dirs: list[str], test_font: str) -> Hands:
    """The test hands (files named ``test_font*``), the training hands (every other file of ``FONT_FILES``) under
    ``font_dirs``, and the alphabet: ``ALPHABET`` less what a test hand cannot draw (see ``handwriting``)."""
    found, dirs = _scan(font_dirs), ", ".join(font_dirs)
    if not found:
        raise ConfigError(f"no handwriting font under {dirs} — apt-get install {' '.join(FONT_PACKAGES)}, or pass "
                          "the folder holding them")
    probe = {}

    def probed(name: str, alphabet: str) -> dict:
        path = found[name][0]
        probe[name] = _probe(path, os.path.getmtime(path), alphabet)
        return probe[name]

    prefix = test_font.lower()
    test_names = [n for n in found if n.lower().startswith(prefix)]
    if not test_names:
        package = next((p for p, pats in FONT_FILES.items() if any(x.lower().startswith(prefix) for x in pats)),
                       None)
        raise ConfigError(f"no test font {test_font}* under {dirs} — "
                          + (f"apt-get install {package}" if package else "name a font from FONT_FILES")
                          + " or pass the folder holding it")
    test_pkg = {found[n][1] for n in test_names}
    alphabet = ALPHABET
    for n in test_names:
        alphabet = "".join(c for c in alphabet if c not in probed(n, ALPHABET)["missing"])
    if not _ALNUM <= set(alphabet):
        raise ConfigError(f"the test font {test_font} cannot draw {''.join(sorted(_ALNUM - set(alphabet)))} — "
                          "choose a test font with every letter and digit")
    dropped, train = {}, []
    for name in found:
        if name in test_names:
            continue
        path, package = found[name]
        info = probed(name, alphabet)
        lacks = set(info["missing"]) & _ALNUM
        twin = next((h.name for h in train if same_hand(probe[h.name]["signature"], info["signature"])), None)
        if lacks:
            dropped[name] = f"cannot draw {''.join(sorted(lacks))}"
        elif twin:
            dropped[name] = f"draws the same as {twin}"
        else:
            train.append(Hand(name, path, package, info["caps"], info["missing"]))
    if not train:
        wanted = " ".join(p for p in FONT_PACKAGES if p not in test_pkg)
        raise ConfigError(f"no training handwriting font under {dirs} — apt-get install {wanted}")
    test = [Hand(n, found[n][0], found[n][1]) for n in test_names]
    return Hands(train, test, alphabet, dropped)


def layout_engine() -> str:
    from PIL import features

    return "raqm" if features.check("raqm") else "basic"


@lru_cache(maxsize=128)  # a face per (file, size): cheap to make (under 1 ms), kept for the per-word sizes
def font_face(path: str, size: int):
    from PIL import ImageFont

    engine = ImageFont.Layout.RAQM if layout_engine() == "raqm" else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, layout_engine=engine)


def draw_text(font, text: str) -> tuple[np.ndarray, int, int]:
    """``text`` as float32 ink in [0, 1], tight around its ink box, and the pen's origin (x, baseline y) in it."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text, anchor="ls")
    w, h = max(right - left, 1) + 2, max(bottom - top, 1) + 2
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((1 - left, 1 - top), text, font=font, fill=255, anchor="ls")
    return np.asarray(im, dtype=np.float32) / 255, 1 - left, 1 - top


def crop_ink(a: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    rows, cols = np.flatnonzero((a > threshold).any(1)), np.flatnonzero((a > threshold).any(0))
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) else a[:0, :0]


def probe_font(path: str, alphabet: str) -> dict:
    """``{"missing": chars of alphabet it cannot draw, "caps": bool, "signature": uint8 array}``."""
    from PIL import Image

    font = font_face(path, RENDER_SIZE)
    notdef = crop_ink(draw_text(font, _NOTDEF)[0])
    missing = [c for c in alphabet if c != " " and ((g := crop_ink(draw_text(font, c)[0])).size == 0 or (
        g.shape == notdef.shape and np.array_equal(g, notdef)))]
    if " " in alphabet and font.getlength(" ") <= 0:
        missing.append(" ")

    def unit(c: str) -> np.ndarray:
        g = (crop_ink(draw_text(font, c)[0]) * 255).astype(np.uint8)
        v = np.asarray(Image.fromarray(g).resize((24, 24), Image.BILINEAR), dtype=np.float64).ravel()
        return v / (np.linalg.norm(v) or 1)

    pairs = [c for c in _CASE_TEST if c not in missing and c.upper() not in missing]
    caps = bool(pairs) and float(np.mean([unit(c) @ unit(c.upper()) for c in pairs])) >= CAPS_SIMILARITY
    signature = (draw_text(font_face(path, 32), PANGRAM)[0] * 255).astype(np.uint8)
    return {"missing": "".join(missing), "caps": caps, "signature": signature}


def same_hand(a: np.ndarray, b: np.ndarray) -> bool:
    """Two signatures that differ by under 1/255 per pixel on average: one hand in two files."""
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b).mean()) < 1.0
