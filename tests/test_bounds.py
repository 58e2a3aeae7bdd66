"""bounds: the ELBO against exact answers, KL estimators against each other, reparameterized gradients."""

import math

import pytest
import torch
from oracles import exact_log_px, exact_posterior, linear_gaussian_vae, set_encoder_to_posterior
from torch.distributions import Cauchy, Independent, MultivariateNormal, Normal

from elbox.bounds import ELBO, Particles, elbo, iwae, kl, log_mean_exp, log_weights


def _data(vae, n=6):
    return torch.randn(n, vae.config.data_dim, dtype=torch.float64) * 2


def test_elbo_is_below_log_px_by_exactly_the_kl_to_the_posterior():
    """log p(x) - ELBO(q) = KL(q || p(z | x)) >= 0, for every x: checked to 4 standard errors."""
    vae = linear_gaussian_vae(x_dim=5, z_dim=3)
    x, k = _data(vae), 20_000
    log_w = vae.log_weights(x, k).detach()  # [K, B]
    estimate, se = elbo(log_w), log_w.std(0) / math.sqrt(k)
    q = vae.encode(x)
    q_full = MultivariateNormal(q.mean, torch.diag_embed(q.variance))
    gap = torch.distributions.kl_divergence(q_full, exact_posterior(vae, x))
    truth = exact_log_px(vae, x)
    assert (gap > 0.1).all(), "a random encoder should be far from the posterior"
    assert (estimate <= truth + 4 * se).all()
    assert torch.allclose(truth - estimate, gap, atol=float(4 * se.max()))


def test_elbo_equals_log_px_when_q_is_the_exact_posterior():
    vae = linear_gaussian_vae(x_dim=6, z_dim=2, orthogonal=True)
    set_encoder_to_posterior(vae)
    x = _data(vae)
    log_w = vae.log_weights(x, 100).detach()
    truth = exact_log_px(vae, x)
    # every log-weight equals log p(x): the importance weights are constant, and the
    # log-weight estimators (ELBO with Monte Carlo KL, IWAE) are exact with any K
    assert torch.allclose(log_w, truth.expand_as(log_w), atol=1e-9)
    for bound in (ELBO(analytic_kl=False)(vae(x)).value, iwae(log_w)):
        assert torch.allclose(bound.detach(), truth, atol=1e-9)
    # with the closed-form KL only the expectation is exact: E_q log p(x | z) still varies in z
    k = 20_000
    b = ELBO(analytic_kl=True)(vae(x, k))
    se = vae(x, k).log_lik.std(0) / math.sqrt(k)
    assert ((b.value.detach() - truth).abs() <= 4 * se).all()


def test_iwae_sits_between_elbo_and_log_px_and_rises_with_k():
    vae = linear_gaussian_vae(x_dim=5, z_dim=3)
    x = _data(vae, 4)
    truth = exact_log_px(vae, x)
    # means over 400 replicates of each estimator: their standard errors are below 0.05 nats here
    means = {k: iwae(vae.log_weights(x.repeat(400, 1), k).detach()).view(400, -1).mean(0) for k in (1, 5, 50)}
    assert (means[1] < means[5]).all() and (means[5] < means[50]).all()
    assert (means[50] < truth + 0.05).all()


def test_analytic_kl_matches_monte_carlo_within_its_standard_error():
    q = Independent(Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    n = 200_000
    z = q.sample((n,))
    samples = q.log_prob(z) - p.log_prob(z)  # [n, B]: mean is KL, spread gives the tolerance
    tolerance = 4 * samples.std(0) / math.sqrt(n)
    assert (kl(q, p) - samples.mean(0)).abs().le(tolerance).all()


def test_kl_falls_back_to_monte_carlo_without_a_closed_form():
    q = Independent(Cauchy(torch.zeros(2, 3), torch.ones(2, 3)), 1)  # no KL(Cauchy || Normal) in torch
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample((5,))
    assert torch.allclose(kl(q, p, z), (q.log_prob(z) - p.log_prob(z)).mean(0))
    with pytest.raises(ValueError, match="Monte Carlo"):
        kl(q, p)


def test_elbo_reports_reconstruction_and_kl_that_add_up():
    q = Independent(Normal(torch.randn(3, 2), torch.ones(3, 2)), 1)
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    z = q.rsample((4,))
    p = Particles(z, torch.randn(4, 3), q, prior)
    for objective in (ELBO(), ELBO(analytic_kl=False)):
        b = objective(p)
        assert torch.allclose(b.value, b.reconstruction - b.kl)
        assert torch.allclose(b.loss, -b.surrogate.mean())
    # without the closed form the ELBO is exactly the mean log-weight
    assert torch.allclose(ELBO(analytic_kl=False)(p).value, elbo(log_weights(p)))


def test_reparameterized_gradient_of_a_quadratic_matches_the_analytic_gradient():
    """d/d(mu, sigma) E_q[(z - c)^T A (z - c)] = (2 A (mu - c), 2 diag(A) sigma)."""
    d, batches, n = 3, 50, 2_000
    m = torch.randn(d, d)
    a, c = m @ m.T + torch.eye(d), torch.randn(d)
    mu = torch.randn(d, requires_grad=True)
    sigma = (torch.rand(d) + 0.5).requires_grad_()
    grads = []
    for _ in range(batches):  # independent estimates, to measure the estimator's spread
        z = Normal(mu, sigma).rsample((n,)) - c  # [n, d]
        value = torch.einsum("ni,ij,nj->n", z, a, z).mean()
        grads.append(torch.cat(torch.autograd.grad(value, (mu, sigma))))
    grads = torch.stack(grads)  # [batches, 2d]
    exact = torch.cat([2 * a @ (mu - c), 2 * a.diagonal() * sigma]).detach()
    se = grads.std(0) / math.sqrt(batches)
    assert ((grads.mean(0) - exact).abs() <= 4 * se + 1e-6).all()


def test_log_mean_exp_is_stable_for_large_values():
    x = torch.tensor([[1000.0, 1000.0], [0.0, -1e4]]).T
    assert torch.allclose(log_mean_exp(x), torch.tensor([1000.0, -math.log(2)]))
