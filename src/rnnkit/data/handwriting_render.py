"""Handwriting lines drawn in a font, and images read back as frames (the machinery of ``handwriting``; the fonts
themselves are found and probed by ``handwriting_fonts``).

Rendering: each word is drawn on its own with Pillow (raqm layout when Pillow has it, so connected scripts get their
kerning and contextual forms), at ``RENDER_SIZE`` px times a per-line and a per-word size factor, and placed on a
baseline that tilts, waves and jumps per word, with a random gap between words. The whole line is then warped in one
``scipy.ndimage.map_coordinates`` pass (horizontal stretch, slant as a shear about the middle row, and an elastic
field: white noise smoothed by a Gaussian), its strokes thinned or thickened (grey erosion / dilation), blurred,
cropped to its ink with a small random margin and resized to the dataset's height (aspect kept, but never narrower
than ``MIN_CHAR_WIDTH`` heights per character: squeezed lines in Ecolier's tall-capped hand went down to 3 px a
character at height 32, too few frames for CTC after a time stride; 1.3% of training lines are widened, mostly
Ecolier and Kristi). Only then is it put on paper: a paper level with a linear illumination gradient, an ink level,
Gaussian pixel noise. Images are 8-bit, dark ink on light paper, like a scan.

The ranges of each step are an ``Augment``; ``LEVELS`` names three: ``strong`` (training: as varied as still reads),
``mild`` (evaluation: a hand's ordinary wobble) and ``none`` (the font as it is; for tests and pictures).
Every random number comes from the ``numpy.random.Generator`` passed in, in a fixed order, so a line's image is a
function of (text, font, generator seed) alone.

Reading (``image_frames``): any image -> float32 frames (T = width, C = height), ink = 1, cropped to its ink and
scaled to a height; its docstring has the rules. Pillow and scipy are imported inside the functions that use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.handwriting_fonts import RENDER_SIZE, crop_ink, draw_text, font_face
from rnnkit.errors import ConfigError, CorpusError

MIN_CHAR_WIDTH = 0.15  # a line is at least this many heights wide per character: CTC needs frames to spare
_FLOOR = 0.2  # image_frames: contrast under this is paper


@dataclass(frozen=True)
class Augment:
    """Ranges (lo, hi) of uniform draws; lengths are in units of the font size unless they say px."""

    word_scale: float  # sd of the log of each word's size factor
    baseline: float  # sd of each word's baseline offset
    tilt: tuple[float, float]  # slope of the baseline
    wave: tuple[float, float]  # amplitude of a sine on the baseline (wavelength 4-12 font sizes)
    gap: tuple[float, float]  # a space between words, in units of max(the font's space, 0.25)
    stretch: tuple[float, float]  # horizontal scale
    slant: tuple[float, float]  # shear: x moves by slant * height above the middle row (> 0 leans right)
    elastic: tuple[float, float]  # rms displacement of the elastic field (smoothed over 0.2 font sizes)
    stroke: tuple[float, float, float, float]  # probabilities: erode 2x2, as drawn, dilate 2x2, dilate 3x3
    blur: tuple[float, float]  # Gaussian sigma, px at RENDER_SIZE
    margin: tuple[float, float]  # blank border on each side, in units of the output height
    paper: tuple[float, float]  # paper grey (1 = white)
    ink: tuple[float, float]  # ink grey (0 = black)
    gradient: float  # illumination change across the image, at most
    noise: tuple[float, float]  # sd of per-pixel Gaussian noise


LEVELS = {
    "strong": Augment(word_scale=0.07, baseline=0.05, tilt=(-0.03, 0.03), wave=(0.0, 0.08), gap=(0.6, 1.8),
                      stretch=(0.75, 1.3), slant=(-0.3, 0.5), elastic=(0.0, 0.06), stroke=(0.15, 0.45, 0.25, 0.15),
                      blur=(0.0, 1.5), margin=(0.0, 0.12), paper=(0.7, 1.0), ink=(0.0, 0.35), gradient=0.12,
                      noise=(0.0, 0.08)),
    "mild": Augment(word_scale=0.03, baseline=0.02, tilt=(-0.01, 0.01), wave=(0.0, 0.03), gap=(0.8, 1.3),
                    stretch=(0.9, 1.1), slant=(-0.1, 0.1), elastic=(0.0, 0.02), stroke=(0.0, 1.0, 0.0, 0.0),
                    blur=(0.0, 0.8), margin=(0.0, 0.08), paper=(0.85, 1.0), ink=(0.0, 0.2), gradient=0.05,
                    noise=(0.0, 0.03)),
    "none": Augment(word_scale=0.0, baseline=0.0, tilt=(0.0, 0.0), wave=(0.0, 0.0), gap=(1.0, 1.0),
                    stretch=(1.0, 1.0), slant=(0.0, 0.0), elastic=(0.0, 0.0), stroke=(0.0, 1.0, 0.0, 0.0),
                    blur=(0.0, 0.0), margin=(0.0, 0.0), paper=(1.0, 1.0), ink=(0.0, 0.0), gradient=0.0,
                    noise=(0.0, 0.0)),
}


def _compose(text: str, path: str, rng: np.random.Generator, aug: Augment) -> tuple[np.ndarray, float]:
    """The words of ``text`` on a jittered baseline: float32 ink and the font size used."""
    size = RENDER_SIZE * rng.uniform(0.85, 1.15)
    base_font = font_face(path, round(size))
    space = max(base_font.getlength(" "), 0.25 * size)
    slope, wave = rng.uniform(*aug.tilt), rng.uniform(*aug.wave) * size
    wavelength, phase = rng.uniform(4, 12) * size, rng.uniform(0, 2 * math.pi)
    pieces, x = [], 0.0
    for k, word in enumerate(text.split(" ")):
        if k:
            x += space * rng.uniform(*aug.gap)
        wsize = max(8, round(size * math.exp(rng.normal(0, aug.word_scale)))) if aug.word_scale else round(size)
        ink, ox, oy = draw_text(font_face(path, wsize), word)
        y = slope * x + wave * math.sin(2 * math.pi * x / wavelength + phase) + rng.normal(0, aug.baseline * size)
        pieces.append((ink, round(x) - ox, round(y) - oy))
        x += font_face(path, wsize).getlength(word)
    x0 = min(p[1] for p in pieces)
    y0 = min(p[2] for p in pieces)
    width = max(p[1] + p[0].shape[1] for p in pieces) - x0
    height = max(p[2] + p[0].shape[0] for p in pieces) - y0
    pad = round(0.3 * size)
    canvas = np.zeros((height + 2 * pad, width + 2 * pad), np.float32)
    for ink, px, py in pieces:
        view = canvas[py - y0 + pad:py - y0 + pad + ink.shape[0], px - x0 + pad:px - x0 + pad + ink.shape[1]]
        np.maximum(view, ink, out=view)
    return canvas, size


def _warp(canvas: np.ndarray, size: float, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Stretch, slant and elastic distortion in one resampling."""
    from scipy import ndimage

    stretch, slant, elastic = rng.uniform(*aug.stretch), rng.uniform(*aug.slant), rng.uniform(*aug.elastic) * size
    if stretch == 1 and slant == 0 and elastic == 0:
        return canvas
    h, w = canvas.shape
    out_w = math.ceil((w + abs(slant) * h) * stretch)
    ys, xs = np.mgrid[0:h, 0:out_w].astype(np.float32)
    src_x = xs / stretch - slant * (h / 2 - ys) - abs(slant) * h / 2
    src_y = ys
    if elastic > 0:
        for grid in (src_x, src_y):
            field = ndimage.gaussian_filter(rng.standard_normal((h, out_w), dtype=np.float32), 0.2 * size)
            grid += field * (elastic / (float(field.std()) or 1))
    return ndimage.map_coordinates(canvas, [src_y, src_x], order=1, cval=0.0, prefilter=False)


def _stroke(ink: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    from scipy import ndimage

    op = rng.choice(4, p=aug.stroke)
    if op == 0:
        thin = ndimage.grey_erosion(ink, size=(2, 2))
        return thin if thin.sum() >= 0.5 * ink.sum() else ink  # a thin hand would vanish: keep it as drawn
    return ink if op == 1 else ndimage.grey_dilation(ink, size=(op, op))


def render_line(text: str, path: str, rng: np.random.Generator, aug: Augment, height: int) -> np.ndarray:
    """``text`` written in the font at ``path``: uint8 (height, width), dark ink on light paper."""
    from PIL import Image
    from scipy import ndimage

    canvas, size = _compose(text, path, rng, aug)
    ink = _stroke(_warp(canvas, size, rng, aug), rng, aug)
    sigma = rng.uniform(*aug.blur)
    if sigma > 0.05:
        ink = ndimage.gaussian_filter(ink, sigma)
    ink = crop_ink(ink, 0.25)
    if ink.size == 0:
        raise ValueError(f"{text!r} drew no ink in {path}")
    ih, iw = ink.shape
    margins = rng.uniform(*aug.margin, size=4) * ih  # top, bottom, left, right, at the render scale
    full = np.zeros((ih + round(margins[0]) + round(margins[1]), iw + round(margins[2]) + round(margins[3])),
                    np.float32)
    full[round(margins[0]):round(margins[0]) + ih, round(margins[2]):round(margins[2]) + iw] = ink
    width = max(round(full.shape[1] * height / full.shape[0]), math.ceil(MIN_CHAR_WIDTH * height * len(text)))
    small = np.asarray(Image.fromarray(full, "F").resize((width, height), Image.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, 1)
    paper, ink_level = rng.uniform(*aug.paper), rng.uniform(*aug.ink)
    angle, amount = rng.uniform(0, 2 * math.pi), rng.uniform(-aug.gradient, aug.gradient)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (math.cos(angle) * xs / max(width - 1, 1) + math.sin(angle) * ys / max(height - 1, 1)) / 1.5
    background = paper + amount * ramp
    grey = background - (background - ink_level) * small
    noise = rng.uniform(*aug.noise)
    if noise > 0:
        grey += rng.normal(0, noise, size=grey.shape).astype(np.float32)
    return np.clip(np.round(grey * 255), 0, 255).astype(np.uint8)


def image_frames(image: str | Path | np.ndarray, height: int) -> np.ndarray:
    """float32 (T = width, C = height) in [0, 1], ink = 1: frame t is pixel column t, channel 0 the top row.

    ``image``: a file Pillow reads (transparency is put on white), or an array: (H, W) grey, uint8 0-255 or float
    0-1, or (H, W, 3|4) RGB(A) uint8, lighter = higher as in an image file. Whichever of dark-on-light or
    light-on-dark it is, the side most pixels have is the background (so a line on a dark board reads as well).
    Contrast r = (background - grey) / (background - darkest), background the 90th percentile and darkest the 1st
    (their difference at least 0.25, so a blank page is not amplified into ink); ink = (r - 0.2) / 0.8 clipped to
    [0, 1], the 0.2 a floor under which paper grain and noise are paper. The image is cropped to the rows and columns
    with ink > 0.5 and resized (Lanczos) to ``height`` rows, the width scaled alike."""
    from PIL import Image

    if type(height) is not int or height < 1:
        raise ConfigError(f"height must be a whole number >= 1 (got {height!r}) — use the model's input height")
    name = f"{image}" if isinstance(image, (str, Path)) else "the image"
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                grey = _grey(im)
        except FileNotFoundError:
            raise CorpusError(f"{image} not found — pass the path of an image file") from None
        except (OSError, ValueError) as e:
            raise CorpusError(f"{image} is not an image Pillow can read ({e}) — pass a PNG or JPEG") from None
    else:
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[2] in (3, 4):
            grey = _grey(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
        elif a.ndim == 2 and a.size:
            grey = a.astype(np.float32) / (255 if a.dtype == np.uint8 or a.max() > 1 else 1)
        else:
            raise ConfigError(f"an image array must be (height, width) or (height, width, 3|4), not {a.shape} — "
                              "pass a grey or RGB image")
    if np.median(grey) < 0.5:
        grey = 1 - grey
    background, darkest = np.percentile(grey, [90, 1])
    ink = np.clip(((background - grey) / max(background - darkest, 0.25) - _FLOOR) / (1 - _FLOOR), 0, 1)
    ink = ink.astype(np.float32)
    rows, cols = np.flatnonzero((ink > 0.5).any(1)), np.flatnonzero((ink > 0.5).any(0))
    if not len(rows):
        raise CorpusError(f"{name} holds no ink — pass an image of a line of writing")
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    width = max(1, round(ink.shape[1] * height / ink.shape[0]))
    small = Image.fromarray(ink, "F").resize((width, height), Image.LANCZOS)
    return np.ascontiguousarray(np.clip(np.asarray(small, dtype=np.float32), 0, 1).T)


def _grey(im) -> np.ndarray:
    """A Pillow image as float32 grey in [0, 1]; transparent parts are white."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float32)
        return a / (float(a.max()) or 1)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255
