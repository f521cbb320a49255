"""The compiled LSTM and LN-LSTM sampler (rnnkit.native) against torch: fp32 steps against the model, int8 steps
against the quantisation scheme worked in float64, the filters against ``filter_logits``, sampled frequencies
against the softmax, the fallbacks, and ``rnnkit sample --int8``. The library's build: test_native_build.py."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from conftest import require_tool, torch_threads
from test_cli import SMALL, run

from rnnkit import generate as generate_module
from rnnkit import native
from rnnkit.errors import ConfigError
from rnnkit.generate import NATIVE_CHUNK, NATIVE_MAX_BATCH, FastStepper, filter_logits, generate, next_token
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.native.sampler import NativeLSTM, quantize_rows

V = 13


@pytest.fixture(autouse=True)
def kernels():
    require_tool(native.library() is not None, f"the native kernels are unavailable: {native.unavailable()}",
                 "RNNKIT_REQUIRE_COMPILER")


def lstm_model(num_layers: int = 2, hidden: int = 24, cell: str = "lstm", seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    model = LanguageModel(LanguageModelConfig(vocab_size=V, cell=cell, hidden_size=hidden, num_layers=num_layers,
                                              embedding_size=8))
    with torch.no_grad():  # larger weights than the default init, so states and logits vary a lot
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model.eval()


def primed(model, batch: int = 3, seed: int = 1):
    """A state after a random prompt, and the prompt's last tokens."""
    x = torch.randint(0, V, (batch, 9), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x).state, x[:, -1]


def q(x):
    """``x`` rounded to a symmetric 8-bit grid of step max|x| / 127 per row, as lstm.c quantises a layer's input."""
    s = x.abs().amax(-1, keepdim=True) / 127
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.round(x / s) * s


def deq(w):
    """``w`` as lstm.c's int8 weights stand for it: ``quantize_rows`` dequantised, in float64."""
    qw, scale, _ = quantize_rows(w.detach().float())
    return qw.double() * scale.double()[:, None]


def quantised_step(model, tokens, state):
    """One int8 step as lstm.c defines it, in float64: weights dequantised from ``quantize_rows``; each layer's
    input vector (layer 0: h; layer l: [h below | h]) rounded to a symmetric 8-bit grid of step max|x| / 127."""
    cells = model.rnn.torch_cells()
    h, c = (s.double().clone() for s in state)

    for i, cell in enumerate(cells):
        b = (cell.bias_ih + cell.bias_hh).double()
        if i == 0:
            gates = model.embedding(tokens).double() @ cell.weight_ih.double().T + q(h[0]) @ deq(cell.weight_hh).T + b
        else:
            x = torch.cat([h[i - 1], h[i]], -1)
            gates = q(x) @ deq(torch.cat([cell.weight_ih, cell.weight_hh], 1)).T + b
        gi, gf, gg, go = gates.chunk(4, -1)
        c[i] = gf.sigmoid() * c[i] + gi.sigmoid() * gg.tanh()
        h[i] = go.sigmoid() * c[i].tanh()
    return model.head(h[-1].float()).double(), (h, c)


def quantised_ln_step(model, tokens, state):
    """``quantised_step`` for layer-normalised LSTM cells, whose two products stay apart: layer l's input vectors
    h below and h are each rounded on their own grid; LN_ih, LN_hh and LN_c as ``LayerNormLSTMCell`` has them."""
    h, c = (s.double().clone() for s in state)

    def ln(norm, v):
        return torch.nn.functional.layer_norm(v, v.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)

    for i, cell in enumerate(model.rnn.cells):
        x = model.embedding(tokens).double() @ cell.weight_ih.double().T if i == 0 else q(h[i - 1]) @ deq(
            cell.weight_ih).T
        gates = ln(cell.ln_ih, x) + ln(cell.ln_hh, q(h[i]) @ deq(cell.weight_hh).T) + (
            cell.bias_ih + cell.bias_hh).double()
        gi, gf, gg, go = gates.chunk(4, -1)
        c[i] = gf.sigmoid() * c[i] + gi.sigmoid() * gg.tanh()
        h[i] = go.sigmoid() * ln(cell.ln_c, c[i]).tanh()
    return model.head(h[-1].float()).double(), (h, c)


# -- steps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_fp32_steps_match_the_model(num_layers, cell):
    model = lstm_model(num_layers, cell=cell)
    state, tok = primed(model)
    kernels = NativeLSTM.for_model(model)
    mine = kernels.state(state)
    with torch.no_grad():
        for _ in range(25):
            ours = kernels.step(tok, mine)
            theirs, state = model.step(tok, state)
            torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)
            tok = theirs.argmax(-1)
    torch.testing.assert_close(mine[0], state[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(mine[1], state[1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_int8_steps_match_the_quantisation_scheme(num_layers, cell):
    model = lstm_model(num_layers, hidden=40, cell=cell)
    state, tok = primed(model)
    kernels = NativeLSTM.for_model(model, int8=True)
    mine, ref = kernels.state(state), state
    reference = quantised_ln_step if cell == "lnlstm" else quantised_step
    with torch.no_grad():
        for _ in range(10):
            ours = kernels.step(tok, mine)
            theirs, ref = reference(model, tok, ref)
            torch.testing.assert_close(ours.double(), theirs, atol=1e-4, rtol=1e-4)
            mine = tuple(s.copy_(r.float()) for s, r in zip(mine, ref, strict=True))  # no drift between the two
            tok = theirs.argmax(-1)


@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
def test_int8_steps_stay_close_to_fp32(cell):
    """From the same states, int8's logits are off by a small fraction of their spread."""
    model = lstm_model(2, hidden=64, cell=cell)
    state, tok = primed(model, batch=4)
    kernels = NativeLSTM.for_model(model, int8=True)
    with torch.no_grad():
        for _ in range(10):
            ours = kernels.step(tok, kernels.state(state))
            exact, state = model.step(tok, state)
            err = (ours - exact).abs().max()
            assert 0 < err < 0.05 * exact.std(), (err, exact.std())
            tok = exact.argmax(-1)


def test_quantize_rows():
    w = torch.randn(37, 50) * torch.logspace(-3, 1, 37)[:, None]
    w[5] = 0
    q, scale, rowsum = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and (q.abs().amax(1)[w.abs().amax(1) > 0] == 127).all()
    assert torch.all((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7)
    assert scale[5] == 1 and torch.equal(rowsum, q.int().sum(1))


# -- sampling ------------------------------------------------------------------------------------------------
def c_filter(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    logits = logits.float().contiguous()
    probs, order = torch.empty_like(logits), torch.empty_like(logits)
    f32 = ctypes.POINTER(ctypes.c_float)
    native.library().rnnkit_filter_probs(
        ctypes.cast(logits.data_ptr(), f32), ctypes.c_int64(len(logits)), ctypes.c_float(temperature),
        ctypes.c_int64(top_k or 0), ctypes.c_float(top_p or 1.0), ctypes.cast(probs.data_ptr(), f32),
        ctypes.cast(order.data_ptr(), f32))
    return probs


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, None, None), (0.5, None, None), (2.0, 5, None), (1.0, None, 0.7), (0.8, 20, 0.9), (1.0, 1, None),
    (1.0, None, 1e-6), (1.3, 49, 0.999),
])
def test_filter_matches_filter_logits(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(int(temperature * 10) + (top_k or 0))
    for _ in range(20):
        logits = torch.randn(50, generator=g) * 3
        theirs = filter_logits(logits[None] / temperature, top_k, top_p).softmax(-1)[0]
        torch.testing.assert_close(c_filter(logits, temperature, top_k, top_p), theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1e-30, 1e-38, 1e-40, 1e-45, 1e-50, 5e-324])
def test_tiny_temperatures_are_greedy_not_infinite(temperature):
    """logits / a tiny temperature overflow, and the kernel is built assuming no infinities: all of the mass goes
    to the most likely token, wherever it is and whatever the filters, on the kernel and on torch's path."""
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        logits = torch.randn(50, generator=g) * 3
        best = int(logits.argmax())
        for top_k, top_p in [(None, None), (5, None), (None, 0.9)]:
            probs = c_filter(logits, temperature, top_k, top_p)
            assert probs[best] == 1.0 and probs.sum() == 1.0, (top_k, top_p)
        assert int(next_token(logits[None], temperature, None, None, g)) == best
    model = lstm_model(1, hidden=8)
    state, _ = primed(model, batch=4)
    tokens = torch.tensor([3, 1, 4, 1])
    kernels = NativeLSTM.for_model(model)
    sampled = kernels.generate(tokens, kernels.state(state), torch.rand(5, 4, generator=g), temperature, None, None)
    greedy = kernels.generate(tokens, kernels.state(state), torch.rand(5, 4, generator=g), 0.0, None, None)
    assert torch.equal(sampled, greedy)
    for native_path in (True, False):  # generate's first token is drawn by next_token on either path
        assert torch.equal(generate(model, [3, 1], 12, temperature=temperature, native=native_path, seed=1),
                           generate(model, [3, 1], 12, temperature=0.0, native=native_path))


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.6, None, None), (1.0, 4, None),
                                                       (1.0, None, 0.8)])
def test_sampled_frequencies_follow_the_filtered_softmax(temperature, top_k, top_p):
    """20,000 rows from one state: each row's first sampled token is a draw from the same distribution."""
    model = lstm_model(1, hidden=8)
    n = 20_000
    state, _ = primed(model, batch=1)
    state = tuple(s.expand(-1, n, -1).contiguous() for s in state)
    tokens = torch.full((n,), 3)
    kernels = NativeLSTM.for_model(model)
    with torch.no_grad():
        logits, _ = model.step(tokens[:1], tuple(s[:, :1] for s in state))
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)[0].double().numpy()
    draws = kernels.generate(tokens, kernels.state(state), torch.rand(1, n, generator=torch.Generator().manual_seed(0)),
                             temperature, top_k, top_p)[0]
    freq = np.bincount(draws.numpy(), minlength=V) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)
    assert probs.min() > 0 or freq[probs == 0].sum() == 0


@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
def test_products_split_among_threads_give_what_one_thread_gives(cell):
    """At H = 256 each (1024, 256) product is large enough to split its rows among OpenMP threads; every output is
    still one thread's whole dot product, so two threads must give one thread's logits and states bit for bit."""
    model = lstm_model(hidden=256, cell=cell)
    state, tok = primed(model, batch=2)
    for int8 in (False, True):
        kernels = NativeLSTM.for_model(model, int8)
        runs = []
        for n in (1, 2):
            with torch_threads(n):
                mine = kernels.state(state)
                logits = [kernels.step(tok, mine) for _ in range(5)]
            runs.append((torch.stack(logits), *(t.clone() for t in mine)))
        assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True)), (cell, int8)


def test_generate_takes_the_kernels_and_agrees_with_torch():
    model = lstm_model()
    greedy = generate(model, [1, 2, 3], 150, temperature=0, num_samples=2)
    assert torch.equal(greedy, generate(model, [1, 2, 3], 150, temperature=0, num_samples=2, native=False))
    a = generate(model, [4], 200, temperature=1.0, seed=5, num_samples=3)
    assert torch.equal(a, generate(model, [4], 200, temperature=1.0, seed=5, num_samples=3))  # seeded
    assert not torch.equal(a, generate(model, [4], 200, temperature=1.0, seed=6, num_samples=3))
    seen = []
    b = generate(model, [4], 150, temperature=1.0, seed=5, num_samples=3, on_tokens=seen.append)
    assert torch.equal(torch.stack(seen, 1), b) and torch.equal(b, a[:, :150])  # chunking does not change a draw
    many = generate(model, [4], 20, temperature=0, num_samples=NATIVE_MAX_BATCH + 1)  # torch's path
    assert torch.equal(many[0], greedy[0, :20]) and torch.equal(many[-1], greedy[0, :20])


def test_generate_samples_through_the_kernels_in_chunks(monkeypatch):
    calls = []
    real = NativeLSTM.generate

    def spy(self, tokens, state, uniform, *args):
        calls.append(tuple(uniform.shape))
        return real(self, tokens, state, uniform, *args)

    monkeypatch.setattr(NativeLSTM, "generate", spy)
    model = lstm_model()
    generate(model, [1], 1 + 2 * NATIVE_CHUNK + 5, num_samples=3, seed=0)
    assert calls == [(NATIVE_CHUNK, 3), (NATIVE_CHUNK, 3), (5, 3)]  # the first token comes from the prompt's pass
    calls.clear()
    generate(model, [1], 30, num_samples=NATIVE_MAX_BATCH + 1, seed=0)
    generate(model, [1], 30, seed=0, native=False)
    generate(model.double(), [1], 30, seed=0)
    assert calls == []


def test_the_chunk_size_does_not_change_a_seeded_draw(monkeypatch):
    """Each chunk starts from the last token of the one before: a seeded draw over several chunks of 64 equals the
    same draw in chunks of 5 (the same uniforms, in the same order)."""
    model = lstm_model()
    length = 1 + 2 * NATIVE_CHUNK + 5
    a = generate(model, [4], length, temperature=1.0, seed=5, num_samples=3)
    monkeypatch.setattr(generate_module, "NATIVE_CHUNK", 5)
    b = generate(model, [4], length, temperature=1.0, seed=5, num_samples=3)
    assert torch.equal(a, b)
    assert len(set(a.flatten().tolist())) > 3  # really sampled, not locked onto one token


def test_int8_generate_stays_on_the_fp32_chain_for_a_while():
    model = lstm_model(hidden=64)
    fp32 = generate(model, [1, 2], 20, temperature=0)
    for native_path in (True, False):  # the kernels, then torch's dynamic quantisation
        int8 = generate(model, [1, 2], 20, temperature=0, int8=True, native=native_path)
        assert (int8 == fp32).float().mean() >= 0.5, (int8, fp32)


def test_a_layer_normalised_lstm_samples_int8_on_the_kernels_at_any_batch(monkeypatch):
    """Torch has no int8 cell for it: above NATIVE_MAX_BATCH rows it still takes the kernels, and without them
    int8 is refused."""
    model = lstm_model(cell="lnlstm")
    rows = NATIVE_MAX_BATCH + 3
    fp32 = generate(model, [1, 2], 12, temperature=0, num_samples=rows)  # torch's path: model.step
    int8 = generate(model, [1, 2], 12, temperature=0, num_samples=rows, int8=True)
    assert int8.shape == (rows, 12) and (int8 == fp32).float().mean() >= 0.5, (int8, fp32)
    with pytest.raises(ConfigError, match="int8 sampling needs"):
        generate(model, [1, 2], 12, int8=True, native=False)


def test_only_cpu_fp32_unidirectional_lstms_and_ln_lstms_take_the_kernels():
    assert NativeLSTM.for_model(lstm_model()) is not None
    assert NativeLSTM.for_model(lstm_model(cell="gru")) is None
    assert NativeLSTM.for_model(lstm_model(cell="lnlstm")).layer_normed
    zoneout = LanguageModel(LanguageModelConfig(vocab_size=V, cell="lnlstm", hidden_size=8, zoneout=0.1)).eval()
    assert NativeLSTM.for_model(zoneout) is None  # zoneout mixes the old state into the new one
    odd = lstm_model(cell="lnlstm")
    odd.rnn.cells[1].ln_c.eps = 1e-3  # the kernels take one eps per norm for all layers
    assert NativeLSTM.for_model(odd) is None
    with pytest.raises(ValueError, match="different eps"):
        NativeLSTM(odd.embedding.weight, list(odd.rnn.cells), odd.head.weight, odd.head.bias)
    assert NativeLSTM.for_model(lstm_model().double()) is None
    assert FastStepper.for_model(lstm_model(cell="gru")) is not None  # which keep torch's fast path


# -- the CLI -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
def test_sample_int8_on_a_trained_run(small_corpus, tmp_path, capsys, cell):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", small_corpus, "--max-steps", 10, "--out", run_dir, *SMALL,
                       "--cell", cell)
    assert code == 0, err
    code, out, err = run(capsys, "sample", run_dir, "--prompt", "The ", "--length", 80, "--seed", 3, "--int8")
    assert code == 0 and out.startswith("The ") and len(out.rstrip("\n")) == 84, err
    assert run(capsys, "sample", run_dir, "--prompt", "The ", "--length", 80, "--seed", 3, "--int8")[1] == out


def test_kernels_are_reused_until_the_weights_change():
    model = lstm_model()
    a = NativeLSTM.for_model(model)
    assert NativeLSTM.for_model(model) is a and NativeLSTM.for_model(model, int8=True) is not a
    state, tok = primed(model)
    before = a.step(tok, a.state(state))
    with torch.no_grad():
        model.head.bias.add_(1.0)  # in place, as an optimizer step writes
    b = NativeLSTM.for_model(model)
    assert b is not a
    torch.testing.assert_close(b.step(tok, b.state(state)), before + 1.0)
    model.head.bias.data[0] += 1.0  # behind autograd's back: no version bump, but the weights changed
    c = NativeLSTM.for_model(model)
    assert c is not b
    assert c.step(tok, c.state(state))[:, 0].sub(before[:, 0] + 2.0).abs().max() < 1e-5


def test_bad_tokens_and_states_are_refused_not_read():
    model = lstm_model()
    kernels = NativeLSTM.for_model(model)
    state = kernels.state(model.init_state(2))
    before = [s.clone() for s in state]
    for bad in ([0, V], [-1, 0]):
        with pytest.raises(IndexError, match="token ids"):
            kernels.step(torch.tensor(bad), state)
        with pytest.raises(IndexError, match="token ids"):
            kernels.generate(torch.tensor(bad), state, torch.rand(3, 2), 1.0, None, None)
    assert all(torch.equal(s, b) for s, b in zip(state, before, strict=True))  # untouched
    with pytest.raises(ValueError, match="state"):
        kernels.step(torch.tensor([0]), state)  # a batch of 1 against a state of 2
    with pytest.raises(ValueError, match="state"):
        kernels.step(torch.tensor([0, 1]), tuple(s.double() for s in state))
    with pytest.raises(ValueError, match="uniform"):
        kernels.generate(torch.tensor([0, 1]), state, torch.rand(3, 5), 1.0, None, None)
    with pytest.raises(ValueError, match="temperature"):
        kernels.generate(torch.tensor([0, 1]), state, torch.rand(3, 2), -1.0, None, None)
    with pytest.raises(ValueError, match="temperature"):
        kernels.generate(torch.tensor([0, 1]), state, torch.rand(3, 2), float("nan"), None, None)
    assert all(torch.equal(s, b) for s, b in zip(state, before, strict=True))


def test_weights_that_do_not_chain_are_refused():
    model = lstm_model()
    cells = model.rnn.torch_cells()
    emb, hw, hb = model.embedding.weight.detach(), model.head.weight.detach(), model.head.bias.detach()
    with pytest.raises(ValueError, match="head"):
        NativeLSTM(emb, cells, hw[:-1], hb[:-1])  # fewer outputs than tokens: the kernels would read past the end
    with pytest.raises(ValueError, match="head"):
        NativeLSTM(emb, cells, hw, hb[:-1])
    with pytest.raises(ValueError, match="layer sizes"):
        NativeLSTM(emb[:, :5], cells, hw, hb)
    with pytest.raises(ValueError, match="LSTMCell"):
        NativeLSTM(emb, [torch.nn.GRUCell(8, 24)], hw, hb)
    model.head = torch.nn.Linear(24, V - 1)  # a model whose head disagrees with its embedding: torch's path
    assert NativeLSTM.for_model(model) is None


@pytest.mark.parametrize("int8", [False, True])
def test_saturated_gates_stay_finite(int8):
    """Regression: pre-activations past ±88 overflowed expf, and the fast reciprocal turned 1 / (1 + inf) into NaN
    (first seen on a trained Tiny Shakespeare model)."""
    model = lstm_model(hidden=32)
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(60.0)
    state, tok = primed(model)
    kernels = NativeLSTM.for_model(model, int8=int8)
    with torch.no_grad():
        for _ in range(10):  # each step from the model's state: with weights this large, differences compound
            ours = kernels.step(tok, mine := kernels.state(state))
            theirs, state = model.step(tok, state)
            assert torch.isfinite(ours).all() and torch.isfinite(mine[1]).all()
            if not int8:
                torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
            tok = theirs.argmax(-1)
