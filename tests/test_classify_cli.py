"""`rnnkit classify train|eval|predict` end to end on small real data (sentiment sentences, JapaneseVowels), and
every user error: one line `error: ... — ...` on stderr, exit status 2, no traceback, earlier checkpoints kept."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from classify_helpers import sentiment_sample, write_ts
from conftest import refuse_writes_in
from PIL import Image
from test_cli import run  # the CLI in-process: (exit code, stdout, stderr)

from rnnkit.checkpoint import CONFIG, MODEL, TRAINER_STATE, load_weights
from rnnkit.cli import main
from rnnkit.data.classification import ClassificationSpec, load_classification
from rnnkit.data.labeled import Examples, TokenVocab
from rnnkit.train.batches import predict

SMALL = ["--hidden-size", "16", "--embedding-size", "16", "--batch-size", "16", "--eval-interval", "10",
         "--quiet", "--precision", "fp32", "--device", "cpu"]
PNG = b"\x89PNG\r\n\x1a\n"


def assert_user_error(code, err, *fragments, hint=True):
    """Exit 2, one line ``error: what is wrong — what to do`` (``hint=False``: a message with no advice part)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and (" — " in lines[0] or not hint), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def train(tmp, data, *flags, steps=30):
    code = main(["classify", "train", "--data", str(data), "--max-steps", str(steps), "--out", str(tmp), *SMALL,
                 *map(str, flags)])
    assert code == 0
    return tmp


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """300 real sentiment sentences (100 per source, CRLF ends and quotes as shipped), word tokens, 30 steps."""
    tmp = tmp_path_factory.mktemp("text")
    tsv = sentiment_sample(tmp / "sentiment.tsv")
    return train(tmp / "run", tsv, "--tokens", "word"), tsv


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    pytest.importorskip("aeon", reason="japanese_vowels ships with the classical extra (aeon)")
    return train(tmp_path_factory.mktemp("series") / "run", "japanese_vowels", "--hidden-size", "8",
                 "--conv-layers", "1", "--conv-channels", "8", "--time-warp", "0.2",
                 steps=10)  # through the convolutional front end, time-warped


def test_text_train_writes_a_run(text_run):
    run_dir, tsv = text_run
    for name in (CONFIG, MODEL, "best.safetensors", TRAINER_STATE, "metrics.csv"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / CONFIG).read_text())
    assert config["kind"] == "classifier" and config["classes"] == ["0", "1"]
    assert config["vocab"]["kind"] == "word" and "it's" in config["vocab"]["tokens"]
    assert config["data"]["spec"]["sources"] == [str(tsv.resolve())] and config["train"]["max_steps"] == 30
    assert config["model"]["hidden_size"] == 16 and str(tsv.resolve()) in config["data"]["spec"]["sha256"]


def test_eval_json_matches_a_manual_evaluation(text_run, capsys, tmp_path):
    run_dir, _ = text_run
    png = tmp_path / "confusion.png"
    predictions = tmp_path / "predictions.jsonl"
    code, out, err = run(capsys, "classify", "eval", run_dir, "--json", "--confusion-png", png,
                         "--predictions", predictions)
    assert code == 0, err
    result = json.loads(out)
    assert result["predictions"] == str(predictions)
    assert set(result) >= {"accuracy", "baseline_accuracy", "baselines", "test_examples", "per_class_recall"}
    assert set(result["baselines"]) == {"majority", "tfidf_logreg"}
    assert result["baseline_accuracy"] == max(result["baselines"].values())
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 2000
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) >= 300
        image.verify()
    # the same figures by hand: the run's model on the test split that config.json rebuilds
    model, config = load_weights(run_dir, kind="classifier")
    vocab = TokenVocab.from_dict(config["vocab"])
    data = load_classification(ClassificationSpec(**config["data"]["spec"]), vocab, config["classes"], verify=True)
    pred = predict(model, data.test, torch.device("cpu")).argmax(-1).numpy()
    assert result["test_examples"] == len(data.test) == 30  # 10% of each class of 300
    assert result["accuracy"] == pytest.approx(float(np.mean(pred == data.test.targets)))
    train_y = np.concatenate([data.train.targets, data.val.targets])
    majority = np.bincount(train_y).argmax()
    assert result["baselines"]["majority"] == pytest.approx(float(np.mean(data.test.targets == majority)))
    recall = {c: float(np.mean(pred[data.test.targets == i] == i)) for i, c in enumerate(data.classes)}
    assert result["per_class_recall"] == pytest.approx(recall)
    metrics = pytest.importorskip("sklearn.metrics", reason="the reference scores come from scikit-learn")
    labels = list(range(len(data.classes)))
    assert result["macro_f1"] == pytest.approx(metrics.f1_score(data.test.targets, pred, average="macro"))
    assert result["confusion"] == metrics.confusion_matrix(data.test.targets, pred, labels=labels).tolist()
    assert [result["per_class"][c]["support"] for c in data.classes] == np.bincount(data.test.targets).tolist()
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in rows] == data.test_texts
    assert [r["truth"] for r in rows] == [data.classes[t] for t in data.test.targets]
    assert [r["prediction"] for r in rows] == [data.classes[p] for p in pred]
    code, out, _ = run(capsys, "classify", "eval", run_dir, "--no-baselines", "--weights", "last")
    assert code == 0 and "test accuracy" in out and "baseline" not in out
    assert (run_dir / "confusion.png").read_bytes()[:8] == PNG


def test_predict_texts_from_arguments_and_stdin(text_run, capsys, monkeypatch):
    run_dir, _ = text_run
    texts = ["Great phone, works perfectly!", "Terrible. It broke after a day."]
    code, out, err = run(capsys, "classify", "predict", run_dir, *texts)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and [ln.split("\t")[-1] for ln in lines] == texts
    assert all(ln.split("\t")[0].split()[0] in ("0", "1") for ln in lines)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{texts[0]}\r\n\n  \n{texts[1]}\n"))
    code, out2, _ = run(capsys, "classify", "predict", run_dir)
    assert code == 0 and out2 == out
    code, out, _ = run(capsys, "classify", "predict", run_dir, *texts, "--top", 5, "--json")
    # options may also come before the texts
    assert run(capsys, "classify", "predict", run_dir, "--top", 5, "--json", *texts)[1] == out
    rows = [json.loads(ln) for ln in out.splitlines()]
    model, config = load_weights(run_dir, kind="classifier")
    vocab = TokenVocab.from_dict(config["vocab"])
    probs = predict(model, Examples([vocab.encode(t) for t in texts], np.zeros(2, np.int64)),
                    torch.device("cpu")).softmax(-1)
    for row, text, p in zip(rows, texts, probs, strict=True):
        preds = row["predictions"]
        assert row["input"] == text and len(preds) == 2  # --top is capped at the number of classes
        assert preds[0]["probability"] >= preds[1]["probability"]
        assert sum(q["probability"] for q in preds) == pytest.approx(1.0, abs=2e-4)
        for q in preds:
            assert q["probability"] == pytest.approx(float(p[config["classes"].index(q["label"])]), abs=1e-4)


def test_no_validation_split_trains_on_all_of_the_training_part_and_keeps_the_final_weights(tmp_path, capsys):
    """--val-fraction 0: every non-test example trains, validation never runs, best.safetensors is the last
    checkpoint's weights, and eval scores them; the same split's test examples as with a validation split."""
    tsv = sentiment_sample(tmp_path / "sentiment.tsv")
    code, _, err = run(capsys, "classify", "train", "--data", tsv, "--tokens", "word", "--val-fraction", 0,
                       "--max-steps", 25, "--out", tmp_path / "run", *SMALL)
    assert code == 0, err
    assert "no validation split" in err and "300 texts" in err and "270 train / 0 validation / 30 test" in err
    model = load_weights(tmp_path / "run", "last", kind="classifier")[0].state_dict()
    best = load_weights(tmp_path / "run", "best", kind="classifier")[0].state_dict()
    assert all(torch.equal(model[k], best[k]) for k in model)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert last["step"] == "25" and last["val_loss"] == "" and last["val_accuracy"] == ""
    spec = ClassificationSpec([str(tsv)], tokens="word")
    with_val = load_classification(spec)
    without = load_classification(ClassificationSpec([str(tsv)], tokens="word", val_fraction=0.0))
    assert len(without.val) == 0 and len(without.train) == len(with_val.train) + len(with_val.val) == 270
    assert without.test_texts == with_val.test_texts
    code, out, err = run(capsys, "classify", "eval", tmp_path / "run", "--json", "--no-baselines")
    assert code == 0, err
    assert json.loads(out)["test_examples"] == 30


def test_resume_continues_to_a_larger_budget(text_run, capsys, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(text_run[0], run_dir)
    code, _, err = run(capsys, "classify", "train", "--resume", run_dir, "--max-steps", 40, "--quiet")
    assert code == 0, err
    assert "done: 40 steps" in err
    assert json.loads((run_dir / CONFIG).read_text())["train"]["max_steps"] == 40
    steps = [int(ln.split(",")[0]) for ln in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps[-1] == 40 and steps == sorted(set(steps))


def test_eval_and_predict_from_another_directory(tmp_path, capsys, monkeypatch):
    """A run trained on a relative path is usable from anywhere (the spec saves absolute paths)."""
    (tmp_path / "d.tsv").write_text("".join(f"{w} day\t{w[0]}\n" for w in ["good", "bad"] * 15))
    monkeypatch.chdir(tmp_path)
    train(tmp_path / "run", "d.tsv", steps=2)
    capsys.readouterr()
    monkeypatch.chdir("/")
    code, out, err = run(capsys, "classify", "eval", tmp_path / "run", "--json", "--no-baselines")
    assert code == 0, err
    assert json.loads(out)["test_examples"] == 4


def test_series_train_eval_predict(series_run, capsys, tmp_path):
    from rnnkit.data.series import load_uea

    code, out, err = run(capsys, "classify", "eval", series_run, "--json")
    assert code == 0, err
    result = json.loads(out)
    _, train_y, test_x, test_y = load_uea("JapaneseVowels")
    assert result["test_examples"] == 370 and set(result["baselines"]) == {"majority", "minirocket"}
    assert result["baselines"]["minirocket"] > 0.95  # the strong classical peer (about 0.98 here)
    assert result["baseline_accuracy"] == result["baselines"]["minirocket"]
    values, counts = np.unique(train_y, return_counts=True)
    assert result["baselines"]["majority"] == pytest.approx(float(np.mean(test_y == values[np.argmax(counts)])))
    assert 0.0 <= result["accuracy"] <= 1.0 and (series_run / "confusion.png").read_bytes()[:8] == PNG
    ts = write_ts(tmp_path / "three.ts", test_x[:3])
    code, out, err = run(capsys, "classify", "predict", series_run, "--file", ts, "--json")
    assert code == 0, err
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [r["input"] for r in rows] == [f"{ts}#{i}" for i in range(3)]
    model, config = load_weights(series_run, kind="classifier")
    assert config["model"]["time_warp"] == 0.2 and not model.training  # the warp is kept, and idle in eval
    logits = predict(model, Examples(test_x[:3], np.zeros(3, np.int64)), torch.device("cpu"))
    assert [r["predictions"][0]["label"] for r in rows] == [config["classes"][i] for i in logits.argmax(-1)]
    narrow = write_ts(tmp_path / "narrow.ts", [x[:, :2] for x in test_x[:2]])
    code, _, err = run(capsys, "classify", "predict", series_run, "--file", narrow)
    assert_user_error(code, err, "features per step")
    code, _, err = run(capsys, "classify", "predict", series_run, "hello")
    assert_user_error(code, err, "numeric series", "--file")
    header_only = tmp_path / "header.ts"
    header_only.write_text("".join(ln for ln in ts.read_text().splitlines(keepends=True) if ln.startswith("@")))
    code, _, err = run(capsys, "classify", "predict", series_run, "--file", header_only)
    assert_user_error(code, err, "holds no series")
    code, _, err = run(capsys, "classify", "predict", series_run, "--file", tmp_path)
    assert_user_error(code, err, f"{tmp_path} is a directory")


@pytest.mark.parametrize("flags, fragment", [
    ([], "no data given"),
    (["--data", "no_such_dataset"], "neither a file nor a UEA/UCR dataset"),
    (["--data", "missing.tsv"], "does not exist"),
    (["--data", "DATA", "--tokens", "bpe"], "invalid choice"),
    (["--data", "DATA", "--test-fraction", "1.5"], "--test-fraction must be in (0, 1)"),
    (["--data", "DATA", "--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    (["--data", "DATA", "--val-fraction", "-0.1"], "--val-fraction must be in [0, 1)"),
    (["--data", "DATA", "--min-count", "0"], "--min-count"),
    (["--data", "DATA", "--min-count", "1000"], "lower --min-count"),
    (["--data", "DATA", "--pooling", "max"], "unknown pooling"),
    (["--data", "DATA", "--members", "0"], "members must be >= 1"),
    (["--data", "DATA", "--token-dropout", "1"], "token_dropout must be in [0, 1)"),
])
def test_train_errors(tmp_path, capsys, flags, fragment):
    data = tmp_path / "d.tsv"
    data.write_text("a b\t1\nc d\t0\n" * 5)
    flags = [str(data) if f == "DATA" else f for f in flags]
    code, _, err = run(capsys, "classify", "train", *flags, "--max-steps", 2, "--out", tmp_path / "run", *SMALL)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "run" / MODEL).exists()


def test_an_existing_run_is_never_overwritten(text_run, capsys, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(text_run[0], run_dir)
    before = {n: (run_dir / n).read_bytes() for n in (CONFIG, MODEL, TRAINER_STATE)}
    tsv = text_run[1]
    for argv, fragment in [
        (["--data", tsv, "--out", run_dir, "--max-steps", 2], "already holds a training run"),
        (["--resume", run_dir, "--data", tsv, "--max-steps", 50], "drop --data"),
        (["--resume", run_dir, "--tokens", "char", "--max-steps", 50], "drop --tokens"),
        (["--resume", run_dir, "--test-fraction", "0.2", "--max-steps", 50], "drop --test-fraction"),
        (["--resume", run_dir, "--hidden-size", 32, "--max-steps", 50], "--hidden-size cannot change"),
        (["--resume", run_dir, "--pooling", "mean", "--max-steps", 50], "--pooling cannot change"),
    ]:
        code, _, err = run(capsys, "classify", "train", *argv)
        assert_user_error(code, err, fragment)
    assert {n: (run_dir / n).read_bytes() for n in before} == before


def test_changed_data_is_refused(tmp_path, capsys):
    data = tmp_path / "d.tsv"
    data.write_text("".join(f"{w} day\t{w[0]}\n" for w in ["good", "bad"] * 15))
    run_dir = train(tmp_path / "run", data, steps=2)
    capsys.readouterr()
    before = (run_dir / MODEL).read_bytes()
    data.write_text(data.read_text() + "fine day\tg\n")
    for argv in (["eval", run_dir], ["train", "--resume", run_dir, "--max-steps", 5, "--quiet"]):
        code, _, err = run(capsys, "classify", *argv)
        assert_user_error(code, err, "the data changed since the run was trained", str(data))
    assert (run_dir / MODEL).read_bytes() == before


def test_run_kind_and_input_errors(text_run, small_corpus, capsys, tmp_path):
    lm = tmp_path / "lm"
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 2, "--out", lm, "--hidden-size", 8,
                       "--embedding-size", 4, "--batch-size", 2, "--seq-len", 8, "--quiet", "--sample-length", 0)
    assert code == 0, err
    for verb in (["eval", lm], ["predict", lm, "x"], ["train", "--resume", lm, "--max-steps", 5]):
        code, _, err = run(capsys, "classify", *verb)
        assert_user_error(code, err, "holds a language_model run, not a classifier")
    run_dir = text_run[0]
    ts = write_ts(tmp_path / "s.ts", [np.zeros((3, 2), np.float32)])
    code, _, err = run(capsys, "classify", "predict", run_dir, "--file", ts)
    assert_user_error(code, err, "classifies text", "not --file")
    code, _, err = run(capsys, "classify", "predict", run_dir, "x", "--top", 0)
    assert_user_error(code, err, "--top must be >= 1", hint=False)
    code, _, err = run(capsys, "classify", "eval", tmp_path / "nowhere")
    assert_user_error(code, err, "not a run directory")


def test_nothing_to_classify(text_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n   \n"))
    code, out, err = run(capsys, "classify", "predict", text_run[0])
    assert_user_error(code, err, "nothing to classify")
    assert out == ""


@pytest.mark.parametrize("raw, fragment", [(b"caf\xe9 noir\n", "not UTF-8 (bad byte at offset 3)"),
                                            (b"PK\x03\x04\x00\x00\n", "binary")])
def test_stdin_that_is_not_text_is_refused(text_run, capsys, monkeypatch, raw, fragment):
    """The locale may decode stdin leniently (surrogateescape under C): the bytes are checked as files are."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="surrogateescape"))
    code, out, err = run(capsys, "classify", "predict", text_run[0])
    assert_user_error(code, err, fragment)
    assert out == ""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("café noir\r\n".encode()), encoding="utf-8"))
    code, out, err = run(capsys, "classify", "predict", text_run[0])
    assert code == 0 and out.rstrip("\n").endswith("\tcafé noir"), err


def test_resume_with_more_epochs_extends_an_epoch_budget(tmp_path, capsys):
    """The saved max_steps was worked out from the saved epochs; a new --epochs replaces the whole budget."""
    data = sentiment_sample(tmp_path / "s.tsv", per_file=40)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "classify", "train", "--data", data, "--out", run_dir, "--epochs", 1, *SMALL)
    assert code == 0, err
    first = json.loads((run_dir / CONFIG).read_text())["train"]["max_steps"]
    code, _, err = run(capsys, "classify", "train", "--resume", run_dir, "--epochs", 2, "--quiet")
    assert code == 0, err
    train = json.loads((run_dir / CONFIG).read_text())["train"]
    assert train["epochs"] == 2 and train["max_steps"] == 2 * first
    assert f"done: {2 * first} steps" in err


def test_eval_into_a_directory_it_cannot_write_fails_before_scoring(text_run, capsys, monkeypatch):
    """The confusion matrix goes into the run directory by default: a read-only one fails at once, naming the file,
    rather than after the scoring and the baselines, with their figures lost."""
    import rnnkit.data.classification

    run_dir = text_run[0]

    def no_scoring(*args, **kwargs):
        raise AssertionError("the test data was loaded before the output was checked")

    refuse_writes_in(monkeypatch, run_dir)
    monkeypatch.setattr(rnnkit.data.classification, "load_classification", no_scoring)
    code, out, err = run(capsys, "classify", "eval", run_dir)
    assert code == 2 and out == ""
    assert err.strip() == f"error: {run_dir / 'confusion.png'}: Permission denied — check the path, its permissions " \
                          "and the free space"


def test_a_class_with_no_test_examples_has_no_recall_not_a_recall_of_zero(tmp_path, capsys):
    """A --test-data file without one of the classes (here the third source, amazon/imdb/yelp as labels)."""
    lines = sentiment_sample(tmp_path / "sentiment.tsv").read_text(encoding="utf-8").splitlines()
    by_source = [f"{ln.rsplit(chr(9), 1)[0]}\t{['amazon', 'imdb', 'yelp'][i // 100]}" for i, ln in enumerate(lines)]
    data, test = tmp_path / "sources.tsv", tmp_path / "test.tsv"
    data.write_text("\n".join(by_source) + "\n", encoding="utf-8")
    test.write_text("\n".join(by_source[:20] + by_source[100:120]) + "\n", encoding="utf-8")  # no yelp
    run_dir = train(tmp_path / "run", data, "--tokens", "word", "--test-data", test, steps=5)
    code, out, err = run(capsys, "classify", "eval", run_dir, "--json", "--no-baselines")
    assert code == 0, err
    result = json.loads(out)
    assert result["per_class"]["yelp"]["support"] == 0 and result["per_class_recall"]["yelp"] is None
    assert [result["per_class"][c]["support"] for c in ("amazon", "imdb")] == [20, 20]
    assert all(0 <= result["per_class_recall"][c] <= 1 for c in ("amazon", "imdb"))
