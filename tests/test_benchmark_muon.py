"""benchmarks/train_muon.py: which weights Muon takes, the rate each part gets, and a state that resumes exactly."""

import importlib.util
from pathlib import Path

import torch

from rnnkit.checkpoint import load_optimizer, optimizer_tensors
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_muon.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_muon", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model(seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelConfig(vocab_size=11, hidden_size=16, embedding_size=8, weight_drop=0.0))


def step(m: LanguageModel, opt, lr: float, seed: int) -> None:
    for group in opt.param_groups:  # what the training loop does each step
        group["lr"] = lr
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (3, 7), generator=g)
    opt.zero_grad()
    m(x, targets=x.roll(-1, 1)).loss.backward()
    opt.step()


def test_muon_takes_the_recurrent_matrices_at_its_scaled_rate_and_adamw_the_rest():
    m = model()
    opt = load_script().build_optimizer(2.5)(m, TrainConfig())
    names = {id(p): n for n, p in m.named_parameters()}
    muon = sorted(names[id(p)] for g in opt.muon.param_groups for p in g["params"])
    assert muon == ["rnn.cells.0.weight_hh", "rnn.cells.0.weight_ih", "rnn.cells.1.weight_hh", "rnn.cells.1.weight_ih"]
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert adamw == set(names.values()) - set(muon)
    for group in opt.param_groups:
        group["lr"] = 1e-3
    assert [g["lr"] for g in opt.adamw.param_groups] == [1e-3, 1e-3]
    assert [g["lr"] for g in opt.muon.param_groups] == [2.5e-3]


def test_the_saved_state_resumes_to_the_same_weights_as_never_stopping():
    build = load_script().build_optimizer(2.0)
    a = model()
    opt_a = build(a, TrainConfig())
    for s in range(3):
        step(a, opt_a, 1e-2, s)
    tensors, groups = optimizer_tensors(opt_a)
    assert any(k.endswith("momentum_buffer") for k in tensors) and any(k.endswith("exp_avg_sq") for k in tensors)

    b = model(seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = build(b, TrainConfig())
    load_optimizer(opt_b, {k: v.clone() for k, v in tensors.items()}, groups)
    for s in range(3, 6):
        step(a, opt_a, 1e-2, s)
        step(b, opt_b, 1e-2, s)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
