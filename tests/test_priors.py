"""priors: the learned priors are the densities they say, their KL is Monte Carlo and unbiased,
and with them every bound stays below log p(x), checked against quadrature."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Categorical, MixtureSameFamily

from elbox import VAE, VAEConfig
from elbox.bounds import ELBO, IWAE, Particles, iwae, log_mean_exp
from elbox.errors import ElboxError
from elbox.evaluation import log_likelihood
from elbox.families import DiagonalGaussian, DiagonalNormal
from elbox.priors import DiagonalMixture, MixturePrior, StandardNormal, VampPrior, check_prior_name, make_prior


def _mixture_by_scipy(prior, z):
    """sum_m pi_m prod_d N(z_d; mu_md, s_md) with scipy, for z ``[N, D]``: ``[N]``."""
    p = prior()
    pi = p.mixture_distribution.probs.detach().double().numpy()
    loc = p.component_distribution.base_dist.loc.detach().double().numpy()
    scale = p.component_distribution.base_dist.scale.detach().double().numpy()
    z = z.double().numpy()
    densities = stats.norm.pdf(z[:, None, :], loc[None], scale[None]).prod(-1)  # [N, M]
    return np.log(densities @ pi)


def test_the_matrix_product_density_is_torchs_mixture_density():
    """DiagonalMixture's expanded square against MixtureSameFamily's direct one, far from the components too."""
    loc, scale = torch.randn(7, 3, dtype=torch.float64), torch.rand(7, 3, dtype=torch.float64) + 0.05
    logits = torch.randn(7, dtype=torch.float64)
    z = 4 * torch.randn(5, 6, 3, dtype=torch.float64)
    direct = MixtureSameFamily(Categorical(logits=logits), DiagonalNormal(loc, scale)).log_prob(z)
    assert torch.allclose(DiagonalMixture(logits, loc, scale).log_prob(z), direct, atol=1e-9)
    assert DiagonalMixture(logits.float(), loc.float(), scale.float()).log_prob(z.float()).dtype == torch.float32


def _vamp(dim=2, data_dim=6, components=4, bounded=True):
    encoder = DiagonalGaussian(dim, torch.nn.Linear(data_dim, 2 * dim))
    return VampPrior(encoder, data_dim, components, bounded=bounded), encoder


def test_the_mixture_prior_is_the_mixture_scipy_computes():
    prior = MixturePrior(2, components=3)
    with torch.no_grad():  # unequal weights and scales, so that each parameter matters
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
        prior.raw_scale.add_(torch.randn(3, 2))
    z = torch.randn(50, 2) * 2
    assert np.allclose(prior().log_prob(z).detach().numpy(), _mixture_by_scipy(prior, z), atol=1e-5)


def test_the_vamp_prior_is_the_mean_of_the_encoder_at_the_pseudo_inputs():
    prior, encoder = _vamp()
    z = torch.randn(5, 7, 2)  # [K, B, D]
    q = encoder(prior.pseudo_inputs)  # batch [4]
    expected = torch.logsumexp(q.log_prob(z[..., None, :]), -1) - math.log(4)
    assert torch.allclose(prior().log_prob(z), expected, atol=1e-6)
    assert np.allclose(prior().log_prob(z[0]).detach().numpy(), _mixture_by_scipy(prior, z[0]), atol=1e-5)


def test_pseudo_inputs_start_as_in_the_paper_and_stay_in_the_unit_box_for_bounded_data():
    prior, _ = _vamp(components=200)
    u = prior.pseudo_inputs
    assert abs(u.mean().item() - 0.05) < 0.002 and abs(u.std().item() - 0.01) < 0.002  # N(0.05, 0.01^2)
    with torch.no_grad():
        prior.raw_inputs.mul_(100)
    assert prior.pseudo_inputs.min() >= 0 and prior.pseudo_inputs.max() <= 1
    unbounded, _ = _vamp(bounded=False)
    assert torch.equal(unbounded.pseudo_inputs, unbounded.raw_inputs)


def test_pseudo_inputs_started_at_data_are_distinct_training_points_inside_the_box_and_learn():
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(1))  # grey, so every row is its own
    prior, _ = _vamp(components=10)
    prior.start_at(x, torch.Generator().manual_seed(0))
    u = prior.pseudo_inputs
    rows = (u - 0.05) / 0.9  # back to the data points
    matches = [int(torch.nonzero((x - r).abs().amax(-1) < 1e-6)[0]) for r in rows]
    assert len(set(matches)) == 10  # without replacement
    assert u.min() >= 0.05 - 1e-6 and u.max() <= 0.95 + 1e-6  # hardtanh passes gradients there: every pixel learns
    prior().log_prob(torch.randn(4, 2)).sum().backward()
    assert (prior.raw_inputs.grad != 0).float().mean() > 0.9
    again, _ = _vamp(components=40)  # more pseudo-inputs than points: drawn with replacement
    again.start_at(x, torch.Generator().manual_seed(0))
    unbounded, _ = _vamp(components=10, bounded=False)
    unbounded.start_at(3 * x - 1, torch.Generator().manual_seed(0))
    drawn = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:10]
    assert torch.equal(unbounded.pseudo_inputs, (3 * x - 1)[drawn])
    with pytest.raises(ValueError, match="6 values each"):
        prior.start_at(torch.zeros(5, 4))


@pytest.mark.parametrize("model", ["vae", "hvae"])
def test_training_starts_the_vamp_prior_at_training_images(model):
    from elbox.train import TrainConfig, prepare

    config = TrainConfig(
        data="digits", epochs=1, seed=3, model=VAEConfig(model=model, hidden=(8,), latent_dim=2, prior="vamp:7")
    )
    setup = prepare(config)
    prior = next(m for m in setup.model.modules() if isinstance(m, VampPrior))
    train = setup.splits["train"]
    for u in prior.pseudo_inputs:
        assert ((train - (u - 0.05) / 0.9).abs().amax(-1) < 1e-5).any()
    key = next(k for k in setup.model.state_dict() if k.endswith("raw_inputs"))
    assert torch.equal(prepare(config).model.state_dict()[key], prior.raw_inputs)  # the seed fixes them


@pytest.mark.parametrize("name", ["mog:3", "vamp:3"])
def test_learned_priors_integrate_to_one(name):
    """A Riemann sum over [-10, 10]^2 on a grid of spacing 0.05."""
    encoder = DiagonalGaussian(2, torch.nn.Linear(6, 4)).double()  # the VampPrior's encoder is its model's
    prior = make_prior(name, 2, encode=encoder, data_dim=6)
    axis = torch.arange(-10, 10, 0.05, dtype=torch.float64) + 0.025
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    mass = prior.double()().log_prob(grid).exp().sum().item() * 0.05**2
    assert mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["mog:4", "vamp:4"])
def test_draws_follow_the_prior_and_a_generator_repeats_them(name):
    """Kolmogorov-Smirnov of 4000 draws of the first coordinate against the mixture's marginal CDF."""
    encoder = DiagonalGaussian(1, torch.nn.Linear(3, 2))
    prior = make_prior(name, 1, encode=encoder, data_dim=3)
    draws = prior.sample(4000, torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 1)
    assert torch.equal(draws, prior.sample(4000, torch.Generator().manual_seed(0)))
    p = prior()
    pi = p.mixture_distribution.probs.detach().numpy()
    loc = p.component_distribution.base_dist.loc[:, 0].detach().numpy()
    scale = p.component_distribution.base_dist.scale[:, 0].detach().numpy()
    cdf = lambda t: (stats.norm.cdf(np.asarray(t)[..., None], loc, scale) * pi).sum(-1)  # noqa: E731
    assert stats.kstest(draws[:, 0].numpy(), cdf).pvalue > 1e-3


def test_the_standard_prior_draws_what_torch_randn_draws():
    """The VAE's samples did not change with the learned priors: same generator, same draws."""
    expected = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(StandardNormal(3).sample(5, torch.Generator().manual_seed(4)), expected)


def test_with_a_learned_prior_the_analytic_elbo_falls_back_to_monte_carlo():
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", prior="mog:3"))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    p = vae(x, 5)
    bound = ELBO(analytic_kl=True)(p)
    assert torch.allclose(bound.kl, (p.log_q - p.log_prior).mean(0))
    assert torch.allclose(bound.value, p.log_w.mean(0))


@pytest.mark.parametrize("name", ["mog:3", "vamp:3"])
def test_the_monte_carlo_kl_is_unbiased_against_quadrature(name):
    """KL(q || p) for a 1-D q and a learned 1-D prior: scipy's quadrature vs 20000 draws, within 4 standard errors."""
    encoder = DiagonalGaussian(1, torch.nn.Linear(3, 2)).double()
    prior = make_prior(name, 1, encode=encoder, data_dim=3).double()
    q = DiagonalGaussian(1, torch.nn.Linear(3, 2)).double()(torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64))
    p = prior()
    density = lambda f: lambda t: f.log_prob(torch.tensor([[t]], dtype=torch.float64)).item()  # noqa: E731
    log_q, log_p = density(q), density(p)
    exact, _ = integrate.quad(lambda t: math.exp(log_q(t)) * (log_q(t) - log_p(t)), -30, 30, limit=200)
    z = q.sample((20000,))  # [N, 1, 1]
    ratios = (q.log_prob(z) - p.log_prob(z)).detach()[:, 0]
    estimate, se = ratios.mean().item(), ratios.std().item() / math.sqrt(20000)
    assert abs(estimate - exact) < 4 * se


def assert_bounds_below(model, x, exact, n=20000):
    """E[ELBO] < E[IWAE_10] < E[IWAE_100] <= log p(x), each E[IWAE_k] the mean over n / k groups, within 4 SE."""
    with torch.no_grad():
        log_w = model.log_weights(x, n)  # [n, B]
    means, ses = [], []
    for k in (1, 10, 100):
        groups = log_mean_exp(log_w.reshape(n // k, k, -1), 1)  # [n / k, B]
        means.append(groups.mean(0))
        ses.append(groups.std(0) / math.sqrt(n // k))
    for (a, sa), (b, sb) in itertools.pairwise(zip(means, ses, strict=True)):
        assert (a < b + 4 * (sa**2 + sb**2).sqrt()).all()
    assert (means[-1] < exact + 4 * ses[-1]).all()


def _quadrature_log_px(vae, x):
    """log p(x) = log int p(x | z) p(z) dz for a 1-D latent, by the trapezoid rule on [-12, 12]: ``[B]``."""
    z = torch.linspace(-12, 12, 6001, dtype=torch.float64)[:, None, None]  # [G, 1, 1]
    with torch.no_grad():
        log_joint = vae.decode(z).log_prob(x) + vae.prior().log_prob(z)  # [G, B]
    return torch.logsumexp(log_joint, 0) + math.log(24 / 6000)  # the end points carry ~0 mass


@pytest.mark.parametrize("name", ["mog:3", "vamp:3"])
def test_bounds_sit_below_log_px_from_quadrature_and_iwae_reaches_it(name):
    """ELBO <= IWAE_10 <= IWAE_100 <= log p(x), and log p(x) estimated with K = 5000 is within 4 Monte Carlo SE."""
    vae = VAE(VAEConfig(data_dim=5, latent_dim=1, hidden=(4,), likelihood="bernoulli", prior=name)).double()
    with torch.no_grad():  # q of scale 3, wider than the posterior, so that the importance weights are bounded
        vae.encoder.encoder[-1].weight[1:] = 0.0
        vae.encoder.encoder[-1].bias[1:] = math.log(math.expm1(3.0))
    x = torch.bernoulli(torch.full((6, 5), 0.5, dtype=torch.float64))
    exact = _quadrature_log_px(vae, x)
    assert_bounds_below(vae, x, exact)
    ll = log_likelihood(vae, x, k=5000, seed=0)
    assert ((ll.values - exact).abs() < 4 * ll.mc_se + 1e-4).all()


@pytest.mark.parametrize("name", ["mog:3", "vamp:3"])
@pytest.mark.parametrize("objective", [ELBO(), IWAE(estimator="dreg")])
def test_gradients_reach_the_learned_priors_parameters(name, objective):
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", prior=name))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    objective(vae(x, 3, stop_q=objective.stop_q)).loss.backward()
    for parameter_name, parameter in vae.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
    names = {n for n, _ in vae.named_parameters()}
    assert {"prior.raw_inputs"} <= names if name.startswith("vamp") else {"prior.logits", "prior.loc"} <= names


def test_the_vamp_prior_does_not_register_the_encoder_twice():
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", prior="vamp:3"))
    assert [k for k in vae.state_dict() if k.startswith("prior.")] == ["prior.raw_inputs"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prior": "vamp:0"}, "at least 1, got '0'"),
        ({"prior": "gauss"}, "unknown prior"),
        ({"prior": "standard:3"}, "takes no number after a colon"),
        ({"prior": "vamp", "family": "iaf"}, "VampPrior"),
    ],
)
def test_bad_prior_options_are_refused_with_the_fix(options, message):
    with pytest.raises(ElboxError, match=message) as e:
        VAEConfig(**options)
    assert "mog[:K]" in str(e.value) or "--family diagonal" in str(e.value)


def test_prior_names_default_to_the_papers_component_counts():
    assert check_prior_name("vamp") == ("vamp", 500) and check_prior_name("mog") == ("mog", 10)
    assert check_prior_name("mog:7") == ("mog", 7) and check_prior_name("standard") == ("standard", None)


def test_iwae_of_learned_prior_particles_is_a_function_of_log_weights_only():
    """Particles from a VampPrior model feed the same pure functions: IWAE here is bounds.iwae of log_w."""
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood="bernoulli", prior="vamp:3"))
    p: Particles = vae(torch.bernoulli(torch.full((3, 6), 0.5)), 4)
    assert torch.equal(IWAE()(p).value, iwae(p.log_w))
