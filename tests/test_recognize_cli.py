"""`rnnkit data handwriting` and `rnnkit recognize train|predict|eval` end to end on a small real handwriting dataset,
the alignment PNG, resume, and every user error: one line `error: ... — ...`, exit status 2, the run's files
untouched. (The speech builder's own tests are in test_speech_data.py; the recogniser reads its WAV files through
the same featurizer, tested here with a WAV from a built speech dataset when espeak-ng is installed.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import require_data, require_tool
from PIL import Image
from test_classify_cli import assert_user_error
from test_cli import run

from rnnkit.checkpoint import CONFIG, MODEL, TRAINER_STATE, load_weights
from rnnkit.ctc import error_rates
from rnnkit.data.recognition import load_recognition

SMALL = ["--hidden-size", "32", "--num-layers", "1", "--conv-channels", "8", "--batch-size", "16", "--quiet",
         "--device", "cpu", "--eval-interval", "10", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def run_dir(hw_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "run"
    from rnnkit.cli import main

    assert main(["recognize", "train", "--data", str(hw_dataset), "--max-steps", "20", "--out", str(out),
                 *SMALL]) == 0
    return out


def test_train_writes_a_run_that_loads(run_dir, hw_dataset):
    config = json.loads((run_dir / CONFIG).read_text())
    assert config["kind"] == "ctc_recognizer" and config["data"]["info"]["kind"] == "handwriting"
    assert config["model"]["input_size"] == 24 and config["train"]["max_steps"] == 20
    model, _ = load_weights(run_dir, kind="ctc_recognizer")
    data = load_recognition(hw_dataset, splits=("train",))
    frames = np.concatenate(data.splits["train"].frames)
    assert np.allclose(model.input_mean.numpy(), frames.mean(0), atol=1e-2)  # scaling saved with the weights
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert "val_cer" in rows[0] and len(rows) > 2


def test_eval_json_scores_test_and_the_seen_hands(run_dir, capsys, tmp_path):
    png, predictions = tmp_path / "align.png", tmp_path / "test.jsonl"
    code, out, err = run(capsys, "recognize", "eval", run_dir, "--json", "--png", png, "--device", "cpu",
                         "--predictions", predictions)
    assert code == 0, err
    result = json.loads(out)
    assert result["split"] == "test" and result["lines"] == 40 and result["lines_test_seen"] == 40
    for key in ("cer", "wer", "cer_test_seen", "wer_test_seen", "loss"):
        assert result[key] >= 0
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and all(set(r) == {"condition", "truth", "prediction"} for r in rows)
    # the file's transcripts give the reported error rates (the library's own scoring of them)
    assert error_rates([r["truth"] for r in rows], [r["prediction"] for r in rows])["cer"] == \
        pytest.approx(result["cer"])
    assert Image.open(png).size[0] > 100
    code, out, err = run(capsys, "recognize", "eval", run_dir, "--split", "val", "--beam", "4", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["split"] == "val" and "cer_greedy" in result and "cer_test_seen" not in result
    code, out, err = run(capsys, "recognize", "eval", run_dir, "--beam", "4", "--lm-order", "3", "--lm-weight", "0.7",
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["lm_order"] == 3 and result["lm_weight"] == 0.7 and result["cer"] >= 0
    text = require_data("spa-eng/spa.txt")
    for split in ("test", "val"):
        code, out, err = run(capsys, "recognize", "eval", run_dir, "--split", split, "--beam", "4", "--lm-order", "3",
                             "--lm-text", text, "--json")
        assert code == 0, err
        assert json.loads(out)["split"] == split


def test_lm_text_is_the_training_part_of_the_corpus_only(hw_dataset):
    """--lm-text reads the corpus through the dataset's own text split: every sentence it keeps hashes to the
    training part (the rule restated here by hand), and it is most of the corpus."""
    import zlib

    from rnnkit.data import speech
    from rnnkit.data.handwriting import read_sentences
    from rnnkit.data.recognition import lm_sentences, read_info

    text = require_data("spa-eng/spa.txt")
    spec = read_info(hw_dataset)["spec"]
    held_out = spec["test_percent"] + spec["val_percent"]
    kept = lm_sentences(hw_dataset, text)
    every, _ = read_sentences(text)
    assert all(zlib.crc32(s.lower().encode()) % 100 >= held_out for s in kept)
    assert len(kept) == sum(zlib.crc32(s.lower().encode()) % 100 >= held_out for s in every) > 50_000
    labels = speech.training_sentences({"spec": {"min_chars": 10, "max_chars": 80}}, text)
    assert all(zlib.crc32(s.encode()) % 20 >= 2 for s in labels)
    assert 0.85 < len(labels) / len(speech.read_sentences(text)) < 0.95


def test_a_character_lm_trained_on_lm_text_weighs_the_beam(run_dir, hw_dataset, capsys, tmp_path):
    """rnnkit data lm-text -> rnnkit train -> recognize eval|predict --lm: the text is the dataset's training
    transcripts and the corpus's training part, each once, in a seeded order; the LM run decodes both verbs."""
    from rnnkit.data.recognition import lm_sentences, transcripts

    text = require_data("spa-eng/spa.txt")
    lines = tmp_path / "lm.txt"
    code, out, err = run(capsys, "data", "lm-text", hw_dataset, lines, "--text", text, "--seed", 3)
    assert code == 0, err
    got = lines.read_text(encoding="utf-8").splitlines()
    train = transcripts(hw_dataset, "train")
    assert json.loads(out)["lines"] == len(got) == len(set(got))
    assert set(got) == set(lm_sentences(hw_dataset, text)) | set(train)
    assert got[:50] != sorted(got[:50], key=len)  # shuffled: the corpus runs from short sentences to long ones
    code, _, err = run(capsys, "data", "lm-text", hw_dataset, lines)
    assert_user_error(code, err, "exists")
    code, out, err = run(capsys, "data", "lm-text", hw_dataset, tmp_path / "own.txt")
    assert code == 0, err
    assert sorted((tmp_path / "own.txt").read_text(encoding="utf-8").splitlines()) == sorted(set(train))

    lm_run = tmp_path / "lm"
    code, _, err = run(capsys, "train", "--data", lines, "--max-steps", 20, "--out", lm_run, "--hidden-size", 32,
                       "--num-layers", 1, "--embedding-size", 16, "--batch-size", 8, "--seq-len", 32, "--quiet",
                       "--sample-length", 0, "--precision", "fp32")
    assert code == 0, err
    code, out, err = run(capsys, "recognize", "eval", run_dir, "--beam", "4", "--lm", lm_run, "--lm-weight", "0.5",
                         "--char-bonus", "0.5", "--lm-end", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["lm"] == str(lm_run) and result["lm_order"] == 0 and result["lm_weight"] == 0.5
    assert result["lm_end"] is True
    assert 0 <= result["cer"] and "cer_greedy" in result
    assert "never read '" in err  # the alphabet holds characters no training line has (e.g. "&"): scored, told
    image = hw_dataset / "test" / "000000.png"
    code, out, err = run(capsys, "recognize", "predict", run_dir, image, "--beam", "4", "--lm", lm_run, "--json")
    assert code == 0, err
    assert isinstance(json.loads(out)["text"], str)

    narrow = tmp_path / "narrow.txt"  # an LM that never saw most of the recogniser's characters
    narrow.write_text("abc\n" * 200, encoding="utf-8")
    narrow_run = tmp_path / "narrow"
    code, _, err = run(capsys, "train", "--data", narrow, "--max-steps", 2, "--out", narrow_run, "--hidden-size", 8,
                       "--num-layers", 1, "--embedding-size", 8, "--batch-size", 2, "--seq-len", 8, "--quiet",
                       "--sample-length", 0, "--precision", "fp32")
    assert code == 0, err
    for argv, fragment in [
        (["recognize", "eval", run_dir, "--beam", "4", "--lm", lm_run, "--lm-order", "3"], "give one of them"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm", lm_run, "--lm-text", text], "drop --lm-text"),
        (["recognize", "eval", run_dir, "--lm", lm_run], "--beam >= 2"),
        (["recognize", "predict", run_dir, image, "--lm", lm_run], "--beam >= 2"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm", run_dir], "language_model"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm", lm_run / "nothing"], "holds no run"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm", narrow_run], "vocabulary lacks"),
        (["recognize", "predict", run_dir, image, "--beam", "4", "--lm-weight", "1"], "--lm-weight shapes"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-end"], "--lm-end shapes"),
        (["data", "lm-text", hw_dataset, tmp_path / "x.txt", "--text", tmp_path / "none.txt"], "not found"),
        (["data", "lm-text", tmp_path, tmp_path / "y.txt"], "dataset.json"),
        (["data", "lm-text", hw_dataset, tmp_path / "lm.csv"], ".txt"),
    ]:
        code, _, err = run(capsys, *argv)
        assert_user_error(code, err, fragment)
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "y.txt").exists()


def test_predict_reads_images_the_dataset_did_not_make(run_dir, hw_dataset, capsys, tmp_path):
    """A user's image: RGB, white border, another size — frames come out at the model's height."""
    src = Image.open(hw_dataset / "test" / "000000.png").convert("RGB")
    big = Image.new("RGB", (src.width * 2 + 40, src.height * 2 + 40), "white")
    big.paste(src.resize((src.width * 2, src.height * 2)), (20, 20))
    path = tmp_path / "mine.jpg"
    big.save(path)
    png = tmp_path / "path.png"
    code, out, err = run(capsys, "recognize", "predict", run_dir, path, hw_dataset / "test" / "000001.png",
                         "--json", "--png", png, "--beam", "3")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["file"] for x in lines] == [str(path), str(hw_dataset / "test" / "000001.png")]
    assert all(isinstance(x["text"], str) for x in lines) and png.exists()


def test_resume_continues_and_refuses_a_changed_model(run_dir, capsys, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, out, err = run(capsys, "recognize", "train", "--resume", copy, "--max-steps", "25", "--quiet")
    assert code == 0, err
    assert json.loads((copy / CONFIG).read_text())["train"]["max_steps"] == 25
    before = {n: (copy / n).read_bytes() for n in (MODEL, TRAINER_STATE, CONFIG)}
    code, out, err = run(capsys, "recognize", "train", "--resume", copy, "--hidden-size", "64")
    assert_user_error(code, err, "--hidden-size", "cannot be given when resuming")
    assert {n: (copy / n).read_bytes() for n in before} == before
    config = json.loads((copy / CONFIG).read_text())
    config["data"]["info"]["spec"]["seed"] += 1  # as if the dataset had been rebuilt with another seed since
    (copy / CONFIG).write_text(json.dumps(config))
    before = {n: (copy / n).read_bytes() for n in (MODEL, TRAINER_STATE)}
    code, out, err = run(capsys, "recognize", "train", "--resume", copy, "--max-steps", "30", "--quiet")
    assert_user_error(code, err, "changed since the run started")
    assert {n: (copy / n).read_bytes() for n in before} == before


def test_init_from_starts_from_the_other_runs_best_weights(run_dir, hw_dataset, capsys, tmp_path):
    out = tmp_path / "ft"
    code, _, err = run(capsys, "recognize", "train", "--data", hw_dataset, "--init-from", run_dir, "--out", out,
                       "--max-steps", "1", "--lr", "1e-9", "--weight-decay", "0", "--quiet", "--device", "cpu")
    assert code == 0, err
    source, source_config = load_weights(run_dir, kind="ctc_recognizer")
    tuned, config = load_weights(out, "last", kind="ctc_recognizer")
    assert config["model"] == source_config["model"] and config["init_from"] == str(run_dir.resolve())
    after = tuned.state_dict()
    for name, a in source.state_dict().items():  # batch norm's running statistics move in any training step
        if "running_" not in name and "num_batches" not in name:
            assert torch.allclose(a.float(), after[name].float(), atol=1e-6), name  # lr 1e-9: weights as they were
    scratch = tmp_path / "scratch"
    assert run(capsys, "recognize", "train", "--data", hw_dataset, "--out", scratch, "--max-steps", "1",
               *SMALL)[0] == 0
    assert not torch.allclose(source.head.weight, load_weights(scratch, kind="ctc_recognizer")[0].head.weight)

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = json.loads((other / CONFIG).read_text())
    config["data"]["info"]["alphabet"] += "#"
    (other / CONFIG).write_text(json.dumps(config))
    cases = [
        (["--init-from", run_dir, "--hidden-size", "64"], "cannot be given with --init-from"),
        (["--init-from", other], "another alphabet"),
        (["--init-from", tmp_path / "nothing"], "is not a run directory"),
    ]
    for flags, fragment in cases:
        code, _, err = run(capsys, "recognize", "train", "--data", hw_dataset, *flags, "--out", tmp_path / "x",
                           "--max-steps", "1", "--quiet")
        assert_user_error(code, err, fragment)
        assert not (tmp_path / "x" / MODEL).exists()
    before = (out / TRAINER_STATE).read_bytes()
    code, _, err = run(capsys, "recognize", "train", "--resume", out, "--init-from", run_dir)
    assert_user_error(code, err, "--init-from cannot be given when resuming")
    assert (out / TRAINER_STATE).read_bytes() == before


def test_user_errors(run_dir, hw_dataset, capsys, tmp_path):
    cases = [
        (["recognize", "train"], "no data given"),
        (["recognize", "train", "--data", tmp_path, "--out", tmp_path / "x"], "dataset.json"),
        (["recognize", "train", "--data", hw_dataset, "--time-stride", "3"], "time_stride"),
        (["recognize", "train", "--data", hw_dataset, "--limit", "0"], "--limit"),
        (["recognize", "train", "--data", hw_dataset, "--out", run_dir], "already holds a training run"),
        (["recognize", "predict", run_dir, tmp_path / "missing.png"], "is not a file"),
        (["recognize", "predict", run_dir, hw_dataset / "dataset.json"], "dataset.json"),
        (["recognize", "predict", run_dir, hw_dataset / "test" / "000000.png", "--beam", "0"], "--beam"),
        (["recognize", "eval", run_dir, "--split", "nope"], "no split"),
        (["recognize", "eval", tmp_path], "config.json"),
        (["recognize", "eval", run_dir, "--lm-order", "3"], "--beam"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-order", "-1"], "--lm-order must be >= 1"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-text", hw_dataset / "dataset.json"], "--lm-order"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-weight", "2"], "--lm-weight shapes the language model"),
        (["recognize", "eval", run_dir, "--char-bonus", "1"], "--char-bonus shapes the language model"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-weight", "0"], "--lm-weight shapes the language model"),
        (["recognize", "eval", run_dir, "--beam", "4", "--lm-order", "3", "--lm-text", tmp_path / "no.txt"],
         "cannot be read"),
        (["recognize", "train", "--data", hw_dataset, "--freq-masks", "-1"], "--freq-masks"),
        (["data", "handwriting", tmp_path / "hw", "--text", tmp_path / "none.txt"], "not found"),
        (["data", "handwriting", tmp_path / "hw2", "--font-dir", tmp_path], "fonts-"),
        (["data", "speech", tmp_path / "sp", "--snr", "loud"], "--snr"),
        (["data", "speech", tmp_path / "sp", "--workers", "0"], "--workers"),
        (["data", "speech", tmp_path / "sp", "--random-accents", "nan"], "--random-accents"),
        (["data", "speech", tmp_path / "sp", "--random-accents", "2"], "random accents"),
        (["data", "speech", tmp_path / "sp", "--random-accents", "0.5", "--accent-rules", "2.5,4"], "--accent-rules"),
        (["data", "speech", tmp_path / "sp", "--random-accents", "0.5", "--accent-rules", "5,2"], "random accents"),
        (["data", "speech", tmp_path / "sp", "--accent-rules", "2,5"], "--random-accents"),
    ]
    for argv, fragment in cases:
        code, out, err = run(capsys, *argv)
        assert_user_error(code, err, fragment)


def test_data_handwriting_builds_a_dataset(capsys, tmp_path):
    text = require_data("spa-eng/spa.txt")
    out = tmp_path / "hw"
    code, stdout, err = run(capsys, "data", "handwriting", out, "--text", text, "--train-lines", 8, "--val-lines",
                            2, "--test-lines", 3, "--workers", 1, "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["splits"] == {"train": 8, "val": 2, "test": 3, "test_seen": 3}
    assert len(list((out / "train").glob("*.png"))) == 8 and "recognize train --data" in err


def test_ci_installs_every_font_package_the_builder_knows():
    from pathlib import Path

    from rnnkit.data.handwriting import FONT_PACKAGES

    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    listed = set(script[script.index("packages=("):script.index(")", script.index("packages=("))].split())
    assert set(FONT_PACKAGES) | {"espeak-ng"} <= listed


def test_speech_end_to_end_on_a_tiny_espeak_dataset(capsys, tmp_path):
    """rnnkit data speech builds WAV files with espeak-ng; the recogniser trains on their log-mel frames and
    transcribes a WAV file (a few steps: this checks the plumbing, not the reading)."""
    require_tool(shutil.which("espeak-ng") is not None, "espeak-ng is not installed", "RNNKIT_REQUIRE_SPEECH")
    text = require_data("spa-eng/spa.txt")
    data, run_dir = tmp_path / "speech", tmp_path / "run"
    code, out, err = run(capsys, "data", "speech", data, "--text", text, "--train", 12, "--val", 4, "--test", 4,
                         "--test-seen-voice", 4, "--workers", 1, "--quiet")
    assert code == 0, err
    assert json.loads(out)["splits"] == {"train": 12, "val": 4, "test": 4, "test_seen_voice": 4}
    code, out, err = run(capsys, "recognize", "train", "--data", data, "--out", run_dir, "--max-steps", 3,
                         "--batch-size", 4, "--hidden-size", 16, "--num-layers", 1, "--conv-channels", 4, "--quiet",
                         "--device", "cpu")
    assert code == 0, err
    assert json.loads((run_dir / CONFIG).read_text())["model"]["input_size"] == 80
    wav = sorted((data / "test").glob("*.wav"))[0]
    png = tmp_path / "speech.png"
    code, out, err = run(capsys, "recognize", "predict", run_dir, wav, "--json", "--png", png)
    assert code == 0, err
    assert json.loads(out)["file"] == str(wav) and png.exists()
    code, out, err = run(capsys, "recognize", "eval", run_dir, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["kind"] == "speech" and result["lines"] == 4 and result["lines_test_seen_voice"] == 4
