"""Generation: prime the state with a prompt, then sample one token at a time, carrying the state.

Each new token costs one step of the cells — constant work, however long the text already is.
Shape letters: B samples generated together, V vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.native.sampler import NativeLSTM
from rnnkit.nn.cells import State
from rnnkit.nn.recurrent import Recurrent, map_state


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, length: int, num_samples: int) -> None:
    if not (temperature >= 0 and math.isfinite(temperature)):  # NaN fails every comparison
        raise ConfigError(f"temperature must be a finite number >= 0 (got {temperature}) — 0 means greedy, "
                          "1 samples as trained")
    if top_k is not None and top_k <= 0:
        raise ConfigError(f"top-k must be positive (got {top_k}) — e.g. --top-k 10, or leave it out")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top-p must be in (0, 1] (got {top_p}) — e.g. --top-p 0.9, or leave it out")
    if length < 0:
        raise ConfigError(f"length must be >= 0 (got {length}) — pass the number of tokens to generate")
    if num_samples <= 0:
        raise ConfigError(f"num-samples must be positive (got {num_samples}) — pass 1 or more")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top ``k`` and outside the smallest set whose probability reaches ``p``.

    ``logits (B, V)``; the most likely token always survives.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability mass of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
               generator: torch.Generator | None) -> Tensor:
    """``logits (B, V)`` -> ``tokens (B,)``: argmax at temperature 0, else a draw from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    wide = logits.float()
    # the shift first: logits / a tiny temperature overflow to inf, and the softmax of inf is NaN; and at least
    # 1e-30 (as the kernels take it), which fp32 holds: below 1e-45 it is 0, and the top logit's 0 / 0 is NaN
    z = (wide - wide.amax(-1, keepdim=True)) / max(temperature, 1e-30)
    probs = filter_logits(z, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class FastStepper(nn.Module):
    """Single-token steps through an embedding -> Recurrent -> head model on torch's one-op cells.

    ``model.step`` runs rnnkit's cells, whose math is written out op by op in Python. For sampling, this copies
    the weights once into torch.nn.LSTMCell/GRUCell/RNNCell, whose step is one fused kernel, and can quantise the
    matrix products to int8 (dynamic quantisation: int8 weights, activations quantised on the fly; CPU only).
    Build it after training — it holds copies, not views, of the weights.
    """

    def __init__(self, embedding: nn.Embedding, cells: list[nn.RNNCellBase], head: nn.Linear, int8: bool = False):
        super().__init__()
        self.embedding, self.cells, self.head = embedding, nn.ModuleList(cells), head
        self.lstm = isinstance(cells[0], nn.LSTMCell)
        if int8:
            import warnings

            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch 2.13 flags its quantised tensor types as deprecated
                warnings.simplefilter("ignore", UserWarning)
                quantize_dynamic(self, {nn.Linear, nn.LSTMCell, nn.GRUCell, nn.RNNCell}, dtype=torch.qint8,
                                 inplace=True)

    @classmethod
    def for_model(cls, model: nn.Module, int8: bool = False) -> FastStepper | None:
        """A stepper for a model with ``embedding``, ``rnn`` (unidirectional) and ``head``; None if it has none."""
        rnn = getattr(model, "rnn", None)
        if not isinstance(rnn, Recurrent) or not hasattr(model, "embedding") or not hasattr(model, "head"):
            return None
        if int8 and next(model.parameters()).device.type != "cpu":
            raise ConfigError("int8 sampling runs on the CPU — drop --int8 or use --device cpu")
        with torch.random.fork_rng(devices=[]):  # new modules initialise from the global RNG: leave it as it was
            cells = rnn.torch_cells()
            if cells is None:
                return None
            w = model.head.weight
            head = nn.Linear(model.head.in_features, model.head.out_features, device=w.device, dtype=w.dtype)
            head.load_state_dict(model.head.state_dict())
            embedding = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone())
            return cls(embedding, cells, head, int8).eval()

    def split(self, state: State) -> list:
        """The layer's stacked state (L, B, H) -> one entry per layer."""
        return [map_state(lambda s, k=k: s[k], state) for k in range(len(self.cells))]

    def forward(self, tokens: Tensor, states: list) -> tuple[Tensor, list]:
        """``tokens (B,)``, per-layer states -> ``(logits (B, V), states)``."""
        x = self.embedding(tokens)  # (B, E)
        new = []
        for cell, s in zip(self.cells, states, strict=True):
            s = cell(x, s)
            new.append(s)
            x = s[0] if self.lstm else s  # (B, H)
        return self.head(x), new


@torch.inference_mode()
def generate(
    model,
    prompt: Sequence[int],
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    on_tokens: Callable[[Tensor], None] | None = None,
    int8: bool = False,
    native: bool = True,
) -> Tensor:
    """Sample ``length`` tokens after ``prompt`` for ``num_samples`` rows at once; returns ``(B, length)`` ids.

    The prompt (at least one token) primes the state in one forward pass; then each token is one step: of the
    compiled kernels (``NativeLSTM``: an LSTM or layer-normalised LSTM model on the CPU, at most
    ``NATIVE_MAX_BATCH`` rows, unless ``native`` is False), else of a ``FastStepper`` when the model has one, else
    of ``model.step``. int8 for a layer-normalised LSTM is the kernels' alone, at any number of rows.
    ``on_tokens`` sees every new ``(B,)`` column (for streaming; the kernels sample ``NATIVE_CHUNK`` tokens per
    call, so columns arrive in bursts). ``int8`` samples with int8 weights (CPU). A seed reproduces a sample
    on the same path: the kernels draw from their own uniforms, so the same seed gives other text than torch's
    path (``native=False``, more than ``NATIVE_MAX_BATCH`` rows, or no C compiler).
    """
    check_sampling(temperature, top_k, top_p, length, num_samples)
    if len(prompt) == 0:
        raise ConfigError("the prompt must hold at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy for this generator only; torch's global RNG is left alone
    else:
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        return _sample(model, prompt, length, temperature, top_k, top_p, num_samples, generator, on_tokens, int8,
                       native)
    finally:
        model.train(was_training)


# up to here the kernels (their large products split among torch's threads) are level with torch's batched path
# in fp32 and ahead of it in int8; at 128 rows torch's fp32 matrix products pull ahead (BENCHMARKS.md)
NATIVE_MAX_BATCH = 64
NATIVE_CHUNK = 64  # tokens sampled per call into the kernels


def _sample(model, prompt, length, temperature, top_k, top_p, num_samples, generator, on_tokens, int8,
            native) -> Tensor:
    device = next(model.parameters()).device
    x = torch.as_tensor(list(prompt), dtype=torch.long, device=device).expand(num_samples, -1)  # (B, P)
    out = model(x)
    logits, state = out.logits[:, -1], out.state  # (B, V)
    kernels = NativeLSTM.for_model(model, int8) if native and num_samples <= NATIVE_MAX_BATCH else None
    stepper = None if kernels is not None else FastStepper.for_model(model, int8)
    if kernels is None and stepper is None and int8 and native:
        kernels = NativeLSTM.for_model(model, int8)  # a layer-normalised LSTM's only int8 path, at any batch
    if kernels is not None:
        return _sample_native(kernels, logits, state, length, temperature, top_k, top_p, generator, on_tokens)
    if stepper is not None:
        step, state = stepper, stepper.split(state)
    elif int8:
        raise ConfigError("int8 sampling needs cells with a torch.nn equivalent (rnn, lstm, gru), or an lstm or "
                          "lnlstm model on the compiled kernels (a C compiler, the CPU, no zoneout)")
    else:
        step = model.step
    tokens = torch.empty(num_samples, length, dtype=torch.long, device=device)
    for t in range(length):
        tok = next_token(logits, temperature, top_k, top_p, generator)
        tokens[:, t] = tok
        if on_tokens is not None:
            on_tokens(tok)
        if t + 1 < length:
            logits, state = step(tok, state)
    return tokens


def _sample_native(kernels: NativeLSTM, logits, state, length, temperature, top_k, top_p, generator,
                   on_tokens) -> Tensor:
    """The first token by ``next_token``, the rest by the kernels, drawing uniforms from ``generator``."""
    B = logits.shape[0]
    tokens = torch.empty(B, length, dtype=torch.long)
    if length == 0:
        return tokens
    tok = next_token(logits, temperature, top_k, top_p, generator)
    tokens[:, 0] = tok
    if on_tokens is not None:
        on_tokens(tok)
    state, t = kernels.state(state), 1
    while t < length:
        n = min(NATIVE_CHUNK, length - t)
        new = kernels.generate(tok, state, torch.rand(n, B, generator=generator), temperature, top_k, top_p)
        tokens[:, t:t + n] = new.T
        if on_tokens is not None:
            for column in new:
                on_tokens(column)
        tok, t = new[-1], t + n
    return tokens


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length normalisation ``((5 + length) / 6) ** alpha``: 0 ranks by total log-probability, which
    favours short outputs; larger alphas favour longer ones."""
    return ((5 + length) / 6) ** alpha


@torch.inference_mode()
def beam_search(model, prompt: Sequence[int], max_length: int, beam_size: int = 5, end: int | None = None,
                alpha: float = 0.0) -> list[tuple[list[int], float]]:
    """The ``beam_size`` most likely continuations of ``prompt`` (at most ``max_length`` tokens, ``end`` included
    when it is sampled), best first, each with its log-probability divided by ``length_penalty(len, alpha)``.

    ``model`` has the ``forward(x, state)`` / ``step(tokens, state)`` of a language model (a ``LanguageModel``,
    or a ``ConditionalGenerator.bind(condition)``). All live beams advance in one batched step. A beam that
    emits ``end`` is finished; the search stops when ``beam_size`` beams are finished and no live beam can still
    beat the worst of them, or at ``max_length``.
    """
    if beam_size <= 0:
        raise ConfigError(f"beam size must be positive (got {beam_size}) — pass --beam 1 or more")
    if max_length <= 0:
        raise ConfigError(f"max length must be positive (got {max_length}) — pass --max-length 1 or more")
    if len(prompt) == 0:
        raise ConfigError("the prompt must hold at least one token")
    if alpha < 0:
        raise ConfigError(f"the length penalty alpha must be >= 0 (got {alpha}) — 0 ranks by log-probability")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model(torch.as_tensor([list(prompt)], dtype=torch.long, device=device))
        logp, state = out.logits[:, -1].float().log_softmax(-1), out.state  # (1, V)
        seqs: list[list[int]] = [[]]
        scores = torch.zeros(1, device=device)  # (K,) summed log-probabilities of the live beams
        finished: list[tuple[list[int], float]] = []
        V = logp.shape[-1]
        for t in range(max_length):
            total = (scores[:, None] + logp).flatten()  # (K * V,)
            top = total.topk(min(2 * beam_size, total.numel()))
            keep_rows, keep_tokens, keep_scores = [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                row, token = divmod(flat, V)
                if token == end:
                    finished.append((seqs[row] + [token], score / length_penalty(t + 1, alpha)))
                elif len(keep_rows) < beam_size:
                    keep_rows.append(row), keep_tokens.append(token), keep_scores.append(score)
            finished = sorted(finished, key=lambda f: -f[1])[:beam_size]
            live = [(seqs[r] + [tok], sc) for r, tok, sc in zip(keep_rows, keep_tokens, keep_scores, strict=True)]
            if not live:
                break
            if len(finished) == beam_size:  # log-probabilities only fall: the best a live beam can still reach
                if max(keep_scores) / length_penalty(max_length, alpha) <= finished[-1][1]:
                    live = []
                    break
            if t + 1 == max_length:
                break
            rows = torch.as_tensor(keep_rows, device=device)
            seqs = [s for s, _ in live]
            scores = torch.as_tensor(keep_scores, device=device)
            # (L, K, H): the states of the surviving beams
            state = map_state(lambda s, rows=rows: s.index_select(1, rows), state)
            logits, state = model.step(torch.as_tensor(keep_tokens, device=device), state)
            logp = logits.float().log_softmax(-1)
        # beams cut off by max_length compete with the finished ones
        unfinished = [(s, sc / length_penalty(len(s), alpha)) for s, sc in live]
        return sorted(finished + unfinished, key=lambda f: -f[1])[:beam_size]
    finally:
        model.train(was_training)
