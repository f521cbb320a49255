"""`rnnkit tag train|eval|predict` end to end on real sentences (the English side of spa.txt), the CoNLL path on the
same data, resume, and one-line errors."""

import io
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import require_data
from test_classify_cli import assert_user_error
from test_cli import run  # the CLI in-process: (exit code, stdout, stderr)

from rnnkit.checkpoint import CONFIG, MODEL, load_weights
from rnnkit.cli import main
from rnnkit.data.labeled import TokenVocab
from rnnkit.data.tagging import TaggingSpec, derive, load_tagging
from rnnkit.tagging import evaluate, predict_tags, tag_tokens

SMALL = ["--hidden-size", "32", "--embedding-size", "16", "--batch-size", "32", "--lr", "5e-3", "--quiet",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    """Lines 20,001-23,000 of spa.txt (English<TAB>Spanish<TAB>attribution, as the file has them)."""
    lines = require_data("spa-eng/spa.txt").read_text(encoding="utf-8").splitlines()[20_000:23_000]
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spaces_run(english, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tag") / "run"
    code = main(
        ["tag", "train", "--data", str(english), "--task", "spaces", "--max-steps", "240", "--eval-interval", "80",
         "--out", str(run_dir), *SMALL])
    assert code == 0
    return run_dir


def test_train_writes_a_run_that_learned(spaces_run, english):
    for name in (CONFIG, MODEL, "best.safetensors", "trainer_state.safetensors", "metrics.csv", "loss.png"):
        assert (spaces_run / name).exists(), name
    config = json.loads((spaces_run / CONFIG).read_text())
    assert config["kind"] == "tagger" and config["tags"] == ["-", "_"] and config["vocab"]["kind"] == "char"
    assert config["data"]["spec"]["task"] == "spaces" and config["data"]["spec"]["path"] == str(english.resolve())
    rows = [r.split(",") for r in (spaces_run / "metrics.csv").read_text().splitlines()]
    head, rows = rows[0], rows[1:]
    val = [float(r[head.index("val_accuracy")]) for r in rows if r[head.index("val_accuracy")]]
    assert len(val) == 3 and val[-1] > 0.85  # about 0.80 of the characters end no word


def test_eval_json_is_the_library_score_and_beats_the_per_character_baseline(spaces_run, capsys, tmp_path):
    predictions = tmp_path / "tags.jsonl"
    code, out, err = run(capsys, "tag", "eval", spaces_run, "--json", "--predictions", predictions)
    assert code == 0, err
    result = json.loads(out)
    model, config = load_weights(spaces_run, kind="tagger")
    vocab = TokenVocab.from_dict(config["vocab"])
    data = load_tagging(TaggingSpec(**config["data"]["spec"]), vocab, config["tags"], verify=True)
    again = evaluate(model, data, "cpu")
    for key in ("accuracy", "macro_f1", "sentence_accuracy", "test_steps", "test_sentences"):
        assert result[key] == pytest.approx(again[key]), key
    for name, figures in again["baselines"].items():
        assert result["baselines"][name] == pytest.approx(figures), name
    assert result["task"] == "spaces" and result["weights"] == "best"
    assert result["test_sentences"] == len(data.test) and result["test_steps"] == sum(map(len, data.test.inputs))
    assert result["macro_f1"] > result["baselines"]["most_frequent_tag"]["macro_f1"] + 0.1
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [r["tokens"] for r in rows] == data.test_tokens
    assert [r["truth"] for r in rows] == [[data.tags[t] for t in y] for y in data.test.targets]
    assert [r["prediction"] for r in rows] == [[data.tags[t] for t in p] for p in predict_tags(model, data.test)]
    code, out, _ = run(capsys, "tag", "eval", spaces_run, "--no-baselines")
    assert code == 0 and "RNN tagger" in out and "most frequent" not in out


def test_predict_arguments_stdin_and_json_agree_with_the_library(spaces_run, capsys, monkeypatch):
    texts = ["I don't think Tom likes it.", "Where is the station?"]
    code, out, err = run(capsys, "tag", "predict", spaces_run, *texts)
    assert code == 0, err
    model, config = load_weights(spaces_run, kind="tagger")
    vocab = TokenVocab.from_dict(config["vocab"])
    chars = [derive(t, "spaces")[0] for t in texts]
    tags = tag_tokens(model, vocab, config["tags"], chars)
    want = ["".join(c + (" " if t == "_" else "") for c, t in zip(cs, ts, strict=True)).strip()
            for cs, ts in zip(chars, tags, strict=True)]
    assert out.splitlines() == want
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(t.replace(" ", "") for t in texts) + "\n\n"))
    code, stdin_out, _ = run(capsys, "tag", "predict", spaces_run)
    assert code == 0 and stdin_out == out  # the spaces a text already has are taken out first
    code, json_out, _ = run(capsys, "tag", "predict", spaces_run, *texts, "--json")
    rows = [json.loads(line) for line in json_out.splitlines()]
    assert [r["tags"] for r in rows] == tags and [r["output"] for r in rows] == want
    assert [r["tokens"] for r in rows] == chars


def test_the_conll_path_reads_the_same_task_written_as_a_conll_file(english, tmp_path):
    """The spaces task written out one character a line is the same data through --task conll."""
    derived = load_tagging(TaggingSpec(str(english), task="spaces"))
    sentences = [" ".join(line.split("\t")[0].split()) for line in english.read_text("utf-8").splitlines()]
    conll = tmp_path / "spaces.conll"
    conll.write_text("".join("".join(f"{c}\t{t}\n" for c, t in zip(*derive(s, "spaces"), strict=True)) + "\n"
                             for s in sentences if s), encoding="utf-8")
    read = load_tagging(TaggingSpec(str(conll)))
    assert read.tags == derived.tags and read.test_tokens == derived.test_tokens
    for a, b in ((read.train, derived.train), (read.val, derived.val), (read.test, derived.test)):
        assert all(np.array_equal(x, y) for x, y in zip(a.targets, b.targets, strict=True))
        assert [[read.vocab.tokens[i] for i in x] for x in a.inputs] == \
            [[derived.vocab.tokens[i] for i in x] for x in b.inputs]


def test_resume_continues_and_refuses_changes(spaces_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(spaces_run, run_dir)
    code, _, err = run(capsys, "tag", "train", "--resume", run_dir, "--max-steps", "250", "--quiet")
    assert code == 0, err
    assert json.loads((run_dir / CONFIG).read_text())["train"]["max_steps"] == 250
    code, _, err = run(capsys, "tag", "train", "--resume", run_dir, "--quiet")
    assert code == 0 and "the run's budget was spent at step 250, so nothing was trained — resume with a larger" in err
    before = (run_dir / MODEL).read_bytes()
    for flags, fragment in ((["--task", "case"], "--task cannot be given when resuming"),
                            (["--hidden-size", "48"], "--hidden-size cannot be given when resuming")):
        code, _, err = run(capsys, "tag", "train", "--resume", run_dir, *flags, "--quiet")
        assert_user_error(code, err, fragment)
    assert (run_dir / MODEL).read_bytes() == before


def test_a_case_run_restores_capitals(english, tmp_path, capsys):
    code, _, err = run(capsys, "tag", "train", "--data", english, "--task", "case", "--max-steps", "40",
                       "--out", tmp_path / "case", *SMALL)
    assert code == 0, err
    code, out, err = run(capsys, "tag", "predict", tmp_path / "case", "I THINK tom IS HERE.", "--json")
    row = json.loads(out)
    assert row["tokens"] == list("i think tom is here.")  # the model reads lower case, whatever it is given
    assert row["output"] == "".join(c.upper() if t == "U" else c for c, t in zip(row["tokens"], row["tags"],
                                                                                  strict=True))


@pytest.mark.parametrize("argv, fragments", [
    (["tag", "train", "--max-steps", "1"], ["no data given", "--data"]),
    (["tag", "train", "--data", "no/such.conll", "--max-steps", "1"], ["does not exist"]),
    (["tag", "train", "--data", "{bad}", "--max-steps", "1"], ["bad.conll:2 has 1 column", "--task spaces|case"]),
    (["tag", "train", "--data", "{bad}", "--min-count", "0"], ["--min-count must be >= 1"]),
    (["tag", "train", "--data", "{bad}", "--test-fraction", "0"], ["--test-fraction"]),
])
def test_train_errors(argv, fragments, tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("The\tDT\ndog\n", encoding="utf-8")
    code, _, err = run(capsys, *[a.replace("{bad}", str(bad)) for a in argv], "--out", tmp_path / "r", "--quiet")
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "r" / MODEL).exists()


def test_predict_and_eval_errors(spaces_run, tmp_path, capsys, monkeypatch):
    code, out, err = run(capsys, "tag", "predict", spaces_run, "   ")
    assert_user_error(code, err, "nothing to tag")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(capsys, "tag", "predict", spaces_run)
    assert_user_error(code, err, "no text to tag")
    code, _, err = run(capsys, "tag", "eval", tmp_path / "nowhere")
    assert_user_error(code, err, "nowhere")
    (tmp_path / CONFIG).write_text(json.dumps({"format_version": 1, "kind": "classifier", "model": {}}))
    code, _, err = run(capsys, "tag", "eval", tmp_path)
    assert_user_error(code, err, "not a tagger", "rnnkit classify")


def test_models_trained_on_the_same_seed_agree(english, tmp_path, capsys):
    for name in ("a", "b"):
        code, _, err = run(capsys, "tag", "train", "--data", english, "--task", "spaces", "--max-steps", "5",
                           "--out", tmp_path / name, *SMALL)
        assert code == 0, err
    a, _ = load_weights(tmp_path / "a", kind="tagger")
    b, _ = load_weights(tmp_path / "b", kind="tagger")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_crf_run_trains_evaluates_and_predicts_with_viterbi(english, tmp_path, capsys):
    pytest.importorskip("torchcrf", reason="--crf needs pytorch-crf (the crf extra)")
    code, _, err = run(capsys, "tag", "train", "--data", english, "--task", "case", "--crf", "--max-steps", "30",
                       "--out", tmp_path / "crf", *SMALL)
    assert code == 0, err
    model, config = load_weights(tmp_path / "crf", kind="tagger")
    assert config["model"]["crf"] and {"crf.transitions", "crf.start_transitions"} <= set(model.state_dict())
    code, out, err = run(capsys, "tag", "eval", tmp_path / "crf", "--json", "--no-baselines")
    assert code == 0, err
    vocab = TokenVocab.from_dict(config["vocab"])
    data = load_tagging(TaggingSpec(**config["data"]["spec"]), vocab, config["tags"], verify=True)
    assert json.loads(out)["accuracy"] == pytest.approx(evaluate(model, data, "cpu", with_baselines=False)["accuracy"])
    code, out, err = run(capsys, "tag", "predict", tmp_path / "crf", "where is tom?", "--json")
    chars = list("where is tom?")
    assert code == 0 and json.loads(out)["tags"] == tag_tokens(model, vocab, config["tags"], [chars])[0]


def test_eval_and_resume_refuse_a_data_file_that_changed(spaces_run, english, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(spaces_run, run_dir)
    changed = tmp_path / "changed.txt"  # the same path in config.json, other contents: the sha256 tells them apart
    changed.write_text(english.read_text("utf-8") + "A sentence the run never saw.\n", "utf-8")
    config = json.loads((run_dir / CONFIG).read_text())
    config["data"]["spec"]["path"] = str(changed)
    (run_dir / CONFIG).write_text(json.dumps(config))
    code, _, err = run(capsys, "tag", "eval", run_dir, "--no-baselines")
    assert_user_error(code, err, "changed since the run was trained")
    code, _, err = run(capsys, "tag", "train", "--resume", run_dir, "--max-steps", "250", "--quiet")
    assert_user_error(code, err, "changed since the run was trained")


def test_eval_names_its_predictions_file_and_lists_the_lowest_f1_first(spaces_run, capsys, tmp_path):
    predictions = tmp_path / "p.jsonl"
    code, out, err = run(capsys, "tag", "eval", spaces_run, "--json", "--no-baselines", "--predictions", predictions)
    assert code == 0, err
    result = json.loads(out)
    assert result["predictions"] == str(predictions) and "baselines" not in result
    code, out, err = run(capsys, "tag", "eval", spaces_run, "--no-baselines")
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.startswith("lowest F1: "))
    listed = [(tag, float(f1), int(n)) for tag, f1, n in re.findall(r"(\S+) (\d\.\d{3}) \((\d+)\)", line)]
    want = sorted(result["per_tag"].items(), key=lambda kv: kv[1]["f1"])
    assert [t for t, _, _ in listed] == [t for t, _ in want] and want[0][1]["f1"] < want[1][1]["f1"]
    assert [(f1, n) for _, f1, n in listed] == [(round(r["f1"], 3), r["support"]) for _, r in want]
