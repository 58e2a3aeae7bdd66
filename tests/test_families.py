"""families: the contract every family keeps, its closed-form KL, and the bias each family carries."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO
from elbox.errors import ElboxError
from elbox.families import make_family, stop_gradient
from elbox.priors import UnitNormal

NAMES = ["diagonal", "fullrank", "lowrank", "lowrank:2"]


@pytest.mark.parametrize("name", NAMES)
def test_amortized_and_global_forms_have_the_contracted_shapes(name):
    amortized = make_family(name, 3, [5, 8])
    q = amortized(torch.randn(4, 5))
    z = q.rsample((7,))
    assert q.batch_shape == (4,) and q.event_shape == (3,) and z.shape == (7, 4, 3)
    assert torch.isfinite(q.log_prob(z)).all()
    g = make_family(name, 3)()
    assert g.batch_shape == () and g.rsample((6,)).shape == (6, 3) and torch.isfinite(g.log_prob(g.rsample((6,)))).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_of_every_family_receives_a_gradient(name):
    for family, args in ((make_family(name, 3, [5, 8]), (torch.randn(4, 5),)), (make_family(name, 3), ())):
        q = family(*args)
        z = q.rsample((5,))
        (q.log_prob(z) + z.pow(2).sum(-1)).sum().backward()
        for n, p in family.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, n)


@pytest.mark.parametrize("name", NAMES)
def test_a_family_survives_a_state_dict_round_trip(name):
    a, b = make_family(name, 3, [5, 8]), make_family(name, 3, [5, 8])
    b.load_state_dict(a.state_dict())
    x, z = torch.randn(2, 5), torch.randn(4, 2, 3)
    assert torch.equal(a(x).log_prob(z), b(x).log_prob(z))


@pytest.mark.parametrize("name", NAMES)
def test_stop_gradient_keeps_the_density_and_passes_gradients_to_the_point_only(name):
    family = make_family(name, 3)
    q = family()
    z = q.rsample((4,)).detach().requires_grad_()
    stopped = stop_gradient(q).log_prob(z)
    assert torch.allclose(stopped, q.log_prob(z))
    stopped.sum().backward()
    assert z.grad is not None and all(p.grad is None for p in family.parameters())


@pytest.mark.parametrize("name", ["fullrank", "lowrank:2"])
def test_the_registered_kl_to_the_prior_equals_torchs_gaussian_formula(name):
    q = make_family(name, 4, [3, 8])(torch.randn(5, 3))
    general = kl_divergence(
        MultivariateNormal(q.mean, q.covariance_matrix), MultivariateNormal(torch.zeros(4), torch.eye(4))
    )
    assert torch.allclose(kl_divergence(q, UnitNormal(4)), general, atol=1e-5)


def _fit(name, target, steps=1500, k=256, lr=0.05):
    """Maximise E_q[log target(z)] + H(q) over a global family with STL gradients: KL(q || target) down."""
    torch.manual_seed(0)
    family = make_family(name, target.event_shape[0])
    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / steps)
    for _ in range(steps):
        q = family()
        z = q.rsample((k,))
        loss = -(target.log_prob(z) - stop_gradient(q).log_prob(z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return family()


def _correlated_target():
    m = torch.tensor([1.0, -2.0, 0.5])
    s = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 2.0]])
    return MultivariateNormal(m, s), m, s


def test_the_full_rank_family_recovers_a_correlated_gaussian_exactly():
    target, m, s = _correlated_target()
    q = _fit("fullrank", target)
    assert torch.allclose(q.mean, m, atol=0.02) and torch.allclose(q.covariance_matrix, s, atol=0.03)


def test_the_diagonal_family_finds_the_mean_field_solution_and_underestimates_variances():
    """Mean-field VI on N(m, S) gives the exact mean and variances 1 / Lambda_ii, Lambda = S^-1,
    below the marginal variances S_ii whenever there is correlation (e.g. Bishop, PRML 10.1.2)."""
    target, m, s = _correlated_target()
    q = _fit("diagonal", target)
    mean_field = 1 / torch.linalg.inv(s).diagonal()
    assert torch.allclose(q.mean, m, atol=0.02)
    assert torch.allclose(q.variance, mean_field, rtol=0.03)
    assert (q.variance < s.diagonal()).all()  # every marginal variance underestimated


def test_richer_families_attain_a_tighter_elbo_on_the_correlated_target():
    target, _, _ = _correlated_target()
    gaps = {}
    for name in ("diagonal", "lowrank:1", "fullrank"):
        q = _fit(name, target, steps=800)
        cov = getattr(q, "covariance_matrix", None)
        cov = torch.diag_embed(q.variance) if cov is None else cov
        gaps[name] = kl_divergence(MultivariateNormal(q.mean, cov), target).item()  # exact
    assert gaps["fullrank"] < 1e-3 < gaps["lowrank:1"] < gaps["diagonal"]


@pytest.mark.parametrize("name", ["fullrank", "lowrank"])
def test_a_vae_trains_with_each_family_and_estimator(name):
    vae = VAE(VAEConfig(data_dim=6, latent_dim=3, hidden=(8,), likelihood="bernoulli", family=name))
    x = torch.randint(0, 2, (4, 6)).float()
    for objective in (ELBO(), ELBO(estimator="stl"), ELBO(estimator="dreg")):
        o = objective
        bound = o(vae(x, 3, reparameterize=o.reparameterize, stop_q=o.stop_q))
        vae.zero_grad()
        bound.loss.backward()
        assert all(p.grad is not None for p in vae.encoder.parameters())
        assert torch.isfinite(bound.value).all()


def test_family_names_and_ranks_are_checked():
    with pytest.raises(ElboxError, match="unknown family"):
        VAEConfig(family="flowy")
    with pytest.raises(ValueError, match="rank"):
        make_family("lowrank:9", 3)
    with pytest.raises(ElboxError, match="unknown family"):
        VAEConfig(family="lowrank:two")
    assert make_family("lowrank", 16).rank == 4 == round(math.sqrt(16))
    with pytest.raises(ValueError, match="global"):
        make_family("diagonal", 2)(torch.zeros(1, 2))
