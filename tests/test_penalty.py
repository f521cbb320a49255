"""The activation penalty's one autograd function against the same formula in plain tensor operations."""

import pytest
import torch

from rnnkit.nn import penalty as penalty_module
from rnnkit.nn.penalty import activation_penalty


def reference(y, ar, tar):
    wide = y.to(torch.promote_types(y.dtype, torch.float32))
    out = ar * wide.pow(2).mean()
    if tar and y.shape[1] > 1:
        out = out + tar * (wide[:, 1:] - wide[:, :-1]).pow(2).mean()
    return out


@pytest.mark.parametrize("shape", [(3, 7, 5), (1, 1, 4), (4, 2, 3), (2, 6, 2, 3)])
@pytest.mark.parametrize("ar,tar", [(2.0, 1.0), (0.0, 1.5), (3.0, 0.0)])
@pytest.mark.parametrize("block", [1 << 20, 7])  # one block, and blocks of one row with a part-filled last one
def test_value_and_gradient_match_autograd(monkeypatch, shape, ar, tar, block):
    monkeypatch.setattr(penalty_module, "BLOCK", block)
    y = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    got = activation_penalty(y, ar, tar)
    want = reference(y, ar, tar)
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(got * 1.7, y)
    (expected,) = torch.autograd.grad(want * 1.7, y)
    torch.testing.assert_close(grad, expected)
    assert torch.autograd.gradcheck(lambda t: activation_penalty(t, ar, tar), (y,))


@pytest.mark.parametrize("shape, block", [((5, 3, 4), 24), ((7, 4, 3), 36), ((5, 3, 4), 59)])
@pytest.mark.parametrize("ar,tar", [(2.0, 1.0), (0.0, 1.5), (3.0, 0.0)])
def test_blocks_of_several_rows_match_autograd(monkeypatch, shape, block, ar, tar):
    """Blocks of 2 rows (2, 2, 1), of 3 rows (3, 3, 1) and of 4 rows (4, 1): every row in exactly one block."""
    monkeypatch.setattr(penalty_module, "BLOCK", block)
    rows = block // (shape[1] * shape[2])
    assert 1 < rows < shape[0]
    blocks = [list(range(shape[0]))[s] for s in penalty_module._blocks(torch.empty(shape))]
    assert sum(blocks, []) == list(range(shape[0])) and len(blocks[0]) == rows  # each row once, several per block
    y = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    got = activation_penalty(y, ar, tar)
    want = reference(y, ar, tar)
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(got * 1.7, y)
    (expected,) = torch.autograd.grad(want * 1.7, y)
    torch.testing.assert_close(grad, expected)


def test_low_precision_inputs_are_summed_in_fp32():
    """bf16 outputs (autocast) give an fp32 penalty and a bf16 gradient, as the tensor formula does."""
    y32 = torch.randn(8, 50, 16) * 3
    y = y32.bfloat16().requires_grad_()
    got = activation_penalty(y, 2.0, 1.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference(y.detach().float(), 2.0, 1.0))
    got.backward()
    leaf = y.detach().float().requires_grad_()
    reference(leaf, 2.0, 1.0).backward()
    assert y.grad.dtype == torch.bfloat16
    torch.testing.assert_close(y.grad.float(), leaf.grad, rtol=1e-2, atol=1e-5)


def test_strided_views_and_off_switch():
    base = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    y = base.transpose(0, 1)  # (4, 6, 5), not contiguous
    torch.testing.assert_close(activation_penalty(y, 1.0, 2.0), reference(y, 1.0, 2.0))
    assert activation_penalty(y, 0.0, 0.0) is None
    zero = activation_penalty(y[:, :1], 0.0, 1.0)  # only a temporal term, and one step: nothing to penalise
    zero.backward()
    assert zero.item() == 0.0 and torch.count_nonzero(base.grad) == 0
