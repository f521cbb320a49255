"""The command line: train -> sample -> eval, resume, and every user error (exit 2, one line, no traceback)."""

import json
import subprocess
import sys

import pytest

from rnnkit.checkpoint import CONFIG, FORMAT_VERSION, MODEL, load_run
from rnnkit.cli import main
from rnnkit.data import encode_file, split_tokens
from rnnkit.train import DynamicConfig, dynamic_evaluate, evaluate

SMALL = ["--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8", "--batch-size", "4",
         "--seq-len", "16", "--eval-interval", "5", "--quiet", "--precision", "fp32"]


def run(capsys, *argv):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def trained(small_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 10, "--out", run_dir,
                         "--sample-length", 40, *SMALL)
    assert code == 0, err
    return run_dir, out, err


def test_train_sample_eval(trained, capsys, small_corpus):
    run_dir, out, err = trained
    for name in (CONFIG, MODEL, "best.safetensors", "trainer_state.safetensors", "metrics.csv", "loss.png"):
        assert (run_dir / name).exists(), name
    assert "validation loss" in err and len(out.strip()) > 0  # the closing sample is on stdout
    code, out, err = run(capsys, "sample", run_dir, "--prompt", "The ", "--length", 50, "--seed", 1)
    assert code == 0 and out.startswith("The ") and len(out.rstrip("\n")) == 54
    code2, out2, _ = run(capsys, "sample", run_dir, "--prompt", "The ", "--length", 50, "--seed", 1)
    assert out2 == out  # seeded: reproducible
    code, out, _ = run(capsys, "sample", run_dir, "--num-samples", 3, "--length", 20, "--temperature", 0)
    assert code == 0 and out.count("--- sample") == 3
    greedy = [ln for ln in out.splitlines() if ln and not ln.startswith("---")]
    assert len(set(greedy)) == 1  # greedy: every sample the same
    code, out, _ = run(capsys, "eval", run_dir, "--json")
    result = json.loads(out)
    assert code == 0 and set(result) >= {"val_loss", "bpc"}
    assert result["bpc"] == pytest.approx(result["val_loss"] / 0.6931471805599453)
    assert result["perplexity"] == pytest.approx(2.718281828459045 ** result["val_loss"])
    config = json.loads((run_dir / CONFIG).read_text())
    assert config["data"]["path"] == str(small_corpus.resolve())
    code, out, _ = run(capsys, "eval", run_dir)
    assert code == 0 and "bits/char" in out


def test_resume_continues_the_run(trained, capsys):
    run_dir, _, _ = trained
    code, _, err = run(capsys, "train", "--resume", run_dir, "--max-steps", 15, "--quiet", "--sample-length", 0)
    assert code == 0, err
    assert "resuming at step 10" in err
    assert "done: 15 steps" in err


def test_console_script_and_module_entry(trained):
    run_dir, _, _ = trained
    result = subprocess.run([sys.executable, "-m", "rnnkit", "sample", str(run_dir), "--length", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and len(result.stdout) >= 5
    result = subprocess.run([sys.executable, "-m", "rnnkit", "sample", str(run_dir), "--top-p", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_the_default_cell_follows_the_device(trained, small_corpus, tmp_path, capsys, monkeypatch):
    """Without --cell: the layer-normalised LSTM on the CPU (its compiled kernels), the LSTM on CUDA (cuDNN);
    --cell always wins, and a resumed run keeps the cell it was started with."""
    import torch

    from rnnkit.cli import lm

    run_dir, _, _ = trained
    assert json.loads((run_dir / CONFIG).read_text())["model"]["cell"] == "lnlstm"
    assert lm.default_cell(torch.device("cpu")) == "lnlstm" and lm.default_cell(torch.device("cuda")) == "lstm"
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 2, "--out", tmp_path / "lstm",
                       "--sample-length", 0, "--cell", "lstm", *SMALL)
    assert code == 0 and "1x16 LSTM" in err, err
    monkeypatch.setattr(lm, "default_cell", lambda device: "gru")  # as the CUDA rule would pick another cell
    code, _, err = run(capsys, "train", "--resume", run_dir, "--max-steps", 12, "--quiet", "--sample-length", 0)
    assert code == 0 and "1x16 LNLSTM" in err, err
    code, out, _ = run(capsys, "train", "--help")
    assert "(default: lnlstm on the CPU, lstm on CUDA)" in " ".join(out.split())


def test_builtin_corpus_is_the_default(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--max-steps", 2, "--out", tmp_path / "run", "--sample-length", 0, *SMALL)
    assert code == 0, err
    assert "built-in corpus" in err and "pydoc_data" in err


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"caf\xe9 au lait", "not valid UTF-8"),
    (b"tiny corpus", "shorter than one window"),
])
def test_corpus_errors(tmp_path, capsys, content, fragment):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(capsys, "train", "--data", path, "--max-steps", 2, "--out", tmp_path / "run", *SMALL)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "run" / CONFIG).exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--hidden-size", "0"], "hidden_size must be positive"),
    (["--num-layers", "-1"], "num_layers must be positive"),
    (["--batch-size", "0"], "batch_size must be positive"),
    (["--cell", "transformer"], "unknown cell"),
    (["--max-steps", "0"], "max_steps must be positive"),
    (["--hidden-size", "abc"], "invalid int value"),
    (["--device", "tpu"], "device"),
    (["--lr", "-1"], "lr must be positive"),
    (["--activation-reg", "-1"], "--activation-reg such as 1"),
    (["--temporal-activation-reg", "-2"], "--temporal-activation-reg such as 1"),
])
def test_invalid_train_flags(small_corpus, tmp_path, capsys, flags, fragment):
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 2, "--out", tmp_path / "r", *SMALL,
                       *flags)
    assert_user_error(code, err, fragment)


@pytest.mark.parametrize("flags, fragment", [
    (["--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "'nan' is not a finite number"),
    (["--top-p", "0"], "top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "top-p must be in (0, 1]"),
    (["--top-k", "0"], "top-k must be positive"),
    (["--length", "-3"], "length must be >= 0"),
    (["--num-samples", "0"], "num-samples must be positive"),
    (["--prompt", "Zürich ☃"], "'☃'"),
])
def test_invalid_sample_flags(trained, capsys, flags, fragment):
    run_dir, _, _ = trained
    code, out, err = run(capsys, "sample", run_dir, *flags)
    assert_user_error(code, err, fragment)
    assert out == ""


def test_eval_dynamic(trained, capsys, small_corpus):
    run_dir, _, _ = trained
    code, out, err = run(capsys, "eval", run_dir, "--dynamic", "--dynamic-window", 20, "--dynamic-lr", 1e-3, "--json")
    assert code == 0, err
    result = json.loads(out)
    dynamic = result["dynamic"]
    assert (dynamic["window"], dynamic["lr"], dynamic["decay"]) == (20, 1e-3, DynamicConfig().decay)
    model, vocab, _ = load_run(run_dir)
    ids = encode_file(small_corpus, vocab)
    train, val = split_tokens(ids)
    assert dynamic["static_loss"] == pytest.approx(evaluate(model, val, 1, "cpu"), rel=1e-6)  # one stream
    assert dynamic["loss"] == pytest.approx(
        dynamic_evaluate(model, val, train, "cpu", DynamicConfig(lr=1e-3, window=20)), rel=1e-6)
    assert dynamic["bpc"] == pytest.approx(dynamic["loss"] / 0.6931471805599453)
    assert dynamic["stats_characters"] == len(train) - 1
    code, out, _ = run(capsys, "eval", run_dir, "--dynamic")
    assert code == 0 and "dynamic evaluation:" in out.splitlines()[1]


@pytest.mark.parametrize("flags, fragment", [
    (["--dynamic-lr", "1e-3"], "add --dynamic"),
    (["--dynamic", "--dynamic-lr", "0"], "--dynamic-lr"),
    (["--dynamic", "--dynamic-decay", "1"], "--dynamic-decay"),
    (["--dynamic", "--dynamic-window", "0"], "--dynamic-window"),
])
def test_invalid_dynamic_flags(trained, capsys, flags, fragment):
    run_dir, _, _ = trained
    code, out, err = run(capsys, "eval", run_dir, *flags)
    assert_user_error(code, err, fragment)
    assert out == ""


def test_checkpoint_errors(trained, capsys, tmp_path):
    run_dir, _, _ = trained
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "sample", tmp_path / "empty")
    assert_user_error(code, err, "holds no checkpoint")
    code, _, err = run(capsys, "eval", tmp_path / "missing")
    assert_user_error(code, err, "not a run directory")

    weights = run_dir / "best.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x40
    weights.write_bytes(bytes(raw))
    code, _, err = run(capsys, "sample", run_dir)
    assert_user_error(code, err, "checksum")
    weights.write_bytes(bytes(raw[:100]))
    code, _, err = run(capsys, "eval", run_dir)
    assert_user_error(code, err, "corrupt")

    config = json.loads((run_dir / CONFIG).read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (run_dir / CONFIG).write_text(json.dumps(config))
    code, _, err = run(capsys, "sample", run_dir)
    assert_user_error(code, err, f"format {FORMAT_VERSION + 1}")


def test_existing_run_is_never_overwritten(trained, capsys, small_corpus):
    run_dir, _, _ = trained
    before = (run_dir / MODEL).read_bytes()
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 2, "--out", run_dir, *SMALL)
    assert_user_error(code, err, "--resume")
    code, _, err = run(capsys, "train", "--resume", run_dir, "--hidden-size", "32", "--max-steps", 12)
    assert_user_error(code, err, "--hidden-size cannot change")
    assert (run_dir / MODEL).read_bytes() == before


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, _, err = run(capsys, "train", "--resume", tmp_path / "run", "--max-steps", 3)
    assert_user_error(code, err, "holds no checkpoint")


def test_undecodable_prompt_bytes_are_a_user_error(trained, capsys):
    """Bytes that are not UTF-8 reach Python's argv as lone surrogates: still one line, exit 2."""
    run_dir, _, _ = trained
    code, out, err = run(capsys, "sample", run_dir, "--prompt", "a\udcff")
    assert_user_error(code, err, "'\\udcff'")


def test_a_run_that_wrote_no_checkpoint_can_be_started_again(small_corpus, tmp_path, capsys):
    """A first attempt that died before its first checkpoint leaves config.json and metrics rows behind: a new
    run into the same directory starts afresh instead of refusing (nothing to lose) or appending to stale rows."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stopped = {"format_version": FORMAT_VERSION, "kind": "language_model", "model": {}, "vocab": {}}  # its start
    (run_dir / CONFIG).write_text(json.dumps(stopped))
    (run_dir / "metrics.csv").write_text("step,tokens\n999,1\n")
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 5, "--out", run_dir, *SMALL)
    assert code == 0, err
    steps = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert "999" not in steps and steps[-1] == "5"
