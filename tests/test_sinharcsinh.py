"""families.sinharcsinh: the density is normalised and agrees with the fused draws, the family starts at
N(0, I), the affine placement keeps it, and on a skewed exact posterior it beats the full-rank Gaussian."""

import math

import torch
from torch.distributions import Gamma, Normal, Poisson, constraints

from elbox.bayes import Model, Param, fit
from elbox.bayes.affine import place
from elbox.families import SinhArcsinh, SinhArcsinhNormal, make_family


def _bent(dim: int, seed: int = 0) -> SinhArcsinh:
    """A family with random loc, L, skew and tails (not the identity start)."""
    family = make_family("sinharcsinh", dim).double()
    with torch.no_grad():
        family.raw.copy_(torch.randn(family.num_params(), generator=torch.Generator().manual_seed(seed)) * 0.5)
    return family


def test_the_density_integrates_to_one_and_matches_the_draws_log_q():
    """A wrong log |ds/dz| (a sign, a missing delta) breaks the integral or the agreement."""
    q = _bent(1)()
    grid = torch.linspace(-40, 40, 400_001, dtype=torch.float64)[:, None]
    mass = torch.trapezoid(q.log_prob(grid).exp(), grid[:, 0]).item()
    assert abs(mass - 1) < 1e-4, mass
    q = _bent(4, seed=1)()
    v, log_q = q.rsample_and_log_prob((100,))
    assert v.shape == (100, 4) and torch.allclose(q.log_prob(v), log_q, atol=1e-9)


def test_it_starts_at_the_standard_normal_and_moves_with_the_affine_placement():
    family = SinhArcsinh(3).double()
    v = torch.randn(10, 3, dtype=torch.float64)
    assert torch.allclose(family().log_prob(v), Normal(0.0, 1.0).log_prob(v).sum(-1), atol=1e-9)
    q = _bent(3)()
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    tril = torch.tensor([[2.0, 0, 0], [0.3, 0.5, 0], [-1.0, 0.2, 1.5]], dtype=torch.float64)
    placed = place(q, shift, tril)
    assert isinstance(placed, SinhArcsinhNormal)
    u = torch.randn(10, 3, dtype=torch.float64)
    v = torch.linalg.solve_triangular(tril, (u - shift).T, upper=False).T
    expected = q.log_prob(v) - tril.diagonal().log().sum()  # change of variables u = shift + L v
    assert torch.allclose(placed.log_prob(u), expected, atol=1e-9)


def test_it_fits_a_skewed_exact_posterior_better_than_the_full_rank_gaussian():
    """Poisson counts (0, 1, 0), a Gamma(1, 1) prior on the rate: the posterior is Gamma(2, 4), fitted on
    u = log(rate), where it is skewed (log-Gamma(2) has skewness -0.78). Measured (100,000 draws): the full-rank
    Gaussian's sd of the rate is 1.17 times the exact one, sinh-arcsinh's 1.03; means within 0.01 sd."""
    y = torch.tensor([0.0, 1.0, 0.0])
    model = Model({"rate": Param(support=constraints.positive)}, lambda p: Gamma(1.0, 1.0).log_prob(p["rate"]),
                  lambda p, d: Poisson(p["rate"][:, None]).log_prob(d["y"]), observed=("y",))  # fmt: skip
    a, b = 1.0 + y.sum().item(), 1.0 + len(y)
    mean, sd = a / b, math.sqrt(a) / b
    errors = {}
    for family in ("fullrank", "sinharcsinh"):
        posterior = fit(model, {"y": y}, family=family, progress=False)
        rate = posterior.sample(100_000, seed=1)["rate"]
        errors[family] = (abs(rate.mean().item() - mean) / sd, abs(rate.std().item() / sd - 1), posterior.elbo)
    assert errors["sinharcsinh"][0] < 0.05 and errors["sinharcsinh"][1] < 0.06, errors
    assert errors["fullrank"][1] > 0.1, errors  # the family's reason to exist: a Gaussian on u cannot do it
    assert errors["sinharcsinh"][2] > errors["fullrank"][2] + 0.01, errors
