"""Guards every verb shares: numbers that must be finite, seeds, files a verb writes, run directories that would
write over someone's files, paths the system refuses — each a one-line error with exit 2 and nothing overwritten."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import require_data
from test_cli import SMALL, assert_user_error, run, trained  # noqa: F401 (trained: a fixture)

from rnnkit.checkpoint import BEST, CONFIG, MODEL
from rnnkit.cliargs import SEED_MAX


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(run_dir):
    return {p.name: digest(p) for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.fixture
def lm_run(trained):  # noqa: F811 (the fixture imported above)
    return trained[0]  # a small language-model run (test_cli's fixture)


@pytest.fixture
def fake_run(tmp_path):
    """The files of a run directory, for flags refused while the arguments are read (before any run loads)."""
    run_dir = tmp_path / "fake"
    run_dir.mkdir()
    for name in (CONFIG, MODEL, BEST, "trainer_state.safetensors", "metrics.csv", "loss.png"):
        (run_dir / name).write_bytes(name.encode() * 10)
    return run_dir


@pytest.mark.parametrize("argv, flag", [
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--grad-clip=-inf"], "--grad-clip"),
    (["classify", "train", "--lr", "inf"], "--lr"),
    (["forecast", "train", "--weight-decay", "nan"], "--weight-decay"),
    (["experiment", "adding", "--forget-bias", "nan"], "--forget-bias"),  # a str flag: "chrono" or a number
])
def test_non_finite_numbers_are_refused(argv, flag, capsys):
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err, flag, "finite")


@pytest.mark.parametrize("flags", [["--temperature", "nan"], ["--temperature", "inf"], ["--top-p", "nan"]])
def test_non_finite_sampling_settings_are_refused(fake_run, capsys, flags):
    code, out, err = run(capsys, "sample", fake_run, *flags)
    assert_user_error(code, err, flags[0], "finite")
    assert out == ""


@pytest.mark.parametrize("value", [-1, SEED_MAX + 1, 10**25, "x"])
@pytest.mark.parametrize("verb", [["train"], ["classify", "train"], ["forecast", "train"], ["generate", "train"],
                                  ["translate", "train"], ["recognize", "train"], ["experiment", "adding"]])
def test_seeds_out_of_range_are_refused_before_anything_is_written(verb, value, capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run(capsys, *verb, "--seed", value, "--out", out)
    assert_user_error(code, err, "--seed")
    assert not out.exists()


def test_the_largest_seed_is_taken(small_corpus, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 1, "--out", tmp_path / "run",
                       "--seed", SEED_MAX, "--sample-length", 0, *SMALL)
    assert code == 0, err


@pytest.mark.parametrize("split_seed", [["classify", "train", "--split-seed", "-1"],
                                        ["generate", "train", "--split-seed", "-3"]])
def test_split_seeds_out_of_range_are_refused(split_seed, capsys):
    code, _, err = run(capsys, *split_seed)
    assert_user_error(code, err, "--split-seed")


@pytest.mark.parametrize("argv", [
    ["classify", "eval", "{run}", "--confusion-png", "{run}/best.safetensors"],
    ["forecast", "eval", "{run}", "--plot", "{run}/trainer_state.safetensors"],
    ["generate", "eval", "{run}", "--captions-png", "{run}/config.json"],
    ["generate", "sample", "{run}", "--midi", "{run}/best.safetensors"],
    ["generate", "sample", "{run}", "--musicxml", "{run}/config.json"],
    ["generate", "sample", "{run}", "--piano-roll", "{run}/model.safetensors"],
    ["translate", "translate", "{run}", "--attention-png", "{run}/best.safetensors", "hola"],
    ["recognize", "predict", "{run}", "x.png", "--png", "{run}/best.safetensors"],
    ["recognize", "eval", "{run}", "--png", "{run}/metrics.csv"],
    ["export", "{run}", "--onnx", "{run}/best.safetensors"],
    ["export", "{run}", "--onnx", "{corpus}"],
])
def test_an_output_file_of_the_wrong_kind_is_refused_and_nothing_is_overwritten(argv, fake_run, small_corpus,
                                                                                capsys):
    before, corpus = tree(fake_run), digest(small_corpus)
    code, _, err = run(capsys, *(a.format(run=fake_run, corpus=small_corpus) for a in argv))
    assert_user_error(code, err, "does not end in")
    assert tree(fake_run) == before and digest(small_corpus) == corpus


def test_an_output_file_that_is_a_directory_or_in_a_missing_one(fake_run, tmp_path, capsys):
    (tmp_path / "plots.png").mkdir()
    code, _, err = run(capsys, "classify", "eval", fake_run, "--confusion-png", tmp_path / "plots.png")
    assert_user_error(code, err, "is a directory")
    code, _, err = run(capsys, "export", fake_run, "--onnx", tmp_path / "missing" / "model.onnx")
    assert_user_error(code, err, "does not exist", "create it first")


def test_output_suffixes_are_case_blind(tmp_path):
    from rnnkit.cliargs import output_file

    assert output_file(".onnx")(str(tmp_path / "MODEL.ONNX")) == tmp_path / "MODEL.ONNX"
    assert output_file(".musicxml", ".xml", ".mxl")(str(tmp_path / "song.mxl")).suffix == ".mxl"


@pytest.mark.parametrize("verb", [["train", "--data", "{corpus}"], ["classify", "train", "--data", "{corpus}"],
                                  ["forecast", "train", "--data", "airline"]])
def test_training_into_a_directory_of_other_files_is_refused(verb, small_corpus, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my own numbers\n")
    (mine / "loss.png").write_bytes(b"my own plot")
    before = tree(mine)
    code, _, err = run(capsys, *(a.format(corpus=small_corpus) for a in verb), "--out", mine, "--max-steps", 1)
    assert_user_error(code, err, str(mine), "loss.png, metrics.csv but no run", "new or empty directory")
    assert tree(mine) == before


@pytest.mark.parametrize("config", ['{"my": "settings"}', "[1, 2]", "not json",
                                    '{"format_version": 1, "kind": ["language_model"], "model": {}}'])
def test_training_into_a_directory_with_someone_elses_config_is_refused(config, small_corpus, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / CONFIG).write_text(config)
    (mine / "metrics.csv").write_text("my own numbers\n")
    before = tree(mine)
    code, _, err = run(capsys, "train", "--data", small_corpus, "--out", mine, "--max-steps", 1, *SMALL)
    assert_user_error(code, err, str(mine), "config.json that is not a run this rnnkit can take over",
                      "new or empty directory")
    assert tree(mine) == before


@pytest.mark.parametrize("damage, argv, key", [
    (lambda c: c.update(vocab="abc"), ["sample", "{run}"], "vocab"),
    (lambda c: c.update(train=[1]), ["eval", "{run}"], "train"),
    (lambda c: c.update(train=[1]), ["train", "--resume", "{run}"], "train"),
    (lambda c: c["data"].update(path=None), ["eval", "{run}"], "data.path"),
    (lambda c: c["train"].update(eval_streams="8"), ["eval", "{run}"], "train.eval_streams"),
    (lambda c: c.pop("model"), ["sample", "{run}"], "model"),
    (lambda c: c.pop("train"), ["eval", "{run}"], "train"),  # missing, in a run the command line wrote
    (lambda c: c["data"].pop("path"), ["eval", "{run}"], "data.path"),
    (lambda c: c.update(kind=["language_model"]), ["sample", "{run}"], "names no model kind"),
])
def test_a_config_json_with_a_damaged_part_is_one_line(lm_run, tmp_path, capsys, damage, argv, key):
    run_dir = tmp_path / "damaged"
    shutil.copytree(lm_run, run_dir)
    config = json.loads((run_dir / CONFIG).read_text())
    damage(config)
    (run_dir / CONFIG).write_text(json.dumps(config))
    before = tree(run_dir)
    code, _, err = run(capsys, *(run_dir if a == "{run}" else a for a in argv))
    assert_user_error(code, err, key if " " in key else f"'{key}'", "the checkpoint is damaged")
    assert tree(run_dir) == before


def test_resume_messages_point_somewhere_that_works(lm_run, small_corpus, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--resume", lm_run, "--batch-size", 8, "--max-steps", 20)
    assert_user_error(code, err, "resume without changing --batch-size")
    assert "damaged" not in err  # the checkpoint is fine
    bare = tmp_path / "bare"
    shutil.copytree(lm_run, bare)
    (bare / "trainer_state.safetensors").unlink()
    code, _, err = run(capsys, "train", "--resume", bare, "--max-steps", 20)
    assert_user_error(code, err, "no trainer_state.safetensors", "start a new run with another --out")
    code, _, err = run(capsys, "train", "--data", small_corpus, "--out", tmp_path / "early", "--lr", 1e30,
                       "--max-steps", 5, "--sample-length", 0, *SMALL)  # diverges before its first checkpoint
    assert code == 2 and err.splitlines()[-1].endswith("no checkpoint had been written yet — lower --lr or "
                                                       "--grad-clip and train again")


def test_a_directory_given_for_a_file_is_named_as_one(tmp_path, capsys):
    code, _, err = run(capsys, "translate", "train", "--data", tmp_path, "--out", tmp_path / "r")
    assert_user_error(code, err, "is a directory without spa.txt")
    code, _, err = run(capsys, "data", "handwriting", tmp_path / "hw", "--text", tmp_path)
    assert_user_error(code, err, f"{tmp_path} is a directory")


def test_a_resume_that_fails_leaves_config_json_as_it_was(lm_run, capsys):
    """Its new settings are written with its first checkpoint: here it diverges first, so a plain --resume later
    does not inherit the learning rate that made it diverge."""
    kept = (CONFIG, MODEL, BEST, "trainer_state.safetensors")
    before = {name: digest(lm_run / name) for name in kept}
    code, _, err = run(capsys, "train", "--resume", lm_run, "--max-steps", 40, "--lr", 1e30, "--sample-length", 0)
    assert code == 2 and "became nan" in err.splitlines()[-1] and "untouched" in err.splitlines()[-1]
    assert {name: digest(lm_run / name) for name in kept} == before
    assert json.loads((lm_run / CONFIG).read_text())["train"]["lr"] < 1


def test_training_into_an_empty_directory_or_a_run_that_never_saved(small_corpus, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.log").write_text("the shell made this for the run's output\n")
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 1, "--out", empty,
                       "--sample-length", 0, *SMALL)
    assert code == 0, err
    started = tmp_path / "started"  # what a run stopped before its first checkpoint leaves
    started.mkdir()
    shutil.copy(empty / CONFIG, started / CONFIG)
    (started / "metrics.csv").write_text("step,tokens\n1,64\n")
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 1, "--out", started,
                       "--sample-length", 0, *SMALL)
    assert code == 0, err
    assert (started / MODEL).exists()
    assert (empty / "train.log").read_text() == "the shell made this for the run's output\n"


def test_a_path_the_system_refuses_is_one_line(small_corpus, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 1, "--out", blocker / "run",
                       "--sample-length", 0, *SMALL)
    assert_user_error(code, err, str(blocker), "check the path")
    assert blocker.read_text() == "not a directory"


def test_os_message_names_the_target_not_the_temporary_file():
    from rnnkit.cli import _os_message

    e = IsADirectoryError(21, "Is a directory", "/x/.plot.png.123.tmp", None, "/x/plot.png")
    assert _os_message(e).startswith("/x/plot.png: Is a directory — ")
    e = PermissionError(13, "Permission denied", "/ro/run")
    assert _os_message(e) == "/ro/run: Permission denied — check the path, its permissions and the free space"


def test_an_os_error_about_no_path_keeps_its_traceback(monkeypatch, lm_run):
    """Out of memory in a worker, a socket: not the user's path, so the one-line advice would mislead."""
    import rnnkit.cli.lm
    from rnnkit.cli import main

    def fails(args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(rnnkit.cli.lm, "cmd_eval", fails)
    with pytest.raises(OSError, match="Cannot allocate memory"):
        main(["eval", str(lm_run)])


def test_train_resume_of_another_kind_of_run_is_refused(tmp_path, capsys):
    other = tmp_path / "classifier"
    other.mkdir()
    (other / CONFIG).write_text(json.dumps({"format_version": 1, "kind": "classifier", "model": {}, "train": {}}))
    before = tree(other)
    code, _, err = run(capsys, "train", "--resume", other)
    assert_user_error(code, err, "holds a classifier run, not a language_model")
    assert tree(other) == before


def test_eval_refuses_a_changed_training_corpus(lm_run, small_corpus, capsys):
    code, out, err = run(capsys, "eval", lm_run, "--json")
    assert code == 0, err
    small_corpus.write_text(small_corpus.read_text()[::-1])  # same characters, other text
    code, out, err = run(capsys, "eval", lm_run, "--json")
    assert_user_error(code, err, str(small_corpus), "not the corpus the run trained on", "--data")
    code, out, err = run(capsys, "eval", lm_run, "--data", small_corpus, "--json")  # named: scored as asked
    assert code == 0 and json.loads(out)["data"] == str(small_corpus)


def test_resume_refuses_a_changed_or_missing_corpus(lm_run, small_corpus, capsys):
    before = tree(lm_run)
    text = small_corpus.read_text()
    small_corpus.write_text(text[::-1])
    code, _, err = run(capsys, "train", "--resume", lm_run, "--max-steps", 20)
    assert_user_error(code, err, "not the corpus the run trained on", "restore it to resume")
    small_corpus.unlink()
    code, _, err = run(capsys, "train", "--resume", lm_run, "--max-steps", 20)
    assert_user_error(code, err, "is gone", "restore it to resume")
    assert tree(lm_run) == before


def test_dynamic_evaluation_of_other_text_still_needs_the_training_corpus(lm_run, small_corpus, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text(small_corpus.read_text()[:5000])
    small_corpus.write_text(small_corpus.read_text()[::-1])
    code, _, err = run(capsys, "eval", lm_run, "--data", other, "--dynamic")
    assert_user_error(code, err, "not the corpus the run trained on", "--dynamic reads its training part")


def test_a_dynamic_window_over_the_whole_text_is_refused(lm_run, small_corpus, capsys):
    code, out, err = run(capsys, "eval", lm_run, "--dynamic", "--dynamic-window", 10**8)
    assert_user_error(code, err, "--dynamic-window", "never adapt")


def test_a_vocabulary_that_does_not_fit_the_model_is_refused(lm_run, capsys):
    config = json.loads((lm_run / CONFIG).read_text())
    config["vocab"]["chars"] = config["vocab"]["chars"][:3]
    (lm_run / CONFIG).write_text(json.dumps(config))
    before = digest(lm_run / BEST)
    code, out, err = run(capsys, "sample", lm_run, "--length", 5)
    assert_user_error(code, err, "vocabulary of", "damaged")
    assert digest(lm_run / BEST) == before


def test_gradient_flow_names_its_own_flag(capsys):
    code, _, err = run(capsys, "experiment", "gradient-flow", "--probe-size", 0)
    assert_user_error(code, err, "--probe-size")


def test_series_with_nan_are_refused_for_prediction(tmp_path):
    pytest.importorskip("aeon", reason="reading .ts files needs the classical extra (aeon)")
    from classify_helpers import write_ts

    from rnnkit.data.series import load_ts_file
    from rnnkit.errors import CorpusError

    series = [np.ones((5, 2)), np.array([[1.0, 2.0], [np.nan, 1.0], [0.0, 0.0]])]
    path = write_ts(tmp_path / "x.ts", series, ["a", "b"])
    with pytest.raises(CorpusError, match="series #1 .from 0. holds NaN"):
        load_ts_file(path, labels=False)


def test_forecast_values_past_float32_are_refused(tmp_path):
    from rnnkit.data.forecasting import read_csv_series
    from rnnkit.errors import CorpusError

    path = tmp_path / "huge.csv"
    path.write_text("value\n" + "\n".join(str(1e302 * (1 + i / 100)) for i in range(50)) + "\n")
    with pytest.raises(CorpusError, match="rescale"):
        read_csv_series(path)
    path.write_text("value\n" + "\n".join(str(1e20 * (1 + i / 100)) for i in range(50)) + "\n")
    assert read_csv_series(path).values.max() > 1e20  # large, but within reach: taken


@pytest.mark.parametrize("damage, fragment", [
    (lambda tsv: tsv.unlink(), "train.tsv is missing"),
    (lambda tsv: tsv.write_text(tsv.read_text() + "a line with no tabs\n"), "line {last}: 1 tab-separated fields"),
    (lambda tsv: tsv.write_bytes(tsv.read_bytes() + b"x\t\xff\xfe\ty\n"), "not UTF-8"),
])
def test_a_damaged_recognition_dataset_is_one_line(hw_dataset, tmp_path, capsys, damage, fragment):
    data = tmp_path / "data"
    shutil.copytree(hw_dataset, data)
    last = len((data / "train.tsv").read_text().splitlines()) + 1  # the line a damage appends
    damage(data / "train.tsv")
    code, _, err = run(capsys, "recognize", "train", "--data", data, "--out", tmp_path / "run", "--max-steps", 1)
    assert_user_error(code, err, fragment.format(last=last), "build it again")
    assert not (tmp_path / "run" / MODEL).exists()


@pytest.mark.parametrize("key, value", [("alphabet", None), ("splits", [1]), ("spec", "x")])
def test_a_damaged_dataset_json_is_one_line(hw_dataset, tmp_path, capsys, key, value):
    data = tmp_path / "data"
    shutil.copytree(hw_dataset, data)
    info = json.loads((data / "dataset.json").read_text())
    info[key] = value
    (data / "dataset.json").write_text(json.dumps(info))
    code, _, err = run(capsys, "recognize", "train", "--data", data, "--out", tmp_path / "run", "--max-steps", 1)
    assert_user_error(code, err, f"no valid '{key}'", "build it again")
    (data / "dataset.json").write_text("[1, 2]")  # JSON, but no object: the builder will not build over it
    text = tmp_path / "text.txt"
    text.write_text("Some words to write.\n" * 50)
    code, _, err = run(capsys, "data", "handwriting", data, "--text", text)
    assert_user_error(code, err, "holds a damaged dataset.json")


def test_a_truncated_frame_cache_is_rebuilt(hw_dataset, tmp_path):
    from rnnkit.data.recognition import load_recognition

    data = tmp_path / "data"
    shutil.copytree(hw_dataset, data, ignore=shutil.ignore_patterns(".frames"))
    first = load_recognition(data, splits=("val",)).splits["val"].frames
    (cache,) = (data / ".frames").glob("val-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    again = load_recognition(data, splits=("val",)).splits["val"].frames
    assert len(again) == len(first) and all(np.array_equal(a, b) for a, b in zip(again, first, strict=True))
    assert cache.stat().st_size > 100  # written again


def test_a_series_label_the_header_does_not_declare_is_refused(tmp_path):
    pytest.importorskip("aeon", reason="reading .ts files needs the classical extra (aeon)")
    from classify_helpers import write_ts

    from rnnkit.data.series import load_ts_file
    from rnnkit.errors import CorpusError

    series = [np.ones((4, 2)), np.zeros((3, 2)), np.ones((5, 2))]
    path = write_ts(tmp_path / "x.ts", series, ["a", "b", "a"])
    assert load_ts_file(path)[1].tolist() == ["a", "b", "a"]
    path.write_text(path.read_text().replace("@classLabel true a b", "@classLabel true a"))
    with pytest.raises(CorpusError, match="labels series 'b', which its '@classLabel' line does not declare"):
        load_ts_file(path)


def test_recognize_predict_will_not_draw_over_its_input(fake_run, tmp_path, capsys):
    line = tmp_path / "line.png"
    line.write_bytes(b"a user's scan")
    code, _, err = run(capsys, "recognize", "predict", fake_run, line, "--png", line)
    assert_user_error(code, err, "is one of the inputs")
    assert line.read_bytes() == b"a user's scan"


@pytest.mark.parametrize("verb, data", [
    (["classify", "train"], ["--data", "names"]),
    (["generate", "train"], ["--data", "names"]),
    (["tag", "train", "--task", "spaces"], ["--data", "spa-eng/spa.txt", "--max-sentences", "300"]),
])
def test_a_budget_in_minutes_alone_is_reported_and_kept(verb, data, tmp_path, capsys):
    """``--minutes`` without ``--max-steps`` or ``--epochs``: the start line printed ``None`` steps (a traceback)."""
    data = [str(require_data(d)) if d in ("names", "spa-eng/spa.txt") else d for d in data]
    code, _, err = run(capsys, *verb, *data, "--minutes", "0.005", "--hidden-size", "8", "--quiet",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert "budget 0.005 minutes, batch 32" in err
    assert json.loads((tmp_path / "r" / CONFIG).read_text())["train"]["minutes"] == 0.005
