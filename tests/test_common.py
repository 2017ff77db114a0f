"""common.py: the rounding surrogate (eq. 13), the multiplier step, the mu-loss and the
approximation ratio (eq. 14, 17)."""

import numpy as np
import pytest
import torch

import common


# ---------------------------------------------------------------- rounding surrogate (eq. 13)
def test_round_surrogate_forward_rounds():
    p = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.8, 1.0])
    assert torch.equal(common.round_surrogate(p), torch.tensor([0.0, 0, 0, 1, 1, 1]))


@pytest.mark.parametrize("k", [1.0, 25.0, 60.0])
def test_round_surrogate_gradient_is_sigmoid_slope(k):
    """The backward pass is the exact derivative of sigmoid(k (p - 0.5)), which gradcheck verifies
    against finite differences in float64."""
    p = torch.rand(64, dtype=torch.float64, requires_grad=True)
    smooth = lambda q: torch.sigmoid(k * (q - 0.5))
    assert torch.autograd.gradcheck(smooth, (p,))
    g = torch.randn(64, dtype=torch.float64)
    (ours,) = torch.autograd.grad(common.round_surrogate(p, k), p, g)
    (want,) = torch.autograd.grad(smooth(p), p, g)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)


def test_sigmoid_slope_finite_where_thesis_form_is_nan():
    d = torch.tensor([-500.0, -50.0, 0.0, 50.0, 500.0])
    thesis = 20 * torch.exp(-20 * d) / (torch.exp(-20 * d) + 1) ** 2
    ours = common.sigmoid_slope(d, torch.zeros(()), 20.0)
    assert torch.isnan(thesis).any()
    assert torch.isfinite(ours).all() and (ours >= 0).all()
    assert ours[2] == pytest.approx(5.0)  # k/4 at the centre


# ---------------------------------------------------------------- multiplier and mu-loss
def test_subgradient_step():
    assert common.subgradient_step(1.0, 1e-3, 50.0) == pytest.approx(1.05)
    assert common.subgradient_step(1.0, 0.0, 50.0) == 1.0
    assert (
        common.subgradient_step(0.1, 1.0, -5.0) == 0.0
    )  # a multiplier of an inequality stays >= 0


def test_mu_loss():
    assert common.mu_loss([1.0, 3.0], [0.0, 0.5], 10.0) == pytest.approx((1 + 3 + 5) / 2)


# ---------------------------------------------------------------- approximation ratio (eq. 14, 17)
def test_approximation_ratio_edge_cases():
    ar = common.approximation_ratio([0.0, 0.0, 5.0, 4.0, 10.0], [0.0, 3.0, 0.0, 8.0, 8.0])
    np.testing.assert_allclose(ar, [1.0, 2.0, 2.0, 2.0, 1.25])


def test_gap_aware_approximation_ratio():
    # label 100 proven within 10 %: optimum in [90, 100], middle 95
    ar = common.approximation_ratio([95.0, 96.0, 100.0, 80.0], [100.0] * 4, gap=[0.1] * 4)
    np.testing.assert_allclose(ar, [100 / 95, 96 / 90, 100 / 90, 100 / 80])
