"""The handwriting-line dataset builder: fonts, text split, deterministic images, layout, errors, image_frames
(rnnkit.data.handwriting).

The fonts are Debian packages (rnnkit.data.handwriting.FONT_PACKAGES). Without them these tests skip; with
``RNNKIT_REQUIRE_FONTS=1`` (CI, which installs them) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data
from PIL import Image

import rnnkit.data.handwriting_fonts as fonts
import rnnkit.data.handwriting_render as render
from rnnkit.data.handwriting import (
    ALPHABET,
    FONT_PACKAGES,
    HandwritingSpec,
    build_handwriting,
    find_hands,
    image_frames,
    pack_lines,
    read_dataset,
    read_sentences,
    read_split,
    text_split,
)
from rnnkit.errors import ConfigError, CorpusError

FONT_DIR = "/usr/share/fonts"
SMALL = {"train_lines": 16, "val_lines": 4, "test_lines": 6, "seed": 7}


def _one_line(e: pytest.ExceptionInfo, *words: str) -> str:
    message = str(e.value)
    assert "\n" not in message and " — " in message, message
    for w in words:
        assert w in message, message
    return message


@pytest.fixture(scope="module")
def hands():
    try:
        return find_hands([FONT_DIR], "DancingScript")
    except ConfigError as e:
        reason = f"handwriting fonts missing: {e}"
        if os.environ.get("RNNKIT_REQUIRE_FONTS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def spa():
    return require_data("spa-eng/spa.txt")


@pytest.fixture(scope="module")
def built(hands, spa, tmp_path_factory):
    """A small build with two worker processes."""
    out = tmp_path_factory.mktemp("hw") / "data"
    spec = HandwritingSpec(spa, **SMALL)
    return out, spec, build_handwriting(out, spec, progress=False, workers=2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(built):
    out, spec, info = built
    assert json.loads((out / "dataset.json").read_text()) == info == read_dataset(out)
    assert info["kind"] == "handwriting" and info["format_version"] == 1 and info["spec"]["seed"] == 7
    assert set(info["splits"]) == {"train", "val", "test", "test_seen"}
    assert not (out / ".incomplete.json").exists()
    alphabet = set(info["alphabet"])
    for split, n in (("train", 16), ("val", 4), ("test", 6), ("test_seen", 6)):
        lines = (out / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        assert len(lines) == n == info["splits"][split]["count"]
        assert sorted({line.split("\t")[2] for line in lines}) == info["splits"][split]["conditions"]
        for k, (line, (path, text, font)) in enumerate(zip(lines, read_split(out, split), strict=True)):
            rel = line.split("\t")[0]
            assert line.count("\t") == 2 and rel == f"{split}/{k:06d}.png" and path == out / rel
            assert set(text) <= alphabet and text == text.strip() and "  " not in text
            assert len(text) <= spec.max_chars and font in info["fonts"]
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "L" and im.height == spec.height
    assert len(list((out / "train").iterdir())) == 16


def test_same_seed_same_bytes_any_workers(built, tmp_path):
    out, spec, _ = built
    again = build_handwriting(tmp_path / "again", HandwritingSpec(spec.text, **SMALL), progress=False, workers=1)
    assert _files(out) == _files(tmp_path / "again") and again["splits"] == built[2]["splits"]
    other = build_handwriting(tmp_path / "other", HandwritingSpec(spec.text, **{**SMALL, "seed": 8}),
                              progress=False, workers=1)
    assert other["splits"]["test"]["count"] == 6
    images = [p for p in _files(out) if p.endswith(".png")]
    assert all(_files(out)[p] != _files(tmp_path / "other")[p] for p in images)


def test_test_text_never_trained_on(built, spa):
    out, spec, info = built
    train = [t for _, t, _ in read_split(out, "train") + read_split(out, "val")]
    test = [t for _, t, _ in read_split(out, "test")]
    assert not set(train) & set(test)
    caps = {n for n, f in info["fonts"].items() if f["caps"]}
    seen = read_split(out, "test_seen")
    assert [t.upper() if f in caps else t for t, (_, t2, f) in zip(test, seen, strict=True)] == [t for _, t, _ in seen]
    sentences, _ = read_sentences(spa, info["alphabet"])
    held_out = [s for s in sentences if text_split(s, spec.test_percent, spec.val_percent) == "test" and len(s) > 24]
    assert len(held_out) > 1000
    assert not [s for s in held_out for t in train if s in t]
    # every word of a test line comes from a test sentence
    test_words = {w for s in sentences if text_split(s, spec.test_percent, spec.val_percent) == "test"
                  for w in s.split()}
    assert all(w in test_words for t in test for w in t.split())


def test_fonts_of_each_split(built, hands):
    _, _, info = built
    assert set(info["splits"]["test"]["conditions"]) <= {"DancingScript-Regular", "DancingScript-Bold"}
    for split in ("train", "val", "test_seen"):
        assert not [f for f in info["splits"][split]["conditions"] if f.lower().startswith("dancingscript")]
    assert {h.name for h in hands.test} == {n for n, f in info["fonts"].items() if f["use"] == "test"}
    assert len(hands.train) >= 5 and not [h for h in hands.train if "dancing" in h.path.lower()]
    assert {h.package for h in hands.train + hands.test} <= set(FONT_PACKAGES)


def test_alphabet_is_drawn_by_every_font(hands, built):
    _, _, info = built
    assert hands.alphabet == info["alphabet"]
    assert set(hands.alphabet) >= set("abcxyzABCXYZ0189 .,?!'")
    for h in hands.test:
        assert fonts.probe_font(h.path, hands.alphabet)["missing"] == ""
    for h in hands.train:
        assert fonts.probe_font(h.path, hands.alphabet)["missing"] == h.missing
        assert not set(h.missing) & set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    for split in info["splits"]:
        for _, text, font in read_split(built[0], split):
            assert not set(text) & set(info["fonts"][font]["missing"])
    # a code point the font lacks (Tibetan) is seen as missing, whatever its .notdef looks like
    assert fonts.probe_font(hands.test[0].path, "a\u0f40")["missing"] == "\u0f40"
    assert fonts.probe_font(hands.train[0].path, "a\u0f40")["missing"] == "\u0f40"


def test_render_is_a_function_of_the_generator(hands):
    path = hands.test[0].path
    for level in ("none", "mild", "strong"):
        a = render.render_line("Tom's 12 cats.", path, np.random.default_rng(3), render.LEVELS[level], 24)
        b = render.render_line("Tom's 12 cats.", path, np.random.default_rng(3), render.LEVELS[level], 24)
        assert a.dtype == np.uint8 and a.shape[0] == 24 and a.shape[1] > 48 and np.array_equal(a, b)


def test_image_frames(built, hands, tmp_path):
    out, spec, _ = built
    path = read_split(out, "test")[0][0]
    x = image_frames(path, 32)
    assert x.dtype == np.float32 and x.shape[1] == 32 and x.shape[0] > 32 and 0 <= x.min() and x.max() <= 1
    assert x.max() == pytest.approx(1.0, abs=0.05) and 0.02 < x.mean() < 0.6  # ink = 1, paper ~ 0
    # a clean line: dark on light, light on dark, RGB, a wide white border and another height all read alike
    grey = render.render_line("Hello there", hands.test[0].path, np.random.default_rng(0), render.LEVELS["none"], 48)
    x = image_frames(grey, 24)
    assert x.shape[1] == 24 and x.max() == 1.0
    assert np.allclose(image_frames(255 - grey, 24), x, atol=1e-5)
    assert np.array_equal(image_frames(np.stack([grey] * 3, -1), 24), x)
    assert np.array_equal(image_frames(np.pad(grey, 30, constant_values=255), 24), x)
    assert np.allclose(image_frames(grey.astype(np.float32) / 255, 24), x, atol=1e-5)
    Image.fromarray(grey).save(tmp_path / "line.png")
    assert np.array_equal(image_frames(tmp_path / "line.png", 24), x)
    rgba = np.zeros((*grey.shape, 4), np.uint8)
    rgba[..., 3] = 255 - grey  # black ink on a transparent page
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert np.abs(image_frames(tmp_path / "clear.png", 24) - x).max() < 0.02
    # a stored (noisy) image with a white border: the border raises the background estimate, so the crop may take
    # in one more faint row; the frames stay close
    a = np.asarray(Image.open(path))
    x, y = image_frames(a, 32), image_frames(np.pad(a, 12, constant_values=255), 32)
    assert abs(len(y) - len(x)) <= 0.05 * len(x) and abs(y.mean() - x.mean()) < 0.03


def test_image_frames_errors(tmp_path):
    with pytest.raises(CorpusError) as e:
        image_frames(np.full((20, 50), 255, np.uint8), 32)
    _one_line(e, "no ink")
    with pytest.raises(CorpusError) as e:
        image_frames(tmp_path / "nope.png", 32)
    _one_line(e, "nope.png", "not found")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(CorpusError) as e:
        image_frames(tmp_path / "text.png", 32)
    _one_line(e, "text.png")
    with pytest.raises(ConfigError) as e:
        image_frames(np.zeros((2, 3, 5)), 32)
    _one_line(e, "(2, 3, 5)")
    with pytest.raises(ConfigError):
        image_frames(np.zeros((2, 3)), 0)


def test_sentences_and_lines(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("It\u2019s \u201cfine\u201d \u2014 ok\u2026\n\n  Two   spaces. \nCaf\u00e9 au lait.\nTwo spaces.\n"
                     "Tab\tseparated\tcolumns\n", encoding="utf-8")
    assert read_sentences(plain) == (["It's \"fine\" - ok...", "Two spaces.", "Tab"], 1)
    rng = np.random.default_rng(0)
    words = [f"w{k}" * (1 + k % 5) for k in range(300)]
    lines = pack_lines([" ".join(words[i:i + 7]) for i in range(0, 300, 7)], 50, 20, rng)
    assert len(lines) == 50 and all(0 < len(t) <= 20 and set(t.split()) <= set(words) for t in lines)
    assert np.mean([len(t) for t in lines]) > 10
    with pytest.raises(CorpusError) as e:
        pack_lines(["x" * 30], 3, 20, rng)
    _one_line(e, "max_chars")


def test_bad_input_is_a_one_line_error(hands, spa, tmp_path):
    cases = [({"train_lines": 0}, "train_lines"), ({"height": 2.5}, "height"), ({"augment": "wild"}, "augment"),
             ({"val_percent": 30, "test_percent": 30}, "over 50"), ({"test_font": " "}, "test_font"),
             ({"font_dirs": [str(tmp_path / "missing")]}, "missing"), ({"font_dirs": []}, "font")]
    for kwargs, word in cases:
        with pytest.raises(ConfigError) as e:
            HandwritingSpec(spa, **kwargs)
        _one_line(e, word)
    with pytest.raises(CorpusError) as e:
        HandwritingSpec(tmp_path / "none.txt")
    _one_line(e, "none.txt", "not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(CorpusError) as e:
        build_handwriting(tmp_path / "o1", HandwritingSpec(empty, **SMALL), progress=False)
    _one_line(e, "empty.txt", "no sentence")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(CorpusError) as e:
        build_handwriting(tmp_path / "o2", HandwritingSpec(tmp_path / "latin1.txt", **SMALL), progress=False)
    _one_line(e, "UTF-8")
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    with pytest.raises(ConfigError) as e:
        build_handwriting(tmp_path / "o3", HandwritingSpec(spa, font_dirs=[fonts], **SMALL), progress=False)
    _one_line(e, "apt-get install", "fonts-dancingscript", "fonts-rufscript")
    shutil.copy(hands.train[0].path, fonts)
    with pytest.raises(ConfigError) as e:
        build_handwriting(tmp_path / "o4", HandwritingSpec(spa, font_dirs=[fonts], **SMALL), progress=False)
    _one_line(e, "no test font DancingScript", "apt-get install fonts-dancingscript")
    (fonts / Path(hands.train[0].path).name).unlink()
    shutil.copy(hands.test[0].path, fonts)
    with pytest.raises(ConfigError) as e:
        build_handwriting(tmp_path / "o5", HandwritingSpec(spa, font_dirs=[fonts], **SMALL), progress=False)
    message = _one_line(e, "no training handwriting font", "fonts-rufscript")
    assert "fonts-dancingscript" not in message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]  # nothing written for a refused build


def test_out_directory_rules(built, tmp_path):
    out, spec, info = built
    assert build_handwriting(out, HandwritingSpec(spec.text, **SMALL), progress=False) == info  # already built
    with pytest.raises(ConfigError) as e:
        build_handwriting(out, HandwritingSpec(spec.text, **{**SMALL, "seed": 9}), progress=False)
    _one_line(e, "different dataset")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as e:
        build_handwriting(tmp_path / "busy", HandwritingSpec(spec.text, **SMALL), progress=False)
    _one_line(e, "not empty")
    with pytest.raises(CorpusError) as e:
        read_dataset(tmp_path / "busy")
    _one_line(e, "dataset.json", "rnnkit data handwriting")
    with pytest.raises(ConfigError) as e:
        read_split(out, "holdout")
    _one_line(e, "holdout", "test_seen")


def test_interrupted_build_leaves_no_dataset_json_and_resumes(built, monkeypatch, tmp_path):
    out, spec, _ = built
    real, calls = render.render_line, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "render_line", failing)
    with pytest.raises(KeyboardInterrupt):
        build_handwriting(tmp_path / "cut", HandwritingSpec(spec.text, **SMALL), progress=False, workers=1)
    assert not (tmp_path / "cut" / "dataset.json").exists() and (tmp_path / "cut" / ".incomplete.json").exists()
    monkeypatch.setattr(render, "render_line", real)
    with pytest.raises(CorpusError):
        read_dataset(tmp_path / "cut")
    build_handwriting(tmp_path / "cut", HandwritingSpec(spec.text, **SMALL), progress=False, workers=1)
    assert _files(tmp_path / "cut") == _files(out)


def test_alphabet_constant():
    assert len(set(ALPHABET)) == len(ALPHABET) and "\t" not in ALPHABET and " " in ALPHABET
