"""ONNX export: a trained model as a graph that onnxruntime runs without PyTorch, the recurrent state an explicit
input and output so that generation can step one token at a time.

The language model's graph: ``tokens (B, T) int64, h_0 (L, B, H)[, c_0 (L, B, H)] -> logits (B, T, V), h_n[, c_n]``
(``c`` for the LSTM), B and T dynamic. Feed ``h_n``/``c_n`` back as the next call's ``h_0``/``c_0``.

How: ``torch.onnx.export(dynamo=True)``, torch's maintained exporter (the TorchScript one is deprecated since
2.9). ``torch.export`` traces ``torch.nn.RNN/LSTM/GRU``'s fused op by unrolling it over the example's time steps,
which fixes T (the Elman RNN comes out as a loop of T copies). So the layer is traced as one opaque custom op,
``rnnkit::lstm`` / ``rnnkit::rnn`` (its PyTorch body is the same fused kernel), and translated to ONNX's own
LSTM, GRU and RNN operators: LSTM and GRU through the translations onnxscript's torch library ships for
``aten::lstm`` and ``aten::gru``, the Elman RNN by ``_onnx_rnn`` below. The layer-normalised LSTM has no ONNX
operator: each layer's recurrent half is the custom op ``rnnkit::lnlstm_layer``, translated to a Scan over time
(``rnnkit.onnx_lnlstm``). The vocabulary rides along in the model's metadata (``rnnkit.vocab``), so a deployment
needs only the .onnx file.

onnx, onnxscript and onnxruntime are the ``onnx`` extra; they are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit import __version__
from rnnkit.errors import ConfigError, RnnkitError

EXTRA = "pip install 'rnnkit[onnx]'"
OPSET = 18  # the exporter's default on torch 2.13, named so that onnx_lnlstm's script function (opset18) matches


def require_onnx() -> None:
    """One-line error naming the extra when onnx, onnxscript or onnxruntime is missing."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RnnkitError(f"ONNX export needs {', '.join(missing)} (not installed) — {EXTRA}")


# -- the recurrent layer as one op ---------------------------------------------------------------------------
@torch.library.custom_op("rnnkit::lstm", mutates_args=())
def fused_lstm(x: Tensor, h: Tensor, c: Tensor, params: list[Tensor], has_biases: bool, num_layers: int,
               bidirectional: bool) -> tuple[Tensor, Tensor, Tensor]:
    """torch's fused LSTM, batch first, inference: ``x (B, T, C), h, c (L*D, B, H) -> y (B, T, D*H), h, c``."""
    y, h, c = torch.lstm(x, (h, c), params, has_biases, num_layers, 0.0, False, bidirectional, True)
    return y, h, c


@torch.library.custom_op("rnnkit::rnn", mutates_args=())
def fused_rnn(x: Tensor, h: Tensor, params: list[Tensor], mode: str, has_biases: bool, num_layers: int,
              bidirectional: bool) -> tuple[Tensor, Tensor]:
    """torch's fused GRU or Elman RNN (``mode`` GRU, RNN_TANH, RNN_RELU), batch first, inference."""
    fn = {"GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}[mode]
    y, h = fn(x, h, params, has_biases, num_layers, 0.0, False, bidirectional, True)
    return y, h


@torch.library.custom_op("rnnkit::lnlstm_layer", mutates_args=())
def lnlstm_layer(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, gamma_h: Tensor, shift: Tensor, gamma_c: Tensor,
                 beta_c: Tensor, eps_h: float, eps_c: float) -> tuple[Tensor, Tensor, Tensor]:
    """The recurrent half of one layer-normalised LSTM layer (``LayerNormLSTMCell``), inference:
    ``gx (B, T, 4H)`` (the normalised input half), ``h, c (B, H) -> y (B, T, H), h, c``. ``shift`` holds every
    constant of a step's pre-activations (``b_ih + b_hh`` and LN_hh's offset)."""
    F = nn.functional
    ys = []
    for g in gx.unbind(1):
        a = F.layer_norm(h @ w_hh.T, gamma_h.shape, gamma_h, None, eps_h)
        i, f, z, o = (g + a + shift).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, gamma_c.shape, gamma_c, beta_c, eps_c))
        ys.append(h)
    return torch.stack(ys, 1), h, c


@lnlstm_layer.register_fake
def _(gx, h, c, w_hh, gamma_h, shift, gamma_c, beta_c, eps_h, eps_c):
    return gx.new_empty(gx.shape[0], gx.shape[1], h.shape[1]), torch.empty_like(h), torch.empty_like(c)


def _output_shape(x: Tensor, h: Tensor, bidirectional: bool) -> tuple:
    return x.shape[0], x.shape[1], (2 if bidirectional else 1) * h.shape[2]  # (B, T, D*H), T symbolic


@fused_lstm.register_fake
def _(x, h, c, params, has_biases, num_layers, bidirectional):
    return x.new_empty(_output_shape(x, h, bidirectional)), torch.empty_like(h), torch.empty_like(c)


@fused_rnn.register_fake
def _(x, h, params, mode, has_biases, num_layers, bidirectional):
    return x.new_empty(_output_shape(x, h, bidirectional)), torch.empty_like(h)


def _translations() -> dict:
    """ONNX translations of the two ops (onnxscript, traced: plain Python building ONNX nodes)."""
    from onnxscript import opset20 as op
    from onnxscript.function_libs.torch_lib.ops import core

    def onnx_lstm(x, h, c, params, has_biases: bool, num_layers: int, bidirectional: bool):
        return core.aten_lstm(x, [h, c], params, has_biases, num_layers, 0.0, False, bidirectional, True)

    def onnx_rnn(x, h, params, mode: str, has_biases: bool, num_layers: int, bidirectional: bool):
        if mode == "GRU":
            return core.aten_gru(x, h, params, has_biases, num_layers, 0.0, False, bidirectional, True)
        D, per = (2 if bidirectional else 1), (4 if has_biases else 2)
        x = op.Transpose(x, perm=[1, 0, 2])  # ONNX's RNN is time-major: (T, B, C)
        finals = []
        for layer in range(num_layers):
            w, r, b = [], [], []
            for d in range(D):
                k = (layer * D + d) * per
                w.append(op.Unsqueeze(params[k], [0]))  # W_ih (H, C) -> (1, H, C)
                r.append(op.Unsqueeze(params[k + 1], [0]))
                if has_biases:  # ONNX wants [b_ih, b_hh] as one (1, 2H) row
                    b.append(op.Unsqueeze(op.Concat(params[k + 2], params[k + 3], axis=0), [0]))
            stack = (lambda xs: xs[0]) if D == 1 else (lambda xs: op.Concat(*xs, axis=0))
            y, h_n = op.RNN(x, stack(w), stack(r), stack(b) if has_biases else None, None,
                            op.Slice(h, [layer * D], [(layer + 1) * D], axes=[0]),
                            activations=["Tanh" if mode == "RNN_TANH" else "Relu"] * D, hidden_size=h.shape[2],
                            direction="bidirectional" if bidirectional else "forward")
            y = op.Transpose(y, perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
            x = op.Reshape(y, op.Concat(op.Shape(y, start=0, end=2), op.Constant(value_ints=[-1]), axis=0))
            finals.append(h_n)
        return op.Transpose(x, perm=[1, 0, 2]), finals[0] if num_layers == 1 else op.Concat(*finals, axis=0)

    def onnx_lnlstm_layer(gx, h, c, w_hh, gamma_h, shift, gamma_c, beta_c, eps_h: float, eps_c: float):
        from rnnkit.onnx_lnlstm import ln_scan  # onnxscript's converter reads the module's globals

        return ln_scan(gx, h, c, op.Transpose(w_hh, perm=[1, 0]), gamma_h, shift, gamma_c, beta_c, eps_h=eps_h,
                       eps_c=eps_c)

    return {torch.ops.rnnkit.lstm.default: onnx_lstm, torch.ops.rnnkit.rnn.default: onnx_rnn,
            torch.ops.rnnkit.lnlstm_layer.default: onnx_lnlstm_layer}


# -- the language model ---------------------------------------------------------------------------------------
class LanguageModelGraph(nn.Module):
    """A LanguageModel at inference, on torch's fused kernel, with its state in and out: what gets exported.

    ``forward(tokens (B, T), h_0 (L, B, H), c_0 (L, B, H) for the LSTM) -> (logits (B, T, V), h_n[, c_n])``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        rnn = model.rnn
        cell = rnn.cells[0]
        self.layer_normed = all(hasattr(c, "ln_c") for c in rnn.cells) and not rnn.bidirectional
        if not (cell.fused_mode or self.layer_normed) or cell.zoneout:  # zoneout changes the state at evaluation
            raise ConfigError(f"ONNX export needs rnn, rnn_relu, lstm, gru or lnlstm cells without zoneout; this "
                              f"model has {type(cell).__name__}{' with zoneout' if cell.zoneout else ''} — "
                              "train one without it to export")
        self.embedding, self.rnn, self.head = model.embedding, rnn, model.head
        self.mode = "LSTM" if self.layer_normed else cell.fused_mode
        self.lstm = self.mode == "LSTM"

    def state_names(self) -> tuple[list[str], list[str]]:
        return (["h_0", "c_0"], ["h_n", "c_n"]) if self.lstm else (["h_0"], ["h_n"])

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor | None = None) -> tuple[Tensor, ...]:
        x = self.embedding(tokens)  # (B, T, E)
        if self.layer_normed:
            return self._layer_normed(x, h, c)
        params = [p for _, p in self.rnn.torch_names()]  # torch.nn's flat weight order
        layer = self.rnn
        if self.lstm:
            y, h, c = torch.ops.rnnkit.lstm(x, h, c, params, layer.bias, layer.num_layers, layer.bidirectional)
            return self.head(y), h, c  # (B, T, V)
        y, h = torch.ops.rnnkit.rnn(x, h, params, self.mode, layer.bias, layer.num_layers, layer.bidirectional)
        return self.head(y), h


    def _layer_normed(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Layer by layer: the input half for all T steps in ordinary ops, then ``rnnkit::lnlstm_layer``."""
        hs, cs = [], []
        for k, cell in enumerate(self.rnn.cells):
            shift = cell.ln_hh.bias
            for bias in (cell.bias_ih, cell.bias_hh):
                shift = shift if bias is None else shift + bias
            gx = cell.ln_ih(nn.functional.linear(x, cell.weight_ih))  # (B, T, 4H)
            x, h_k, c_k = torch.ops.rnnkit.lnlstm_layer(gx, h[k], c[k], cell.weight_hh, cell.ln_hh.weight, shift,
                                                        cell.ln_c.weight, cell.ln_c.bias, cell.ln_hh.eps,
                                                        cell.ln_c.eps)
            hs.append(h_k)
            cs.append(c_k)
        return self.head(x), torch.stack(hs), torch.stack(cs)


def export_onnx(model: nn.Module, config: dict, path: str | Path) -> Path:
    """Write ``model`` (described by ``config``, a run's config.json) to ``path`` as one self-contained .onnx file.

    The model is moved to the CPU and exported in float32."""
    require_onnx()
    import onnx

    kind = config.get("kind")
    if kind != "language_model":
        raise ConfigError(f"ONNX export of {kind!r} models is not supported yet — export a language model run")
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent} does not exist — create it or choose another --onnx path")
    graph = LanguageModelGraph(model.cpu()).eval()
    rnn = graph.rnn
    inputs, outputs = graph.state_names()
    B, T = 2, 3  # example sizes; both axes are dynamic in the graph
    example = (torch.zeros(B, T, dtype=torch.long),
               *(torch.zeros(rnn.num_layers * rnn.num_directions, B, rnn.hidden_size) for _ in inputs))
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            graph, example, str(path), dynamo=True, external_data=False, verbose=False, opset_version=OPSET,
            input_names=["tokens", *inputs], output_names=["logits", *outputs],
            dynamic_shapes=({0: batch, 1: time}, *({1: batch} for _ in inputs)),
            custom_translation_table=_translations(),
        )
    proto = onnx.load(str(path))
    meta = {"rnnkit.version": __version__, "rnnkit.kind": kind, "rnnkit.cell": config["model"]["cell"],
            "rnnkit.vocab": json.dumps(config["vocab"], ensure_ascii=False),
            "rnnkit.state": json.dumps({"inputs": inputs, "outputs": outputs})}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@contextlib.contextmanager
def _quiet():
    """The exporter prints its progress to stdout and logs warnings about optional packages; keep stdout clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class OnnxLanguageModel:
    """An exported language model in onnxruntime (NumPy in and out; no PyTorch needed to use one)."""

    def __init__(self, path: str | Path) -> None:
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.state_inputs = [i.name for i in self.session.get_inputs()][1:]
        self.state_shape = self.session.get_inputs()[1].shape  # [L*D, "batch", H]

    def init_state(self, batch_size: int) -> list[np.ndarray]:
        L, _, H = self.state_shape
        return [np.zeros((L, batch_size, H), dtype=np.float32) for _ in self.state_inputs]

    def __call__(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``tokens (B, T)`` int64, state -> ``(logits (B, T, V), state)``."""
        logits, *state = self.session.run(None, {"tokens": tokens, **dict(zip(self.state_inputs, state, strict=True))})
        return logits, state

    def greedy(self, prompt: list[int], length: int) -> list[int]:
        """Prime the state with ``prompt`` in one call, then take the most likely token ``length`` times, one step
        (one call, state fed back) per token."""
        logits, state = self(np.asarray([prompt], dtype=np.int64), self.init_state(1))
        out = []
        for t in range(length):
            out.append(int(logits[0, -1].argmax()))
            if t + 1 < length:
                logits, state = self(np.asarray([[out[-1]]], dtype=np.int64), state)
        return out


def check_language_model(model: nn.Module, path: str | Path, prompt: list[int], length: int = 200) -> dict:
    """onnxruntime against PyTorch on ``prompt``: the largest absolute differences of the logits and the final
    state (whole prompt in one call), of the logits when the prompt goes in one token per call (the state
    round-tripping through the graph's inputs and outputs), and whether ``length`` greedy tokens agree."""
    from rnnkit.generate import generate

    session = OnnxLanguageModel(path)
    model = model.cpu().eval()
    x = torch.as_tensor([prompt], dtype=torch.long)  # (1, P)
    with torch.no_grad():
        out = model(x)
    want_state = out.state if isinstance(out.state, tuple) else (out.state,)
    logits, state = session(x.numpy(), session.init_state(1))
    steps, s = [], session.init_state(1)
    for tok in prompt:
        step_logits, s = session(np.asarray([[tok]], dtype=np.int64), s)
        steps.append(step_logits[0, 0])
    want = out.logits[0].numpy()
    torch_greedy = generate(model, prompt, length, temperature=0.0, native=False)[0].tolist()  # PyTorch's own
    onnx_greedy = session.greedy(prompt, length)
    agree = next((i for i, (a, b) in enumerate(zip(torch_greedy, onnx_greedy, strict=True)) if a != b), length)
    return {
        "prompt_tokens": len(prompt),
        "max_abs_logits": float(np.abs(logits[0] - want).max()),
        "max_abs_state": max(float(np.abs(a - b.numpy()).max()) for a, b in zip(state, want_state, strict=True)),
        "max_abs_logits_stepwise": float(np.abs(np.stack(steps) - want).max()),
        "greedy_tokens": length,
        "greedy_agree": agree,  # tokens before the first difference (== greedy_tokens: identical)
    }
