"""Gradient estimators and weighted objectives: unbiased for their objective, zero variance where
promised, lower variance where promised, and weighting that changes exactly what it says."""

import math

import pytest
import torch
from oracles import exact_elbo, exact_log_px, linear_gaussian_vae, set_encoder_to_posterior
from torch.distributions import Independent, Normal

from elbox.bounds import CUBO, ELBO, IWAE, Particles, RenyiBound, cubo, elbo, iwae, renyi
from elbox.families import DiagonalNormal
from elbox.priors import UnitNormal
from elbox.training import VariationalLoss


def _encoder_grads(vae, objective, x, k, replicates):
    """``replicates`` independent estimates of d(mean bound)/d(encoder parameters): ``[R, P]``."""
    loss = VariationalLoss(vae, objective, k)
    params = list(vae.encoder.parameters())
    estimates = []
    for _ in range(replicates):
        grads = torch.autograd.grad(loss(x).surrogate.mean(), params)
        estimates.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(estimates)


def _agree(a, b, sigmas=4.0):
    """Means of two sets of estimates ``[R, P]`` agree within ``sigmas`` standard errors, per coordinate."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    return ((a.mean(0) - b.mean(0)).abs() <= sigmas * se + 1e-9).all()


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg", "score"])
def test_every_estimator_is_unbiased_for_the_elbo_gradient(estimator):
    vae = linear_gaussian_vae(x_dim=4, z_dim=2)
    x = torch.randn(1, 4, dtype=torch.float64).expand(20, 4)  # 20 copies: each estimate averages 20 draws
    exact = torch.autograd.grad(exact_elbo(vae, x[:1]).mean(), list(vae.encoder.parameters()))
    exact = torch.cat([g.flatten() for g in exact])
    estimates = _encoder_grads(vae, ELBO(estimator=estimator, analytic_kl=False), x, 1, 300)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert ((estimates.mean(0) - exact).abs() <= 4 * se + 1e-9).all()


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["dreg", "score"])
def test_dreg_and_score_are_unbiased_for_the_iwae_gradient(estimator):
    """The reference is the plain reparameterized IWAE gradient, itself unbiased."""
    vae = linear_gaussian_vae(x_dim=4, z_dim=2)
    x = torch.randn(1, 4, dtype=torch.float64).expand(20, 4)
    plain = _encoder_grads(vae, IWAE(), x, 8, 400)
    other = _encoder_grads(vae, IWAE(estimator=estimator), x, 8, 400)
    assert _agree(other, plain)


def test_at_the_exact_posterior_stl_gradient_is_zero_per_sample_and_plain_is_not():
    vae = linear_gaussian_vae(x_dim=5, z_dim=2, orthogonal=True)
    set_encoder_to_posterior(vae)
    x = torch.randn(1, 5, dtype=torch.float64)
    for _ in range(5):  # single draws, one at a time
        stl = _encoder_grads(vae, ELBO(estimator="stl", analytic_kl=False), x, 1, 1)
        plain = _encoder_grads(vae, ELBO(analytic_kl=False), x, 1, 1)
        assert stl.abs().max() < 1e-9
        assert plain.abs().max() > 1e-3


def test_dreg_has_lower_encoder_gradient_variance_than_plain_iwae_at_k_64():
    """Rainforth et al. (2018): the plain IWAE encoder gradient's signal-to-noise ratio decays with K."""
    vae = linear_gaussian_vae(x_dim=4, z_dim=2)
    x = torch.randn(1, 4, dtype=torch.float64)
    plain = _encoder_grads(vae, IWAE(), x, 64, 200)
    dreg = _encoder_grads(vae, IWAE(estimator="dreg"), x, 64, 200)
    ratio = (dreg.var(0).sum() / plain.var(0).sum()).item()
    print(f"encoder gradient variance, DReG / plain IWAE at K=64: {ratio:.4f}")
    assert ratio < 0.5


def test_every_bound_equals_log_px_at_the_exact_posterior():
    vae = linear_gaussian_vae(x_dim=6, z_dim=2, orthogonal=True)
    set_encoder_to_posterior(vae)
    x = torch.randn(3, 6, dtype=torch.float64)
    truth = exact_log_px(vae, x)
    p = vae(x, 10)
    for objective in (ELBO(analytic_kl=False), IWAE(), RenyiBound(0.5), RenyiBound(-1.0), CUBO(2.0)):
        assert torch.allclose(objective(p).value.detach(), truth, atol=1e-9), objective


def test_bounds_are_ordered_around_log_px():
    """ELBO <= Renyi_0.5 <= IWAE <= log p(x) <= CUBO_2, with enough particles for CUBO's estimate."""
    vae = linear_gaussian_vae(x_dim=4, z_dim=2)
    x = torch.randn(3, 4, dtype=torch.float64)
    truth = exact_log_px(vae, x)
    k = 200_000
    log_w = vae.log_weights(x, k).detach()
    lower = [elbo(log_w), renyi(log_w, 0.5), iwae(log_w)]
    # one IWAE estimate is below log p(x) only in expectation: allow its standard error (delta method)
    w = torch.softmax(log_w, 0) * k  # w_k / mean(w), [K, B]
    se = w.std(0) / math.sqrt(k)
    assert (lower[0] < lower[1]).all() and (lower[1] < lower[2]).all()
    assert (lower[2] <= truth + 4 * se).all()
    assert (cubo(log_w, 2.0) >= truth).all()


def _known_particles(loc, scale, z):
    q = DiagonalNormal(loc, scale)
    return Particles(z, torch.zeros(z.shape[:2]), q, UnitNormal(loc.shape[-1]))


def test_beta_weights_the_surrogate_and_leaves_the_reported_bound_alone():
    loc, scale = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 1.0]])
    p = _known_particles(loc, scale, torch.zeros(1, 1, 2))
    kl = 0.5 * (1 + 0.25 - 1) - math.log(0.5)  # dimension 0; dimension 1 is exactly the prior
    plain, weighted = ELBO()(p), ELBO(beta=0.25)(p)
    assert torch.allclose(plain.value, torch.tensor([-kl])) and torch.allclose(weighted.value, plain.value)
    assert torch.allclose(weighted.surrogate, torch.tensor([-0.25 * kl]))
    # the same weighting for a bound of log-weights: log p(x|z) + beta (log p(z) - log q(z))
    iw = IWAE(beta=0.25)(p)
    assert torch.allclose(iw.surrogate, 0.25 * (p.log_prior - p.log_q)[0])


def test_free_bits_hold_each_dimension_at_lambda_nats():
    """Kingma et al. (2016): sum_d max(lambda, E_batch KL_d); dimensions under lambda get no gradient."""
    loc = torch.tensor([[2.0, 0.1], [2.0, -0.1]], requires_grad=True)
    scale = torch.ones(2, 2)
    p = _known_particles(loc, scale, torch.zeros(1, 2, 2))
    kl_0, kl_1 = 0.5 * 4.0, 0.5 * 0.01  # per data point: dimension 0 is above lambda, 1 below
    b = ELBO(free_bits=0.5)(p)
    assert torch.allclose(b.surrogate, torch.full((2,), -(kl_0 + 0.5)))
    assert torch.allclose(b.value, torch.full((2,), -(kl_0 + kl_1)))
    (grad,) = torch.autograd.grad(b.surrogate.sum(), loc)
    assert torch.equal(grad[:, 1], torch.zeros(2)) and (grad[:, 0] != 0).all()


@pytest.mark.parametrize("objective", [ELBO(analytic_kl=False, free_bits=0.5), IWAE(free_bits=0.5)])
def test_free_bits_stop_the_gradient_of_dimensions_under_lambda_for_any_objective(objective):
    loc = torch.tensor([[2.0, 0.1], [2.0, -0.1]], requires_grad=True)
    p = _known_particles(loc, torch.ones(2, 2), torch.tensor([[[1.5, 0.2], [2.5, -0.3]]] * 3))
    b = objective(p)
    plain = type(objective)(**({"analytic_kl": False} if isinstance(objective, ELBO) else {}))(p)
    assert torch.allclose(b.value, plain.value) and torch.allclose(b.surrogate, plain.surrogate)  # values untouched
    (grad,) = torch.autograd.grad(b.surrogate.sum(), loc)
    (grad_plain,) = torch.autograd.grad(plain.surrogate.sum(), loc)
    assert torch.equal(grad[:, 1], torch.zeros(2)) and torch.allclose(grad[:, 0], grad_plain[:, 0])


def test_free_bits_need_factorized_distributions():
    q = Independent(Normal(torch.zeros(1, 2), torch.ones(1, 2)), 1)
    from torch.distributions import MultivariateNormal

    prior = MultivariateNormal(torch.zeros(2), torch.eye(2))
    p = Particles(q.rsample((1,)), torch.zeros(1, 1), q, prior)
    for objective in (ELBO(free_bits=0.1), ELBO(free_bits=0.1, analytic_kl=False), IWAE(free_bits=0.1)):
        with pytest.raises(ValueError, match="factorize"):
            objective(p)


def test_estimator_options_are_validated():
    with pytest.raises(ValueError, match="dreg"):
        RenyiBound(0.5, estimator="dreg")
    with pytest.raises(ValueError, match="estimator"):
        ELBO(estimator="magic")
    with pytest.raises(ValueError, match="n >= 1"):
        CUBO(0.5)


@pytest.mark.slow
def test_score_gradient_with_one_point_per_call_and_a_carried_baseline_is_unbiased():
    """As in training: one objective carries its baseline across calls, each call sees one point and one
    draw. A baseline that includes the current draw's value correlates with it and biases the gradient
    (by its weight, 10%); a baseline from earlier calls only does not."""
    torch.manual_seed(0)
    vae = linear_gaussian_vae(x_dim=4, z_dim=2)
    x = torch.randn(1, 4, dtype=torch.float64)
    exact = torch.autograd.grad(exact_elbo(vae, x).mean(), list(vae.encoder.parameters()))
    exact = torch.cat([g.flatten() for g in exact])
    objective = ELBO(estimator="score", analytic_kl=False)
    estimates = _encoder_grads(vae, objective, x, 1, 20_000)[1000:]  # after the baseline has settled
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert ((estimates.mean(0) - exact).abs() <= 4 * se).all()
    assert (exact.abs() > 8 * se).sum() >= 3  # the check has the power to see a 10% bias


def _weighted_objectives():
    return [
        ELBO(), ELBO(analytic_kl=False), ELBO(estimator="stl", analytic_kl=False), IWAE(), IWAE(estimator="dreg"),
        RenyiBound(0.5), RenyiBound(-1.0), CUBO(2.0), ELBO(estimator="score", analytic_kl=False),
    ]


@pytest.mark.parametrize("index", range(len(_weighted_objectives())))
@pytest.mark.parametrize("weighting", [{"beta": 0.25}, {"beta": 3.0}, {"free_bits": 0.5}])
def test_beta_and_free_bits_never_reach_the_reported_value(index, weighting):
    """``value`` is the bound itself at beta = 1 without free bits, for every objective: only the
    surrogate (what is differentiated) is weighted."""
    plain = _weighted_objectives()[index]
    try:
        weighted = type(plain)(**({"alpha": plain.alpha} if hasattr(plain, "alpha") else {}),
                               **_options_of(plain), **weighting)  # fmt: skip
    except (TypeError, ValueError) as e:  # an objective that does not take this weighting says so
        pytest.skip(f"{plain!r} takes no {weighting}: {e}")
    loc = torch.tensor([[2.0, 0.1], [1.0, -0.3]], requires_grad=True)
    z = torch.tensor([[[1.5, 0.2], [2.5, -0.3]], [[0.5, 1.2], [1.0, 0.3]], [[2.5, -0.7], [0.1, 0.0]]])
    p = _known_particles(loc, torch.full((2, 2), 0.7), z)
    p = Particles(p.z, torch.tensor([[-1.0, -2.0], [-0.5, -3.0], [-2.0, -1.0]]), p.q, p.prior)
    assert torch.allclose(weighted(p).value, plain(p).value)


def _options_of(objective):
    options = {"estimator": objective.estimator}
    if isinstance(objective, ELBO):
        options["analytic_kl"] = objective.analytic_kl
    return options


def test_free_bits_use_the_batch_average_of_each_dimension_not_each_point():
    """Dimension 1 is above lambda for the first point (KL 0.72) but its batch average (0.36) is below:
    it gets no gradient at all, at either point. Dimension 0 is above on average, so both points move,
    the second although its own KL (0.045) is below lambda."""
    loc = torch.tensor([[2.0, 1.2], [0.3, 0.0]], requires_grad=True)
    for objective in (ELBO(free_bits=0.5), ELBO(free_bits=0.5, analytic_kl=False), IWAE(free_bits=0.5)):
        z = torch.tensor([[[1.5, 1.0], [0.5, 0.2]], [[2.6, 1.4], [0.2, -0.3]]])  # [K=2, B=2, D=2]
        p = _known_particles(loc, torch.ones(2, 2), z if not isinstance(objective, ELBO) or
                             not objective.analytic_kl else z[:1])  # fmt: skip
        (grad,) = torch.autograd.grad(objective(p).surrogate.sum(), loc)
        assert torch.equal(grad[:, 1], torch.zeros(2)), objective
        assert (grad[:, 0] != 0).all(), objective
