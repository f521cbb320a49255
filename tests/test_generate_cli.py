"""`rnnkit generate train|sample|eval` end to end on small real data (names by language, scikit-learn's digits), and
every user error: one line `error: ... — ...` on stderr, exit status 2, no traceback, earlier checkpoints kept."""

import json
import math

import pytest
from conftest import require_data
from test_classify_cli import assert_user_error
from test_cli import run  # the CLI in-process: (exit code, stdout, stderr)

from rnnkit.checkpoint import CONFIG, MODEL, TRAINER_STATE
from rnnkit.cli import main

SMALL = ["--hidden-size", "32", "--embedding-size", "16", "--condition-embedding", "16", "--num-layers", "1",
         "--batch-size", "32", "--eval-interval", "20", "--quiet", "--device", "cpu"]
LANGUAGES = ("Italian", "Japanese", "Polish", "Scottish")


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """Four languages of the real names data, as a folder of <label>.txt files."""
    src = require_data("names")
    folder = tmp_path_factory.mktemp("names") / "names"
    folder.mkdir()
    for lang in LANGUAGES:
        (folder / f"{lang}.txt").write_text((src / f"{lang}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def names_run(names, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "names"
    assert main(["generate", "train", "--data", str(names), "--max-steps", "150", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    pytest.importorskip("sklearn", reason="the digits ship with the classical extra (scikit-learn)")
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["generate", "train", "--data", "digits", "--test-fraction", "0.2", "--max-steps", "400",
                 "--out", str(out), *SMALL, "--encoder", "mlp", "--lr", "1e-2"]) == 0
    return out


def test_train_writes_a_run_that_eval_scores_against_ngram_peers(names_run, capsys):
    for name in (CONFIG, MODEL, "best.safetensors", TRAINER_STATE, "metrics.csv"):
        assert (names_run / name).exists(), name
    code, out, err = run(capsys, "generate", "eval", str(names_run), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["data"] == "text" and result["heldout_sequences"] > 100
    # 150 small steps already learn far more than uniform guessing over the characters
    config = json.loads((names_run / CONFIG).read_text())
    assert result["val_nll"] < math.log(len(config["vocab"]["tokens"]) + 1) - 1.0
    # the default condition_dropout makes the same model score names with no label too
    assert result["val_nll_unconditioned"] is not None
    assert 1.0 < result["ngram3_per_label_nll"] < result["ngram3_pooled_nll"] < 4.0


def test_sample_starts_with_the_prompt_and_stops_at_the_end_of_a_name(names_run, capsys):
    code, out, err = run(capsys, "generate", "sample", str(names_run), "--label", "Italian", "--prompt", "Ma",
                          "--num-samples", "4", "--seed", "3", "--json")
    assert code == 0, err
    samples = [json.loads(line) for line in out.splitlines()]
    assert len(samples) == 4
    assert all(s["sample"].startswith("Ma") and "<s>" not in s["sample"] for s in samples)
    again = run(capsys, "generate", "sample", str(names_run), "--label", "Italian", "--prompt", "Ma",
                "--num-samples", "4", "--seed", "3", "--json")[1]
    assert again == out  # the seed makes samples reproducible


def test_beam_lists_distinct_names_best_first(names_run, capsys):
    code, out, err = run(capsys, "generate", "sample", str(names_run), "--label", "Japanese", "--beam", "4", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 and len({r["sample"] for r in rows}) == 4
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    code, out, err = run(capsys, "generate", "sample", str(names_run), "--label", "Japanese", "--beam", "4",
                         "--num-samples", "2", "--json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == rows[:2]  # the best two of the same four beams


def test_digits_run_captions_images_and_scores_the_svm(digits_run, capsys):
    code, out, err = run(capsys, "generate", "eval", str(digits_run), "--json", "--beam", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["heldout_sequences"] == 360  # 20% of 1,797, as scikit-learn's train_test_split holds out
    assert result["svm_accuracy"] == pytest.approx(0.9889, abs=1e-4)  # scikit-learn's own digits example
    assert result["exact_match"] > 0.3 and result["beam_size"] == 2
    code, out, err = run(capsys, "generate", "sample", str(digits_run), "--image", "0", "--temperature", "0",
                          "--num-samples", "1")
    assert code == 0 and out.strip().isalpha(), (out, err)


@pytest.mark.parametrize("argv, fragments", [
    (["generate", "train", "--max-steps", "1"], ["no data given", "--data"]),
    (["generate", "train", "--data", "no/such/folder"], ["does not exist"]),
    (["generate", "train", "--data", "digits", "--condition", "sideways", "--max-steps", "1"], ["--condition"]),
    (["generate", "train", "--data", "digits", "--test-fraction", "1.5"], ["--test-fraction"]),
])
def test_train_errors(argv, fragments, tmp_path, capsys):
    code, out, err = run(capsys, *argv, "--out", tmp_path / "run", "--quiet")
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "run" / MODEL).exists()


@pytest.mark.parametrize("flags, fragments", [
    (["--label", "Klingon"], ["unknown label", "Italian"]),
    (["--image", "3"], ["--image", "--label"]),
    (["--label", "Italian", "--prompt", "Ma\u263a"], ["vocabulary"]),
    (["--label", "Italian", "--midi", "x.mid"], ["bach-chorales"]),
    (["--label", "Italian", "--opening", "test"], ["--opening", "bach-chorales"]),
    (["--label", "Italian", "--beam", "0"], ["--beam"]),
    (["--label", "Italian", "--beam", "3", "--temperature", "0.5"], ["--temperature", "--beam"]),
    (["--label", "Italian", "--beam", "3", "--top-k", "5"], ["--top-k", "--beam"]),
    (["--label", "Italian", "--beam", "3", "--num-samples", "5"], ["--num-samples 5", "--beam 5"]),
    (["--label", "Italian", "--temperature", "-1"], ["temperature"]),
])
def test_sample_errors(names_run, flags, fragments, capsys):
    code, out, err = run(capsys, "generate", "sample", str(names_run), *flags)
    assert_user_error(code, err, *fragments)
    assert out == ""


def test_digits_sample_needs_an_image_in_range(digits_run, capsys):
    assert_user_error(*run(capsys, "generate", "sample", str(digits_run))[::2], "--image N")
    assert_user_error(*run(capsys, "generate", "sample", str(digits_run), "--image", "5000")[::2], "--image")


def test_resume_refuses_new_data_and_keeps_the_checkpoint(names_run, names, capsys):
    before = (names_run / MODEL).read_bytes()
    code, _, err = run(capsys, "generate", "train", "--resume", str(names_run), "--data", str(names), "--quiet")
    assert_user_error(code, err, "--data", "resuming")
    code, _, err = run(capsys, "generate", "train", "--resume", str(names_run), "--hidden-size", "64", "--quiet")
    assert_user_error(code, err, "--hidden-size")
    code, _, err = run(capsys, "generate", "train", "--data", str(names), "--out", str(names_run), "--quiet")
    assert_user_error(code, err, "already holds", "--resume")
    assert (names_run / MODEL).read_bytes() == before


def test_resume_continues_to_a_longer_budget(names, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "train", "--data", str(names), "--max-steps", "20", "--out", str(out), *SMALL]) == 0
    code, _, err = run(capsys, "generate", "train", "--resume", str(out), "--max-steps", "40", "--quiet")
    assert code == 0, err
    steps = [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert max(steps) == 40


@pytest.fixture(scope="module")
def music_run(tmp_path_factory):
    pytest.importorskip("music21", reason="the chorales ship with the music extra (music21)")
    out = tmp_path_factory.mktemp("run") / "music"
    assert main(["generate", "train", "--data", "bach-chorales", "--limit", "20", "--max-steps", "30",
                 "--out", str(out), *SMALL]) == 0
    return out


def test_music_eval_and_a_sampled_melody_that_music21_reopens(music_run, tmp_path, capsys):
    from music21 import converter

    code, out, err = run(capsys, "generate", "eval", music_run, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["data"] == "music" and result["heldout_sequences"] >= 2 and result["unigram_nll"] > 0
    files = {k: tmp_path / f"melody.{k}" for k in ("mid", "musicxml", "png")}
    code, out, err = run(capsys, "generate", "sample", music_run, "--opening", "test", "--num-samples", "1",
                         "--seed", "0", "--max-length", "80", "--midi", files["mid"], "--musicxml",
                         files["musicxml"], "--piano-roll", files["png"])
    assert code == 0, err
    opening = err.split("): ", 1)[1].splitlines()[0]  # "opening bar of NAME (mode): TOKENS"
    assert out.startswith(opening)  # the sample continues the held-out chorale's opening bar
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for suffix in ("mid", "musicxml"):
        notes = converter.parse(files[suffix]).flatten().notes
        assert len(notes) >= 2, suffix  # at least the opening bar's notes come back


def test_music_errors(music_run, capsys):
    assert_user_error(*run(capsys, "generate", "sample", music_run, "--opening", "bwv9999")[::2], "no held-out")
    assert_user_error(*run(capsys, "generate", "train", "--data", "digits", "--limit", "20")[::2], "--limit")
