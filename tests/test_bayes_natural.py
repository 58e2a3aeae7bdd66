"""natural: the Newton step of the Bayesian learning rule, its curvature estimate, and a fit that uses them."""

import math

import numpy as np
import torch
from torch.distributions import Normal

from elbox import bayes
from elbox.bayes.natural import TRUST, _gradients, natural_step, run_natural
from elbox.bayes.stochastic import Convergence

A = torch.tensor([4.0, 0.25, 1.0], dtype=torch.float64)  # a diagonal Gaussian target's precision
MU = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)


def _gaussian() -> bayes.Model:
    """log p(u) = sum_i log N(u_i; MU_i, A_i^-1): no data, the target of every test here."""
    return bayes.Model({"u": bayes.Param(3)}, lambda p: Normal(MU, A.rsqrt()).log_prob(p["u"]).sum(-1))


def test_the_gaussian_optimum_is_the_fixed_point_and_a_step_of_one_is_newtons():
    """For a Gaussian target E_q[grad log p] = -A (m - MU) and E_q[-hess] = A: at (MU, A) a step changes nothing,
    and from lambda = A one step with rho = 1 lands the mean on the optimum. A rule with the gradient's sign
    flipped, or lambda's old value or none in the mean's step, fails one of them."""
    m, lam = MU.clone(), A.clone()
    m_new, lam_new = natural_step(m, lam, torch.zeros(3, dtype=torch.float64), A, 0.3)
    torch.testing.assert_close((m_new, lam_new), (MU, A))
    start = MU + 0.8 * A.rsqrt()  # within TRUST of q's sds from the optimum
    m_new, lam_new = natural_step(start, 2 * A, -A * (start - MU), A, 1.0)
    torch.testing.assert_close(m_new, MU + 0.8 * A.rsqrt() - 0.8 * A.rsqrt() * A / lam_new)
    m_new, _ = natural_step(start, A.clone(), -A * (start - MU), A, 1.0)
    torch.testing.assert_close(m_new, MU)


def test_the_precision_stays_positive_and_the_mean_moves_at_most_trust_sds():
    """A curvature estimate far below zero (noise, a non-convex region) at most halves lambda; a huge gradient
    moves the mean TRUST of the new q's sds."""
    m, lam = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    m_new, lam_new = natural_step(m, lam, torch.tensor([1e6, -1e6]), torch.tensor([-1e3, -1e3]), 0.5)
    assert (lam_new >= lam / 2).all()
    torch.testing.assert_close(m_new.abs(), TRUST * lam_new.rsqrt())


def test_the_curvature_estimate_is_the_expected_hessian_within_its_standard_error():
    """Stein's identity: h = -mean (g_k - g) eps_k / sd estimates E_q[-diag hess log p] = A. Over 4,000 draws
    the sample's own spread of the per-draw terms gives the standard error; 4 of them."""
    torch.manual_seed(0)
    model, k = _gaussian(), 4000
    m, lam = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64), torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    scale = torch.ones(3, dtype=torch.float64)
    _, g, h = _gradients(model, {}, 1.0, torch.zeros(3, dtype=torch.float64), scale, m, lam, k)
    # per-draw term -(g_k - g) eps_k / sd = A (sd eps_k) eps_k / sd = A eps_k^2: variance 2 A^2
    se = A * math.sqrt(2 / k)
    assert ((h - A).abs() < 4 * se).all(), (h, A)
    torch.testing.assert_close(g, -A * (m - MU), atol=float(4 * (A * lam.rsqrt()).max() / math.sqrt(k)), rtol=0)


def test_the_fit_reaches_the_gaussian_target_and_stops_by_its_rule():
    """The mean-field optimum of a diagonal Gaussian target is the target: means within 0.05 sd and sds within
    5% (the last rho's iterates averaged: noise of about 0.01 sd, measured), stopped by Convergence."""
    torch.manual_seed(0)
    model, ones = _gaussian(), torch.ones(3, dtype=torch.float64)
    result = run_natural(model, {}, None, torch.zeros(3, dtype=torch.float64), ones, k=16, steps=5000,
                         batch_size=None, convergence=Convergence(window=100))  # fmt: skip
    sd = A.rsqrt()
    assert result.converged and len(result.trace) < 5000
    np.testing.assert_array_less(((result.m - MU).abs() / sd).numpy(), 0.05)
    np.testing.assert_array_less((result.lam.rsqrt() / sd - 1).abs().numpy(), 0.05)
