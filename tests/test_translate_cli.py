"""`rnnkit translate train|translate|eval` end to end on real Tatoeba pairs (the first 4,000 lines of spa.txt: short
sentences, so a tiny model learns something in seconds and the CRC32 test split is small), and every user error:
one line `error: ... — ...` on stderr, exit status 2, no traceback, the run's files untouched."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import sys
import unicodedata
import zlib

import pytest
import torch
from conftest import require_data
from test_classify_cli import assert_user_error
from test_cli import run  # the CLI in-process: (exit code, stdout, stderr)

from rnnkit import translate as tr
from rnnkit.checkpoint import CONFIG, MODEL, TRAINER_STATE, load_weights
from rnnkit.cli import main
from rnnkit.data.translation import Tokenizer

SMALL = ["--vocab-size", "600", "--hidden-size", "48", "--embedding-size", "32", "--batch-size", "32",
         "--lr", "1e-2", "--dropout", "0", "--eval-interval", "100", "--quiet", "--device", "cpu",
         "--precision", "fp32"]
STEPS = 200
SENTENCES = ["¿Dónde está la biblioteca?", "¡Auxilio!", "Tom está aquí."]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """The first 4,000 real pairs of spa.txt (English<TAB>Spanish<TAB>attribution)."""
    with require_data("spa-eng/spa.txt").open(encoding="utf-8") as f:
        lines = [next(f) for _ in range(4000)]
    path = tmp_path_factory.mktemp("spa") / "spa.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run_dir(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "es-en"
    assert main(["translate", "train", "--data", str(pairs), "--max-steps", str(STEPS), "--out", str(out),
                 *SMALL]) == 0
    return out


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def loaded(run_dir):
    model, config = load_weights(run_dir, "best", "cpu", kind="seq2seq")
    return model, Tokenizer.from_dict(config["src_vocab"]), Tokenizer.from_dict(config["tgt_vocab"]), config


def test_train_writes_a_run_that_learned(run_dir, pairs):
    for name in (CONFIG, MODEL, "best.safetensors", TRAINER_STATE, "metrics.csv", "loss.png"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / CONFIG).read_text())
    assert config["kind"] == "seq2seq"
    assert config["model"]["hidden_size"] == 48 and config["model"]["attention"] == "general"
    spec = config["data"]["spec"]
    assert spec["path"] == str(pairs.resolve()) and spec["vocab_size"] == 600 and len(spec["sha256"]) == 64
    assert config["train"]["max_steps"] == STEPS
    V = len(config["tgt_vocab"]["words"])
    assert V == 600
    rows = [ln.split(",") for ln in (run_dir / "metrics.csv").read_text().splitlines()]
    head, rows = rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert "val_loss" in head
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    first_train = float(rows[0]["loss"])
    assert first_train > math.log(V) - 1.0  # it started about uniform over 600 words
    assert val[-1] < math.log(V) - 3.0 and val[-1] < first_train - 3.0


def test_translate_arguments_stdin_and_json_agree_with_the_library(run_dir, capsys, monkeypatch):
    code, out, err = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 1, "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and all(lines) and err == ""
    model, src, tgt, _ = loaded(run_dir)
    ids = [src.encode(s) for s in SENTENCES]
    assert lines == [tgt.decode(s) for s in tr.greedy(model, ids)]  # --beam 1 is greedy
    code, last_out, err = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 1, "--weights", "last")
    assert code == 0 and len(last_out.splitlines()) == 3, err
    code, beam_out, _ = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 3, "--alpha", 1.0)
    assert code == 0 and beam_out.splitlines() == [tgt.decode(s) for s in tr.beam(model, ids, 3, alpha=1.0)]
    # a wide beam decodes fewer sentences at a time (here one: MAX_BEAM // 3), with the same results
    monkeypatch.setattr(tr, "MAX_BEAM", 5)
    code, narrow_out, _ = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 3, "--alpha", 1.0)
    assert code == 0 and narrow_out == beam_out
    code, _, err = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 6)
    assert_user_error(code, err, "--beam must be 1..5 (got 6)")
    monkeypatch.undo()
    # stdin: one sentence a line, blank lines skipped, CRLF ends taken off
    monkeypatch.setattr(sys, "stdin", io.StringIO(SENTENCES[0] + "\r\n\n   \n" + "\n".join(SENTENCES[1:]) + "\n"))
    code, stdin_out, err = run(capsys, "translate", "translate", run_dir, "--beam", 1)
    assert code == 0, err
    assert stdin_out == out
    code, json_out, _ = run(capsys, "translate", "translate", run_dir, *SENTENCES, "--beam", 1, "--json")
    assert code == 0
    objects = [json.loads(ln) for ln in json_out.splitlines()]
    assert objects == [{"source": s, "translation": t} for s, t in zip(SENTENCES, lines, strict=True)]
    assert "¿Dónde está" in json_out  # not \u-escaped


def test_attention_png_draws_one_row_per_output_token_and_one_column_per_source_token(run_dir, capsys,
                                                                                     monkeypatch, tmp_path):
    import rnnkit.plots

    drawn = []
    original = rnnkit.plots.plot_attention

    def spy(weights, source, output, path, title=""):
        drawn.append((weights, source, output, title))
        return original(weights, source, output, path, title=title)

    monkeypatch.setattr(rnnkit.plots, "plot_attention", spy)
    png = tmp_path / "attention.png"
    code, out, err = run(capsys, "translate", "translate", run_dir, *SENTENCES[:2], "--beam", 2,
                         "--attention-png", png)
    assert code == 0, err
    assert f"wrote {png}" in err and len(out.splitlines()) == 2
    (weights, source, output, title), = drawn  # the first sentence only
    model, src, tgt, _ = loaded(run_dir)
    assert source == ["¿", "dónde", "está", "la", src.pieces([src.encode("biblioteca")[0]])[0], "?"]
    seqs, want = tr.greedy(model, [src.encode(SENTENCES[0])], attention=True)  # drawn from greedy, whatever --beam
    assert output == tgt.pieces(seqs[0]) + ["</s>"]  # it stopped: the EOS row is drawn too
    assert weights.shape == (len(output), len(source)) == tuple(want[0].shape)
    assert torch.allclose(torch.as_tensor(weights), want[0])
    assert torch.allclose(torch.as_tensor(weights).sum(1), torch.ones(len(output)))
    assert SENTENCES[0] in title and tgt.decode(seqs[0]) in title
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR: sized by the matrix, 100 dpi
    assert abs(width - 100 * max(4.0, 0.55 * len(source) + 2)) <= 1
    assert abs(height - 100 * max(3.0, 0.45 * len(output) + 1.5)) <= 1


def _key(spanish: str) -> str:
    """An independent spelling of the split key: NFC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", spanish).lower().split())


def test_eval_reports_sacrebleu_on_the_crc32_test_split(run_dir, pairs, capsys, tmp_path):
    sacrebleu = pytest.importorskip("sacrebleu")
    predictions = tmp_path / "test.jsonl"
    code, out, err = run(capsys, "translate", "eval", run_dir, "--json", "--beam", 3, "--examples", 10_000,
                         "--device", "cpu", "--predictions", predictions)
    assert code == 0, err
    result = json.loads(out)
    assert [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()] == \
        result["examples"]  # every test pair, as --examples above the count lists them
    assert {"bleu", "bleu_greedy", "bleu_beam", "examples", "test_pairs"} <= set(result)
    assert result["bleu"] == result["bleu_beam"] and result["beam_size"] == 3
    # the test split: every pair whose Spanish hashes (CRC32) into the first 5 of 100 buckets
    lines = [ln.split("\t") for ln in pairs.read_text(encoding="utf-8").splitlines()]
    test = [(e, s) for e, s, *_ in lines if zlib.crc32(_key(s).encode()) % 100 < 5]
    assert result["test_pairs"] == len(test) > 100
    examples = result["examples"]
    assert len(examples) == len(test)  # --examples above the count: all of them, in file order
    assert [(x["reference"], x["source"]) for x in examples] == test
    assert all(set(x) == {"source", "reference", "greedy", "beam"} for x in examples)
    hyps_beam, hyps_greedy = [x["beam"] for x in examples], [x["greedy"] for x in examples]
    refs = [x["reference"] for x in examples]
    # scored by sacreBLEU itself, case-insensitively as the model was trained on lower-cased text
    assert result["bleu_case_insensitive"] is True
    assert result["bleu_beam"] == pytest.approx(sacrebleu.corpus_bleu(hyps_beam, [refs], lowercase=True).score,
                                                abs=1e-9)
    assert result["bleu_greedy"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps_greedy, [refs], lowercase=True).score, abs=1e-9)
    assert result["bleu_greedy"] > 0.0
    assert sum(bool(h) for h in hyps_greedy) > 0.9 * len(test)  # it says something
    # the same outputs as translating the test sources directly
    sources = [x["source"] for x in examples[:20]]
    code, out, _ = run(capsys, "translate", "translate", run_dir, *sources, "--beam", 1)
    assert code == 0 and out.splitlines() == hyps_greedy[:20]
    # --beam 1: both columns are greedy; plain output is a summary and a few examples
    code, out, _ = run(capsys, "translate", "eval", run_dir, "--json", "--beam", 1, "--examples", 2)
    one = json.loads(out)
    assert code == 0 and one["bleu_beam"] == one["bleu_greedy"] == result["bleu_greedy"]
    assert len(one["examples"]) == 2 and one["examples"][0]["source"] == test[0][1]
    code, out, _ = run(capsys, "translate", "eval", run_dir, "--beam", 2, "--examples", 3)
    assert code == 0 and out.startswith("BLEU ") and out.count("reference:") == 3


def test_resume_continues_and_keeps_its_data_and_model(run_dir, tmp_path, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    config = json.loads((resumed / CONFIG).read_text())
    code, _, err = run(capsys, "translate", "train", "--resume", resumed, "--max-steps", STEPS + 20, "--quiet",
                       "--hidden-size", 48)  # a model flag equal to the saved one is fine
    assert code == 0, err
    assert f"done: {STEPS + 20} steps" in err
    steps = [int(ln.split(",")[0]) for ln in (resumed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == STEPS + 20 and {STEPS, STEPS + 10} <= set(steps)  # continued
    after = json.loads((resumed / CONFIG).read_text())
    assert after["model"] == config["model"] and after["src_vocab"] == config["src_vocab"]
    assert after["data"] == config["data"] and after["train"]["max_steps"] == STEPS + 20


# -- user errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,fragments", [
    (["--data", "DATA"], ["--data cannot be given when resuming", "start a new --out"]),
    (["--vocab-size", "800"], ["--vocab-size cannot be given"]),
    (["--no-lowercase"], ["--lowercase cannot be given"]),
    (["--hidden-size", "64"], ["--hidden-size cannot be given"]),
    (["--attention", "dot"], ["--attention cannot be given"]),
    (["--input-feeding"], ["--input-feeding cannot be given"]),
    (["--out", "ELSEWHERE"], ["--out cannot be given"]),
])
def test_resume_refuses_data_and_model_changes_and_touches_nothing(run_dir, pairs, tmp_path, capsys, flags,
                                                                   fragments):
    before = snapshot(run_dir)
    flags = [str(pairs) if f == "DATA" else str(tmp_path / "other") if f == "ELSEWHERE" else f for f in flags]
    code, _, err = run(capsys, "translate", "train", "--resume", run_dir, "--max-steps", STEPS + 50, *flags)
    assert_user_error(code, err, *fragments)
    assert snapshot(run_dir) == before
    assert not (tmp_path / "other").exists()


def test_train_errors(run_dir, pairs, tmp_path, capsys):
    code, _, err = run(capsys, "translate", "train", "--out", tmp_path / "a", "--max-steps", 5)
    assert_user_error(code, err, "no data given", "--data PATH")
    code, _, err = run(capsys, "translate", "train", "--data", tmp_path / "missing.txt", "--out", tmp_path / "b",
                       "--max-steps", 5)
    assert_user_error(code, err, "missing.txt not found")
    before = snapshot(run_dir)
    code, _, err = run(capsys, "translate", "train", "--data", pairs, "--out", run_dir, "--max-steps", 5, *SMALL)
    assert_user_error(code, err, "already holds a training run", f"--resume {run_dir}")
    assert snapshot(run_dir) == before
    code, _, err = run(capsys, "translate", "train", "--data", pairs, "--out", tmp_path / "c", "--max-steps", 5,
                       "--test-percent", 0)
    assert_user_error(code, err, "test_percent")
    bad = tmp_path / "bad.txt"
    bad.write_text("Hello.\tHola.\nno tab on this line\n", encoding="utf-8")
    code, _, err = run(capsys, "translate", "train", "--data", bad, "--out", tmp_path / "d", "--max-steps", 5)
    assert_user_error(code, err, "bad.txt:2", "English<TAB>Spanish")
    for name in "abcd":
        assert not (tmp_path / name / MODEL).exists()


@pytest.mark.parametrize("flags,fragments", [
    (["--attention", "cosine"], ["unknown --attention 'cosine'"]),
    (["--tie-weights", "--hidden-size", "32", "--embedding-size", "16"], ["tie_weights", "--embedding-size 32"]),
])
def test_a_bad_model_flag_is_one_line_before_the_data_is_read(pairs, tmp_path, capsys, flags, fragments):
    code, _, err = run(capsys, "translate", "train", "--data", pairs, "--out", tmp_path / "run", "--max-steps", 5,
                       *flags)
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_translate_and_eval_errors(run_dir, tmp_path, capsys, monkeypatch):
    for verb in ("translate", "eval"):
        code, _, err = run(capsys, "translate", verb, run_dir, *(["Hola."] if verb == "translate" else []),
                           "--beam", 0)
        assert_user_error(code, err, "--beam must be 1..1024 (got 0)")
        code, _, err = run(capsys, "translate", verb, run_dir, *(["Hola."] if verb == "translate" else []),
                           "--beam", 1025)
        assert_user_error(code, err, "--beam must be 1..1024 (got 1025)")
        code, _, err = run(capsys, "translate", verb, tmp_path / "nowhere")
        assert_user_error(code, err, "nowhere")
        code, _, err = run(capsys, "translate", verb, tmp_path)
        assert_user_error(code, err, "no checkpoint")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "translate", "translate", run_dir)
    assert_user_error(code, err, "nothing to translate")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n\r\n"))
    code, _, err = run(capsys, "translate", "translate", run_dir)
    assert_user_error(code, err, "nothing to translate")
    code, out, err = run(capsys, "translate", "translate", run_dir, "Hola.", "  ")
    assert_user_error(code, err, "sentence 2 is empty")
    assert out == ""
    code, _, err = run(capsys, "translate", "translate", run_dir, "Hola.", "--weights", "middle")
    assert code == 2 and "invalid choice" in err


def test_eval_refuses_data_that_changed_since_training(run_dir, pairs, tmp_path, capsys):
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    data = tmp_path / "spa.txt"
    data.write_bytes(pairs.read_bytes())
    config = json.loads((moved / CONFIG).read_text())
    config["data"]["spec"]["path"] = str(data)
    (moved / CONFIG).write_text(json.dumps(config))
    code, out, err = run(capsys, "translate", "eval", moved, "--json", "--beam", 1)
    assert code == 0, err
    with data.open("a", encoding="utf-8") as f:
        f.write("One more.\tUno más.\n")
    code, _, err = run(capsys, "translate", "eval", moved, "--beam", 1)
    assert_user_error(code, err, "the data changed since the run was trained")


def test_eval_of_a_run_with_an_empty_test_split_is_a_user_error(pairs, tmp_path, capsys):
    from rnnkit.data.translation import split_of

    lines = pairs.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if split_of(ln.split("\t")[1], 5, 2) != 2][:300]
    assert any(split_of(ln.split("\t")[1], 5, 2) == 1 for ln in kept)  # a validation split, no test split
    small = tmp_path / "no-test.txt"
    small.write_text("\n".join(kept) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run(capsys, "translate", "train", "--data", small, "--out", out, "--max-steps", 2, "--hidden-size",
                       8, "--embedding-size", 8, "--batch-size", 8, "--quiet", "--device", "cpu")
    assert code == 0, err
    code, _, err = run(capsys, "translate", "eval", out, "--json")
    assert_user_error(code, err, "test")
