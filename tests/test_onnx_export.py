"""ONNX export: onnxruntime against PyTorch for the LSTM, GRU, Elman RNN and layer-normalised LSTM language
models — logits and states over a 100-character prompt of real text, the state fed back one token per call, batches
and a given starting state, greedy sampling — and the export verb's errors."""

import sys

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data import build_vocab, encode_file
from rnnkit.generate import generate
from rnnkit.models import LanguageModel, LanguageModelConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from rnnkit.onnx_export import OnnxLanguageModel, export_onnx  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    path = tmp_path_factory.mktemp("onnx") / "corpus.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics))[:20_000], encoding="utf-8")
    vocab, _ = build_vocab(path)
    return path, vocab, encode_file(path, vocab)


def exported(corpus, tmp_path, cell):
    """A small model, its weights scaled up 3x from the initialisation so that its dynamics are rich: at the default
    initialisation a model soon repeats one character, which would make the greedy comparison nearly empty. Not
    the layer-normalised LSTM: its layer norms keep every pre-activation at unit scale, so it is lively as it is,
    and at 3x it is chaotic (differences at float rounding, onnxruntime's sums against the kernels', grow ~10x
    every few steps until they are as large as the logits)."""
    path, vocab, ids = corpus
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=32, num_layers=2,
                                              embedding_size=16)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0 if cell == "lnlstm" else 3.0)
    onnx_path = export_onnx(model, {"kind": "language_model", "model": model.config.to_dict(),
                                    "vocab": vocab.to_dict()}, tmp_path / f"{cell}.onnx")
    return model, OnnxLanguageModel(onnx_path), ids


def states(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_onnxruntime_equals_pytorch(corpus, tmp_path, cell):
    model, session, ids = exported(corpus, tmp_path, cell)
    assert session.state_inputs == (["h_0", "c_0"] if "lstm" in cell else ["h_0"])
    prompt = ids[:100].astype(np.int64)[None]  # (1, 100): real text
    with torch.no_grad():
        want = model(torch.from_numpy(prompt))
    logits, state = session(prompt, session.init_state(1))
    np.testing.assert_allclose(logits, want.logits.numpy(), rtol=0, atol=TOL)
    for got, ref in zip(state, states(want.state), strict=True):
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=TOL)

    # one token per call, the state going round through the graph's outputs and inputs
    s, steps = session.init_state(1), []
    for t in range(prompt.shape[1]):
        step, s = session(prompt[:, t:t + 1], s)
        steps.append(step[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), want.logits.numpy(), rtol=0, atol=TOL)

    # another batch size and length, from a given (non-zero) state
    x = torch.from_numpy(np.stack([ids[200:237], ids[500:537], ids[900:937]]).astype(np.int64))  # (3, 37)
    start = tuple(torch.randn_like(t) * 0.5 for t in states(model.init_state(3)))
    with torch.no_grad():
        want = model(x, start if "lstm" in cell else start[0])
    logits, state = session(x.numpy(), [t.numpy() for t in start])
    np.testing.assert_allclose(logits, want.logits.numpy(), rtol=0, atol=TOL)
    for got, ref in zip(state, states(want.state), strict=True):
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=TOL)

    # greedy sampling through onnxruntime, one call per token, reproduces PyTorch's, after the 100-character
    # prompt and after 12 more
    prompts = [prompt[0].tolist()] + [ids[k:k + 20 + k % 37].tolist() for k in range(1000, 13000, 1000)]
    seen = set()
    for p in prompts:
        theirs = generate(model, p, 30, temperature=0.0)[0].tolist()
        assert session.greedy(p, 30) == theirs
        seen.update(theirs)
    assert len(seen) > 8, seen  # many different argmax decisions, not one character repeated


def test_bidirectional_elman_rnn_translation(tmp_path):
    """The Elman RNN's ONNX translation is rnnkit's own: check the parts the language model does not use
    (two directions, relu, no biases) against torch.nn.RNN."""
    import onnxruntime as ort

    from rnnkit.onnx_export import _quiet, _translations

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(5, 7, 2, nonlinearity="relu", bias=False, batch_first=True, bidirectional=True)

        def forward(self, x, h):
            return torch.ops.rnnkit.rnn(x, h, list(self.rnn._flat_weights), "RNN_RELU", False, 2, True)

    torch.manual_seed(0)
    layer = Layer().eval()
    b, t = torch.export.Dim("batch"), torch.export.Dim("time")
    with _quiet():
        torch.onnx.export(layer, (torch.randn(2, 3, 5), torch.randn(4, 2, 7)), str(tmp_path / "bi.onnx"),
                          dynamo=True, input_names=["x", "h"], dynamic_shapes=({0: b, 1: t}, {1: b}),
                          custom_translation_table=_translations())
    session = ort.InferenceSession(str(tmp_path / "bi.onnx"), providers=["CPUExecutionProvider"])
    x, h = torch.randn(3, 11, 5), torch.randn(4, 3, 7)
    with torch.no_grad():
        want = layer.rnn(x, h)
    got = session.run(None, {"x": x.numpy(), "h": h.numpy()})
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=TOL)


SMALL = ["--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16",
         "--quiet", "--precision", "fp32", "--sample-length", "0", "--max-steps", "5"]


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_export_verb_and_check(corpus, tmp_path, capsys):
    path, _, _ = corpus
    code, _, err = run(capsys, "train", "--data", path, "--out", tmp_path / "run", *SMALL)
    assert code == 0, err
    code, out, err = run(capsys, "export", tmp_path / "run", "--onnx", tmp_path / "lm.onnx", "--check",
                         "--length", 50)
    assert code == 0, err
    assert "exported" in err and (tmp_path / "lm.onnx").stat().st_size > 1000
    assert "the state (h_0, c_0)" in err  # the layer-normalised LSTM carries a cell state too
    assert "100-character prompt" in out and "greedy 50 characters: identical" in out
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "lm.onnx")).metadata_props}
    assert meta["rnnkit.cell"] == "lnlstm" and '"chars"' in meta["rnnkit.vocab"]  # the CPU default


def test_export_errors(corpus, tmp_path, capsys, monkeypatch):
    path, _, _ = corpus
    code, _, err = run(capsys, "export", tmp_path / "missing", "--onnx", tmp_path / "x.onnx")
    assert_user_error(code, err, "not a run directory")
    code, _, err = run(capsys, "train", "--data", path, "--out", tmp_path / "ln", "--cell", "lnlstm", "--zoneout",
                       "0.1", *SMALL)
    assert code == 0, err
    code, _, err = run(capsys, "export", tmp_path / "ln", "--onnx", tmp_path / "x.onnx")
    assert_user_error(code, err, "LayerNormLSTMCell with zoneout")
    code, _, err = run(capsys, "export", tmp_path / "ln", "--onnx", tmp_path / "no" / "x.onnx")
    assert_user_error(code, err, "does not exist")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    code, _, err = run(capsys, "export", tmp_path / "ln", "--onnx", tmp_path / "x.onnx")
    assert_user_error(code, err, "onnxruntime", "pip install 'rnnkit[onnx]'")
    assert not (tmp_path / "x.onnx").exists()


def test_the_command_line_does_not_import_the_extra():
    """`rnnkit --help` stays fast and works without onnx: the verb imports it only when it runs."""
    import subprocess

    code = ("import sys; from rnnkit.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('onnx', 'onnxscript', 'onnxruntime', 'rnnkit.onnx_export') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
