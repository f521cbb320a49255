"""Generator ensembles (``--members N``): the averaged next-token distribution against the members' own, stepping
against the whole-sequence forward, beam search and the checkpoint round trip, and the loss each mode reports."""

import math

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from rnnkit.checkpoint import build_model
from rnnkit.errors import ConfigError
from rnnkit.generate import beam_search
from rnnkit.models.conditional import ConditionalGeneratorConfig, GeneratorEnsemble, build_generator

V = 7


def ensemble(cell="lstm", condition="both", **kw) -> GeneratorEnsemble:
    torch.manual_seed(0)
    cfg = ConditionalGeneratorConfig(vocab_size=V, num_classes=3, members=3, cell=cell, hidden_size=8, num_layers=2,
                                     embedding_size=4, condition_embedding=5, condition=condition, **kw)
    return build_generator(cfg).double().eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("condition", ["init", "input", "none"])
def test_logits_are_the_log_mean_of_the_members_probabilities(cell, condition):
    model = ensemble(cell, condition)
    assert isinstance(model, GeneratorEnsemble) and len(model.members) == 3
    x, cond = torch.randint(0, V, (2, 6)), torch.tensor([0, 2])
    out = model(x, condition=cond)
    mean = torch.stack([m(x, condition=cond).logits.softmax(-1) for m in model.members]).mean(0)
    assert_close(out.logits.exp(), mean, rtol=1e-10, atol=1e-12)
    # the members differ (independent initialisation), so the ensemble is not one member
    assert not torch.allclose(model.members[0](x, condition=cond).logits, model.members[1](x, condition=cond).logits)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepping_equals_the_whole_sequence(cell):
    model = ensemble(cell)
    x, cond = torch.randint(0, V, (2, 7)), torch.tensor([1, 2])
    full = model(x, condition=cond).logits
    bound = model.bind(cond, batch=True)
    out = bound(x[:, :2])
    state, steps = out.state, [out.logits[:, -1]]
    for t in range(2, 7):
        logits, state = bound.step(x[:, t], state)
        steps.append(logits)
    assert_close(torch.stack(steps, 1), full[:, 1:], rtol=1e-9, atol=1e-10)


def test_loss_trains_each_member_and_evaluates_the_mixture():
    model = ensemble(dropout=0.0, condition_dropout=0.0)  # training mode without randomness
    x, cond = torch.randint(0, V, (3, 5)), torch.tensor([0, 1, 2])
    y = torch.randint(0, V, (3, 5))
    y[0, 3:] = -100
    model.eval()
    mixed = model(x, targets=y, condition=cond)
    assert_close(mixed.loss, F.cross_entropy(mixed.logits.flatten(0, 1), y.flatten(), ignore_index=-100))
    model.train()
    trained = model(x, targets=y, condition=cond)
    own = torch.stack([m(x, targets=y, condition=cond).loss for m in model.members]).mean()
    assert_close(trained.loss, own)
    assert not math.isclose(trained.loss.item(), mixed.loss.item(), rel_tol=1e-6)


def test_beam_search_on_the_ensemble_scores_its_sequences():
    model = ensemble()
    found = beam_search(model.bind(1), [0], 4, beam_size=3, end=0)
    assert len(found) == 3
    for seq, score in found:  # the score is the sequence's log-probability under the averaged distribution
        x = torch.tensor([[0, *seq[:-1]]])
        logp = model(x, condition=torch.tensor([1])).logits.log_softmax(-1)[0]
        assert score == pytest.approx(sum(logp[t, tok].item() for t, tok in enumerate(seq)), abs=1e-6)


def test_checkpoint_config_rebuilds_an_ensemble_and_rejects_zero_members():
    model = ensemble()
    rebuilt = build_model({"kind": "conditional_generator", "model": model.config.to_dict()})
    assert isinstance(rebuilt, GeneratorEnsemble)
    rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(ConfigError, match="members"):
        ConditionalGeneratorConfig(vocab_size=V, num_classes=3, members=0)
