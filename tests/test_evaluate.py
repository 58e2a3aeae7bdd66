"""evaluate: log p(x), its error, the bounds, the gap split and collapse, against exact answers.

The oracle is the linear-Gaussian VAE (``oracles.py``): log p(x), the posterior and every KL
are known in closed form. Each statistical check states its tolerance in standard errors;
the draws are seeded, so each test gives the same numbers on every run.
"""

import json
import math

import pytest
import torch
from oracles import exact_elbo, exact_log_px, exact_posterior, linear_gaussian_vae, parts, set_encoder_to_posterior
from torch.distributions import MultivariateNormal, kl_divergence

from elbox import VAE, ElboxError, VAEConfig
from elbox.bounds import iwae_curve
from elbox.evaluation import (
    ACTIVE_THRESHOLD,
    EvaluationConfig,
    evaluate,
    inference_gaps,
    log_likelihood,
    mutual_information,
)

F64 = torch.float64


def _correlated_vae(x_dim=5, z_dim=2):
    """The linear-Gaussian VAE with non-orthogonal W: its posterior is correlated, so the diagonal family misses it."""
    vae = linear_gaussian_vae(x_dim, z_dim)
    with torch.no_grad():
        w = vae.decoder[0].weight
        w[:, 1] = 0.7 * w[:, 0] + 0.3 * w[:, 1]
    return vae


def _posterior_precision(vae):
    w, _, s = parts(vae)
    return torch.eye(w.shape[1], dtype=F64) + w.T @ w / s**2


def _inverse_softplus(y):
    return y + torch.log(-torch.expm1(-y))


def _set_encoder_near_posterior(vae, shrink=0.9, widen=1.3, shift=0.1):
    """q(z | x) = N(shrink * E[z | x] + shift, diag(widen^2 Var[z_d | x])): near the posterior, overdispersed."""
    w, b, s = parts(vae)
    cov = torch.linalg.inv(_posterior_precision(vae))
    gain = cov @ w.T / s**2  # E[z | x] = gain (x - b)
    d = w.shape[1]
    layer = vae.encoder.encoder[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:d] = shrink * gain
        layer.bias.zero_()
        layer.bias[:d] = -shrink * gain @ b + shift
        scale = _inverse_softplus(widen * cov.diagonal().sqrt() - vae.config.min_scale)
        if vae.config.family == "diagonal":
            layer.bias[d:] = scale
        else:  # full rank: loc, then the lower triangle row by row; its diagonal through softplus
            rows, cols = torch.tril_indices(d, d)
            layer.bias[d:][rows == cols] = scale


def _fullrank_twin(vae):
    """A full-rank VAE with the same decoder and the same starting q as ``vae``."""
    config = VAEConfig(data_dim=vae.config.data_dim, latent_dim=vae.config.latent_dim, hidden=(),
                       likelihood="gaussian", gaussian_scale=vae.config.gaussian_scale, family="fullrank")  # fmt: skip
    twin = VAE(config).double()
    twin.decoder.load_state_dict(vae.decoder.state_dict())
    return twin


def _sample_x(vae, n):
    """n draws from the model's own p(x)."""
    w, b, s = parts(vae)
    z = torch.randn(n, w.shape[1], dtype=F64)
    return (z @ w.T + b + s * torch.randn(n, w.shape[0], dtype=F64)).detach()


def _q_as_mvn(vae, x):
    q = vae.encode(x)
    if isinstance(q, MultivariateNormal):
        return q
    return MultivariateNormal(q.mean, torch.diag_embed(q.variance))


# ----------------------------------------------------------------- log p(x) and its error


def test_log_px_estimate_is_within_3_standard_errors_of_the_exact_value():
    vae = _correlated_vae()
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 12)
    ll = log_likelihood(vae, x, k=2000, seed=1)
    truth = exact_log_px(vae, x).detach()
    z = (ll.values - truth) / ll.mc_se  # standardised errors: about N(0, 1) each
    assert (z.abs() < 3).all(), z
    assert abs(z.mean()) < 3 / math.sqrt(len(z))  # and no bias beyond 3 standard errors of their mean
    assert (ll.ess > 1).all() and (ll.ess <= 2000).all()
    assert ll.se == pytest.approx((ll.values.std() / math.sqrt(12)).item())  # the SE over points


@pytest.mark.slow
def test_the_monte_carlo_error_shrinks_as_one_over_root_k_and_is_honest():
    vae = _correlated_vae()
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 6)
    truth = exact_log_px(vae, x).detach()
    small, large = (log_likelihood(vae, x, k=k, seed=0) for k in (100, 6400))
    ratio = small.mc_se / large.mc_se
    assert ((ratio > 8 / 1.5) & (ratio < 8 * 1.5)).all(), ratio  # sqrt(6400 / 100) = 8
    assert (large.values - truth).abs().mean() < (small.values - truth).abs().mean()
    # the stated error is the real one: the spread of 100 independent K = 100 estimates
    repeats = torch.stack([log_likelihood(vae, x, k=100, seed=s).values for s in range(100)])  # [100, 6]
    spread = repeats.std(0)
    assert ((spread / small.mc_se) > 0.7).all() and ((spread / small.mc_se) < 1.4).all(), spread / small.mc_se


def test_chunking_changes_the_memory_not_the_numbers():
    vae = _correlated_vae()
    x = _sample_x(vae, 7)
    one = log_likelihood(vae, x, k=250, chunk=250, batch_size=4, seed=3)
    bytes_per_particle = 4 * 8 * (3 * 5 + 4 * 2)  # 4 points in float64, by evaluate's estimate
    for options in ({"chunk": 1}, {"chunk": 150}, {"max_memory": 150 * bytes_per_particle}):  # chunks of 100, 200, 100
        chunked = log_likelihood(vae, x, k=250, batch_size=4, seed=3, **options)
        assert torch.allclose(chunked.values, one.values, rtol=0, atol=1e-10), options
        assert torch.allclose(chunked.ess, one.ess, rtol=1e-9)
    other_seed = log_likelihood(vae, x, k=250, chunk=250, batch_size=4, seed=4)
    assert not torch.allclose(other_seed.values, one.values)


def test_evaluation_is_deterministic_and_leaves_the_callers_random_state_alone():
    vae = _correlated_vae()
    x = _sample_x(vae, 5)
    state = torch.get_rng_state()
    a = evaluate(vae, x, k=100, gap_points=2, gap_steps=10, khat=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate(vae, x, k=100, gap_points=2, gap_steps=10, khat=False, chunk=20)
    for field in ("log_px", "mc_se", "cubo", "kl", "mutual_information"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-10), field
    assert torch.allclose(a.gaps.approximation, b.gaps.approximation, atol=1e-10)


def test_iwae_curve_from_disjoint_groups():
    log_w = torch.randn(12, 2, dtype=F64)
    curve = iwae_curve(log_w, (1, 3, 5, 12))

    def mean_of_groups(k, starts):
        return torch.stack([torch.logsumexp(log_w[i : i + k], 0) - math.log(k) for i in starts]).mean(0)

    assert torch.allclose(curve[1], log_w.mean(0))
    assert torch.allclose(curve[3], mean_of_groups(3, (0, 3, 6, 9)))
    assert torch.allclose(curve[5], mean_of_groups(5, (0, 5)))  # the last 2 particles are left out
    assert torch.allclose(curve[12], mean_of_groups(12, (0,)))
    with pytest.raises(ValueError, match="k <= K"):
        iwae_curve(log_w, (13,))


# ----------------------------------------------------------------- bounds, rate and distortion


def test_bounds_are_ordered_around_the_exact_log_px_and_the_elbo_is_exact():
    vae = _correlated_vae()
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 8)
    e = evaluate(vae, x, k=5000, gap_points=0, khat=False, mi_points=8)
    truth = exact_log_px(vae, x).detach()
    means = [v.mean().item() for v in e.iwae.values()]
    assert list(e.iwae) == [1, 5, 50, 500, 5000]
    assert means == sorted(means)  # the IWAE_k curve rises with k ...
    assert means[-1] < truth.mean().item() + 0.01  # ... toward log p(x)
    assert (e.cubo >= e.log_px).all()
    # the ELBO is reconstruction (K = 5000 particles) minus the closed-form KL: within 4 SE of the closed form
    log_lik_se = vae(x, 5000).log_lik.detach().std(0) / math.sqrt(5000)
    assert ((e.elbo - exact_elbo(vae, x).detach()).abs() <= 4 * log_lik_se).all()
    assert torch.allclose(e.kl_per_dimension.sum(1), e.kl)
    q = vae.encode(x)
    assert torch.allclose(e.kl, kl_divergence(q, vae.prior()).detach())


# ----------------------------------------------------------------- the gap split


def _check_gaps(gaps, approximation, amortization, optimisation=0.01):
    """Each point's gaps equal the exact ones within 4 Monte Carlo standard errors plus ``optimisation`` nats."""
    se_approximation = (gaps.log_px_se**2 + gaps.elbo_local_se**2).sqrt()
    se_amortization = (gaps.elbo_local_se**2 + gaps.elbo_encoder_se**2).sqrt()
    assert ((gaps.approximation - approximation).abs() <= 4 * se_approximation + optimisation).all()
    assert ((gaps.amortization - amortization).abs() <= 4 * se_amortization + optimisation).all()
    assert (gaps.approximation > -4 * se_approximation).all() and (gaps.amortization > -4 * se_amortization).all()


@pytest.mark.slow
def test_the_gap_splits_standard_errors_are_the_spread_of_its_estimates_over_seeds():
    """Each of the gap split's three estimates states its Monte Carlo error: it must be the real one, the sd of
    the estimate over independent seeds (as for log p(x) above); the gap tests use these errors as tolerances,
    so an error too large (the wrong count under the root) would let wrong gaps pass. q* is held at the
    encoder's q (a learning rate of ~0), so a new seed changes only the draws."""
    vae = _correlated_vae()
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 6)
    options = {"k": 100, "gap_steps": 1, "gap_lr": 1e-12, "gap_particles": 1}
    runs = [inference_gaps(vae, x, seed=s, **options) for s in range(60)]
    for name in ("log_px", "elbo_encoder", "elbo_local"):
        spread = torch.stack([getattr(g, name) for g in runs]).std(0)  # [6]: the real error, to ~ 1/sqrt(2 * 59)
        stated = torch.stack([getattr(g, f"{name}_se") for g in runs]).mean(0)
        ratio = spread / stated
        assert ((ratio > 0.65) & (ratio < 1.5)).all(), (name, ratio)


@pytest.mark.slow
def test_gaps_of_the_full_rank_family_no_approximation_gap_and_the_whole_kl_amortized():
    """The full-rank family holds the exact posterior: q* = p(z | x), so log p(x) - L[q*] = 0 and
    L[q*] - L[q_enc] = KL(q_enc || p(z | x))."""
    vae = _fullrank_twin(_correlated_vae())
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 6)
    gaps = inference_gaps(vae, x, k=4000, gap_steps=300, gap_lr=0.05, seed=0)
    kl_encoder = kl_divergence(_q_as_mvn(vae, x), exact_posterior(vae, x)).detach()
    assert (kl_encoder > 0.5).all()  # the encoder is off: there is a gap to split
    _check_gaps(gaps, torch.zeros(6, dtype=F64), kl_encoder)
    assert gaps.approximation.abs().max() < 0.02


@pytest.mark.slow
def test_gaps_of_the_diagonal_family_the_exact_kl_of_the_mean_field_optimum():
    """The diagonal family's best q has the posterior mean and variances 1 / Lambda_dd (Lambda the posterior
    precision), at KL(q* || p(z | x)) = (sum_d log Lambda_dd - log det Lambda) / 2 from it, for every x."""
    vae = _correlated_vae()
    _set_encoder_near_posterior(vae)
    x = _sample_x(vae, 6)
    precision = _posterior_precision(vae).detach()
    mean_field = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    assert mean_field > 0.3  # a correlated posterior: the family costs something
    gaps = inference_gaps(vae, x, k=4000, gap_steps=300, gap_lr=0.05, seed=0)
    kl_encoder = kl_divergence(_q_as_mvn(vae, x), exact_posterior(vae, x)).detach()
    _check_gaps(gaps, mean_field.expand(6), kl_encoder - mean_field)
    # and the mean over points, within 3 standard errors of its own
    err = gaps.approximation - mean_field
    assert abs(err.mean()) < 3 * err.std() / math.sqrt(6) + 0.01


@pytest.mark.slow
def test_a_poor_encoder_proposal_is_caught_by_the_gap_points_tighter_estimate():
    """An encoder far too narrow and off-centre is a poor proposal: with K = 50 its IWAE estimate sits well
    below log p(x). The gap split's proposal holds q*, here the exact posterior (full-rank family), so its
    estimate is near exact; the evaluation reports the shortfall and warns. An exact encoder gets none."""
    vae = _fullrank_twin(_correlated_vae())
    _set_encoder_near_posterior(vae, shrink=0.7, widen=0.5, shift=0.5)
    x = _sample_x(vae, 20)
    e = evaluate(vae, x, k=50, gap_points=20, gap_steps=300, gap_lr=0.05, khat=False, mi_points=20)
    exact = exact_log_px(vae, x).detach()
    assert (e.gaps.log_px - exact).abs().max() < 0.25  # q* mixed in: near exact at K = 50 (mean shortfall ~6)
    truth_gap = (exact - e.log_px).mean().item()
    assert e.proposal_shortfall.mean > 1.0 and e.proposal_shortfall.mean == pytest.approx(truth_gap, abs=0.1)
    assert any("poor importance-sampling proposal" in w for w in e.warnings)
    assert "encoder alone as proposal" in e.table()
    assert e.to_dict()["gaps"]["proposal_shortfall"]["mean"] == pytest.approx(e.proposal_shortfall.mean)

    good = linear_gaussian_vae(x_dim=6, z_dim=2, orthogonal=True)
    set_encoder_to_posterior(good)
    e = evaluate(good, _sample_x(good, 8), k=50, gap_points=8, gap_steps=50, khat=False, mi_points=8)
    assert abs(e.proposal_shortfall.mean) < 1e-3 and e.proposal_warning is None


# ----------------------------------------------------------------- collapse


@pytest.mark.slow
def test_a_collapsed_model_has_no_active_units_no_information_and_a_warning():
    """The decoder ignores z (W = 0): the ELBO is then best with q(z | x) = p(z) for every x, and the
    encoder, trained on it from a random start, collapses to the prior."""
    vae = linear_gaussian_vae(x_dim=5, z_dim=3)
    with torch.no_grad():
        vae.decoder[0].weight.zero_()
    x = torch.randn(200, 5, dtype=F64) * 2
    optimizer = torch.optim.Adam(vae.encoder.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        (-exact_elbo(vae, x).mean()).backward()
        optimizer.step()
    e = evaluate(vae, x, k=200, gap_points=0, khat=False, mi_points=200)
    assert e.active_units == 0 and (e.unit_variances < ACTIVE_THRESHOLD).all()
    assert abs(e.mutual_information.mean().item()) < 0.01
    assert e.kl.mean() < 0.01
    assert e.collapse_warning is not None and "posterior collapse" in e.warnings[0]
    assert "warning: posterior collapse" in e.table()


def test_an_informative_model_has_every_unit_active_and_the_exact_mutual_information():
    """With q the exact posterior and x ~ p(x), the aggregate posterior is p(z), so
    I(x; z) = H(z) - H(z | x) = -log det S / 2, S the posterior covariance."""
    vae = linear_gaussian_vae(x_dim=6, z_dim=2, orthogonal=True)
    set_encoder_to_posterior(vae)
    x = _sample_x(vae, 1000)
    exact = 0.5 * torch.logdet(_posterior_precision(vae)).item()
    mi = mutual_information(vae, x, samples=10)
    assert mi.mean().item() == pytest.approx(exact, abs=0.1), (mi.mean(), exact)  # log 1000 = 6.9 >> 2.1 nats
    e = evaluate(vae, x[:300], k=100, gap_points=0, khat=False, mi_points=300)
    assert e.active_units == 2 and e.collapse_warning is None and e.warnings == []


# ----------------------------------------------------------------- results and options


def test_the_result_is_strict_json_with_units_and_uncertainties(tmp_path):
    vae = _correlated_vae()
    x = _sample_x(vae, 10)
    e = evaluate(vae, x, k=50, gap_points=3, gap_steps=20, mi_points=10)
    path = e.save(tmp_path / "evaluation.json")

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    d = json.loads(path.read_text(), parse_constant=refuse)
    assert d["units"].startswith("nats per data point")
    assert set(d["log_px"]) >= {"mean", "se", "mc_se_median"}
    assert set(d["bounds"]) == {"elbo", "iwae_1", "iwae_5", "iwae_50", "cubo_2"}
    assert {"approximation", "amortization", "total"} <= set(d["gaps"])
    assert len(d["per_point"]["log_px"]) == 10 and len(d["per_point"]["psis_khat"]) == 10
    assert d["config"]["k"] == 50 and d["active_units"]["dimensions"] == 2
    table = e.table()
    assert "nats per data point" in table.lower() and "±" in table and "approximation" in table


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"k": 0}, "k must be at least 1"),
        ({"split": "tests"}, "split must be"),
        ({"chunk": 0}, "chunk"),
        ({"seed": -1}, "seed"),
        ({"max_memory": 100}, "max-memory"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(options, words):
    vae = _correlated_vae()
    with pytest.raises(ElboxError, match=words):
        evaluate(vae, _sample_x(vae, 3), **options)


def test_a_family_without_closed_forms_is_evaluated_by_monte_carlo():
    """A flow has no closed-form mean or KL: rate and the posterior means come from the particles."""
    try:
        config = VAEConfig(data_dim=5, latent_dim=2, hidden=(), likelihood="gaussian", gaussian_scale=0.5,
                           family="iaf:1")  # fmt: skip
    except ElboxError:
        pytest.skip("no flow family in this version of families")
    vae = VAE(config).double()
    x = torch.randn(6, 5, dtype=F64)
    e = evaluate(vae, x, k=200, gap_points=2, gap_steps=10, mi_points=6)
    assert e.kl_per_dimension is None and torch.isfinite(e.kl).all() and e.means.shape == (6, 2)
    assert torch.isfinite(e.gaps.total).all()


def test_evaluation_config_keeps_k_on_the_curve():
    assert EvaluationConfig(k=300).ks == (1, 5, 50, 300)


# ----------------------------------------------------------------- the fast paths (issue 10)


def _trained_bernoulli_vae(tmp_path):
    """A VAE of the benchmark's shape (200-200 tanh, Bernoulli) trained briefly on the embedded digits."""
    import elbox

    run = elbox.train(data="digits", binarize="static", latent_dim=10, hidden=(200, 200), epochs=15,
                      out=str(tmp_path / "run"), progress=False)  # fmt: skip
    x = elbox.runs.load_splits(run.config)[1]["test"][:60]
    return run.model, x


@pytest.mark.slow
def test_the_compiled_decoder_pass_gives_the_eager_values_to_float_rounding():
    vae = VAE(VAEConfig(data_dim=30, latent_dim=3, hidden=(16,), likelihood="bernoulli"))
    x = torch.bernoulli(torch.full((7, 30), 0.3))
    eager = log_likelihood(vae, x, k=300, batch_size=4, seed=2, compile=False)
    compiled = log_likelihood(vae, x, k=300, batch_size=4, seed=2, compile=True)  # last batch of 3: a second shape
    # float32 sums of 30 log-probs, summed in another order by the fused kernel: rounding only
    assert torch.allclose(compiled.values, eager.values, rtol=0, atol=1e-4)
    assert torch.allclose(compiled.ess, eager.ess, rtol=1e-3)


@pytest.mark.slow
def test_bf16_changes_log_px_of_a_trained_model_by_under_0_05_nats(tmp_path):
    """The opt-in bfloat16 decoder against float32, same draws: the stated accuracy of the fast path."""
    model, x = _trained_bernoulli_vae(tmp_path)
    fp32 = log_likelihood(model, x, k=500, seed=0, compile=False)
    bf16 = log_likelihood(model, x, k=500, seed=0, compile=False, precision="bf16")
    difference = bf16.values - fp32.values
    assert not torch.equal(bf16.values, fp32.values)  # bf16 really ran: rounding moved every estimate a little
    assert abs(difference.mean().item()) < 0.05, difference.mean()
    assert difference.abs().max() < 0.25, difference.abs().max()  # and no single point far off


def test_the_eager_decoder_pass_is_the_models_own_log_likelihood_bit_for_bit_in_its_dtype():
    from elbox.evaluation.likelihood import _DecoderPass

    vae = _correlated_vae()  # float64
    x, z = _sample_x(vae, 3), torch.randn(7, 3, 2, dtype=F64)
    with torch.no_grad():
        fast = _DecoderPass(vae, compile=False, precision="fp32")(z, x)
        assert fast.dtype == F64 and torch.equal(fast, vae.decode(z).log_prob(x))
