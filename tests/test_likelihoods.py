"""likelihoods: proper densities on their support, and refusal of data outside it."""

import copy
import math
from typing import Any

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch import Tensor
from torch.distributions import ContinuousBernoulli as TorchContinuousBernoulli

from elbox import VAE, VAEConfig
from elbox.data import load_dataset
from elbox.errors import ElboxError
from elbox.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    BetaBinomialMean,
    Binomial,
    Categorical,
    ContinuousBernoulli,
    DiscretizedLogistic,
    Gaussian,
    NegativeBinomial,
    NegativeBinomialMean,
    PixelGaussian,
    Poisson,
    StableContinuousBernoulli,
    Table,
    make_likelihood,
)
from elbox.runs import load_run
from elbox.training import train


def test_binomial_is_the_binomial_pmf_of_the_counts_and_sums_to_one():
    n, logits = 16, torch.randn(3, dtype=torch.float64)
    p = torch.sigmoid(logits)
    grid = torch.arange(n + 1, dtype=torch.float64)[:, None] / n  # [17, 1], x = k / n
    log_pmf = Binomial(n)(logits[None, :, None].expand(n + 1, 3, 1)).log_prob(grid[:, None, :].expand(n + 1, 3, 1))
    expected = scipy.stats.binom.logpmf(torch.arange(n + 1)[:, None].numpy(), n, p.numpy())
    assert torch.allclose(log_pmf, torch.from_numpy(expected))
    assert torch.allclose(log_pmf.exp().sum(0), torch.ones(3, dtype=torch.float64))


def test_binomial_mean_and_samples_live_on_the_grey_level_grid():
    d = Binomial(4)(torch.zeros(2, 5))
    x = d.sample((100,))
    assert torch.equal(x * 4, (x * 4).round()) and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(d.mean, torch.full((2, 5), 0.5))


def test_bernoulli_and_gaussian_match_scipy():
    logits, x = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 2, (4, 6)).double()
    expected = scipy.stats.bernoulli.logpmf(x.numpy(), torch.sigmoid(logits).numpy()).sum(-1)
    assert torch.allclose(Bernoulli()(logits).log_prob(x), torch.from_numpy(expected))
    loc, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    expected = scipy.stats.norm.logpdf(y.numpy(), loc.numpy(), 0.3).sum(-1)
    assert torch.allclose(Gaussian(0.3)(loc).log_prob(y), torch.from_numpy(expected))


def test_gaussian_scale_is_learned_unless_fixed():
    assert [n for n, _ in Gaussian().named_parameters()] == ["raw_scale"]
    assert abs(Gaussian().scale.item() - 1.0) < 1e-3
    assert list(Gaussian(0.5).parameters()) == []


@pytest.mark.parametrize(
    ("likelihood", "data", "message"),
    [
        (Bernoulli(), torch.tensor([[0.0, 0.3]]), "--binarize"),
        (Binomial(16), torch.tensor([[0.0, 0.01]]), "k/16"),
        (Binomial(16), torch.tensor([[0.0, 1.5]]), "k/16"),
        (Gaussian(), torch.tensor([[0.0, float("nan")]]), "NaN"),
        (Bernoulli(), torch.tensor([[float("inf"), 1.0]]), "non-finite"),
    ],
)
def test_data_outside_the_support_is_refused_with_the_fix(likelihood, data, message):
    with pytest.raises(ElboxError, match=message) as e:
        likelihood.check(data, "training")
    assert "row 0" in str(e.value)


def test_data_inside_the_support_passes():
    Bernoulli().check(torch.tensor([[0.0, 1.0]]))
    Binomial(16).check(torch.tensor([[0.0, 3 / 16, 1.0]]))
    Gaussian().check(torch.tensor([[-3.0, 7.0]]))


def test_unknown_or_incomplete_likelihoods_are_refused():
    with pytest.raises(ElboxError, match="unknown likelihood"):
        make_likelihood("student-t")
    with pytest.raises(ElboxError, match="levels"):
        make_likelihood("binomial")


def test_the_fused_bernoulli_equals_torchs_independent_bernoulli():
    from torch.distributions import Bernoulli as TorchBernoulli
    from torch.distributions import Independent

    logits = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    reference = Independent(TorchBernoulli(logits=logits), 1)
    fused = Bernoulli()(logits)
    for x in (torch.randint(0, 2, (4, 6)).double(), torch.randint(0, 2, (3, 4, 6)).double(), torch.ones(6).double()):
        assert torch.allclose(fused.log_prob(x), reference.log_prob(x))
        (g1,) = torch.autograd.grad(fused.log_prob(x).sum(), logits)
        (g2,) = torch.autograd.grad(reference.log_prob(x).sum(), logits)
        assert torch.allclose(g1, g2)
    assert fused.batch_shape == (3, 4) and fused.event_shape == (6,) and torch.equal(fused.mean, reference.mean)


# ----------------------------------------------------------------- continuous Bernoulli, per-pixel
# Gaussian, discretized logistic, categorical

# logits from lambda = 0.5 (the Taylor branch) to lambda within 1e-17 of 0 or 1
CB_LOGITS = [-40.0, -15.0, -3.0, -0.3, -0.05, -1e-5, 0.0, 1e-5, 0.05, 0.3, 3.0, 15.0, 40.0]


def _cb_density(logit):
    d = StableContinuousBernoulli(torch.tensor(logit, dtype=torch.float64))
    return lambda x: d.log_prob(torch.tensor(x, dtype=torch.float64)).exp().item()


@pytest.mark.parametrize("logit", CB_LOGITS)
def test_continuous_bernoulli_integrates_to_one_and_its_mean_is_its_first_moment(logit):
    density, edges = _cb_density(logit), [1e-3, 1e-2, 0.99, 0.999]  # where the mass piles up at large |logit|
    total = scipy.integrate.quad(density, 0, 1, points=edges, limit=200, epsabs=1e-12)[0]
    moment = scipy.integrate.quad(lambda x: x * density(x), 0, 1, points=edges, limit=200, epsabs=1e-12)[0]
    assert abs(total - 1) < 1e-8
    mean = StableContinuousBernoulli(torch.tensor(logit, dtype=torch.float64)).mean.item()
    assert abs(mean - moment) < 1e-8


def test_continuous_bernoulli_equals_torchs_where_torchs_is_exact_and_stays_finite_where_it_is_not():
    logits = torch.tensor([-10.0, -2.0, -0.3, 0.3, 2.0, 10.0], dtype=torch.float64)
    x = torch.rand(4, 6, dtype=torch.float64)
    ours, torchs = StableContinuousBernoulli(logits), TorchContinuousBernoulli(logits=logits)
    assert torch.allclose(ours.log_prob(x), torchs.log_prob(x), atol=1e-10)
    assert torch.allclose(ours.mean, torchs.mean, atol=1e-10)
    # in float32 sigmoid(20) is exactly 1: torch's normaliser, from lambda, is off there by 0.2 nats
    # (log 20 against the 2.77 at which torch clamps lambda); ours, from the logits, is exact
    far = torch.tensor([-60.0, 20.0, 60.0], requires_grad=True)
    x = torch.tensor([0.0, 1.0, 1.0])
    exact = StableContinuousBernoulli(far.detach().double()).log_prob(x.double())
    log_p = StableContinuousBernoulli(far).log_prob(x)
    assert torch.allclose(log_p.double(), exact, atol=1e-5)
    assert ((TorchContinuousBernoulli(logits=far).log_prob(x).double() - exact).abs() > 0.2).all()
    (grad,) = torch.autograd.grad(log_p.sum(), far)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("logit", [-30.0, -2.0, 1e-4, 0.4, 5.0])
def test_continuous_bernoulli_draws_follow_its_cdf(logit):
    # Kolmogorov-Smirnov against the paper's cdf F(x) = (e^(eta x) - 1) / (e^eta - 1), eta = logit
    g = torch.Generator().manual_seed(0)
    d = StableContinuousBernoulli(torch.tensor(logit, dtype=torch.float64))
    draws = d.icdf(torch.rand(2000, generator=g, dtype=torch.float64)).numpy()
    if logit > 0:  # the same, divided by e^eta so that nothing overflows
        cdf = lambda x: (np.exp(logit * (x - 1)) - np.exp(-logit)) / -np.expm1(-logit)  # noqa: E731
    else:
        cdf = lambda x: np.expm1(logit * x) / np.expm1(logit)  # noqa: E731
    assert scipy.stats.kstest(draws, cdf).pvalue > 1e-3  # fails 1 in 1000 by chance; fixed seed


def test_continuous_bernoulli_lacks_nothing_the_bernoulli_cross_entropy_has_but_its_normaliser():
    logits, x = torch.randn(3, 5), torch.rand(3, 5)
    bernoulli_term = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    gap = ContinuousBernoulli()(logits).log_prob(x) - bernoulli_term
    assert (gap >= 5 * math.log(2) - 1e-5).all()  # log C(lambda) >= log 2 per pixel


def test_pixel_gaussian_reads_a_mean_and_a_scale_per_pixel_and_matches_scipy():
    loc, raw = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    y = torch.randn(4, 6, dtype=torch.float64)
    scale = torch.nn.functional.softplus(raw) + 1e-3
    expected = scipy.stats.norm.logpdf(y.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    d = PixelGaussian()(torch.cat([loc, raw], -1))
    assert d.event_shape == (6,) and torch.allclose(d.log_prob(y), torch.from_numpy(expected))
    assert torch.equal(d.mean, loc)


def _logistic(loc, scale, levels):
    """The discretized logistic with scale ``scale`` exactly: raw = softplus^-1(scale - floor)."""
    raw = torch.log(torch.expm1(scale - 1e-4 / levels))
    return DiscretizedLogistic(levels)(torch.cat([loc, raw], -1))


# locations inside and far outside [0, 1], scales from a fraction of a bin to the whole range
LOGISTIC_CASES = [(0.3, 0.05), (0.5, 1e-4), (0.999, 0.002), (-0.4, 0.03), (2.0, 0.5), (0.0, 10.0)]


@pytest.mark.parametrize(("loc", "scale"), LOGISTIC_CASES)
def test_discretized_logistic_is_a_pmf_over_256_levels_equal_to_scipys_cdf_differences(loc, scale):
    n = 255
    grid = torch.arange(n + 1, dtype=torch.float64)[:, None] / n  # [256, 1]: every value one pixel can take
    d = _logistic(torch.full((256, 1), loc, dtype=torch.float64), torch.full((256, 1), scale, dtype=torch.float64), n)
    log_p = d.log_prob(grid)  # [256]
    assert abs(torch.logsumexp(log_p, 0).exp().item() - 1) < 1e-10
    # scipy: log(F(upper) - F(lower)) from logcdf left of loc, log(S(lower) - S(upper)) from logsf
    # right of it (where both cdfs round to 1), with the tails at the edges
    t = grid[:, 0].numpy()
    log_upper = scipy.stats.logistic.logcdf(t + 0.5 / n, loc, scale)
    log_lower = scipy.stats.logistic.logcdf(t - 0.5 / n, loc, scale)
    sf_lower = scipy.stats.logistic.logsf(t - 0.5 / n, loc, scale)
    sf_upper = scipy.stats.logistic.logsf(t + 0.5 / n, loc, scale)
    with np.errstate(divide="ignore"):  # the branch not taken may be log 0
        from_cdf = log_upper + np.log(-np.expm1(log_lower - log_upper))
        expected = np.where(t < loc, from_cdf, sf_lower + np.log(-np.expm1(sf_upper - sf_lower)))
    expected[0] = log_upper[0]
    expected[-1] = scipy.stats.logistic.logsf(t[-1] - 0.5 / n, loc, scale)
    assert np.allclose(log_p.numpy(), expected, rtol=1e-9, atol=1e-9)
    mean = d.base_dist.mean[0].item()
    assert abs(mean - (log_p.exp() * grid[:, 0]).sum().item()) < 1e-10


def test_discretized_logistic_draws_land_on_the_grid_with_its_probabilities():
    n, draws_n = 4, 20000
    torch.manual_seed(0)
    d = _logistic(torch.tensor([[0.4]], dtype=torch.float64), torch.tensor([[0.3]], dtype=torch.float64), n).base_dist
    draws = d.sample((draws_n,)).flatten()
    counts = np.array([(draws == k / n).sum().item() for k in range(n + 1)])
    assert counts.sum() == draws_n  # every draw is on the grid
    p = d.log_prob(torch.arange(n + 1.0, dtype=torch.float64)[:, None, None] / n).exp().flatten().numpy()
    assert scipy.stats.chisquare(counts, p / p.sum() * draws_n).pvalue > 1e-3  # fails 1 in 1000 by chance; fixed seed


def test_categorical_is_a_pmf_over_its_levels_read_level_major_from_the_decoder():
    n, x_dim = 255, 3
    out = torch.randn(2, (n + 1) * x_dim, dtype=torch.float64)
    d = Categorical(n)(out)
    assert d.batch_shape == (2,) and d.event_shape == (x_dim,)
    grid = (torch.arange(n + 1, dtype=torch.float64) / n)[:, None, None].expand(n + 1, 2, x_dim)
    per_pixel = d.base_dist.log_prob(grid)  # [256, 2, 3]
    assert torch.allclose(per_pixel.exp().sum(0), torch.ones(2, x_dim, dtype=torch.float64))
    # level j of pixel i is output j * X + i
    logits = out.reshape(2, n + 1, x_dim)
    assert torch.allclose(per_pixel[7, 1, 2], torch.log_softmax(logits[1, :, 2], 0)[7])
    assert torch.allclose(d.mean, (torch.softmax(logits, 1) * grid[:, :1, :1].reshape(1, n + 1, 1)).sum(1))


def test_categorical_draws_follow_its_probabilities():
    torch.manual_seed(0)
    d = Categorical(3)(torch.tensor([[0.0, 1.0, -1.0, 2.0]])).base_dist
    draws = d.sample((20000,)).flatten()
    counts = np.array([(draws == k / 3).sum().item() for k in range(4)])
    expected = torch.softmax(torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64), 0).numpy() * 20000
    assert counts.sum() == 20000 and scipy.stats.chisquare(counts, expected).pvalue > 1e-3  # fixed seed


@pytest.mark.parametrize(
    ("likelihood", "data", "message"),
    [
        (ContinuousBernoulli(), torch.tensor([[0.0, 1.5]]), r"\[0, 1\]"),
        (ContinuousBernoulli(), torch.tensor([[-0.1, 0.5]]), "Rescale"),
        (PixelGaussian(), torch.tensor([[0.0, float("nan")]]), "NaN"),
        (DiscretizedLogistic(255), torch.tensor([[0.0, 0.3]]), "k/255"),
        (DiscretizedLogistic(255), torch.tensor([[0.0, 255.0]]), "divide by 255"),
        (Categorical(16), torch.tensor([[0.0, 0.3]]), "k/16"),
        (Categorical(255), torch.tensor([[-1 / 255, 0.0]]), "--levels"),
    ],
)
def test_new_likelihoods_refuse_data_outside_their_support_with_the_fix(likelihood, data, message):
    with pytest.raises(ElboxError, match=message) as e:
        likelihood.check(data, "training")
    assert "row 0" in str(e.value)


def test_new_likelihoods_accept_data_inside_their_support():
    ContinuousBernoulli().check(torch.tensor([[0.0, 0.37, 1.0]]))
    DiscretizedLogistic(255).check(torch.tensor([[0.0, 77 / 255, 1.0]]))
    Categorical(16).check(torch.tensor([[0.0, 3 / 16, 1.0]]))


@pytest.mark.parametrize("name", ["logistic", "categorical"])
def test_grid_likelihoods_need_their_levels(name):
    with pytest.raises(ElboxError, match="--levels"):
        make_likelihood(name)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_gradients_are_finite_at_extreme_decoder_outputs(name):
    like = make_likelihood(name, levels=16)
    m, x_dim = like.outputs_per_dim, 4
    x = torch.tensor([[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.5, 1.0]])
    for value in (-60.0, -1e-6, 0.0, 60.0):
        out = torch.full((3, m * x_dim), value, requires_grad=True)
        log_p = like(out).log_prob(x)
        (grad,) = torch.autograd.grad(log_p.sum(), out)
        assert torch.isfinite(log_p).all() and torch.isfinite(grad).all(), (name, value)


# ----------------------------------------------------------------- a VAE with each likelihood

NEW = ["continuous-bernoulli", "gaussian-pixel", "logistic", "categorical"]


@pytest.mark.parametrize("name", NEW)
def test_a_vae_sizes_its_decoder_for_the_likelihood_and_every_parameter_gets_a_gradient(name):
    vae = VAE(VAEConfig(data_dim=6, latent_dim=2, hidden=(8,), likelihood=name, levels=16))
    x = torch.randint(0, 17, (5, 6)) / 16
    assert vae.decoder[-1].out_features == 6 * vae.likelihood.outputs_per_dim
    log_w = vae.log_weights(x, 7)
    assert log_w.shape == (7, 5) and torch.isfinite(log_w).all()
    log_w.mean().backward()
    for pname, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert vae.sample(3).shape == (3, 6) and vae.reconstruct(x).shape == (5, 6)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_a_vae_with_the_likelihood_trains_on_digits_saves_loads_and_samples(tmp_path, name):
    live = {}
    train(data="digits", epochs=2, hidden=(16,), latent_dim=2, likelihood=name, out=str(tmp_path / "r"),
          progress=False, on_epoch=lambda metrics, model: live.update(model=copy.deepcopy(model)))  # fmt: skip
    run = load_run(tmp_path / "r")
    assert run.model.config.likelihood == name
    assert run.model.config.levels == (16 if name in ("logistic", "categorical") else None)
    assert all(math.isfinite(run.summary["test"][key]) for key in ("elbo", "kl", "reconstruction"))
    x, trained = load_dataset("digits").test[:10], live["model"].eval()
    torch.manual_seed(1)
    log_w = trained.log_weights(x, 4)
    torch.manual_seed(1)
    assert torch.equal(log_w, run.model.log_weights(x, 4))
    samples = run.model.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(samples, trained.sample(5, torch.Generator().manual_seed(0)))
    assert samples.shape == (5, 64) and torch.isfinite(samples).all()
    if name != "gaussian-pixel":  # the mean of a distribution on [0, 1] lies in [0, 1]
        assert samples.min() >= 0 and samples.max() <= 1


# ----------------------------------------------------------------- counts and tables


def test_poisson_matches_scipy_and_sums_to_one():
    log_rate = torch.tensor([[-1.0, 0.5, 2.0]], dtype=torch.float64)
    k = torch.arange(200, dtype=torch.float64)[:, None, None].expand(200, 1, 3)  # [200, 1, 3]
    lp = Poisson()(log_rate).base_dist.log_prob(k)
    assert torch.allclose(lp, torch.from_numpy(scipy.stats.poisson.logpmf(k.numpy(), log_rate.exp().numpy())))
    assert torch.allclose(lp.exp().sum(0), torch.ones(1, 3, dtype=torch.float64))


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_negative_binomial_and_zinb_match_scipy_and_sum_to_one(zero_inflated):
    mu, theta, pi = np.array([0.3, 4.0, 20.0]), np.array([0.5, 2.0, 30.0]), np.array([0.2, 0.01, 0.7])
    k = np.arange(3000)[:, None]
    d = NegativeBinomialMean(torch.tensor(np.log(mu)), torch.tensor(theta),
                             torch.tensor(np.log(pi / (1 - pi))) if zero_inflated else None)  # fmt: skip
    lp = d.log_prob(torch.tensor(k, dtype=torch.float64)).numpy()
    nb = scipy.stats.nbinom.pmf(k, theta, theta / (theta + mu))  # scipy's n = theta, p = theta / (theta + mu)
    expected = np.where(k == 0, pi + (1 - pi) * nb, (1 - pi) * nb) if zero_inflated else nb
    assert np.allclose(np.exp(lp), expected, rtol=1e-9, atol=1e-300)
    assert np.allclose(np.exp(lp).sum(0), 1.0)
    assert np.allclose(d.mean.numpy(), (1 - pi) * mu if zero_inflated else mu)


def test_count_likelihoods_refuse_non_counts():
    for like in (Poisson(), NegativeBinomial(2), NegativeBinomial(2, zero_inflated=True)):
        like.check(torch.tensor([[0.0, 3.0]]))
        with pytest.raises(ElboxError, match="counts"):
            like.check(torch.tensor([[0.0, 1.5]]))


TABLE_SPECS = ("gaussian", "bernoulli", "categorical:3", "poisson", "negative-binomial", "zinb", "beta-binomial:9")


def _table_out(lik: Table, batch: tuple[int, ...] = (4,)) -> torch.Tensor:
    return torch.randn(*batch, lik.outputs, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _rows() -> torch.Tensor:
    rows = [[0.3, 1.0, 2.0, 4.0, 0.0, 7.0, 9.0], [-1.2, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
            [2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0], [0.0, 0.0, 2.0, 9.0, 5.0, 0.0, 1.0]]  # fmt: skip
    return torch.tensor(rows, dtype=torch.float64)


def test_a_mixed_table_log_likelihood_is_the_sum_of_its_columns():
    lik = Table(TABLE_SPECS).double()
    out, x = _table_out(lik), _rows()
    total = lik(out).log_prob(x)
    # each column by hand, from the decoder outputs laid out column by column: 1, 1, 3, 1, 1, 2, 1
    scale = torch.nn.functional.softplus(lik.raw_scale) + 1e-3
    theta = lik.theta
    parts = [
        torch.distributions.Normal(out[:, 0], scale[0]).log_prob(x[:, 0]),
        torch.distributions.Bernoulli(logits=out[:, 1]).log_prob(x[:, 1]),
        torch.distributions.Categorical(logits=out[:, 2:5]).log_prob(x[:, 2].long()),
        torch.distributions.Poisson(out[:, 5].exp()).log_prob(x[:, 3]),
        NegativeBinomialMean(out[:, 6], theta[0]).log_prob(x[:, 4]),
        NegativeBinomialMean(out[:, 7], theta[1], out[:, 8]).log_prob(x[:, 5]),
        BetaBinomialMean(torch.tensor(9.0), out[:, 9], theta[2]).log_prob(x[:, 6]),
    ]
    assert torch.allclose(total, sum(parts))
    assert torch.allclose(lik(out).log_prob_columns(x), torch.stack(parts, -1))


def test_a_beta_binomial_column_is_scipys_pmf_sums_to_one_over_0_to_n_and_refuses_more_than_n():
    """Bounded counts: beta-binomial:N is scipy's betabinom(N, p theta, (1 - p) theta), a pmf on 0..N with mean N p;
    with a large concentration it is the binomial; its draws follow its pmf."""
    lik = Table(("beta-binomial:16",)).double()
    logits = torch.tensor([[-3.0], [0.4], [2.5]], dtype=torch.float64)
    theta = lik.theta.detach()
    k = torch.arange(17, dtype=torch.float64)
    p, prob = lik(logits[:, None].expand(3, 17, 1)), torch.sigmoid(logits).numpy()
    log_p = p.log_prob(k[None, :, None]).detach()  # [3, 17]
    expected = scipy.stats.betabinom.logpmf(k.numpy()[None], 16, prob * theta.numpy(), (1 - prob) * theta.numpy())
    np.testing.assert_allclose(log_p.numpy(), expected, rtol=1e-10)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(lik(logits).mean, 16 * torch.sigmoid(logits))
    big = torch.tensor(1e8, dtype=torch.float64)  # concentration: the binomial's limit
    near_binomial = BetaBinomialMean(torch.tensor(16.0, dtype=torch.float64), logits[:, 0], big).log_prob(k[:, None])
    np.testing.assert_allclose(near_binomial.numpy(), scipy.stats.binom.logpmf(k.numpy()[:, None], 16, prob[:, 0]),
                               atol=1e-4)  # fmt: skip
    draws = BetaBinomialMean(torch.tensor(16.0), torch.tensor(0.4), torch.tensor(3.0)).sample((20_000,))
    freq = torch.bincount(draws.long(), minlength=17).double() / 20_000
    pmf = torch.from_numpy(scipy.stats.betabinom.pmf(k.numpy(), 16, 0.5987 * 3.0, 0.4013 * 3.0))
    assert (freq - pmf).abs().max() < 5 * (pmf * (1 - pmf) / 20_000).sqrt().max()
    lik.check(torch.tensor([[0.0], [16.0]]))
    with pytest.raises(ElboxError, match="outside its support"):
        lik.check(torch.tensor([[17.0]]))
    with pytest.raises(ElboxError, match="beta-binomial:N"):
        Table(("beta-binomial",))


def test_a_table_likelihood_ignores_exactly_the_missing_entries():
    lik = Table(TABLE_SPECS).double()
    out, x = _table_out(lik), _rows()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.4
    p = lik(out)
    base = p.log_prob_columns(x, mask)
    for placeholder in (0.0, 1.0, 2.0, 17.0):  # any value under a False leaves log p as it is
        assert torch.equal(p.log_prob_columns(torch.where(mask, x, placeholder), mask), base)
    assert torch.equal(p.log_prob(torch.where(mask, x, float("nan"))), base.sum(-1))  # NaN is the mask in a batch
    assert torch.equal(base, torch.where(mask, p.log_prob_columns(x), 0.0))  # the observed entries are untouched
    assert not torch.equal(p.log_prob(x), base.sum(-1))  # and the missing ones did count before


def test_a_table_likelihood_broadcasts_particles_and_gets_gradients_through_missing_rows():
    config = VAEConfig(data_dim=len(TABLE_SPECS), latent_dim=2, hidden=(8,), likelihood="table", columns=TABLE_SPECS)
    vae = VAE(config)
    x = _rows().float()
    x[0, 0] = x[1, 2] = x[3, 5] = float("nan")
    log_w = vae.log_weights(x, 5)
    assert log_w.shape == (5, 4) and torch.isfinite(log_w).all()
    log_w.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- correlated continuous columns


def _correlated(seed: int = 0) -> tuple[Table, Any, Tensor, Tensor]:
    """A table of three continuous columns around a binary one, noise rank 2, and rows with gaps."""
    torch.manual_seed(seed)
    lik = Table(("gaussian", "bernoulli", "gaussian", "gaussian"), noise_rank=2).double()
    with torch.no_grad():
        lik.noise_factor.copy_(torch.tensor([[0.9, 0.2], [-0.7, 0.5], [0.4, -0.8]], dtype=torch.float64))
    x = torch.tensor([[0.3, 1.0, -0.5, 1.2], [float("nan"), 0.0, 0.4, 0.9], [1.1, 1.0, float("nan"), float("nan")],
                      [float("nan"), 0.0, float("nan"), float("nan")]], dtype=torch.float64)  # fmt: skip
    out = torch.randn(5, 4, lik.outputs, dtype=torch.float64)  # [K, B, outputs]
    return lik, lik(out), x, out


def test_correlated_columns_log_p_is_the_multivariate_normal_of_their_observed_entries():
    """log p(x_o | z) = log N(x_o; loc_o, (W W^T + D)_oo) + the other columns' terms, a fully missing block
    adding 0; any placeholder under a missing entry gives the same number (scipy's MVN as the reference)."""
    lik, p, x, _ = _correlated()
    block = p._block()[1]
    cov = (lik.noise_factor @ lik.noise_factor.T + torch.diag(block.scale**2)).detach().numpy()
    logits = p.parts[1][2].logits
    lp = p.log_prob(x)
    for k in range(5):
        for b in range(4):
            o = [j for j, c in enumerate((0, 2, 3)) if not math.isnan(x[b, c])]
            ref = torch.distributions.Bernoulli(logits=logits[k, b, 0]).log_prob(x[b, 1]).item()
            if o:
                loc = block.loc[k, b].detach().numpy()[o]
                ref += scipy.stats.multivariate_normal(loc, cov[np.ix_(o, o)]).logpdf(x[b, [(0, 2, 3)[j] for j in o]])
            assert lp[k, b].item() == pytest.approx(ref, abs=1e-10)
    for placeholder in (0.0, 5.0, -3.0):
        assert torch.equal(p.log_prob(torch.nan_to_num(x, nan=placeholder), ~torch.isnan(x)), lp)
    assert sum(p.log_prob_kinds(x).values()).sub(lp).abs().max() < 1e-12
    with pytest.raises(ValueError, match="joint log p"):
        p.log_prob_columns(x)
    assert torch.isfinite(block.log_prob(x[:, [0, 2, 3]])).all()  # NaN marks a gap on its own, too


def test_correlated_columns_mean_and_draws_given_the_observed_are_the_gaussian_conditional():
    """E[x_m | x_o, z] = loc_m + S_mo S_oo^-1 (x_o - loc_o) exactly; Matheron's draws have that mean and the
    conditional covariance S_mm - S_mo S_oo^-1 S_om (4 standard errors over 40,000 draws)."""
    lik, p, x, out = _correlated()
    block = p._block()[1]
    s = (lik.noise_factor @ lik.noise_factor.T + torch.diag(block.scale**2)).detach()
    row, o, m = 2, [0], [1, 2]  # columns 0, 2, 3 of the table are 0, 1, 2 of the block; row 2 keeps column 0
    loc = block.loc[0, row].detach()
    exact = loc[m] + s[m][:, o] @ torch.linalg.solve(s[o][:, o], x[row, [0]] - loc[o])
    given = p.mean_given(x).detach()
    torch.testing.assert_close(given[0, row, [2, 3]], exact, atol=1e-12, rtol=0)
    torch.testing.assert_close(given[:, :, 1], p.parts[1][2].mean[..., 0])  # other columns: their own mean
    cond = s[m][:, m] - s[m][:, o] @ torch.linalg.solve(s[o][:, o], s[o][:, m])
    n = 40_000
    torch.manual_seed(1)
    draws = lik(out[0, row].expand(n, -1)).sample_given(x[row].expand(n, -1))[:, [2, 3]]  # [n, 2]
    se = cond.diagonal().sqrt() / math.sqrt(n)
    assert ((draws.mean(0) - exact).abs() < 4 * se).all()
    assert ((draws.T.cov() - cond).abs() < 4 * math.sqrt(2 / n) * cond.diagonal().max()).all()


def test_a_noise_rank_needs_a_table_with_continuous_columns():
    with pytest.raises(ElboxError, match="has 0: leave --noise-rank at 0"):
        Table(("bernoulli", "poisson"), noise_rank=2)
    with pytest.raises(ElboxError, match="Load a table"):
        make_likelihood("gaussian", noise_rank=2)
    with pytest.raises(ElboxError, match="noise_rank must be 0"):
        VAEConfig(noise_rank=-1)
    assert "noise_factor" not in dict(Table(("gaussian", "gaussian")).named_parameters())  # rank 0: as before


def test_a_vae_with_correlated_columns_gets_a_gradient_for_the_noise_factor():
    specs = ("gaussian", "gaussian", "bernoulli", "gaussian")
    vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="table", columns=specs, noise_rank=2))
    x = torch.randn(6, 4)
    x[:, 2] = (x[:, 2] > 0).float()
    x[0, 0] = x[1, 3] = float("nan")
    log_w = vae.log_weights(x, 5)
    assert log_w.shape == (5, 6) and torch.isfinite(log_w).all()
    log_w.sum().backward()
    assert vae.likelihood.noise_factor.grad.abs().sum() > 0
