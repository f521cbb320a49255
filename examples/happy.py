"""How an RNN learns "happy": a vanilla (tanh) RNN, in plain NumPy, learns to predict the next letter.

The vocabulary is the four letters h, a, p, y, each fed in as a one-hot vector. The RNN reads h, a, p, p
and at every step must predict the letter that comes next: a, p, p, y. The two p steps are the interesting
ones: the input is the same letter, yet the answer differs (p after "hap", y after "happ"), so the network
can only get both right by remembering, in its hidden state h_t, what came before.

Training is backpropagation through time (see ``rnnkit.reference``) and Adam. The script prints the
probability of each next letter at every step before training, early on and after training; [brackets]
mark the target. Early on the network has learnt that p is usually followed by p, and predicts p after
"happ" too; only later does its hidden state tell the second p from the first.

Run:  .venv/bin/python examples/happy.py
"""

from __future__ import annotations

import numpy as np

from rnnkit import reference as R
from rnnkit.reference import heads

VOCAB = "hapy"
WORD = "happy"
HIDDEN = 8
STEPS = 200
LEARNING_RATE = 0.01
TABLES = {0: "Before training", 20: "Early on", STEPS: "After training"}  # step -> title
SEED = 0


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def table(probs: np.ndarray, targets: str) -> str:
    """One row per step: the input so far, P(next letter) for each letter, the target and the prediction."""
    columns = "  ".join(f"{'P(' + ch + ')':^7}" for ch in VOCAB)
    header = f"step  input so far  {columns}  target  predicted"
    rows = [header, "-" * len(header)]
    for t, p in enumerate(probs):  # p (V,)
        cells = "  ".join(
            f"[{q:.3f}]" if ch == targets[t] else f" {q:.3f} " for ch, q in zip(VOCAB, p, strict=True)
        )
        predicted = VOCAB[int(p.argmax())]
        rows.append(f"{t + 1:>4}  {WORD[: t + 1]:<12}  {cells}  {targets[t]:^6}  {predicted:^9}".rstrip())
    return "\n".join(rows)


def generate(params: dict, first: str, length: int) -> str:
    """Feed the most likely letter back in as the next input, one step at a time."""
    text, state = first, None
    for _ in range(length):
        x = heads.one_hot(np.array([[VOCAB.index(text[-1])]]), len(VOCAB))  # (1, 1, V)
        hs, state, _ = R.rnn.forward(params, x, state)  # (1, 1, H); the state carries the memory
        logits = hs[0, -1] @ params["weight_hy"].T + params["bias_y"]  # (V,)
        text += VOCAB[int(logits.argmax())]
    return text


def main() -> None:
    inputs, targets = WORD[:-1], WORD[1:]  # "happ" -> "appy"
    tokens = np.array([[VOCAB.index(ch) for ch in inputs]])  # (B=1, T=4)
    target_ids = np.array([[VOCAB.index(ch) for ch in targets]])  # (1, 4)
    V = len(VOCAB)
    params = R.init_params("rnn_tanh", V, HIDDEN, V, np.random.default_rng(SEED))  # one-hot in: C = V
    optimizer = R.Adam(lr=LEARNING_RATE)
    print(f"tanh RNN, H = {HIDDEN}, seed {SEED}: {inputs} -> {targets}, BPTT + Adam (lr {LEARNING_RATE})")
    print(f"loss = mean cross-entropy; guessing uniformly gives ln 4 = {np.log(4):.3f}")
    for step in range(STEPS + 1):
        result = R.language_model_loss("rnn_tanh", params, tokens, target_ids)  # forward + BPTT
        if step in TABLES:
            print(f"\n{TABLES[step]} (step {step}, loss {result.loss:.4f}):")
            print(table(softmax(result.logits[0]), targets))
        if step < STEPS:
            optimizer.step(params, result.grads)
    print(f"\nGenerating from 'h', each prediction fed back in as the next input: {generate(params, 'h', 4)}")


if __name__ == "__main__":
    main()
